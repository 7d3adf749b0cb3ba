"""The older services' clients against `make run` over HTTP (issue 25; docs/moving-over.md): a key
made by `make api-key ARGS="--make-run create <client> --contract legacy"`, every older path called
as seeds 000 and 002 call it (tests/legacy_clients.py), tasks polled until the scorer completes
them; and the current contract untouched for make run's own key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.e2e_stack import Stack, settle
from tests.helpers import insert_ad
from tests.legacy_clients import Client, current_untouched, seed_000, seed_002

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(shared_make_run: Stack) -> Iterator[Stack]:
    yield shared_make_run  # tests/conftest.py: one make run per test process
    settle(shared_make_run)


def api_key(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.env, "LOCAL_STATE_DIR": str(stack.state_dir)}
    return subprocess.run([sys.executable, "-m", "ops.api_keys", "--make-run", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def client(stack: Stack, key: str, transcript: list[str] | None = None) -> Client:
    def call(method: str, path: str, body: bytes | None, headers: dict[str, str] | None) -> tuple[int, Any]:
        sent = {"x-api-key": key, **({"Content-Type": "application/json"} if body is not None else {}), **(headers or {})}
        data = body if body is not None else (b"" if method == "POST" else None)
        req = urllib.request.Request(stack.api + path, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    return Client(call, transcript)


def test_older_clients_on_a_legacy_key(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    made = api_key(stack, "create", "older", "--contract", "legacy", "--json")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["contract"] == "legacy" and created["scopes"] == ["submit", "close"]
    listed = {r["client"]: r for r in map(json.loads, api_key(stack, "list", "--json").stdout.splitlines())}
    assert listed["older"]["contract"] == "legacy" and listed["local"]["contract"] == "current"
    transcript: list[str] = []
    older = client(stack, created["key"], transcript)
    seed_002(older, insert_ad(stack.database_url), insert_ad(stack.database_url))
    seed_000(older, insert_ad(stack.database_url), insert_ad(stack.database_url))
    current_untouched(client(stack, stack.api_key), insert_ad(stack.database_url))
    # the pin changed later: the same key speaks current
    assert api_key(stack, "contract", "older", "current").returncode == 0
    current_untouched(client(stack, created["key"]), insert_ad(stack.database_url))
    with capsys.disabled():
        print("\n[legacy clients, make run]\n" + "\n".join(transcript))

"""The `make run` stack for end-to-end tests: devstack.stack, its log in the test's temp dir."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import pytest

from devstack.stack import RunningStack
from devstack.stack import make_run as start_make_run

Stack = RunningStack


@contextmanager
def make_run(tmp_path_factory: pytest.TempPathFactory, extra_env: Mapping[str, str] | None = None) -> Iterator[Stack]:
    """`make run` on its own ports and state dir, its reconciler every 5 s instead of every minute."""
    with start_make_run(log=tmp_path_factory.mktemp("log") / "make-run.log", extra_env=extra_env,
                        extra_args=("--reconcile-every", "5")) as stack:
        yield stack


def http(method: str, url: str, data: bytes | None = None, *, key: str | None = None) -> tuple[int, dict]:
    """Status and JSON body; `key` is the x-api-key (make run enforces keys as the deployed API does)."""
    headers = {"Content-Type": "application/json", **({"x-api-key": key} if key else {})}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())

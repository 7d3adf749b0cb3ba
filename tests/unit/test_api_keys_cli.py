"""ops/api_keys.py on make run's keys (--make-run; the deployed stack's: tests/e2e/test_deployed.py),
and the key file make run's server reads (toolkit/local_keys.py)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from ops import api_keys
from toolkit.local_keys import DEFAULT_CLIENT, FILE_NAME, LocalKeys, forbidden_response


@pytest.fixture()
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LOCAL_STATE_DIR", str(tmp_path))
    return tmp_path


def test_create_list_revoke(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert api_keys.main(["--make-run", "create", "alice", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    keys = LocalKeys(state)
    found = keys.find(created["key"])
    assert found is not None and found.client == "alice"
    assert api_keys.main(["--make-run", "list", "--json"]) == 0
    assert [json.loads(line)["client"] for line in capsys.readouterr().out.splitlines()] == ["alice"]
    assert api_keys.main(["--make-run", "create", "alice"]) == 1  # one key per client
    assert api_keys.main(["revoke", "alice", "--make-run", "--yes"]) == 0
    assert keys.find(created["key"]) is None and keys.keys() == {}
    assert api_keys.main(["--make-run", "revoke", "alice", "--yes"]) == 1


@pytest.mark.parametrize("argv", [["create", "Bad Name"], ["create", "x", "--rate", "5"], ["revoke", "alice"],
                                  ["create"], ["rotate", "alice"]])
def test_usage_errors_exit_2(state: Path, argv: list[str]) -> None:
    LocalKeys(state).create("alice")
    assert api_keys.main(["--make-run", *argv]) == 2  # no limits locally; revoke asks, and there is no terminal


def test_make_runs_own_key_is_kept_replaced_by_api_key_and_private(state: Path) -> None:
    keys = LocalKeys(state)
    first = keys.ensure(DEFAULT_CLIENT)
    assert keys.ensure(DEFAULT_CLIENT) == first  # a restart keeps it
    chosen = keys.ensure(DEFAULT_CLIENT, "my-own-key-value-of-twenty-chars")
    assert chosen.value == "my-own-key-value-of-twenty-chars" and keys.find(first.value) is None
    assert stat.S_IMODE((state / FILE_NAME).stat().st_mode) == 0o600


def test_a_reader_sees_every_change_at_once(state: Path) -> None:
    reader, writer = LocalKeys(state), LocalKeys(state)
    key = writer.create("bob")
    assert reader.find(key.value) is not None
    writer.revoke("bob")  # within the same timestamp tick: the file is a new inode
    assert reader.find(key.value) is None


def test_the_local_403_is_the_deployed_apis_gateway_response() -> None:
    status, body = forbidden_response()
    assert status == 403 and json.loads(body)["code"] == "forbidden"

"""Clients and scopes without servers (issue 20; docs/clients.md): the scope table, the cache
in front of api_clients, make run's hashed key store."""

from __future__ import annotations

import json
import stat

import pytest

from chalicelib.domain.clients import ALL_SCOPES, DEFAULT_SCOPES, Caller, parse_scopes
from chalicelib.storage.clients import CachedDirectory
from ops import api_keys
from toolkit.local_keys import DEFAULT_CLIENT, FILE_NAME, LocalKeys


def test_scopes_parse_from_repeated_and_comma_separated_flags():
    assert parse_scopes(["submit,close", "admin"]) == {"submit", "close", "admin"}
    with pytest.raises(ValueError, match="unknown scope"):
        parse_scopes(["submit,root"])


def test_admin_reads_everyones_tasks_and_anyone_else_their_own():
    assert Caller("a", frozenset({"submit"})).owner == "a"
    assert Caller("ops", frozenset({"admin"})).owner is None
    assert not Caller("a", frozenset({"submit"})).may(frozenset({"close"}))


class Counting:
    def __init__(self) -> None:
        self.calls = 0

    def lookup(self, key_id: str) -> Caller | None:
        self.calls += 1
        return Caller("a", DEFAULT_SCOPES) if key_id == "known" else None


def test_the_directory_is_read_once_per_key_and_ttl():
    now = [0.0]
    source = Counting()
    cached = CachedDirectory(source, 60, clock=lambda: now[0])
    for _ in range(100):
        assert cached.lookup("known") == Caller("a", DEFAULT_SCOPES)
        assert cached.lookup("unknown") is None
    assert source.calls == 2
    now[0] = 61.0
    cached.lookup("known")
    assert source.calls == 3


def test_local_keys_are_stored_as_hashes_and_compared_exactly(tmp_path):
    keys = LocalKeys(tmp_path)
    issued = keys.create("alice", scopes={"submit", "close"})
    text = (tmp_path / FILE_NAME).read_text()
    assert issued.value not in text and "sha256" in text
    assert stat.S_IMODE((tmp_path / FILE_NAME).stat().st_mode) == 0o600
    assert keys.find(issued.value) is not None
    for near in (" " + issued.value, issued.value + " ", issued.value.upper(), issued.value[:-1]):
        assert keys.find(near) is None
    assert keys.lookup(issued.id) == Caller("alice", frozenset({"submit", "close"}))
    assert keys.lookup("nope") is None


def test_a_key_file_from_before_hashing_keeps_working(tmp_path):
    (tmp_path / FILE_NAME).write_text(json.dumps({"keys": [
        {"client": "old", "id": "abc", "value": "the-old-plain-value", "created": "2026-01-01T00:00:00+00:00"}]}))
    keys = LocalKeys(tmp_path)
    assert keys.find("the-old-plain-value").client == "old"
    assert keys.lookup("abc").scopes == DEFAULT_SCOPES
    keys.create("new")  # a write stores every key hashed
    assert "the-old-plain-value" not in (tmp_path / FILE_NAME).read_text()


def test_make_runs_own_key_has_every_scope_and_is_kept_across_starts(tmp_path):
    keys = LocalKeys(tmp_path)
    first = keys.ensure(DEFAULT_CLIENT)
    assert keys.lookup(first.id).scopes == ALL_SCOPES
    again = keys.ensure(DEFAULT_CLIENT)
    assert (again.value, again.id) == (first.value, first.id) and keys.own_key() == first.value
    given = keys.ensure(DEFAULT_CLIENT, "an-api-key-given-to-make-run")
    assert keys.find("an-api-key-given-to-make-run").scopes == tuple(s for s in ("submit", "close", "moderate", "admin"))
    assert keys.own_key() == given.value


def test_make_api_key_grants_and_lists_scopes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOCAL_STATE_DIR", str(tmp_path))
    assert api_keys.main(["--make-run", "create", "bob", "--scope", "submit,close"]) == 0
    assert "scopes   submit,close" in capsys.readouterr().out
    assert api_keys.main(["--make-run", "list", "--json"]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["client"] == "bob" and row["scopes"] == ["submit", "close"]
    assert api_keys.main(["--make-run", "create", "eve", "--scope", "root"]) == api_keys.EXIT_USAGE

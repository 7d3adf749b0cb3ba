"""The model registry's S3 layout and rules (chalicelib/serving/registry.py), on an in-process
S3 server (moto) that the functions' signed GETs reach over HTTP like LocalStack's."""

from __future__ import annotations

import datetime
import http.client
import json
import os
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from unittest import mock

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.serving import registry
from chalicelib.serving.model import DEFAULT_MODEL_PATH, PROBE_ADS, load_model
from chalicelib.serving.registry import ALIASES_KEY, LIVE, SHADOW, ObjectReader, RegistryError, artifact_key
from tests.helpers import free_port
from toolkit.registry import Registry, bootstrap

BUCKET = "model-registry-test"
PACKAGED = DEFAULT_MODEL_PATH.read_bytes()


def variant(**changes: object) -> bytes:
    """The packaged artifact as another version (other thresholds, say)."""
    return json.dumps(json.loads(PACKAGED) | changes, ensure_ascii=False).encode()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture()
def reg(endpoint: str) -> Iterator[Registry]:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    r = Registry(s3, BUCKET)
    r.ensure_bucket()
    yield r
    for version in s3.list_object_versions(Bucket=BUCKET).get("Versions", []):
        s3.delete_object(Bucket=BUCKET, Key=version["Key"], VersionId=version["VersionId"])


class Wire:
    """A TCP server that records the head of each HTTP request exactly as it
    arrives (request line and headers) and answers 404."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            with conn:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    head += chunk
                self.heads.append(head)
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def connect(self, conn: http.client.HTTPConnection) -> None:
        # Whatever host, port and scheme the reader addresses: plain TCP to this server,
        # so what http.client writes (its Host header above all) is what gets recorded.
        conn.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def close(self) -> None:
        self._server.close()


@pytest.fixture(scope="module")
def wire() -> Iterator[Wire]:
    server = Wire()
    yield server
    server.close()


ENDPOINTS = [None, "http://127.0.0.1:4566", "http://localhost:4566/", "https://s3.example.com:443",
             "http://minio.internal:80", "https://minio.internal:9000/", "HTTPS://S3.Example.COM"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    bucket=st.from_regex(r"\A[a-z0-9][a-z0-9.-]{1,40}[a-z0-9]\Z"),
    key=st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40),
    region=st.sampled_from(["us-east-1", "eu-west-1", "ap-southeast-2", "cn-north-1"]),
    endpoint=st.sampled_from(ENDPOINTS),
    token=st.one_of(st.none(), st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=60)),
    etag=st.one_of(st.none(), st.from_regex(r'\A"[0-9a-f]{32}"\Z')),
)
def test_what_the_reader_sends_verifies_as_s3_would_check_it(
    wire: Wire, bucket: str, key: str, region: str, endpoint: str | None, token: str | None, etag: str | None
) -> None:
    """S3 recomputes the signature from the request as received: the literal Host
    header, the path, the signed headers. Here botocore's signer does that from
    the bytes http.client wrote, so a Host that differs from the one signed (an
    endpoint that spells out its default port, say) fails."""
    at = datetime.datetime(2026, 11, 29, 12, 30, 5, tzinfo=datetime.UTC)
    env = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalr/K7MDENG+bPxRfiCY"}
    if token:
        env["AWS_SESSION_TOKEN"] = token
    before = len(wire.heads)
    with mock.patch.dict(os.environ, env), mock.patch("botocore.auth.get_current_datetime", lambda: at), \
            mock.patch.object(http.client.HTTPConnection, "connect", lambda conn: wire.connect(conn)), \
            mock.patch.object(http.client.HTTPSConnection, "connect", lambda conn: wire.connect(conn)):
        os.environ.pop("AWS_ENDPOINT_URL_S3", None)
        if token is None:
            os.environ.pop("AWS_SESSION_TOKEN", None)
        reader = ObjectReader(bucket, region=region, endpoint=endpoint)
        with pytest.raises(KeyError):
            reader.get(key, if_none_match=etag)
        [head] = wire.heads[before:]
        request_line, *header_lines = head.decode("latin-1").split("\r\n\r\n")[0].split("\r\n")
        method, target, _ = request_line.split(" ")
        sent = dict(line.split(": ", 1) for line in header_lines)
        signed = sent["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
        # The server's view: the signed headers as they arrived, Host included literally.
        received = AWSRequest(method=method, url=f"http://{sent['Host']}{target}",
                              headers={name: value for name, value in sent.items() if name.lower() in signed})
        credentials = BotoCredentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], token)
        S3SigV4Auth(credentials, "s3", region).add_auth(received)
    assert sent["Authorization"] == received.headers["Authorization"]
    assert sent["X-Amz-Date"] == "20261129T123005Z"
    assert target == urllib.parse.urlsplit(reader.url(key)).path
    assert ":443" not in sent["Host"] and not sent["Host"].endswith(":80")
    assert (sent.get("X-Amz-Security-Token"), sent.get("If-None-Match")) == (token, etag)


def test_the_reader_addresses_localstack_path_style_and_aws_virtual_hosted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    assert ObjectReader("b1", region="eu-west-1").url("versions/a b/model.json") == \
        "https://b1.s3.eu-west-1.amazonaws.com/versions/a%20b/model.json"
    assert ObjectReader("b1", region="cn-north-1").url("k") == "https://b1.s3.cn-north-1.amazonaws.com.cn/k"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566/")
    assert ObjectReader("b1").url("aliases.json") == "http://127.0.0.1:4566/b1/aliases.json"


def test_publish_is_immutable_and_idempotent(reg: Registry) -> None:
    first, meta = reg.publish_artifact(PACKAGED, source="test", by="tester")
    assert first.created and first.version == load_model().version
    assert meta["probe"] == load_model().predict_proba(PROBE_ADS)
    assert meta["metrics"]["precision"] and meta["data_fingerprint"] and meta["sklearn"]
    again, _ = reg.publish_artifact(PACKAGED, source="test", by="someone else")
    assert not again.created and again.sha256 == first.sha256
    with pytest.raises(RegistryError, match="already published with other content"):
        reg.publish_artifact(variant(threshold=0.6), source="test", by="tester")
    assert reg.artifact(first.version) == PACKAGED
    assert [m["version"] for m in reg.versions()] == [first.version]
    assert reg.metadata(first.version)["published_by"] == "tester"  # the first publication stands


def test_an_artifact_the_runtime_cannot_serve_is_not_published(reg: Registry) -> None:
    with pytest.raises(RegistryError, match="not a runtime artifact"):
        reg.publish_artifact(variant(version="lr-bad", threshold=0.1, review_threshold=0.5), source="t", by="t")
    with pytest.raises(RegistryError, match="not a runtime artifact"):
        reg.publish_artifact(variant(version="lr-bad", format=99), source="t", by="t")
    assert reg.versions() == []


def test_promote_rollback_unset_and_their_audit(reg: Registry) -> None:
    a = reg.publish_artifact(PACKAGED, source="t", by="t")[0].version
    b = reg.publish_artifact(variant(version="lr-b", threshold=0.6), source="t", by="t")[0].version
    c = reg.publish_artifact(variant(version="lr-c", threshold=0.7), source="t", by="t")[0].version
    reg.promote(LIVE, a, "ann")
    reg.promote(LIVE, b, "bob")
    before, after = reg.promote(LIVE, c, "cid")
    assert (before.version, after.version, after.history) == (b, c, (b, a))
    assert after.sha256 == reg.metadata(c)["sha256"] and after.probe
    _, back = reg.promote(LIVE, "", "dan", rollback=True)
    assert (back.version, back.history) == (b, (a,))
    _, back = reg.promote(LIVE, "", "dan", rollback=True)
    assert (back.version, back.history) == (a, ())
    with pytest.raises(RegistryError, match="no earlier version"):
        reg.promote(LIVE, "", "dan", rollback=True)
    same, still = reg.promote(LIVE, a, "eve")
    assert same is still  # already there: nothing written
    reg.promote(SHADOW, c, "fay")
    assert reg.unset(SHADOW, "gus").version == c and reg.unset(SHADOW, "gus") is None
    with pytest.raises(RegistryError, match="no version 'lr-nope'"):
        reg.promote(LIVE, "lr-nope", "hal")
    actions = [(r["action"], r["alias"], r["from"], r["to"], r["by"]) for r in reversed(reg.audit(limit=20))]
    assert actions == [("promote", LIVE, None, a, "ann"), ("promote", LIVE, a, b, "bob"), ("promote", LIVE, b, c, "cid"),
                       ("rollback", LIVE, c, b, "dan"), ("rollback", LIVE, b, a, "dan"),
                       ("promote", SHADOW, None, c, "fay"), ("unset", SHADOW, c, None, "gus")]


def test_a_promote_that_loses_a_race_redoes_its_change(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    a = reg.publish_artifact(PACKAGED, source="t", by="t")[0].version
    b = reg.publish_artifact(variant(version="lr-b", threshold=0.6), source="t", by="t")[0].version
    c = reg.publish_artifact(variant(version="lr-c", threshold=0.7), source="t", by="t")[0].version
    reg.promote(LIVE, a, "t")
    real, raced = reg.aliases, []

    def aliases_then_someone_else_promotes() -> tuple[dict, str | None]:
        found = real()
        if not raced:  # between this promote's read and its write, another sets shadow
            raced.append(True)
            Registry(reg.s3, BUCKET).promote(SHADOW, c, "other")
        return found

    monkeypatch.setattr(reg, "aliases", aliases_then_someone_else_promotes)
    reg.promote(LIVE, b, "me")
    aliases, _ = real()
    assert aliases[LIVE].version == b and aliases[LIVE].history == (a,)
    assert aliases[SHADOW].version == c  # the other change was not lost


def test_the_functions_reader_gets_conditionally(reg: Registry, endpoint: str) -> None:
    reader = ObjectReader(BUCKET, endpoint=endpoint)
    with pytest.raises(KeyError):
        reader.get(ALIASES_KEY)
    live, published = bootstrap(reg, PACKAGED, "make run")
    assert published is not None and live is not None and live.version == published.version
    assert bootstrap(reg, PACKAGED, "make run") == (live, None)  # not empty any more: untouched
    fetched = reader.get(ALIASES_KEY)
    assert fetched is not None and registry.parse_aliases(fetched.body)[LIVE] == live
    assert reader.get(ALIASES_KEY, if_none_match=fetched.etag) is None  # 304
    body = reader.get(artifact_key(live.version))
    assert body is not None and body.body == PACKAGED
    with pytest.raises(registry.RegistryUnavailable):
        ObjectReader(BUCKET, endpoint=f"http://127.0.0.1:{free_port()}", timeout_seconds=1).get(ALIASES_KEY)


def test_a_changed_artifact_is_repaired_by_publishing_it_again(reg: Registry) -> None:
    published, _ = reg.publish_artifact(PACKAGED, source="t", by="t")
    reg.s3.put_object(Bucket=BUCKET, Key=artifact_key(published.version), Body=PACKAGED + b" ")  # tampered
    with pytest.raises(RegistryError, match="refused: its stored bytes have sha256"):
        reg.promote(LIVE, published.version, "ann")  # verified before the alias moves
    assert reg.aliases() == ({}, None)
    repaired, _ = reg.publish_artifact(PACKAGED, source="t", by="t")
    assert (repaired.created, repaired.repaired) == (False, registry.sha256(PACKAGED + b" "))
    assert reg.artifact(published.version) == PACKAGED
    assert reg.promote(LIVE, published.version, "ann")[1].version == published.version
    again, _ = reg.publish_artifact(PACKAGED, source="t", by="t")  # identical content: idempotent, nothing to repair
    assert (again.created, again.repaired) == (False, None)


def test_promote_refuses_an_artifact_that_does_not_score_as_published(reg: Registry) -> None:
    published, meta = reg.publish_artifact(PACKAGED, source="t", by="t")
    doc = json.loads(PACKAGED)
    doc["intercept"] += 1.0  # loads, but scores the probe ads otherwise
    bad = json.dumps(doc, ensure_ascii=False).encode()
    meta = dict(meta, sha256=registry.sha256(bad))  # as if published so: the sha256 check alone would pass
    reg.s3.put_object(Bucket=BUCKET, Key=artifact_key(published.version), Body=bad)
    reg.s3.put_object(Bucket=BUCKET, Key=f"versions/{published.version}/metadata.json", Body=json.dumps(meta).encode())
    with pytest.raises(RegistryError, match="refused: ValueError: probe ads scored"):
        reg.promote(LIVE, published.version, "ann")


def test_promoting_shadows_version_to_live_clears_shadow(reg: Registry) -> None:
    a = reg.publish_artifact(PACKAGED, source="t", by="t")[0].version
    b = reg.publish_artifact(variant(version="lr-b", threshold=0.6), source="t", by="t")[0].version
    reg.promote(LIVE, a, "ann")
    reg.promote(SHADOW, b, "ann")
    change = reg.promote_change(LIVE, b, "bob")
    assert change.after.version == b and change.cleared is not None and change.cleared[1].version == b
    aliases, _ = reg.aliases()
    assert set(aliases) == {LIVE} and aliases[LIVE].version == b
    assert reg.audit(limit=1)[0] | {"at": None} == {"at": None, "alias": SHADOW, "action": "unset (now live)",
                                                     "by": "bob", "from": b, "to": None}


def test_the_state_directory_copy_brings_a_registry_back_after_a_restart(
        reg: Registry, tmp_path, endpoint: str) -> None:
    mirrored = Registry(reg.s3, BUCKET, tmp_path / "mirror")
    a = mirrored.publish_artifact(PACKAGED, source="t", by="t")[0].version
    b = mirrored.publish_artifact(variant(version="lr-b", threshold=0.6), source="t", by="t")[0].version
    mirrored.promote(LIVE, a, "ann")
    mirrored.promote(LIVE, b, "bob")
    before = (mirrored.aliases()[0], [m["version"] for m in mirrored.versions()], mirrored.audit())
    # A restarted LocalStack: the bucket is back, empty.
    for page in reg.s3.get_paginator("list_object_versions").paginate(Bucket=BUCKET):
        for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
            reg.s3.delete_object(Bucket=BUCKET, Key=v["Key"], VersionId=v["VersionId"])
    assert mirrored.versions() == []
    live, published = bootstrap(Registry(reg.s3, BUCKET, tmp_path / "mirror"), PACKAGED, "make run")
    assert published is None and live is not None and live.version == b
    assert (mirrored.aliases()[0], [m["version"] for m in mirrored.versions()], mirrored.audit()) == before
    assert mirrored.promote(LIVE, "", "cid", rollback=True)[1].version == a  # the history came back too

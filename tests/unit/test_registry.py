"""The model registry's S3 layout and rules (chalicelib/serving/registry.py), on an in-process
S3 server (moto) that the functions' signed GETs reach over HTTP like LocalStack's."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from chalicelib.serving import registry
from chalicelib.serving.model import DEFAULT_MODEL_PATH, PROBE_ADS, load_model
from chalicelib.serving.registry import (
    ALIASES_KEY,
    LIVE,
    SHADOW,
    Credentials,
    ObjectReader,
    Registry,
    RegistryError,
    artifact_key,
    bootstrap,
    sign_get,
)
from tests.helpers import free_port

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


def test_the_signature_is_botocores(monkeypatch: pytest.MonkeyPatch) -> None:
    at = datetime.datetime(2026, 11, 29, 12, 30, 5, tzinfo=datetime.UTC)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: at)
    for token in (None, "session-token"):
        ours = sign_get("127.0.0.1:4566", "/bucket/versions/lr-1/model.json", "eu-west-1",
                        Credentials("AKID", "secret", token), now=at.timestamp())
        request = AWSRequest(method="GET", url="http://127.0.0.1:4566/bucket/versions/lr-1/model.json")
        S3SigV4Auth(BotoCredentials("AKID", "secret", token), "s3", "eu-west-1").add_auth(request)
        assert ours["Authorization"] == request.headers["Authorization"]
        assert ours["x-amz-date"] == request.headers["X-Amz-Date"] == "20261129T123005Z"


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
    reg.promote(LIVE, a, "t")
    real, raced = reg.aliases, []

    def aliases_then_someone_else_promotes() -> tuple[dict, str | None]:
        found = real()
        if not raced:  # between this promote's read and its write, another sets shadow
            raced.append(True)
            Registry(reg.s3, BUCKET).promote(SHADOW, b, "other")
        return found

    monkeypatch.setattr(reg, "aliases", aliases_then_someone_else_promotes)
    reg.promote(LIVE, b, "me")
    aliases, _ = real()
    assert aliases[LIVE].version == b and aliases[LIVE].history == (a,)
    assert aliases[SHADOW].version == b  # the other change was not lost


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

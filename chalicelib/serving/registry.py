"""The model registry, read side: what the functions read of the versions and
named aliases in one S3 bucket. The write side (publish, promote, audit) is the
tooling's: toolkit/registry.py.

    versions/<version>/model.json      the runtime artifact (chalicelib/serving/model.py's format); never overwritten
    versions/<version>/metadata.json   what it is: metrics, thresholds, data fingerprint, sklearn
                                       version, sha256 of model.json, probe scores, who published it and when
    aliases.json                       {"aliases": {"live": {...}, "shadow": {...}}}: the version each
                                       alias names, with its sha256, probe scores and earlier versions
    audit/<time>-<alias>.json          one record per alias change, never overwritten

Versions are immutable and aliases.json changes by compare-and-swap (toolkit/registry.py).
Why one S3 object for the aliases and not SSM Parameter Store: docs/models.md#the-registry-ship-a-model-without-a-deploy.

The functions only read, with `ObjectReader` (two signed GETs per cold start,
then a conditional GET every MODEL_ALIAS_CHECK_SECONDS).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any, NamedTuple

ALIASES_KEY = "aliases.json"
VERSIONS_PREFIX = "versions/"
LIVE = "live"
SHADOW = "shadow"
DOC_FORMAT = 1


def artifact_key(version: str) -> str:
    return f"{VERSIONS_PREFIX}{version}/model.json"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class RegistryError(RuntimeError):
    """The registry cannot do what was asked (the message says why)."""


class RegistryUnavailable(RegistryError):
    """S3 did not answer, or answered with an error: try again later."""


class AliasEntry(NamedTuple):
    """What aliases.json says about one alias. (NamedTuples here, not dataclasses: a
    frozen dataclass costs ~0.6 ms to define, and this module is on the cold path.)"""

    version: str
    sha256: str
    probe: tuple[float, ...]
    promoted_at: str
    promoted_by: str
    history: tuple[str, ...] = ()  # the versions it named before, newest first

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AliasEntry:
        return cls(str(data["version"]), str(data["sha256"]), tuple(float(p) for p in data["probe"]),
                   str(data["promoted_at"]), str(data["promoted_by"]), tuple(str(v) for v in data.get("history", ())))

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "sha256": self.sha256, "probe": list(self.probe),
                "promoted_at": self.promoted_at, "promoted_by": self.promoted_by, "history": list(self.history)}


def parse_aliases(body: bytes) -> dict[str, AliasEntry]:
    doc = json.loads(body)
    if doc.get("format") != DOC_FORMAT:
        raise RegistryError(f"{ALIASES_KEY}: unsupported format {doc.get('format')!r}")
    return {name: AliasEntry.from_json(entry) for name, entry in doc["aliases"].items()}


# --- reading: GETs signed by botocore's S3 signer, sent with http.client -------------

class Fetched(NamedTuple):
    body: bytes
    etag: str


class ObjectReader:
    """GET objects of one bucket, signed with AWS Signature Version 4.

    Not a botocore client: building an S3 client parses S3's 1.4 MB service
    model and its endpoint rules (50-90 ms here), more than the rest of a
    model's cold start; two GETs need neither, only its signer.
    tests/unit/test_registry.py checks what is sent on the wire against
    botocore's signer over generated buckets, keys, endpoints and credentials. Credentials come from
    the environment, as Lambda provides them (else botocore's chain); the
    endpoint from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (LocalStack, path
    style), else the bucket's virtual-hosted AWS address.
    """

    def __init__(self, bucket: str, *, region: str | None = None, endpoint: str | None = None,
                 timeout_seconds: float = 3.0) -> None:
        self.bucket = bucket
        self.region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            # Lower case: the signer signs the host in lower case, and http.client
            # sends it as written (tests/unit/test_registry.py).
            parts = urllib.parse.urlsplit(endpoint.rstrip("/"))
            self._base = f"{parts._replace(netloc=parts.netloc.lower()).geturl()}/{bucket}/"
        else:
            suffix = "amazonaws.com.cn" if self.region.startswith("cn-") else "amazonaws.com"
            self._base = f"https://{bucket}.s3.{self.region}.{suffix}/"
        self._timeout = timeout_seconds

    def url(self, key: str) -> str:
        return self._base + urllib.parse.quote(key, safe="/")

    def get(self, key: str, if_none_match: str | None = None) -> Fetched | None:
        """The object, or None if its ETag is still `if_none_match`. Raises
        KeyError if it does not exist, RegistryUnavailable on any other failure."""
        import http.client

        address = self.url(key)
        condition = {"If-None-Match": if_none_match} if if_none_match else None
        headers = signed_headers(address, self.region, _credentials(), condition)
        url = urllib.parse.urlsplit(address)
        connection_class = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        conn = connection_class(url.netloc, timeout=self._timeout)
        try:
            conn.request("GET", url.path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise RegistryUnavailable(f"GET s3://{self.bucket}/{key}: {type(exc).__name__}: {exc}") from exc
        finally:
            conn.close()
        if resp.status == 200:
            return Fetched(body, resp.getheader("ETag", ""))
        if resp.status == 304:
            return None
        if resp.status == 404:
            raise KeyError(f"s3://{self.bucket}/{key}")
        code = re.search(rb"<Code>([^<]*)</Code>", body)
        raise RegistryUnavailable(f"GET s3://{self.bucket}/{key}: HTTP {resp.status}"
                                  + (f" {code.group(1).decode(errors='replace')}" if code else ""))


def _credentials() -> Any:
    """Lambda's credentials from its environment; elsewhere botocore's chain
    (a profile, SSO, instance metadata)."""
    import botocore.credentials

    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return botocore.credentials.Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"],
                                                env.get("AWS_SESSION_TOKEN") or None)
    import botocore.session

    found = botocore.session.get_session().get_credentials()
    if found is None:
        raise RegistryUnavailable("no AWS credentials to read the model registry with")
    return found


def signed_headers(url: str, region: str, credentials: Any, headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """The headers of a SigV4-signed S3 GET of `url`, by botocore's own S3 signer.

    botocore signs the Host that http.client sends: the URL's host, with its port
    unless it is the scheme's default. Both functions have imported botocore.auth
    by the time they read the registry (their SQS client is built first), so this
    costs no import on the cold path.
    """
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method="GET", url=url, headers=dict(headers or {}))
    S3SigV4Auth(credentials, "s3", region).add_auth(request)
    return dict(request.headers.items())

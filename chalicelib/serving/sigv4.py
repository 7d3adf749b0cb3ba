"""AWS Signature Version 4 for the registry's S3 GETs, without botocore.

The scorer's first batch no longer builds an SQS client (chalicelib/awsclient.py, Lazy),
so botocore's signer was the one thing on its cold path that imported botocore (auth,
compat, urllib3, credentials: most of the model's part of a cold start with the registry,
docs/performance.md#where-the-time-goes). A GET with an empty body needs little of it:
the canonical request, the string to sign and the HMAC chain of the AWS documentation
("Create a signed AWS API request"), done the way botocore's S3SigV4Auth does them (the
path as sent, not normalised; the empty payload's SHA-256 signed; every header but the
few botocore leaves out). tests/unit/test_registry.py has S3's side, botocore's signer,
verify what http.client sends over generated buckets, keys, endpoints and credentials.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping
from typing import NamedTuple

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# Headers botocore does not sign (botocore.auth.SIGNED_HEADERS_BLACKLIST).
_UNSIGNED = frozenset({"expect", "transfer-encoding", "user-agent", "x-amzn-trace-id"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Credentials(NamedTuple):
    access_key: str
    secret_key: str
    token: str | None = None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def host_of(url: str) -> str:
    """The Host http.client sends for `url`: its host, with the port unless it is the scheme's default."""
    parts = urllib.parse.urlsplit(url)
    if parts.port is not None and _DEFAULT_PORTS.get(parts.scheme) == parts.port:
        return parts.hostname or ""
    return parts.netloc


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signed_get_headers(url: str, region: str, credentials: Credentials,
                       headers: Mapping[str, str] | None = None, service: str = "s3") -> dict[str, str]:
    """`headers` plus what a SigV4-signed GET of `url` with an empty body sends:
    X-Amz-Date, X-Amz-Content-SHA256, X-Amz-Security-Token (with a session token)
    and Authorization. The Host header is signed as host_of(url) (http.client adds it)."""
    now = _now()
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    out = dict(headers or {})
    out["X-Amz-Content-SHA256"] = EMPTY_SHA256
    out["X-Amz-Date"] = amz_date
    if credentials.token:
        out["X-Amz-Security-Token"] = credentials.token
    signed = {name.lower(): " ".join(value.split()) for name, value in out.items() if name.lower() not in _UNSIGNED}
    signed["host"] = host_of(url)
    names = sorted(signed)
    parts = urllib.parse.urlsplit(url)
    canonical = "\n".join([
        "GET",
        parts.path or "/",  # S3: the path as sent, not normalised
        parts.query,  # the registry's GETs have none
        "".join(f"{name}:{signed[name]}\n" for name in names),
        ";".join(names),
        EMPTY_SHA256,
    ])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{credentials.secret_key}".encode(), day), region), service), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
                            f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return out

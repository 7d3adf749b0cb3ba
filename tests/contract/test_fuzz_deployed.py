"""Schemathesis against the packaged stack deployed to LocalStack (API Gateway
-> API Lambda), with the API key, from the /openapi.json the deployed API
serves: every phase and every check, API Gateway's own answers included (403
without the key, what it does with undeclared methods).

The deployment is the session's `deployed` (tests/conftest.py), the one
tests/e2e/test_deployed.py runs on; after the last test here it is settled for the next module
(its closed ads reopened, its tasks finished, its DLQ emptied, its webhook endpoints gone).
"""

from __future__ import annotations

import json
import os

import pytest

from tests.contract.contract_fuzz import run
from tests.e2e.deployed_stack import Deployed

pytestmark = pytest.mark.e2e
# API Gateway's usage plan allows 20 requests/s (burst 40): against AWS the fuzz would have to stay
# under it (CONTRACT_RATE_LIMIT=15/s). LocalStack does not throttle (test_deployed.py's
# test_what_localstack_enforces_of_api_keys), so here the fuzz runs as fast as the stack answers:
# 1,900 cases in 55 s instead of 134 s at 15/s.
RATE_LIMIT = os.environ.get("CONTRACT_RATE_LIMIT") or None
# Fewer examples per operation than the chalice local run (40): the app code behind both is
# the same and is fuzzed there; what this run adds is API Gateway's part (keys, gateway
# responses, the Lambda proxy's encoding), which a smaller sample exercises.
# CONTRACT_MAX_EXAMPLES still raises it.
MAX_EXAMPLES = 12
# The one check left out: a method a path does not have never reaches the
# function here; API Gateway answers 403 "Missing Authentication Token" (as
# AWS does), where the check wants 405 + Allow. The document says so, and the
# chalice local run checks the API's own 405.
DISABLED = {"unsupported_method": "API Gateway answers an undeclared method with 403 before the API runs"}


def test_the_deployed_api_keeps_its_contract(deployed: Deployed, capsys: pytest.CaptureFixture[str]) -> None:
    report = run(deployed.d.api_url, api_key=deployed.d.api_key, rate_limit=RATE_LIMIT, disabled_checks=DISABLED,
                 max_examples=int(os.environ.get("CONTRACT_MAX_EXAMPLES") or MAX_EXAMPLES))
    with capsys.disabled():
        print(f"\n[contract, deployed API] {report.summary()}")
    # 34: seed 000's root paths (issue 25), the review loop's 5 routes and the console's 3 files
    # (issue 21), the 8 webhook routes (issue 22)
    assert report.cases > 0 and len(report.operations) == 34, report.summary()
    assert not report.problems(), "\n\n".join(report.problems())
    assert report.server_errors() == 0, report.summary()


def test_the_deployed_api_serves_the_same_document_and_docs(deployed: Deployed) -> None:
    import urllib.request

    from app import app
    from chalicelib.api.handlers import STATIC
    from chalicelib.api.openapi import document

    def get(path: str) -> tuple[str, bytes]:
        with urllib.request.urlopen(deployed.d.api_url + path, timeout=30) as resp:
            return resp.headers["Content-Type"], resp.read()

    media_type, raw = get("/openapi.json")
    assert media_type == "application/json" and json.loads(raw) == json.loads(json.dumps(document(app.routes)))
    media_type, page = get("/docs")
    assert media_type.startswith("text/html") and b'src="docs/swagger-ui-bundle.js"' in page
    # Served through API Gateway byte for byte (text types: no binary media type involved).
    for name in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert get(f"/docs/{name}")[1] == (STATIC / name).read_bytes(), name


def test_idempotency_and_batch_through_api_gateway(deployed: Deployed) -> None:
    import urllib.error
    import urllib.request
    import uuid

    def post(path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict]:
        req = urllib.request.Request(deployed.d.api_url + path, data=body, method="POST", headers={
            "x-api-key": deployed.d.api_key, "Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), json.loads(err.read())

    key = {"Idempotency-Key": str(uuid.uuid4())}
    status, headers, first = post("/moderation/async_predict?item_id=3", headers=key)
    assert status == 202 and "Idempotent-Replayed" not in headers, first
    status, headers, again = post("/async_predict?item_id=3", headers=key)
    assert (status, headers.get("Idempotent-Replayed"), again) == (202, "true", first)
    status, _, mismatch = post("/moderation/async_predict?item_id=4", headers=key)
    assert (status, mismatch["code"]) == (409, "idempotency_key_mismatch")
    status, _, out = post("/moderation/async_predict/batch", json.dumps({"item_ids": [5, 987654, 6]}).encode())
    assert status == 202 and [("task_id" in i, i["item_id"]) for i in out["items"]] == [(True, 5), (False, 987654), (True, 6)]

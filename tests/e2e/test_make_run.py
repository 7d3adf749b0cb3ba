"""End to end: start the stack exactly as `make run` does, drive it over real
HTTP, and look at the queues with the AWS CLI.

The stack gets its own ports and state dir, so it runs beside a developer's
`make run`. LocalStack is the real one, in host mode (installed by `make test`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.e2e.e2e_stack import Stack, http, settle
from tests.helpers import insert_ad

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(shared_make_run: Stack) -> Iterator[Stack]:
    yield shared_make_run  # tests/conftest.py: one make run per test process
    settle(shared_make_run)


def poll_result(stack: Stack, task_id: int, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status, body = http("GET", f"{stack.api}/moderation/moderation_result/{task_id}", key=stack.api_key)
        assert status == 200
        if body["status"] in ("completed", "failed") or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def test_submit_and_poll_until_completed(stack: Stack):
    status, body = http("POST", f"{stack.api}/moderation/async_predict?item_id=1", key=stack.api_key)
    assert status == 202 and body["status"] == "pending" and body["message"] == "Moderation request accepted"
    result = poll_result(stack, body["task_id"])
    assert result["status"] == "completed"
    assert 0 <= result["probability"] <= 1 and isinstance(result["is_violation"], bool)
    assert result["model_version"].startswith("lr-")
    # The older clients' paths answer too.
    status, alias = http("POST", f"{stack.api}/async_predict?item_id=2", key=stack.api_key)
    assert status == 202
    assert http("GET", f"{stack.api}/moderation_result/{alias['task_id']}", key=stack.api_key)[0] == 200


def test_what_happened_to_an_ad(stack: Stack):
    # Ops' question over HTTP: the ad's tasks, newest first, each as its result route shows it. An ad of
    # its own: the stack is shared, and the contract fuzz submits the demo ads too.
    item = insert_ad(stack.database_url)
    first = http("POST", f"{stack.api}/moderation/async_predict?item_id={item}", key=stack.api_key)[1]["task_id"]
    second = http("POST", f"{stack.api}/moderation/async_predict?item_id={item}", key=stack.api_key)[1]["task_id"]
    results = [poll_result(stack, t) for t in (second, first)]
    status, page = http("GET", f"{stack.api}/moderation/tasks?item_id={item}&limit=1", key=stack.api_key)
    assert status == 200 and page["tasks"] == results[:1] and page["next_cursor"]
    status, page = http("GET", f"{stack.api}/moderation/tasks?item_id={item}&limit=1&cursor={page['next_cursor']}",
                        key=stack.api_key)
    assert status == 200 and page["tasks"] == results[1:] and page["next_cursor"] is None
    status, page = http("GET", f"{stack.api}/moderation/tasks?status=bogus", key=stack.api_key)
    assert status == 400 and page["parameter"] == "status"


def test_sync_routes_and_health(stack: Stack):
    status, body = http("POST", f"{stack.api}/moderation/simple_predict?item_id=3", key=stack.api_key)
    assert status == 200 and set(body) >= {"is_violation", "probability"}
    ad = {"seller_id": 1, "is_verified_seller": True, "item_id": 1, "name": "Велосипед", "description": "Почти новый",
          "category": 2, "images_qty": 4}
    status, body = http("POST", f"{stack.api}/moderation/predict", json.dumps(ad).encode(), key=stack.api_key)
    assert status == 200 and body["is_violation"] is False
    status, body = http("GET", f"{stack.api}/health")
    assert status == 200 and body["checks"]["database"]["ok"] and body["checks"]["queue"]["ok"]


def test_bad_input_over_http(stack: Stack):
    assert http("POST", f"{stack.api}/moderation/async_predict", key=stack.api_key)[0] == 400
    assert http("POST", f"{stack.api}/moderation/async_predict?item_id=1.5", key=stack.api_key)[0] == 400
    assert http("POST", f"{stack.api}/moderation/async_predict?item_id=99999999", key=stack.api_key)[0] == 404
    assert http("GET", f"{stack.api}/moderation/moderation_result/99999999", key=stack.api_key)[0] == 404
    assert http("POST", f"{stack.api}/moderation/predict", b"{", key=stack.api_key)[0] == 400
    big = b'{"name": "' + b"x" * 50_000 + b'"}'
    status, body = http("POST", f"{stack.api}/moderation/predict", big, key=stack.api_key)
    assert status == 413 and body["code"] == "payload_too_large"


def test_queues_and_dlq_with_the_aws_cli(stack: Stack):
    main = stack.aws("sqs", "get-queue-attributes", "--queue-url", stack.queue_url("moderation"),
                     "--attribute-names", "All")["Attributes"]
    assert json.loads(main["RedrivePolicy"])["maxReceiveCount"] == 3
    dlq_url = stack.queue_url("moderation_dlq")
    # A poison message, sent the way a broken producer would.
    stack.aws("sqs", "send-message", "--queue-url", stack.queue_url("moderation"), "--message-body", "not json")
    deadline = time.monotonic() + 20
    while True:
        attrs = stack.aws("sqs", "get-queue-attributes", "--queue-url", dlq_url, "--attribute-names", "All")
        if int(attrs["Attributes"]["ApproximateNumberOfMessages"]) >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert attrs["Attributes"]["MessageRetentionPeriod"] == "1209600"
    assert int(attrs["Attributes"]["ApproximateNumberOfMessages"]) == 1
    peek = stack.aws("sqs", "receive-message", "--queue-url", dlq_url, "--visibility-timeout", "0")
    envelope = json.loads(peek["Messages"][0]["Body"])
    assert envelope["original_message"] == "not json" and envelope["error"].startswith("malformed message body")
    assert envelope["error_kind"] == "permanent" and envelope["retry_count"] == 1


def test_outside_the_routes_answers_are_json(stack: Stack):
    # devstack.chalice_local: no HTML 501 page, no API Gateway 403, no Chalice-shaped 405.
    status, body = http("TRACE", f"{stack.api}/health")
    assert status == 405 and body["code"] == "method_not_allowed"
    status, body = http("GET", f"{stack.api}/no/such/route")
    assert status == 404 and body["code"] == "not_found"
    status, body = http("DELETE", f"{stack.api}/moderation/moderation_result/1")
    assert status == 405 and body["code"] == "method_not_allowed"


def test_the_api_key_is_enforced_as_on_the_deployed_api(stack: Stack):
    """make run prints its key; its key store holds hashes only, and its own key's value in a file of its
    own (docs/clients.md); without the key a moderation route is the deployed 403."""
    from toolkit.local_keys import FILE_NAME, OWN_KEY_FILE, digest, forbidden_response

    assert f"API key    {stack.api_key}" in stack.log.read_text()
    store = (stack.state_dir / FILE_NAME).read_text()
    assert stack.api_key not in store and digest(stack.api_key) in store
    assert (stack.state_dir / OWN_KEY_FILE).read_text().strip() == stack.api_key
    for method, path in (("POST", "/moderation/async_predict?item_id=1"), ("GET", "/moderation/moderation_result/1")):
        status, body = http(method, f"{stack.api}{path}")
        assert (status, body) == (403, json.loads(forbidden_response()[1])), (method, path)
        assert http(method, f"{stack.api}{path}", key="x" * 40)[0] == 403
    assert http("GET", f"{stack.api}/health")[0] == 200  # open, like /docs and /openapi.json

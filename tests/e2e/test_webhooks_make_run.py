"""Webhooks end to end under `make run` (issue 22; docs/webhooks.md): register over HTTP, complete
tasks, and receive them with a receiver that verifies each delivery with the `standardwebhooks`
package (toolkit/webhook_receiver.py); the runner delivers the webhooks queue to the sender as
it delivers the task queue to the scorer."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.e2e_stack import Stack, http, settle
from toolkit.webhook_receiver import Receiver, serve

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(shared_make_run: Stack) -> Iterator[Stack]:
    yield shared_make_run  # tests/conftest.py: one make run per test process
    settle(shared_make_run)


def test_completions_are_pushed_and_verified_and_a_rotation_signs_twice(stack: Stack):
    with serve(Receiver()) as receiver:
        status, endpoint = http("POST", f"{stack.api}/webhooks/endpoints", json.dumps(
            {"url": receiver.url + "/hook", "events": ["moderation.completed"]}).encode(), key=stack.api_key)
        assert status == 201, endpoint
        receiver.secrets["/hook"] = [endpoint["secret"]]
        tasks = [http("POST", f"{stack.api}/moderation/async_predict?item_id={i}", key=stack.api_key)[1]["task_id"]
                 for i in (1, 2, 3)]
        got = receiver.wait_for(3, 30, "moderation.completed")
        assert sorted(d.payload["data"]["task_id"] for d in got) == sorted(tasks)
        assert receiver.rejected == []
        status, rotated = http("POST", f"{stack.api}/webhooks/endpoints/{endpoint['id']}/rotate", key=stack.api_key)
        assert status == 200
        receiver.secrets["/hook"] = [rotated["secret"]]  # the receiver switches at once: the old one still signs too
        assert http("POST", f"{stack.api}/webhooks/endpoints/{endpoint['id']}/test", key=stack.api_key)[0] == 202
        [test] = receiver.wait_for(1, 30, "webhook.test")
        assert len(test.headers["webhook-signature"].split(" ")) == 2
        status, attempts = http("GET", f"{stack.api}/webhooks/endpoints/{endpoint['id']}/attempts", key=stack.api_key)
        assert status == 200 and {a["status_code"] for a in attempts["attempts"]} == {204}
        assert http("DELETE", f"{stack.api}/webhooks/endpoints/{endpoint['id']}", key=stack.api_key)[0] == 200

"""Webhooks on the stack deployed to LocalStack (issue 22; docs/webhooks.md): the API function
registers an endpoint (its secret sealed with the stack's KMS key), a task completes, the
`send_webhooks` function (its own queue and event source mapping) delivers it to a receiver that
verifies it with the `standardwebhooks` package; a rotation's delivery carries both signatures.
The receiver is on this machine over http, which only the LocalStack deployment allows
(infra/deploy_localstack.py LOCAL_WEBHOOK_ENV); the AWS template does not."""

from __future__ import annotations

import json

from standardwebhooks.webhooks import Webhook

from tests.e2e.deployed_stack import Deployed
from tests.e2e.test_deployed_clients import request
from tests.helpers import insert_ad
from toolkit.webhook_receiver import Receiver, serve


def test_a_completion_is_pushed_by_the_deployed_sender_and_a_rotation_signs_twice(deployed: Deployed) -> None:
    key = deployed.d.api_key
    with serve(Receiver()) as receiver:
        status, endpoint = request(deployed, "POST", "/webhooks/endpoints", key, json.dumps(
            {"url": receiver.url + "/hook", "events": ["moderation.completed"]}).encode())
        assert status == 201, endpoint
        old = endpoint["secret"]  # type: ignore[index]
        receiver.secrets["/hook"] = [old]
        [(stored,)] = deployed.sql("SELECT secret FROM webhook_endpoints WHERE id = %s", (endpoint["id"],))  # type: ignore[index]
        assert stored.startswith("kms:") and old.removeprefix("whsec_") not in stored  # sealed at rest
        status, body = request(deployed, "POST", f"/moderation/async_predict?item_id={insert_ad(deployed.database_url)}", key)
        assert status == 202, body
        [delivered] = receiver.wait_for(1, 90, "moderation.completed")
        assert delivered.payload["data"]["task_id"] == body["task_id"]  # type: ignore[index]
        assert delivered.payload["data"]["status"] == "completed" and receiver.rejected == []

        status, rotated = request(deployed, "POST", f"/webhooks/endpoints/{endpoint['id']}/rotate", key)  # type: ignore[index]
        assert status == 200, rotated
        assert request(deployed, "POST", f"/webhooks/endpoints/{endpoint['id']}/test", key)[0] == 202  # type: ignore[index]
        [test] = receiver.wait_for(1, 90, "webhook.test")
        assert len(test.headers["webhook-signature"].split(" ")) == 2
        for secret in (old, rotated["secret"]):  # type: ignore[index]
            assert Webhook(secret).verify(test.body, test.headers)["type"] == "webhook.test"
        status, attempts = request(deployed, "GET", f"/webhooks/endpoints/{endpoint['id']}/attempts", key)  # type: ignore[index]
        assert status == 200 and [a["status_code"] for a in attempts["attempts"]] == [204, 204]  # type: ignore[index]

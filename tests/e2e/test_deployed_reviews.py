"""The review loop on the stack deployed to LocalStack (issue 21; docs/reviews.md): keys made by
`make api-key` (a moderator's scope registered through the migrate function), migrations/V10 applied by
the deploy, claim -> verdict -> appeal -> another moderator's verdict, the statement of reasons, and
the console served by the API function."""

from __future__ import annotations

import json

import urllib3

from tests.e2e.deployed_stack import Deployed
from tests.e2e.test_deployed import api_key_command
from tests.e2e.test_deployed_clients import request
from tests.reviews_helpers import scored_task


def test_claim_verdict_and_appeal_on_the_deployed_stack(deployed: Deployed) -> None:
    made = {}
    for client, scope in (("mod-x", "moderate"), ("mod-y", "moderate"), ("shop-r", "submit")):
        result = api_key_command(deployed, "create", client, "--scope", scope, "--json")
        assert result.returncode == 0, result.stderr
        made[client] = json.loads(result.stdout)["key"]
    try:
        mod_x, mod_y, shop = made["mod-x"], made["mod-y"], made["shop-r"]
        task = scored_task(deployed.database_url, "shop-r", "review", probability=0.33)
        status, page = request(deployed, "GET", "/moderation/reviews?kind=review&limit=100", mod_x)
        assert status == 200 and task in [t["task_id"] for t in page["tasks"]], page  # type: ignore[index]
        assert request(deployed, "GET", "/moderation/reviews", shop)[0] == 403
        assert request(deployed, "POST", f"/moderation/reviews/{task}/claim", mod_x, b"")[0] == 200
        status, body = request(deployed, "POST", f"/moderation/reviews/{task}/claim", mod_y, b"")
        assert (status, body["code"]) == (409, "lease_held")  # type: ignore[index]
        block = json.dumps({"decision": "block", "reason": "fraud"}).encode()
        status, body = request(deployed, "POST", f"/moderation/reviews/{task}/verdict", mod_y, block)
        assert (status, body["code"]) == (409, "lease_required")  # type: ignore[index]
        status, body = request(deployed, "POST", f"/moderation/reviews/{task}/verdict", mod_x,
                               json.dumps({"decision": "block", "reason": "rude"}).encode())
        assert (status, body["code"]) == (400, "invalid_body")  # type: ignore[index]
        status, decided = request(deployed, "POST", f"/moderation/reviews/{task}/verdict", mod_x, block)
        assert status == 200, decided
        assert (decided["decided_by"], decided["model_decision"], decided["reviewed_by"]) == ("human", "review", "mod-x")  # type: ignore[index]
        status, statement = request(deployed, "GET", f"/moderation/moderation_result/{task}/statement", shop)
        assert status == 200 and statement["automated_decision"] == "AUTOMATED_DECISION_NOT_AUTOMATED"  # type: ignore[index]
        appeal = json.dumps({"task_id": task, "reason": "a real listing"}).encode()
        assert request(deployed, "POST", "/moderation/appeals", shop, appeal)[0] == 202
        assert request(deployed, "POST", "/moderation/appeals", shop, appeal)[1]["code"] == "already_appealed"  # type: ignore[index]
        assert request(deployed, "POST", f"/moderation/reviews/{task}/claim", mod_x, b"")[1]["code"] == "four_eyes"  # type: ignore[index]
        assert request(deployed, "POST", f"/moderation/reviews/{task}/claim", mod_y, b"")[0] == 200
        allow = json.dumps({"decision": "allow", "reason": "other"}).encode()
        status, final = request(deployed, "POST", f"/moderation/reviews/{task}/verdict", mod_y, allow)
        assert status == 200 and (final["appeal"], final["decision"]) == ("overturned", "allow")  # type: ignore[index]
        status, trail = request(deployed, "GET", f"/moderation/moderation_result/{task}/events", shop)
        kinds = [e["kind"] for e in trail["events"]]  # type: ignore[index]
        assert kinds[-5:] == ["claimed", "reviewed", "appealed", "claimed", "appeal_decided"]
        status, health = request(deployed, "GET", "/health/pipeline", None)
        assert health["reviews"] is not None  # type: ignore[index]
        page_resp = urllib3.request("GET", deployed.d.api_url + "/console", timeout=30, retries=False)
        assert page_resp.status == 200 and b"Moderator console" in page_resp.data
        assert page_resp.headers["Content-Type"].startswith("text/html")
    finally:
        for client in made:
            api_key_command(deployed, "revoke", client, "--yes")

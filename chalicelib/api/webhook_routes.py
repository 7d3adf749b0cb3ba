"""The webhook routes' entries in the route table (issue 22; docs/webhooks.md), added to
chalicelib/api/routes.py's OPERATIONS and SCOPES when the package chalicelib.api is imported
(its __init__), so every reader of the table (auth, openapi, the tests) sees them."""

from __future__ import annotations

from chalicelib.api import routes
from chalicelib.api.routes import BAD_BODY, TOO_LARGE, UNAVAILABLE, UNSUPPORTED, Operation, Param, Reply
from chalicelib.api.webhook_models import (
    Attempts,
    Deleted,
    Endpoint,
    EndpointCreated,
    EndpointList,
    EndpointRequest,
    EndpointRotated,
    Queued,
    ReplayRequest,
)
from chalicelib.domain.clients import SUBMIT
from chalicelib.domain.webhooks import ENDPOINT_ID_PATTERN

TAG = "webhooks"
ENDPOINT_ID = Param("endpoint_id", "path", "The endpoint's id (`ep_...`)",
                    schema={"type": "string", "pattern": ENDPOINT_ID_PATTERN})
NOT_FOUND = Reply("`endpoint_not_found`: no such endpoint (or another client's)", routes.Error)
BASE = "/webhooks/endpoints"
ONE = BASE + "/{endpoint_id}"

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("POST", BASE): Operation(
        "create_webhook_endpoint", "Register a webhook endpoint", TAG,
        {201: Reply("The endpoint and its `whsec_` secret, shown this once", EndpointCreated), 400: BAD_BODY,
         413: TOO_LARGE, 415: UNSUPPORTED, 503: UNAVAILABLE},
        description="Events are POSTed to `url`, signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, "
        "`webhook-signature`), at least once, in no promised order (docs/webhooks.md).",
        body=EndpointRequest),
    ("GET", BASE): Operation(
        "list_webhook_endpoints", "The client's webhook endpoints (no secrets)", TAG,
        {200: Reply("The endpoints, oldest first", EndpointList), 503: UNAVAILABLE}),
    ("DELETE", ONE): Operation(
        "delete_webhook_endpoint", "Delete an endpoint and its deliveries", TAG,
        {200: Reply("Deleted", Deleted), 404: NOT_FOUND, 503: UNAVAILABLE}, params=(ENDPOINT_ID,)),
    ("POST", ONE + "/rotate"): Operation(
        "rotate_webhook_secret", "A new secret; the old one signs too for 24 h", TAG,
        {200: Reply("The new secret, shown once", EndpointRotated), 404: NOT_FOUND, 503: UNAVAILABLE},
        params=(ENDPOINT_ID,)),
    ("POST", ONE + "/enable"): Operation(
        "enable_webhook_endpoint", "Enable a disabled endpoint again (it is sent `webhook.endpoint_enabled`)", TAG,
        {200: Reply("The endpoint", Endpoint), 404: NOT_FOUND, 503: UNAVAILABLE}, params=(ENDPOINT_ID,)),
    ("POST", ONE + "/test"): Operation(
        "test_webhook_endpoint", "Send the endpoint a `webhook.test` event", TAG,
        {202: Reply("Queued", Queued), 404: NOT_FOUND, 503: UNAVAILABLE}, params=(ENDPOINT_ID,)),
    ("GET", ONE + "/attempts"): Operation(
        "webhook_attempts", "The endpoint's delivery attempts: event, time, status code, latency, error", TAG,
        {200: Reply("The latest attempts, newest first", Attempts), 404: NOT_FOUND, 503: UNAVAILABLE},
        params=(ENDPOINT_ID,)),
    ("POST", ONE + "/replay"): Operation(
        "replay_webhook_endpoint", "Deliver again every event since a time (after an outage)", TAG,
        {202: Reply("Queued: the same `webhook-id`s and bodies, the schedule started over", Queued), 400: BAD_BODY,
         404: NOT_FOUND, 413: TOO_LARGE, 415: UNSUPPORTED, 503: UNAVAILABLE},
        params=(ENDPOINT_ID,), body=ReplayRequest),
}

routes.OPERATIONS.update(OPERATIONS)
routes.SCOPES.update({key: frozenset({SUBMIT}) for key in OPERATIONS})

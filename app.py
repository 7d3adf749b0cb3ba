"""ad-moderation: routes and event handlers only. The work is in chalicelib/.

Every function of the package (api_handler, score, reconcile, migrate) loads
this module, so it imports Chalice and nothing else at the top: each handler
imports its own modules on first call, and a cold start never pays for what
only another function needs (docs/performance.md#where-the-time-goes).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from chalice import Chalice, Rate
from chalice.app import Request

from chalicelib.config import QUEUE_NAME, WEBHOOK_QUEUE_NAME, batch_size, check_at_init

# On Lambda: no database configured (or TLS required without its CA bundle) fails
# the function's init with a message naming what is missing, not its first request.
# Not `migrate`'s: its handler reports the same error to CloudFormation as FAILED.
check_at_init(except_handler="app.migrate")

# configure_logs=False: the app logs through Powertools (chalicelib/logs.py), whose logger
# has this same name; Chalice's own handler on it printed every line a second time, unstructured.
app = Chalice(app_name="ad-moderation", configure_logs=False)

# Routes that read only the query string accept any Content-Type: clients
# (and `curl -d ''`) send a form type on an empty POST, which Chalice would
# otherwise refuse with 415.
ANY_BODY = ["*/*"]


def api() -> ModuleType:
    from chalicelib.api import handlers as module  # the HTTP layer: the API function only

    return module


def _request() -> Request:
    # Chalice sets current_request for every HTTP invocation; the Optional in
    # its type only covers event handlers.
    request = app.current_request
    if request is None:
        raise RuntimeError("no current request outside an HTTP invocation")
    return request


# Routes with a JSON body take any Content-Type too: chalicelib/api/handlers.py answers
# a wrong one with the contract's 415 instead of Chalice's own error body.
# The root paths are seed 000's; every route answers each client in its pinned contract
# (chalicelib/api/auth.py decides; docs/clients.md#contracts).
@app.route("/moderation/predict", methods=["POST"], api_key_required=True, content_types=ANY_BODY)
@app.route("/predict", methods=["POST"], api_key_required=True, content_types=ANY_BODY)
def predict() -> Any:
    return api().predict(_request())


@app.route("/moderation/simple_predict", methods=["POST"], api_key_required=True, content_types=ANY_BODY)
@app.route("/simple_predict", methods=["POST"], api_key_required=True, content_types=ANY_BODY)
def simple_predict() -> Any:
    return api().simple_predict(_request())


@app.route("/moderation/async_predict", methods=["POST"], api_key_required=True, content_types=ANY_BODY)
@app.route("/async_predict", methods=["POST"], api_key_required=True, content_types=ANY_BODY)
def async_predict() -> Any:
    return api().submit(_request(), app.lambda_context)


@app.route("/moderation/async_predict/batch", methods=["POST"], api_key_required=True, content_types=ANY_BODY)
def async_predict_batch() -> Any:
    return api().submit_batch(_request(), app.lambda_context)


# Seed 002's route: the ad is closed, and new moderation of it is 404.
@app.route("/moderation/close", methods=["POST"], api_key_required=True, content_types=ANY_BODY)
@app.route("/close", methods=["POST"], api_key_required=True, content_types=ANY_BODY)
def close() -> Any:
    return api().close(_request())


# Reads need the API key too: task ids are sequential, so an open read route
# would let anyone enumerate every verdict. /health stays open for probes.
@app.route("/moderation/moderation_result/{task_id}", methods=["GET"], api_key_required=True)
@app.route("/moderation_result/{task_id}", methods=["GET"], api_key_required=True)
def moderation_result(task_id: str) -> Any:
    return api().result(_request(), task_id)


# Ops' view of the tasks table: by ad, by status, newest first (docs/operations/tasks.md).
@app.route("/moderation/tasks", methods=["GET"], api_key_required=True)
def tasks() -> Any:
    return api().tasks(_request())


@app.route("/moderation/moderation_result/{task_id}/events", methods=["GET"], api_key_required=True)
def moderation_events(task_id: str) -> Any:
    return api().events(_request(), task_id)


# The human review loop (issue 21; docs/reviews.md): chalicelib/api/reviews.py.
def reviews_api() -> ModuleType:
    from chalicelib.api import reviews as module

    return module


# Webhooks (issue 22; docs/webhooks.md): a client's endpoints. chalicelib/api/webhooks.py.
def hooks() -> ModuleType:
    from chalicelib.api import webhooks as module

    return module


@app.route("/moderation/reviews", methods=["GET"], api_key_required=True)
def review_queue() -> Any:
    return reviews_api().queue(_request())


@app.route("/moderation/reviews/{task_id}/claim", methods=["POST"], api_key_required=True, content_types=ANY_BODY)
def review_claim(task_id: str) -> Any:
    return reviews_api().claim(_request(), task_id)


@app.route("/moderation/reviews/{task_id}/verdict", methods=["POST"], api_key_required=True, content_types=ANY_BODY)
def review_verdict(task_id: str) -> Any:
    return reviews_api().verdict(_request(), task_id)


@app.route("/moderation/appeals", methods=["POST"], api_key_required=True, content_types=ANY_BODY)
def appeals() -> Any:
    return reviews_api().appeal(_request())


@app.route("/moderation/moderation_result/{task_id}/statement", methods=["GET"], api_key_required=True)
def statement(task_id: str) -> Any:
    return reviews_api().statement(_request(), task_id)


# The moderator console: served by the API itself, like /docs (works offline). Open: the page
# asks for the moderator's key and sends it with each call.
@app.route("/console", methods=["GET"])
def console() -> Any:
    return reviews_api().console_asset("index.html")


@app.route("/console/console.js", methods=["GET"])
def console_script() -> Any:
    return reviews_api().console_asset("console.js")


@app.route("/console/console.css", methods=["GET"])
def console_stylesheet() -> Any:
    return reviews_api().console_asset("console.css")


@app.route("/webhooks/endpoints", methods=["POST"], api_key_required=True, content_types=ANY_BODY)
def create_webhook_endpoint() -> Any:
    return hooks().create(_request())


@app.route("/webhooks/endpoints", methods=["GET"], api_key_required=True)
def list_webhook_endpoints() -> Any:
    return hooks().list_endpoints(_request())


@app.route("/webhooks/endpoints/{endpoint_id}", methods=["DELETE"], api_key_required=True)
def delete_webhook_endpoint(endpoint_id: str) -> Any:
    return hooks().delete(_request(), endpoint_id)


@app.route("/webhooks/endpoints/{endpoint_id}/rotate", methods=["POST"], api_key_required=True, content_types=ANY_BODY)
def rotate_webhook_secret(endpoint_id: str) -> Any:
    return hooks().rotate(_request(), endpoint_id)


@app.route("/webhooks/endpoints/{endpoint_id}/enable", methods=["POST"], api_key_required=True, content_types=ANY_BODY)
def enable_webhook_endpoint(endpoint_id: str) -> Any:
    return hooks().enable(_request(), endpoint_id)


@app.route("/webhooks/endpoints/{endpoint_id}/test", methods=["POST"], api_key_required=True, content_types=ANY_BODY)
def test_webhook_endpoint(endpoint_id: str) -> Any:
    return hooks().test(_request(), endpoint_id)


@app.route("/webhooks/endpoints/{endpoint_id}/attempts", methods=["GET"], api_key_required=True)
def webhook_attempts(endpoint_id: str) -> Any:
    return hooks().attempts(_request(), endpoint_id)


@app.route("/webhooks/endpoints/{endpoint_id}/replay", methods=["POST"], api_key_required=True, content_types=ANY_BODY)
def replay_webhook_endpoint(endpoint_id: str) -> Any:
    return hooks().replay(_request(), endpoint_id)


@app.route("/health", methods=["GET"])
def health() -> Any:
    return api().health(_request())


# The pipeline's view (docs/architecture.md#health): 503 when tasks are not being completed.
@app.route("/health/pipeline", methods=["GET"])
def pipeline_health() -> Any:
    return api().pipeline_health(_request())


# The contract (chalicelib/api/models.py) as OpenAPI 3.1, and Swagger UI over it.
# Open, like /health: documentation is not a secret.
@app.route("/openapi.json", methods=["GET"])
def openapi() -> Any:
    return api().openapi(_request(), app.routes)


@app.route("/docs", methods=["GET"])
def docs() -> Any:
    return api().docs(_request())


@app.route("/docs/swagger-ui-bundle.js", methods=["GET"])
def docs_script() -> Any:
    return api().docs_asset("swagger-ui-bundle.js")


@app.route("/docs/swagger-ui.css", methods=["GET"])
def docs_stylesheet() -> Any:
    return api().docs_asset("swagger-ui.css")


# Errors Chalice answers itself (405 for an undeclared method) get the
# contract's Error shape too.
@app.middleware("http")
def contract_errors(event: Request, get_response: Any) -> Any:
    return api().contract_errors(event, get_response)


# The scoring function. Chalice cannot switch on ReportBatchItemFailures for
# the event source mapping (aws/chalice#2029); infra/ does that after packaging.
# Without it Lambda would ignore the partial batch response returned here.
@app.on_sqs_message(queue=QUEUE_NAME, batch_size=batch_size())
def score(event: Any) -> dict[str, Any]:
    from chalicelib import deps

    # Chalice's SQSRecord hides messageId and attributes; use the raw records.
    return deps.scorer().handle(event.to_dict()["Records"])


# The webhook sender (issue 22; docs/webhooks.md): its own queue, its own function. The
# retries are its own schedule; batchItemFailures only when it cannot record an attempt.
@app.on_sqs_message(queue=WEBHOOK_QUEUE_NAME, batch_size=10)
def send_webhooks(event: Any) -> dict[str, Any]:
    from chalicelib import deps

    return deps.webhook_sender().handle(event.to_dict()["Records"])


@app.schedule(Rate(1, unit=Rate.MINUTES))
def reconcile(event: Any) -> dict[str, Any]:
    from chalicelib import deps

    report = deps.reconciler().run()
    webhooks = _sweep_webhooks(deps)
    expired = deps.reviews().expire_leases()  # leases that ran out unused go back to the queue, with their event
    reviews = deps.reviews().backlog(emit_as="reconcile")  # the review backlog's metrics (docs/reviews.md)
    return {
        "webhooks_sent": webhooks,
        "reviews_waiting": reviews["review"] + reviews["appeal"],
        "leases_expired": len(expired),
        "resent": len(report.resent),
        "unreceived": len(report.unreceived),
        "failed_stuck": len(report.failed_stuck),
        "purged": report.purged,
    }


def _sweep_webhooks(deps: ModuleType) -> int:
    """Send the webhook deliveries that are due and have no message (a retry held past SQS's
    15 minutes, a send lost after a commit); -1 if that failed (the next run tries again)."""
    from chalicelib.errors import ModerationError

    try:
        return int(deps.webhook_sender().sweep())
    except ModerationError:
        return -1


# Runs the SQL migrations; a CloudFormation custom resource calls it on every
# deploy (infra/resources.json). See chalicelib/operations/deploy_migrations.py.
@app.lambda_function(name="migrate")
def migrate(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from chalicelib import deps
    from chalicelib.operations import deploy_migrations

    return deploy_migrations.handler(event, context, deps.database_url)

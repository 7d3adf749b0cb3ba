"""ad-moderation: routes and event handlers only. The work is in chalicelib/."""

from __future__ import annotations

from typing import Any

from chalice import Chalice, Rate, Response
from chalice.app import Request

from chalicelib import deploy_migrations, deps
from chalicelib.config import batch_size, get_settings
from chalicelib.http import handle_errors, json_response
from chalicelib.requests import parse_ad, parse_id, query_id

app = Chalice(app_name="ad-moderation")

# Routes that read only the query string accept any Content-Type: clients
# (and `curl -d ''`) send a form type on an empty POST, which Chalice would
# otherwise refuse with 415.
ANY_BODY = ["*/*"]


def _request() -> Request:
    # Chalice sets current_request for every HTTP invocation; the Optional in
    # its type only covers event handlers.
    request = app.current_request
    if request is None:
        raise RuntimeError("no current request outside an HTTP invocation")
    return request


@app.route("/moderation/predict", methods=["POST"], api_key_required=True)
@handle_errors
def predict() -> Any:
    ad = parse_ad(_request().raw_body, get_settings().max_body_bytes)
    return deps.service().predict(ad.features())


@app.route("/moderation/simple_predict", methods=["POST"], api_key_required=True, content_types=ANY_BODY)
@handle_errors
def simple_predict() -> Any:
    return deps.service().simple_predict(query_id(_request().query_params, "item_id"))


@app.route("/moderation/async_predict", methods=["POST"], api_key_required=True, content_types=ANY_BODY)
@app.route("/async_predict", methods=["POST"], api_key_required=True, content_types=ANY_BODY)
@handle_errors
def async_predict() -> Response:
    body = deps.service().submit(query_id(_request().query_params, "item_id"))
    return json_response(body, 202)


@app.route("/moderation/moderation_result/{task_id}", methods=["GET"])
@app.route("/moderation_result/{task_id}", methods=["GET"])
@handle_errors
def moderation_result(task_id: str) -> Any:
    return deps.service().result(parse_id(task_id, "task_id"))


@app.route("/health", methods=["GET"])
@handle_errors
def health() -> Response:
    ok, body = deps.service().health()
    return json_response(body, 200 if ok else 503)


# The scoring function. Chalice cannot switch on ReportBatchItemFailures for
# the event source mapping (aws/chalice#2029); infra/ does that after packaging.
# Without it Lambda would ignore the partial batch response returned here.
@app.on_sqs_message(queue="moderation", batch_size=batch_size())
def score(event: Any) -> dict[str, Any]:
    # Chalice's SQSRecord hides messageId and attributes; use the raw records.
    return deps.scorer().handle(event.to_dict()["Records"])


@app.schedule(Rate(1, unit=Rate.MINUTES))
def reconcile(event: Any) -> dict[str, Any]:
    report = deps.reconciler().run()
    return {"resent": len(report.resent), "failed_stuck": len(report.failed_stuck)}


# Runs the SQL migrations; a CloudFormation custom resource calls it on every
# deploy (infra/resources.json). See chalicelib/deploy_migrations.py.
@app.lambda_function(name="migrate")
def migrate(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return deploy_migrations.handler(event, context)

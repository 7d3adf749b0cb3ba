"""devstack.consumers: `make run` refuses a queue that a Lambda event source mapping reads.

Against moto (in-process SQS + Lambda: creating a function and a mapping
needs no Docker, only invoking would), and against an HTTP server with no
Lambda API at all. tests/e2e/test_two_stacks.py does it against a deployed
LocalStack stack.
"""

from __future__ import annotations

import http.server
import io
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from devstack.consumers import QueueConsumedError, ensure_no_other_consumer
from tests.helpers import http_server

ENDPOINT = "http://127.0.0.1:4566"


def client(service: str) -> Any:
    return boto3.client(service, region_name="us-east-1")


def mapping_on(queue_name: str, function: str = "ad-moderation-dev-score") -> str:
    sqs = client("sqs")
    url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    role = client("iam").create_role(RoleName=f"{function}-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as z:
        z.writestr("handler.py", "def handle(event, context):\n    return {}\n")
    lam = client("lambda")
    lam.create_function(FunctionName=function, Runtime="python3.11", Role=role, Handler="handler.handle",
                        Code={"ZipFile": code.getvalue()})
    return str(lam.create_event_source_mapping(EventSourceArn=arn, FunctionName=function, BatchSize=10)["UUID"])


def test_a_queue_nobody_else_reads_is_fine(sqs):
    assert ensure_no_other_consumer(ENDPOINT, "moderation", client=client) == []
    # A mapping on another queue is not ours to worry about.
    mapping_on("moderation_dlq", "dlq-reader")
    assert ensure_no_other_consumer(ENDPOINT, "moderation", client=client) == []


def test_no_such_queue_means_no_consumer(sqs):
    assert ensure_no_other_consumer(ENDPOINT, "not-created-yet", client=client) is None


def test_a_mapping_on_the_queue_is_refused_with_what_to_do(sqs):
    uuid = mapping_on("moderation")
    with pytest.raises(QueueConsumedError) as err:
        ensure_no_other_consumer(ENDPOINT, "moderation", client=client)
    text = str(err.value)
    assert uuid in text and "function ad-moderation-dev-score (Enabled)" in text
    assert ENDPOINT in text and "'moderation'" in text
    assert "make deploy-localstack-stop" in text and "AWS_ENDPOINT_URL=" in text


def test_a_disabled_mapping_does_not_poll_so_it_is_no_conflict(sqs):
    uuid = mapping_on("moderation")
    client("lambda").update_event_source_mapping(UUID=uuid, Enabled=False)
    assert ensure_no_other_consumer(ENDPOINT, "moderation", client=client) == []


@pytest.fixture
def no_lambda_api() -> Iterator[str]:
    """An endpoint that answers 404 to everything, like a plain SQS emulator asked for Lambda."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with http_server(NotFound) as url:
        yield url


def test_an_endpoint_without_a_lambda_api_has_no_mappings(sqs, no_lambda_api: str):
    def factory(service: str) -> Any:
        if service == "lambda":
            return boto3.client("lambda", region_name="us-east-1", endpoint_url=no_lambda_api)
        return client(service)

    assert ensure_no_other_consumer(no_lambda_api, "moderation", client=factory) is None

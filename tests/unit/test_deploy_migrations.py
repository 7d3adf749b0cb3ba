"""The migrate function's side of the CloudFormation custom resource protocol.

The ResponseURL is a real local HTTP server, so the PUT (method, empty content
type, JSON body) is exactly what CloudFormation's pre-signed S3 URL receives.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from chalicelib.operations import deploy_migrations as dm


class Receiver:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                receiver.requests.append({"path": self.path, "content_type": self.headers.get("Content-Type"), "body": body})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/bucket/key?X-Amz-Signature=abc"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


class Context:
    log_stream_name = "2026/11/23/[$LATEST]abc"

    def __init__(self, remaining_ms: int = 120_000) -> None:
        self._deadline = time.monotonic() + remaining_ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


def event(receiver: Receiver, request_type: str, **extra: Any) -> dict[str, Any]:
    return {
        "RequestType": request_type,
        "ResponseURL": receiver.url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/ad-moderation-dev/1",
        "RequestId": "req-1",
        "ResourceType": "Custom::DatabaseMigrations",
        "LogicalResourceId": "DatabaseMigrations",
        "ResourceProperties": {"ServiceToken": "arn:aws:lambda:...", "MigrationsHash": "x"},
        **extra,
    }


def test_create_applies_and_reports_success(receiver: Receiver):
    body = dm.handle_custom_resource(event(receiver, "Create"), Context(), migrate=lambda: ["V1__a", "V2__b"])
    (req,) = receiver.requests
    assert req["path"].startswith("/bucket/key?X-Amz-Signature")
    assert req["content_type"] == ""  # the pre-signed URL is signed without one
    assert req["body"] == body
    assert body["Status"] == "SUCCESS" and body["Data"] == {"Applied": "V1__a,V2__b", "AppliedCount": "2"}
    assert body["PhysicalResourceId"] == "DatabaseMigrations-schema"
    assert (body["StackId"], body["RequestId"], body["LogicalResourceId"]) == (
        "arn:aws:cloudformation:us-east-1:123456789012:stack/ad-moderation-dev/1",
        "req-1",
        "DatabaseMigrations",
    )


def test_update_keeps_the_physical_id_and_reports_up_to_date(receiver: Receiver):
    body = dm.handle_custom_resource(
        event(receiver, "Update", PhysicalResourceId="DatabaseMigrations-schema"), Context(), migrate=lambda: []
    )
    assert body["Status"] == "SUCCESS" and body["PhysicalResourceId"] == "DatabaseMigrations-schema"
    assert body["Data"]["Applied"] == "none"


def test_a_failing_migration_is_reported_as_failed(receiver: Receiver):
    def boom() -> list[str]:
        raise RuntimeError("relation users already exists")

    body = dm.handle_custom_resource(event(receiver, "Create"), Context(), migrate=boom)
    assert receiver.requests[0]["body"]["Status"] == "FAILED"
    assert body["Reason"].startswith("RuntimeError: relation users already exists")
    assert Context.log_stream_name in body["Reason"]


def test_delete_never_touches_the_database(receiver: Receiver):
    called = []
    delete = event(receiver, "Delete", PhysicalResourceId="DatabaseMigrations-schema")
    body = dm.handle_custom_resource(delete, Context(), migrate=lambda: called.append(1) or [])
    assert body["Status"] == "SUCCESS" and called == []


def test_a_hanging_database_still_gets_an_answer_before_the_lambda_timeout(receiver: Receiver):
    def hang() -> list[str]:
        time.sleep(30)
        return []

    started = time.monotonic()
    body = dm.handle_custom_resource(event(receiver, "Create"), Context(remaining_ms=11_000), migrate=hang)
    assert time.monotonic() - started < 4  # 11 s left - 10 s margin = 1 s
    assert body["Status"] == "FAILED" and "TimeoutError" in body["Reason"]
    assert receiver.requests[0]["body"]["Status"] == "FAILED"


def test_the_reason_fits_in_a_response(receiver: Receiver):
    def long_error() -> list[str]:
        raise ValueError("x" * 10_000)

    body = dm.handle_custom_resource(event(receiver, "Create"), Context(), migrate=long_error)
    assert len(json.dumps(body)) < 4096


def test_a_package_without_sql_files_fails_clearly(tmp_path: Path):
    with pytest.raises(dm.MigrationsMissing, match="make package"):
        dm.run("postgresql://unused", directory=tmp_path)


def test_handler_routes_custom_resource_events(receiver: Receiver, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(dm, "run", lambda url: ["V1__a"] if url == "postgresql://db" else [])
    out = dm.handler(event(receiver, "Create"), Context(), database_url=lambda: "postgresql://db")
    assert out["Status"] == "SUCCESS" and receiver.requests
    assert dm.handler({}, Context(), database_url=lambda: "postgresql://db") == {"applied": ["V1__a"]}


def test_migrations_hash_changes_with_any_sql_file(tmp_path: Path):
    (tmp_path / "V1__a.sql").write_text("CREATE TABLE a (id int);")
    first = dm.migrations_hash(tmp_path)
    assert dm.migrations_hash(tmp_path) == first
    (tmp_path / "V1__a.sql").write_text("CREATE TABLE a (id bigint);")
    assert dm.migrations_hash(tmp_path) != first

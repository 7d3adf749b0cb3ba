"""Apply the SQL migrations from inside Lambda, as a step of every deploy.

The `migrate` function (app.py) is the ServiceToken of the CloudFormation
custom resource `DatabaseMigrations` (infra/resources.json). CloudFormation
invokes it on Create and on every Update, i.e. whenever `make package` produced
a new package (infra/package.py stamps the resource with the hashes of the SQL
files and of deployment.zip). The functions that use the database depend on
that resource, so new code is only rolled out after its schema is in place; a
failed migration fails the deploy and CloudFormation rolls back.

The SQL ships with the function: only app.py, chalicelib/ and requirements.txt
are packaged, so `make package` copies `migrations/*.sql` (the one source of
truth) into `chalicelib/migrations_sql/` (git-ignored) before `chalice package`.

The cfn-response protocol is implemented here with urllib (no extra
dependency): whatever happens, a SUCCESS or FAILED document is PUT to the
pre-signed ResponseURL before the function's own timeout, because a custom
resource that never answers blocks the stack for an hour.

Invoked directly (`aws lambda invoke --function-name ad-moderation-dev-migrate`)
with any other event, it just applies pending migrations and returns them.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from chalicelib.logs import logger

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations_sql"
# Stop waiting for the migrations this long before Lambda would kill us, so
# there is always time left to tell CloudFormation that we failed.
RESPONSE_MARGIN_SECONDS = 10.0
# Used when there is no Lambda context (tests, direct calls).
DEFAULT_DEADLINE_SECONDS = 110.0
# CloudFormation rejects response bodies over 4,096 bytes; keep the reason short.
MAX_REASON_CHARS = 1000
_SEND_ATTEMPTS = 4


class MigrationsMissing(RuntimeError):
    """The package holds no SQL files: it was built without `make package`."""


def sql_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    return sorted(directory.glob("*.sql"))


def migrations_hash(directory: Path) -> str:
    """sha256 over the names and contents of the SQL files (infra/package.py uses it too)."""
    digest = hashlib.sha256()
    for path in sql_files(directory):
        digest.update(path.name.encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def run(database_url: str, directory: Path = MIGRATIONS_DIR, *, default_client: str | None = None) -> list[str]:
    """Apply pending migrations; return the ids applied (empty when up to date)."""
    if not sql_files(directory):
        raise MigrationsMissing(
            f"no SQL migrations in {directory}: build the package with `make package`, which copies migrations/*.sql there"
        )
    from chalicelib.storage.migrations import apply_migrations

    return apply_migrations(database_url, directory, default_client=default_client)


def handler(event: Mapping[str, Any], context: Any, database_url: Callable[[], str]) -> dict[str, Any]:
    """Entry point of the `migrate` Lambda function. `database_url` is called inside
    the handler, so a missing setting or secret is a FAILED answer to CloudFormation."""

    if "clients" in event:  # make api-key's registrations (chalicelib/operations/clients.py)
        from chalicelib.operations import clients

        try:
            return clients.handle(event["clients"], database_url())
        except ValueError as exc:
            return {"error": str(exc)}

    def migrate() -> list[str]:
        url = database_url()
        applied = run(url)
        # The stack's own key (ClientApiKey): a client with every scope, as make run's own key.
        if key_id := (event.get("ResourceProperties") or {}).get("StackClientKeyId"):
            from chalicelib.operations import clients

            clients.register_stack_key(url, str(key_id))
        return applied

    if "RequestType" in event and "ResponseURL" in event:
        return handle_custom_resource(event, context, migrate=migrate)
    applied = migrate()
    logger.info("migrations applied", extra={"applied": applied})
    return {"applied": applied}


def handle_custom_resource(
    event: Mapping[str, Any],
    context: Any,
    *,
    migrate: Callable[[], list[str]],
    send: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the migrations for Create/Update, nothing for Delete; always answer CloudFormation."""
    request_type = str(event["RequestType"])
    # A stable physical id: CloudFormation never sees a "replacement", so an
    # Update is never followed by a Delete of the old resource.
    physical_id = str(event.get("PhysicalResourceId") or f"{event.get('LogicalResourceId', 'Migrations')}-schema")
    status, reason, data = "SUCCESS", "", {}
    try:
        if request_type in ("Create", "Update"):
            applied = _with_deadline(migrate, _seconds_left(context) - RESPONSE_MARGIN_SECONDS)
            data = {"Applied": ",".join(applied) or "none", "AppliedCount": str(len(applied))}
            logger.info("migrations applied", extra={"request_type": request_type, "applied": applied})
        else:
            # Delete (stack deleted or rolled back): never drop schema or data.
            logger.info("custom resource deleted; the database is left as it is")
    except Exception as exc:  # noqa: BLE001 - every failure must become a FAILED response
        logger.exception("migrations failed", extra={"request_type": request_type})
        status = "FAILED"
        stream = getattr(context, "log_stream_name", None)
        where = f" (log stream {stream})" if stream else ""
        reason = f"{type(exc).__name__}: {exc}"[:MAX_REASON_CHARS] + where
    body = {
        "Status": status,
        "Reason": reason or "see the function's log",
        "PhysicalResourceId": physical_id,
        "StackId": event.get("StackId"),
        "RequestId": event.get("RequestId"),
        "LogicalResourceId": event.get("LogicalResourceId"),
        "NoEcho": False,
        "Data": data,
    }
    (send or _put_response)(str(event["ResponseURL"]), body)
    return body


def _seconds_left(context: Any) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return DEFAULT_DEADLINE_SECONDS + RESPONSE_MARGIN_SECONDS
    return float(remaining()) / 1000.0


def _with_deadline(fn: Callable[[], list[str]], seconds: float) -> list[str]:
    """Run fn in a thread; raise TimeoutError if it has not finished in time.

    A database that drops packets can hang a connect for minutes; the thread
    is abandoned (Lambda freezes it) but CloudFormation still gets an answer.
    """
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            result["error"] = exc

    worker = threading.Thread(target=target, name="migrations", daemon=True)
    worker.start()
    worker.join(max(seconds, 1.0))
    if worker.is_alive():
        raise TimeoutError(f"migrations did not finish within {max(seconds, 1.0):.0f} s (database unreachable or locked?)")
    if "error" in result:
        raise result["error"]
    return list(result["value"])


def _put_response(url: str, body: dict[str, Any]) -> None:
    """PUT the response document to CloudFormation's pre-signed URL (cfn-response)."""
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"not an http(s) ResponseURL: {url[:40]!r}")
    data = json.dumps(body).encode("utf-8")
    # The pre-signed S3 URL is signed without a content type: send an empty one.
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url, data=data, method="PUT", headers={"Content-Type": "", "Content-Length": str(len(data))}
    )
    for attempt in range(1, _SEND_ATTEMPTS + 1):
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - scheme checked above
                logger.info("custom resource response sent", extra={"status": body["Status"], "http": resp.status})
                return
        except (urllib.error.URLError, OSError) as exc:
            logger.warning("could not send the custom resource response", extra={"attempt": attempt, "error": str(exc)})
            if attempt == _SEND_ATTEMPTS:
                raise
            time.sleep(attempt)

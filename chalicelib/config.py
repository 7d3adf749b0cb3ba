"""Settings from the environment, read once per process (at import time only on Lambda: check_at_init).

Every value but the database has a default; on AWS the stage config in
`.chalice/config.json` sets them, locally `make run` does. The database has
none on purpose: a function that silently used a local default would fail
later and more obscurely than one that says what is missing.
botocore itself honours `AWS_ENDPOINT_URL` (LocalStack) and
`AWS_DEFAULT_REGION`, so neither is threaded through by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# The queues, as infra/resources.json names them (a test checks they agree).
# app.py needs the main queue's name at import time for the event source.
QUEUE_NAME = "moderation"
DLQ_NAME = "moderation_dlq"
# The webhooks' own queue and DLQ (issue 22; chalicelib/webhooks/settings.py), for the sender's event source.
WEBHOOK_QUEUE_NAME = "webhooks"
WEBHOOK_DLQ_NAME = "webhooks_dlq"

# Batch size is fixed when Chalice builds the event source mapping, so it is
# read by app.py at import time; it has a default, so importing never fails.
DEFAULT_BATCH_SIZE = 10
# Relative paths in the settings (the CA bundle `make package` ships in the zip)
# are relative to the package root: /var/task on Lambda, the repository locally.
APP_ROOT = Path(__file__).resolve().parent.parent


class ConfigurationError(ValueError):
    """The environment does not describe a runnable service."""


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"environment variable {name} must be an integer, got {raw!r}") from exc


def _non_negative(name: str, default: int) -> int:
    value = _int(name, default)
    if value < 0:
        raise ConfigurationError(f"environment variable {name} must be 0 or more, got {value}")
    return value


def _positive_or_none(name: str) -> int | None:
    value = _int(name, 0)
    if value < 0:
        raise ConfigurationError(f"environment variable {name} must be 1 or more (or unset), got {value}")
    return value or None


def _bool(name: str, default: bool) -> bool:
    raw = (os.environ.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"environment variable {name} must be true or false, got {raw!r}")


def batch_size() -> int:
    return _int("SCORING_BATCH_SIZE", DEFAULT_BATCH_SIZE)


def in_lambda() -> bool:
    """Running in an AWS Lambda execution environment (the runtime sets this)."""
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


@dataclass(frozen=True, slots=True)
class Settings:
    # One of the two is set: the URL itself (locally), or the Secrets Manager
    # secret holding it (on AWS; chalicelib.deps fetches it).
    database_url: str | None
    database_secret_arn: str | None
    queue_name: str
    dlq_name: str
    # Explicit URLs win over name look-ups (saves a GetQueueUrl per cold start).
    queue_url: str | None
    dlq_url: str | None
    retry_base_seconds: int
    # Used only if the queue's RedrivePolicy cannot be read.
    default_max_receive_count: int
    max_body_bytes: int
    db_connect_timeout_seconds: int
    db_statement_timeout_ms: int
    # Connections this process may hold (chalicelib/storage/db.py): 1 on Lambda, a
    # few for the threaded `chalice local` and the local runner.
    db_pool_size: int
    db_acquire_timeout_seconds: int
    # Reconciler: how long a task may sit un-enqueued before it is re-sent, and
    # how long an unfinished task may live before it is failed as stuck.
    resend_grace_seconds: int
    stuck_after_seconds: int
    # ... and how long a sent task may go unreceived before it is re-sent and reported.
    unreceived_after_seconds: int
    # Idempotency-Keys are kept at least this long, then purged by the reconciler.
    idempotency_key_ttl_seconds: int
    # GET /health/pipeline: degraded when the oldest unfinished task is older than
    # this, or the DLQ holds more messages than that (docs/architecture.md#health).
    pipeline_max_age_seconds: int
    pipeline_max_dlq_depth: int
    # Reconciler: finished tasks (and their trails) created and last changed more
    # than this many days ago are deleted; 0 keeps everything.
    retention_days: int
    # The model registry's bucket (chalicelib/serving/registry.py); None: the packaged model serves.
    model_bucket: str | None = None
    # How often, at most, a function asks whether a model alias moved.
    model_alias_check_seconds: int = 60
    # TLS to PostgreSQL with the server's certificate verified against this CA
    # bundle (sslmode=verify-full); on in prod. Off: the URL decides (libpq's
    # default `prefer` encrypts if the server offers it, verifies nothing).
    db_require_tls: bool = False
    db_ssl_root_cert: Path | None = None
    # How long a warm API function keeps what it read of an API key's client and scopes
    # (api_clients, chalicelib/api/auth.py): a scope change takes effect within this.
    clients_cache_seconds: int = 60
    # The review loop (docs/reviews.md): how long a claim holds, and how long after a block it may be appealed.
    review_lease_seconds: int = 600
    appeal_window_days: int = 14
    # maxReceiveCount of the queue's RedrivePolicy, as the template sets it (infra/package.py,
    # make run, the tests' stacks: one source, infra/resources.json). Unset (None): the scorer
    # reads it from the queue on its first batch, which builds an SQS client a clean batch
    # does not otherwise need (docs/performance.md#where-the-time-goes).
    max_receive_count: int | None = None


def _tls_settings() -> tuple[bool, Path | None]:
    """DB_REQUIRE_TLS and DB_SSL_ROOT_CERT; with TLS required, the CA bundle must be a readable file."""
    require = _bool("DB_REQUIRE_TLS", False)
    raw = os.environ.get("DB_SSL_ROOT_CERT") or ""
    root_cert = APP_ROOT / raw if raw else None
    if require and (root_cert is None or not root_cert.is_file()):
        found = f"{raw!r} ({root_cert} is not a file)" if raw else "nothing"
        raise ConfigurationError(
            "DB_REQUIRE_TLS is on, so PostgreSQL is reached only over TLS with its certificate verified "
            f"(sslmode=verify-full): DB_SSL_ROOT_CERT must name the CA bundle shipped with the package, got {found}; "
            "`make package` ships it (docs/deploy.md, \"TLS to the database\")"
        )
    return require, root_cert


# The stuck-task horizon's default; also what `make migrate` hands adopted tasks by.
STUCK_AFTER_SECONDS_DEFAULT = 30 * 60


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    env = os.environ
    database_url, secret_arn = env.get("DATABASE_URL") or None, env.get("DATABASE_SECRET_ARN") or None
    if database_url is None and secret_arn is None:
        raise ConfigurationError(
            "no database configured: set DATABASE_URL (a postgresql:// URL) or DATABASE_SECRET_ARN "
            "(a Secrets Manager secret holding it); `make run` sets DATABASE_URL"
        )
    require_tls, root_cert = _tls_settings()
    return Settings(
        database_url=database_url,
        database_secret_arn=secret_arn,
        queue_name=env.get("MODERATION_QUEUE_NAME", QUEUE_NAME),
        dlq_name=env.get("MODERATION_DLQ_NAME", DLQ_NAME),
        queue_url=env.get("MODERATION_QUEUE_URL") or None,
        dlq_url=env.get("MODERATION_DLQ_URL") or None,
        retry_base_seconds=_int("RETRY_BASE_SECONDS", 5),
        default_max_receive_count=_int("DEFAULT_MAX_RECEIVE_COUNT", 3),
        max_body_bytes=_int("MAX_BODY_BYTES", 16 * 1024),
        db_connect_timeout_seconds=_int("DB_CONNECT_TIMEOUT_SECONDS", 3),
        db_statement_timeout_ms=_int("DB_STATEMENT_TIMEOUT_MS", 5000),
        db_pool_size=_int("DB_POOL_SIZE", 1),
        db_acquire_timeout_seconds=_int("DB_ACQUIRE_TIMEOUT_SECONDS", 5),
        resend_grace_seconds=_int("RESEND_GRACE_SECONDS", 60),
        stuck_after_seconds=_int("STUCK_AFTER_SECONDS", STUCK_AFTER_SECONDS_DEFAULT),
        unreceived_after_seconds=_int("UNRECEIVED_AFTER_SECONDS", 5 * 60),
        idempotency_key_ttl_seconds=_int("IDEMPOTENCY_KEY_TTL_SECONDS", 24 * 60 * 60),
        pipeline_max_age_seconds=_int("PIPELINE_MAX_AGE_SECONDS", 600),
        pipeline_max_dlq_depth=_int("PIPELINE_MAX_DLQ_DEPTH", 0),
        retention_days=_non_negative("RETENTION_DAYS", 30),
        db_require_tls=require_tls,
        db_ssl_root_cert=root_cert,
        model_bucket=env.get("MODEL_BUCKET") or None,
        model_alias_check_seconds=_int("MODEL_ALIAS_CHECK_SECONDS", 60),
        clients_cache_seconds=_int("CLIENTS_CACHE_SECONDS", 60),
        review_lease_seconds=_int("REVIEW_LEASE_SECONDS", 600),
        appeal_window_days=_int("APPEAL_WINDOW_DAYS", 14),
        max_receive_count=_positive_or_none("MAX_RECEIVE_COUNT"),
    )


def check_at_init(*, except_handler: str | None = None) -> None:
    """On Lambda, read the settings while the function initialises: a function deployed without
    its database (or its CA bundle) fails its init with the message, on every cold start, instead
    of failing its first requests. Only environment variables and one stat: no I/O worth a cold
    start. Elsewhere (tests, `chalice local`) importing app.py never needs a database.

    `except_handler` (as Lambda's `_HANDLER` names it) is left to fail in its handler instead:
    the custom resource's function, whose handler always answers CloudFormation (a failed init
    answers nothing, and the stack would wait an hour)."""
    if in_lambda() and os.environ.get("_HANDLER") != except_handler:
        get_settings()

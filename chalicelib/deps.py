"""Adapters built lazily on first use and reused across warm invocations.

Nothing here runs at import time, so `import app` works without a database,
AWS credentials or network. Each factory imports its own modules: the four
functions share one package, and a cold start must not pay for what only
another function needs (the scorer never loads the HTTP layer, the API never
loads migrations). Tests call `reset()` after changing settings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from chalicelib.config import get_settings

if TYPE_CHECKING:
    from chalicelib.domain.clients import Directory
    from chalicelib.moderation.reviews import ReviewService
    from chalicelib.moderation.service import ModerationService
    from chalicelib.operations.reconcile import Reconciler
    from chalicelib.queue import TaskQueue
    from chalicelib.scoring.scorer import Scorer
    from chalicelib.serving.aliases import Followed, Pinned
    from chalicelib.storage.db import Credentials, Database
    from chalicelib.storage.maintenance import MaintenanceStore
    from chalicelib.storage.scoring import ScoringStore
    from chalicelib.storage.tasks import TaskStore
    from chalicelib.webhooks.endpoints import Endpoints
    from chalicelib.webhooks.sender import Sender

T = TypeVar("T")
_build_lock = threading.RLock()


class _once(Generic[T]):  # lower case: used as a decorator, like lru_cache
    """lru_cache(maxsize=1), but built under a lock: `chalice local` serves
    requests on threads, and two first requests must not build two pools."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._value: T | None = None
        self.__doc__ = factory.__doc__

    def __call__(self) -> T:
        value = self._value
        if value is None:
            with _build_lock:
                if self._value is None:
                    self._value = self._factory()
                value = self._value
        return value

    @property
    def built(self) -> bool:
        return self._value is not None

    def cache_clear(self) -> None:
        self._value = None


def database_url() -> str:
    """DATABASE_URL, else the URL in the secret DATABASE_SECRET_ARN names (read now).

    On AWS the URL lives in Secrets Manager; the template only names it, so
    the URL is never plain text in a template, config or function setting.
    """
    return database_credentials().url()


def database_credentials() -> Credentials:
    """Where the pool gets its URL: DATABASE_URL as it is, else the secret, read
    on first connect and again when PostgreSQL rejects it (a rotated password)."""
    from chalicelib.storage.credentials import SecretUrl
    from chalicelib.storage.db import FixedUrl

    s = get_settings()
    if s.database_url:
        return FixedUrl(s.database_url)
    return SecretUrl(s.database_secret_arn or "", lambda: aws_client("secretsmanager"))


@_once
def database() -> Database:
    from chalicelib.storage.db import Database

    s = get_settings()
    return Database(
        database_credentials(),
        connect_timeout_seconds=s.db_connect_timeout_seconds,
        statement_timeout_ms=s.db_statement_timeout_ms,
        pool_size=s.db_pool_size,
        acquire_timeout_seconds=s.db_acquire_timeout_seconds,
        ssl_root_cert=s.db_ssl_root_cert if s.db_require_tls else None,
    )


@_once
def task_store() -> TaskStore:
    from chalicelib.storage.tasks import TaskStore

    return TaskStore(database())


@_once
def scoring_store() -> ScoringStore:
    from chalicelib.storage.scoring import ScoringStore

    return ScoringStore(database())


@_once
def maintenance_store() -> MaintenanceStore:
    from chalicelib.storage.maintenance import MaintenanceStore

    return MaintenanceStore(database())


def aws_client(service: str) -> Any:
    """A botocore client. Not boto3: importing boto3 drags in s3transfer
    (~50 ms of every cold start) for nothing; botocore honours the same
    AWS_ENDPOINT_URL (LocalStack) and AWS_DEFAULT_REGION settings."""
    from botocore.config import Config

    from chalicelib import awsclient

    # Short timeouts and few retries so a dead endpoint becomes a 503, not a
    # hung request. 32 pooled connections: on Lambda one is used; under the
    # threaded `chalice local` botocore's default of 10 discarded hundreds of
    # connections a run (make bench), each a new TCP handshake.
    config = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2}, max_pool_connections=32)
    return awsclient.create(service, config)  # without botocore's service census (chalicelib/awsclient.py)


@_once
def queue() -> TaskQueue:
    from chalicelib.awsclient import Lazy
    from chalicelib.queue import TaskQueue

    s = get_settings()
    return TaskQueue(
        Lazy(lambda: aws_client("sqs")),  # built on the first SQS call: a clean scorer batch makes none
        queue_name=s.queue_name, dlq_name=s.dlq_name, queue_url=s.queue_url, dlq_url=s.dlq_url,
        max_receive_count=s.max_receive_count,
    )


def models(function: str, *, shadow: bool) -> Followed | Pinned:
    """The models `function` serves: the registry's aliases when MODEL_BUCKET is
    set (the scorer also follows `shadow`), else the packaged artifact."""
    from chalicelib.serving.aliases import Followed, Pinned
    from chalicelib.serving.model import load_model

    s = get_settings()
    if s.model_bucket is None:
        return Pinned(load_model())
    from chalicelib.serving.registry import ObjectReader

    return Followed(ObjectReader(s.model_bucket), load_model, function=function,
                    check_seconds=s.model_alias_check_seconds, shadow=shadow)


@_once
def service() -> ModerationService:
    from chalicelib.moderation.service import ModerationService

    s = get_settings()
    return ModerationService(task_store(), queue(), models("api_handler", shadow=False),
                             max_age_seconds=s.pipeline_max_age_seconds, max_dlq_depth=s.pipeline_max_dlq_depth)


@_once
def reviews() -> ReviewService:
    """The human review loop (docs/reviews.md): queue, claims, verdicts, appeals, statements."""
    from chalicelib.moderation.reviews import ReviewService
    from chalicelib.storage.reviews import ReviewStore

    s = get_settings()
    return ReviewService(ReviewStore(database()), task_store(), lease_seconds=s.review_lease_seconds,
                         appeal_window_days=s.appeal_window_days,
                         publish=lambda due: webhook_sender().publish(due))


@_once
def scorer() -> Scorer:
    from chalicelib.scoring.scorer import Scorer

    s = get_settings()
    return Scorer(
        scoring_store(),
        queue(),
        models("score", shadow=True),
        retry_base_seconds=s.retry_base_seconds,
        default_max_receive_count=s.default_max_receive_count,
        # Built on the first batch that wrote a delivery: a scorer whose clients subscribe nothing
        # never loads the sender (cold start).
        publish=lambda due: webhook_sender().publish(due),
    )


@_once
def webhook_sender() -> Sender:
    """Webhooks (issue 22; docs/webhooks.md): the sender, which also publishes what the outbox holds."""
    from chalicelib.sealing import Sealer
    from chalicelib.storage.webhooks import WebhookStore
    from chalicelib.webhook_queue import WebhookQueue
    from chalicelib.webhooks.sender import Sender
    from chalicelib.webhooks.settings import webhook_settings

    w = webhook_settings()
    queue = WebhookQueue(aws_client("sqs"), queue_name=w.queue_name, dlq_name=w.dlq_name, queue_url=w.queue_url,
                         dlq_url=w.dlq_url)
    return Sender(WebhookStore(database()), queue, Sealer(aws_client("kms") if w.kms_key_id else None, w.kms_key_id), w)


@_once
def webhook_endpoints() -> Endpoints:
    from chalicelib.webhooks.endpoints import Endpoints
    from chalicelib.webhooks.settings import webhook_settings

    sender = webhook_sender()
    return Endpoints(sender.store, sender, sender.sealer, webhook_settings())


@_once
def reconciler() -> Reconciler:
    from chalicelib.operations.reconcile import Reconciler

    s = get_settings()
    return Reconciler(
        task_store(),
        maintenance_store(),
        queue(),
        resend_grace_seconds=s.resend_grace_seconds,
        stuck_after_seconds=s.stuck_after_seconds,
        unreceived_after_seconds=s.unreceived_after_seconds,
        idempotency_key_ttl_seconds=s.idempotency_key_ttl_seconds,
        retention_days=s.retention_days,
    )


_clients_override: list[Directory] = []


@_once
def clients() -> Directory:
    """API key id -> client and scopes (docs/clients.md): api_clients, cached per warm
    container; or what `use_clients` installed (make run's key store)."""
    if _clients_override:
        return _clients_override[0]
    from chalicelib.storage.clients import CachedDirectory, ClientStore

    return CachedDirectory(ClientStore(database()), get_settings().clients_cache_seconds)


def use_clients(directory: Directory | None) -> None:
    """Where clients are looked up from now on (None: api_clients again). make run's server
    installs its key store (devstack/chalice_local.py): the same mapping it checks keys with."""
    _clients_override[:] = [directory] if directory is not None else []
    clients.cache_clear()


def reset() -> None:
    """Forget every adapter (tests and the local runner after config changes)."""
    if database.built:
        database().close()
    for fn in (database, task_store, scoring_store, maintenance_store, queue, service, scorer, reconciler, clients,
               reviews, webhook_sender, webhook_endpoints):
        fn.cache_clear()
    get_settings.cache_clear()
    from chalicelib.webhooks.settings import webhook_settings

    webhook_settings.cache_clear()

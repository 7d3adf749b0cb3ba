"""Password rotation against a real PostgreSQL that checks passwords (scram-sha-256)
and moto's Secrets Manager: the pool re-reads the secret when the server rejects its
password, once per rotation and never in a storm; what still fails is a 503 on the
API and a retry on the scorer, never a 500 and never a failed task.

The server is an embedded PostgreSQL of this module's own: the role must give its
password (toolkit.postgres.EmbeddedPostgres.ensure_login_role), which the session's
trust-auth server does not ask for.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest

from chalicelib import deps
from chalicelib.errors import TransientError
from chalicelib.storage import credentials
from chalicelib.storage.credentials import SecretUrl, url_from_secret
from chalicelib.storage.db import Database, is_auth_failure
from chalicelib.storage.migrations import apply_migrations
from infra.policies import secret_name
from tests.helpers import execute, fetch_task, free_port, insert_ad, keyed_client, register_test_clients, sqs_record, task_body
from toolkit import names
from toolkit.postgres import EmbeddedPostgres

ROLE = names.APP_DB_ROLE


@dataclass
class RoleDb:
    admin_url: str  # the superuser's (trust)
    pg: EmbeddedPostgres

    def url(self, password: str) -> str:
        return names.database_url(self.pg.port, self.pg.database, user=ROLE, password=password)

    def set_password(self, password: str) -> None:
        """What a rotation's setSecret step does: the database's password changes; sessions stay."""
        execute(self.admin_url, f"ALTER ROLE {ROLE} PASSWORD %s", (password,))

    def end_sessions(self) -> int:
        """What a failover or a recycled connection does: the role's sessions end (waited for)."""
        rows = execute(self.admin_url, "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                                       "WHERE usename = %s AND pid <> pg_backend_pid()", (ROLE,))
        return len(rows)

    def sessions(self) -> int:
        return int(execute(self.admin_url, "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (ROLE,))[0][0])


@pytest.fixture(scope="module")
def role_db() -> Iterator[RoleDb]:
    root = Path(tempfile.mkdtemp(prefix="moderation-rotation-pg-"))
    pg = EmbeddedPostgres(root / "data", port=free_port())
    admin_url = pg.start()
    try:
        apply_migrations(pg.ensure_login_role(ROLE, "first"))
        yield RoleDb(admin_url, pg)
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def db(role_db: RoleDb) -> RoleDb:
    role_db.set_password("first")
    role_db.end_sessions()
    execute(role_db.admin_url, "TRUNCATE idempotency_keys, task_events, moderation_results, advertisements, users "
                               "RESTART IDENTITY CASCADE")
    return role_db


class CountingClient:
    """A secretsmanager client that counts GetSecretValue calls per version stage."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: Counter[str] = Counter()

    def get_secret_value(self, **kwargs: Any) -> Any:
        self.calls[kwargs.get("VersionStage", "AWSCURRENT")] += 1
        return self._client.get_secret_value(**kwargs)


@pytest.fixture()
def secret(db: RoleDb, sqs: object) -> Iterator[tuple[str, CountingClient]]:
    """The secret (moto, inside the `sqs` fixture's mock) holding the role's URL; a counting client."""
    sm = boto3.client("secretsmanager", region_name=names.REGION)
    # The dev stage's name: Chalice's test client sets DATABASE_SECRET_ARN from .chalice/config.json.
    arn = sm.create_secret(Name=secret_name("dev"), SecretString=db.url("first"))["ARN"]
    yield arn, CountingClient(sm)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def put(arn: str, url: str, *stages: str) -> str:
    sm = boto3.client("secretsmanager", region_name=names.REGION)
    return str(sm.put_secret_value(SecretId=arn, SecretString=url, VersionStages=list(stages or ["AWSCURRENT"]))["VersionId"])


def backend_user(database: Database) -> str:
    with database.transaction() as cur:
        cur.execute("SELECT current_user AS u")
        return str(cur.fetchone()["u"])


def test_a_failed_login_is_told_apart_from_an_unreachable_server(db: RoleDb) -> None:
    for url in (db.url("wrong"), names.database_url(db.pg.port, db.pg.database, user=ROLE),
                names.database_url(db.pg.port, db.pg.database, user="nobody", password="x")):
        with pytest.raises(psycopg2.OperationalError) as refused:
            psycopg2.connect(url, connect_timeout=5)
        assert is_auth_failure(refused.value), refused.value
    with pytest.raises(psycopg2.OperationalError) as unreachable:
        psycopg2.connect(names.database_url(free_port(), "x"), connect_timeout=5)
    assert not is_auth_failure(unreachable.value)


def test_a_rotated_secret_is_read_again_once_and_the_pool_reconnects(db: RoleDb, secret) -> None:
    arn, client = secret
    source = SecretUrl(arn, lambda: client, clock=Clock())
    database = Database(source)
    assert backend_user(database) == ROLE and client.calls == {"AWSCURRENT": 1}

    db.set_password("second")
    put(arn, db.url("second"))
    assert backend_user(database) == ROLE  # the open session survives ALTER ROLE: nothing re-read yet
    assert client.calls == {"AWSCURRENT": 1}

    assert db.end_sessions() == 1
    assert backend_user(database) == ROLE  # reconnected: old password rejected, secret re-read, new one accepted
    assert source.rereads == 1 and client.calls == {"AWSCURRENT": 2}
    for _ in range(3):
        database.ping()
    assert client.calls == {"AWSCURRENT": 2}
    database.close()


def test_between_set_and_finish_of_a_single_user_rotation_the_pending_version_connects(db: RoleDb, secret) -> None:
    arn, client = secret
    clock = Clock()
    source = SecretUrl(arn, lambda: client, clock=clock)
    database = Database(source)
    database.ping()
    # createSecret (AWSPENDING) and setSecret (the database) have run; finishSecret has not.
    pending = put(arn, db.url("pending"), "AWSPENDING")
    db.set_password("pending")
    db.end_sessions()
    database.ping()
    assert client.calls == {"AWSCURRENT": 2, "AWSPENDING": 1}
    # finishSecret: AWSCURRENT moves to the pending version. The pool's URL is that one already.
    sm = boto3.client("secretsmanager", region_name=names.REGION)
    current = next(v["VersionId"] for v in sm.list_secret_version_ids(SecretId=arn)["Versions"]
                   if "AWSCURRENT" in v["VersionStages"])
    sm.update_secret_version_stage(SecretId=arn, VersionStage="AWSCURRENT", MoveToVersionId=pending,
                                   RemoveFromVersionId=current)
    db.end_sessions()
    clock.now += 60
    database.ping()
    assert client.calls == {"AWSCURRENT": 2, "AWSPENDING": 1}  # nothing rejected: nothing re-read
    database.close()


def test_a_wrong_password_is_transient_and_the_secret_is_not_hammered(db: RoleDb, secret) -> None:
    arn, client = secret
    clock = Clock()
    source = SecretUrl(arn, lambda: client, clock=clock)
    database = Database(source, pool_size=8, acquire_timeout_seconds=10)
    database.ping()
    db.set_password("nobody-told-the-secret")
    db.end_sessions()

    def ping(_: int) -> str:
        try:
            database.ping()
        except TransientError as exc:
            return exc.message
        return "ok"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(ping, range(40)))
    assert outcomes == ["database unavailable (OperationalError)"] * 40
    # One re-read for 40 rejected connects: AWSCURRENT (unchanged), then AWSPENDING (none).
    assert source.rereads == 1 and client.calls == {"AWSCURRENT": 2, "AWSPENDING": 1}
    clock.now += credentials.REREAD_MIN_INTERVAL_SECONDS
    assert ping(0) != "ok" and source.rereads == 2
    # The secret is put right: the next re-read allowed finds it.
    put(arn, db.url("nobody-told-the-secret"))
    assert ping(0) != "ok"  # throttled: not read again yet
    clock.now += credentials.REREAD_MIN_INTERVAL_SECONDS
    assert ping(0) == "ok" and source.rereads == 3
    database.close()


@pytest.fixture()
def app_on_secret(secret, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, CountingClient]]:
    """chalicelib configured as on AWS: DATABASE_SECRET_ARN, no DATABASE_URL; no re-read throttle."""
    arn, client = secret
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_SECRET_ARN", arn)
    monkeypatch.setenv("RETRY_BASE_SECONDS", "1")
    monkeypatch.setattr(credentials, "REREAD_MIN_INTERVAL_SECONDS", 0.0)
    deps.reset()
    yield arn, client
    deps.reset()


def test_the_api_follows_a_rotation_and_answers_503_not_500_while_the_password_is_wrong(db: RoleDb, app_on_secret) -> None:
    from app import app

    arn, _ = app_on_secret
    item_id = insert_ad(db.admin_url)
    register_test_clients(db.admin_url)
    with keyed_client(app) as client:
        def submit() -> Any:
            return client.http.post(f"/moderation/async_predict?item_id={item_id}", body=b"")

        assert submit().status_code == 202
        db.set_password("second")
        put(arn, db.url("second"))
        db.end_sessions()
        assert submit().status_code == 202  # the rotation cost this request a re-read, not an error

        db.set_password("not-in-the-secret")
        db.end_sessions()
        refused = submit()
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
        assert json.loads(refused.body)["code"] == "dependency_unavailable"
        put(arn, db.url("not-in-the-secret"))
        assert submit().status_code == 202
    assert execute(db.admin_url, "SELECT count(*) FROM moderation_results")[0][0] == 3


def test_the_scorer_retries_a_batch_it_cannot_log_in_for_and_never_fails_its_tasks(db: RoleDb, app_on_secret) -> None:
    arn, _ = app_on_secret
    tasks = []
    for _ in range(3):
        item_id = insert_ad(db.admin_url)
        tasks.append((deps.task_store().create_task(item_id, client="tester"), item_id))
    db.set_password("rotated-but-not-yet-stored")
    db.end_sessions()
    for attempt in (1, 2):  # the attempts before the last (maxReceiveCount 3)
        records = [sqs_record(task_body(t, i), attempt=attempt) for t, i in tasks]
        response = deps.scorer().handle(records)
        assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [r["messageId"] for r in records]
        assert {fetch_task(db.admin_url, t)["status"] for t, _ in tasks} == {"pending"}
    put(arn, db.url("rotated-but-not-yet-stored"))
    response = deps.scorer().handle([sqs_record(task_body(t, i), attempt=3) for t, i in tasks])
    assert response["batchItemFailures"] == []
    assert {fetch_task(db.admin_url, t)["status"] for t, _ in tasks} == {"completed"}


def test_the_secret_may_hold_the_json_of_the_rds_rotation_functions(db: RoleDb) -> None:
    secret = {"engine": "postgres", "host": names.HOST, "port": db.pg.port, "username": ROLE, "password": "p@ss/w:rd %",
              "dbname": db.pg.database}
    url = url_from_secret(json.dumps(secret))
    assert url == f"postgresql://{ROLE}:p%40ss%2Fw%3Ard%20%25@{names.HOST}:{db.pg.port}/{db.pg.database}"
    db.set_password(secret["password"])
    assert backend_user(Database(url)) == ROLE  # libpq decodes the escapes
    assert url_from_secret(" postgresql://u:p@h/d\n") == "postgresql://u:p@h/d"
    with pytest.raises(ValueError, match="dbname"):
        url_from_secret(json.dumps({k: v for k, v in secret.items() if k != "dbname"}))


def test_a_database_the_superuser_migrated_is_handed_to_the_role(db: RoleDb) -> None:
    """make deploy-localstack on a data dir from before the role: its tables become the role's, so
    the migrate function (connected as the role) can change them."""
    legacy = EmbeddedPostgres(db.pg.data_dir, port=db.pg.port, database="legacy")
    admin_url = legacy.start()
    apply_migrations(admin_url)
    url = legacy.ensure_login_role(ROLE, "first")
    assert apply_migrations(url) == []
    execute(url, "ALTER TABLE moderation_results ADD COLUMN probe int; ALTER TABLE moderation_results DROP COLUMN probe")
    owners = execute(admin_url, "SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class c JOIN pg_namespace n "
                                "ON n.oid = c.relnamespace WHERE n.nspname = 'public'")
    assert owners == [(ROLE,)]

"""Fixtures: a real PostgreSQL per test session, moto SQS from infra/, and one
deployed LocalStack stack shared by the suites that only use it (`deployed`).

PostgreSQL is the embedded server from the pip wheel (a fresh cluster in a
temp dir), unless TEST_DATABASE_URL points at another server, e.g. the
system PostgreSQL 15 (`TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import psycopg2
import pytest

from tests.helpers import free_port
from toolkit.names import LOCAL_CREDENTIALS, REGION, max_receive_count

if TYPE_CHECKING:
    from tests.e2e.deployed_stack import Deployed
    from tests.e2e.e2e_stack import Stack

# Local credentials only; no test ever talks to AWS.
for _k, _v in LOCAL_CREDENTIALS.items():
    os.environ.setdefault(_k, _v)


# The modules whose tests use the session's `deployed` stack: under pytest-xdist they run on one worker.
DEPLOYED_MODULES = (
    "tests/contract/test_fuzz_deployed.py",
    "tests/e2e/test_deployed.py",
    "tests/e2e/test_deployed_clients.py",
    "tests/e2e/test_deployed_reviews.py",
    "tests/e2e/test_legacy_deployed.py",
    "tests/e2e/test_load_deployed.py",
    "tests/e2e/test_webhooks_deployed.py",
)
# The modules whose tests use the session's `shared_make_run`: one worker too, so one stack is started,
# not one on each worker that draws one of them (each costs ~10 s of CPU to start, and polls while it runs).
SHARED_MAKE_RUN_MODULES = (
    "tests/contract/test_fuzz_local.py",
    "tests/e2e/test_legacy_make_run.py",
    "tests/e2e/test_load.py",
    "tests/e2e/test_make_run.py",
    "tests/e2e/test_model_registry.py",
    "tests/e2e/test_two_stacks.py",
    "tests/e2e/test_webhooks_make_run.py",
)
# Session fixture -> the modules that may use it, and the scope (the worker) they share.
SHARED_STACKS = {"deployed": DEPLOYED_MODULES, "shared_make_run": SHARED_MAKE_RUN_MODULES}


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """make test (-n N --dist loadscope): each module runs on one worker, so a module fixture (a make run,
    a deployment) is built once; the modules of each SHARED_STACKS list share one worker, and so one stack.
    (Not --dist loadgroup and xdist_group marks: xdist 3.8 writes the group into item._nodeid, which
    pytest 9 no longer reads, so the marks are silently ignored.)"""
    from xdist.scheduler import LoadScopeScheduling

    # Scopes in collection order (pytest_collection_modifyitems below puts the slow tiers first), not
    # xdist's default of the most tests first: that started the suites with one or two long tests (a
    # stack each) last, on whichever worker was free, and the run waited for them.
    config.option.loadscopereorder = False

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return next((stack for stack, modules in SHARED_STACKS.items() if module in modules), module)

    return Scheduling(config, log)


# The order the suites start in under xdist: the slowest tiers (stacks started, deployed, fuzzed) first, so
# the short unit modules fill the workers' ends (longest-first scheduling).
TIERS = ("tests/contract/", "tests/e2e/", "tests/integration/", "tests/unit/")


def _tier(item: pytest.Item) -> int:
    return next((i for i, prefix in enumerate(TIERS) if item.nodeid.startswith(prefix)), len(TIERS))


def _uses_session_stack(item: pytest.Item, stack: str) -> bool:
    """Whether the test uses the session's fixture `stack` (not a module's own of that name)."""
    fixtures = getattr(item, "_fixtureinfo", None)
    defs = fixtures.name2fixturedefs.get(stack) if fixtures else None
    return defs is not None and len(defs) > 0 and defs[-1].scope == "session"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tiers first (TIERS; a stable sort: each module's tests keep their order). A new user of a
    session's stack (`deployed`, `shared_make_run`) must join its list in SHARED_STACKS, or xdist builds
    a second one."""
    items.sort(key=_tier)
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        for stack, modules in SHARED_STACKS.items():
            if _uses_session_stack(item, stack) and module not in modules:
                raise pytest.UsageError(f"{module} uses the session's `{stack}` stack: add it to its list in SHARED_STACKS "
                                        "(tests/conftest.py)")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """The last test of a module on the session's deployed stack leaves it settled for the next module
    (tests/e2e/e2e_stack.py settle(), as the `make run` modules do with theirs): a task one module
    submitted and did not wait for must not complete into the next one's webhook receiver or counts."""
    last_of_module = nextitem is None or nextitem.path != item.path
    if last_of_module and _uses_session_stack(item, "deployed"):
        from tests.e2e.e2e_stack import settle

        settle(item.funcargs["deployed"])  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """The packaged stack deployed to LocalStack (tests/e2e/deployed_stack.py), 20 ads.

    One per session: the contract fuzz and tests/e2e/test_deployed.py share it (each
    deployment costs ~15 s up and ~10 s down). Their tests look only at their own tasks
    and messages; the password rotation in test_deployed.py updates the secret too, so
    what runs after it connects as well; the last test of each module settles it
    (pytest_runtest_teardown above). Tests that need a stack of their own (two stacks
    side by side, a database that goes away) start one.
    """
    from tests.e2e.deployed_stack import FIXTURE_TIMINGS, deployed_stack

    with deployed_stack(tmp_path_factory, n_ads=20, timings=FIXTURE_TIMINGS) as running:
        yield running


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the server's maintenance database."""
    if os.environ.get("TEST_DATABASE_URL"):
        yield os.environ["TEST_DATABASE_URL"]
        return
    from toolkit.postgres import EmbeddedPostgres

    # Not under tmp_path_factory: the server runs as an unprivileged user when
    # we are root, and each pytest session re-chmods /tmp/pytest-of-<user> to
    # 0700, which would crash a server another session is using.
    root = Path(tempfile.mkdtemp(prefix="moderation-test-pg-"))
    pg = EmbeddedPostgres(root / "data", port=free_port(), database="postgres")
    url = pg.start()
    yield url
    pg.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_url(pg_server: str) -> str:
    """A fresh database with the migrations applied, for the whole session."""
    from chalicelib.storage.migrations import apply_migrations

    name = f"moderation_test_{os.getpid()}"
    conn = psycopg2.connect(pg_server)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    url = pg_server.rsplit("/", 1)[0] + "/" + name
    apply_migrations(url)
    return url


@pytest.fixture(scope="session")
def shared_make_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One `make run` for the modules that use a stack without stopping, restarting or counting all of
    it (their `stack` fixture takes this one and calls `settle` after the module, so the next starts
    from a quiet stack). Starting one (PostgreSQL, LocalStack, migrations, chalice local, the runner) is
    most of such a module's cost; under xdist those modules (SHARED_MAKE_RUN_MODULES) run on one
    worker, which stops it when it ends. Its alias re-check is every 2 s, what
    tests/e2e/test_model_registry.py needs."""
    from tests.e2e.e2e_stack import make_run

    with make_run(tmp_path_factory, extra_env={"MODEL_ALIAS_CHECK_SECONDS": "2"}) as stack:
        yield stack


@pytest.fixture()
def db(pg_url: str) -> str:
    """The test database, emptied before each test."""
    conn = psycopg2.connect(pg_url)
    with conn, conn.cursor() as cur:
        cur.execute("TRUNCATE idempotency_keys, task_events, moderation_results, advertisements, users, api_clients, "
                    "human_reviews RESTART IDENTITY CASCADE")
    conn.close()
    return pg_url


@pytest.fixture()
def sqs() -> Iterator[object]:
    """An in-process SQS (moto) with the queues of infra/resources.json."""
    from moto import mock_aws

    from toolkit.template import ensure_queues

    saved = os.environ.pop("AWS_ENDPOINT_URL", None)
    with mock_aws():
        client = boto3.client("sqs", region_name=REGION)
        ensure_queues(client)
        yield client
    if saved is not None:
        os.environ["AWS_ENDPOINT_URL"] = saved


@pytest.fixture()
def app_env(db: str, sqs: object, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Settings pointing chalicelib at the test database and moto; adapters rebuilt."""
    from chalicelib import deps
    from tests.helpers import register_test_clients

    register_test_clients(db)
    monkeypatch.setenv("DATABASE_URL", db)
    monkeypatch.setenv("RETRY_BASE_SECONDS", "1")
    monkeypatch.setenv("MAX_RECEIVE_COUNT", str(max_receive_count()))  # as the template sets it
    deps.reset()
    yield db
    deps.reset()

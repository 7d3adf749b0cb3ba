"""A new model without a deploy, on `make run` (issue 15): the functions follow a
promote and a rollback within the re-check window while tasks keep flowing, none
fails; a shadow version's verdicts are recorded and compared. Driven through the
same commands a person uses (`python -m ops.models --local`, what make model-* runs)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chalicelib.serving.model import DEFAULT_MODEL_PATH, load_model
from tests.e2e.e2e_stack import Stack, http, settle
from tests.helpers import execute

pytestmark = pytest.mark.e2e

CHECK_SECONDS = 2  # the shared stack's MODEL_ALIAS_CHECK_SECONDS (tests/conftest.py)
# A task is claimed within about a second of its submit; the API and the scorer re-check
# the alias at most CHECK_SECONDS after the promote. Anything later is a failure to follow.
FOLLOW_WITHIN_S = CHECK_SECONDS + 8
PACKAGED = load_model().version


def models(stack: Stack, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "ops.models", "--local", *args], env=stack.env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


class Traffic:
    """Submits a task every 50 ms until stopped: (submitted at, task id)."""

    def __init__(self, stack: Stack) -> None:
        self.stack, self.sent, self.stopping = stack, [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        item = 0
        while not self.stopping.is_set():
            item = item % 300 + 1
            status, body = http("POST", f"{self.stack.api}/moderation/async_predict?item_id={item}", key=self.stack.api_key)
            assert status == 202, body
            self.sent.append((time.monotonic(), body["task_id"]))
            time.sleep(0.05)

    def result(self, task_id: int, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            _, body = http("GET", f"{self.stack.api}/moderation/moderation_result/{task_id}", key=self.stack.api_key)
            if body["status"] in ("completed", "failed") or time.monotonic() > deadline:
                return body
            time.sleep(0.2)

    def first_with(self, version: str, since: float, timeout: float = 60) -> float:
        """Seconds from `since` to the submit of the first task scored by `version`."""
        deadline = time.monotonic() + timeout
        checked = 0
        while time.monotonic() < deadline:
            for at, task_id in self.sent[checked:]:
                if at < since:
                    checked += 1
                    continue
                result = self.result(task_id)
                checked += 1
                if result["model_version"] == version:
                    return at - since
            time.sleep(0.2)
        raise AssertionError(f"no task scored by {version} within {timeout} s")


def strict_version(tmp: Path) -> tuple[Path, str]:
    """The packaged model as another version: block only at 0.9, no review band."""
    artifact = json.loads(DEFAULT_MODEL_PATH.read_bytes()) | {"version": "lr-e2e-strict", "threshold": 0.9,
                                                               "review_threshold": None}
    path = tmp / "strict.json"
    path.write_text(json.dumps(artifact))
    return path, artifact["version"]


@pytest.fixture(scope="module")
def stack(shared_make_run: Stack) -> Iterator[Stack]:
    """The test process's `make run` (tests/conftest.py; its alias re-check is every CHECK_SECONDS).
    The first test leaves live where it found it (promote, then roll back); each test publishes
    what it uses; shadow scoring is stopped after the module."""
    yield shared_make_run
    models(shared_make_run, "unset", "shadow")
    settle(shared_make_run)


def test_promote_and_rollback_are_followed_without_a_deploy_and_no_task_fails(stack: Stack, tmp_path: Path):
    listed = models(stack, "list")
    assert f"live -> {PACKAGED}" in listed and f"serves {PACKAGED}" in listed  # make run's first version
    path, strict = strict_version(tmp_path)
    assert f"published {strict}" in models(stack, "publish", "--artifact", str(path))

    traffic = Traffic(stack)
    traffic.thread.start()
    try:
        time.sleep(2)
        promoting = time.monotonic()
        models(stack, "promote", strict)
        promoted = time.monotonic()  # done: aliases.json names it
        lag = traffic.first_with(strict, promoted)
        print(f"\n[model registry e2e] the first task scored by the promoted version was submitted {lag:.1f} s after")
        assert lag <= FOLLOW_WITHIN_S, f"the scorer followed the promote after {lag:.1f} s"
        _, health = http("GET", f"{stack.api}/health")
        assert health["checks"]["model"]["version"] == strict  # the API follows too
        time.sleep(FOLLOW_WITHIN_S)
        rolling_back = time.monotonic()
        assert f"live: {strict} -> {PACKAGED}" in models(stack, "rollback")
        rolled_back = time.monotonic()
        lag = traffic.first_with(PACKAGED, rolled_back)
        print(f"[model registry e2e] ... and by the rolled-back-to version {lag:.1f} s after the rollback")
        assert lag <= FOLLOW_WITHIN_S, f"the scorer followed the rollback after {lag:.1f} s"
        time.sleep(FOLLOW_WITHIN_S)
    finally:
        traffic.stopping.set()
        traffic.thread.join(10)

    results = [(at, traffic.result(task_id)) for at, task_id in traffic.sent]
    print(f"[model registry e2e] {len(results)} tasks submitted across the promote and the rollback")
    assert len(results) > 100
    assert [r for _, r in results if r["status"] != "completed"] == []
    for at, r in results:
        expected = ({strict} if promoted + FOLLOW_WITHIN_S <= at < rolling_back else
                    {PACKAGED} if at < promoting or at >= rolled_back + FOLLOW_WITHIN_S else {PACKAGED, strict})
        assert r["model_version"] in expected, (at - promoted, r)
        # The decision is the version's own: the strict one has no review band.
        assert r["decision"] in ({"allow", "block"} if r["model_version"] == strict else {"allow", "review", "block"})
    changes = models(stack, "list")  # the audit of the alias: promoted, then rolled back
    assert re.search(rf"promote\s+live\s+{PACKAGED} -> {strict}", changes), changes
    assert re.search(rf"rollback\s+live\s+{strict} -> {PACKAGED}", changes), changes


def test_a_shadow_version_is_scored_recorded_and_compared(stack: Stack, tmp_path: Path):
    path, strict = strict_version(tmp_path)
    models(stack, "publish", "--artifact", str(path))
    models(stack, "promote", strict, "--alias", "shadow")
    traffic = Traffic(stack)
    # The scorer follows the alias within CHECK_SECONDS of its next batch: one task first, until one
    # is shadow-scored, so the 40 below all are.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, body = http("POST", f"{stack.api}/moderation/async_predict?item_id=1", key=stack.api_key)
        assert status == 202
        traffic.result(body["task_id"])
        if execute(stack.database_url, "SELECT 1 FROM shadow_verdicts WHERE task_id = %s", (body["task_id"],)):
            break
        time.sleep(CHECK_SECONDS / 2)
    else:
        raise AssertionError("the scorer did not follow the shadow alias within 60 s")
    ids = []
    for item in range(1, 41):
        status, body = http("POST", f"{stack.api}/moderation/async_predict?item_id={item}", key=stack.api_key)
        assert status == 202
        ids.append(body["task_id"])
    results = [traffic.result(t) for t in ids]
    assert {r["status"] for r in results} == {"completed"} and {r["model_version"] for r in results} == {PACKAGED}
    time.sleep(1)
    out = models(stack, "compare", "--n", "40")
    assert f"shadow {strict} against live {PACKAGED}, the latest 40 tasks" in out
    assert "agreement (same decision)" in out and "chart: " in out
    # Same coefficients, another threshold: the probabilities agree exactly, the decisions need not.
    assert "max 0.0000" in out
    chart = out.split("chart: ")[1].strip()
    assert (Path(__file__).resolve().parents[2] / chart).stat().st_size > 10_000

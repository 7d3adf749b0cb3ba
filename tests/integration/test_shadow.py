"""Decisions and shadow scoring in the scorer, against real PostgreSQL (issue 15)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from chalicelib import deps
from chalicelib.domain.verdicts import Thresholds, decide
from chalicelib.scoring.scorer import Scorer
from chalicelib.serving.aliases import Pinned
from chalicelib.serving.model import load_model
from tests.helpers import execute, fetch_task, insert_ad, sqs_record, task_body

LIVE = load_model()
# Another version: the same coefficients, a stricter block threshold and no review band.
STRICT = dataclasses.replace(LIVE, version="lr-strict", threshold=0.9, review_threshold=None)


class BrokenShadow:
    version, thresholds = "lr-broken", Thresholds(0.5)

    def predict_proba(self, ads):
        raise RuntimeError("shadow crashed")


def batch(db: str, n: int) -> tuple[list[int], list[dict]]:
    ads = [("iPhone реплика", "только предоплата, telegram @x", False, 0), ("Диван", "Состояние отличное", True, 5)]
    tasks = []
    for i in range(n):
        name, description, verified, images = ads[i % 2]
        item_id = insert_ad(db, name=name, description=description, verified=verified, images_qty=images)
        tasks.append((deps.task_store().create_task(item_id, client="tester"), item_id))
    return [t for t, _ in tasks], [sqs_record(task_body(t, i)) for t, i in tasks]


def scorer(shadow) -> Scorer:
    return Scorer(deps.scoring_store(), deps.queue(), Pinned(LIVE, shadow), retry_base_seconds=1, default_max_receive_count=3)


def shadow_rows(db: str) -> list[tuple]:
    return execute(db, "SELECT task_id, shadow_version, live_version, live_probability, shadow_probability, "
                       "live_decision, shadow_decision FROM shadow_verdicts ORDER BY task_id")


@pytest.fixture()
def db(app_env: str) -> str:
    execute(app_env, "TRUNCATE shadow_verdicts")
    return app_env


def test_results_carry_the_decision_and_the_shadow_records_its_own(db, capsys):
    task_ids, records = batch(db, 6)
    assert scorer(STRICT).handle(records)["batchItemFailures"] == []
    rows = shadow_rows(db)
    assert [r[0] for r in rows] == task_ids
    for task_id, shadow_version, live_version, live_p, shadow_p, live_decision, shadow_decision in rows:
        task = fetch_task(db, task_id)
        assert task["status"] == "completed" and task["model_version"] == live_version == LIVE.version
        assert (task["probability"], task["decision"]) == (live_p, live_decision) == (live_p, decide(live_p, LIVE.thresholds))
        assert shadow_version == "lr-strict" and shadow_p == live_p and shadow_decision == decide(shadow_p, STRICT.thresholds)
    assert {r[5] for r in rows} == {"block", "allow"} and {r[6] for r in rows} == {"block", "allow"}
    scored = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"ShadowScored"' in line]
    assert scored and scored[-1]["ShadowScored"] == [6.0]
    # A redelivery of a finished task writes nothing new (a duplicate), the shadow neither.
    assert scorer(STRICT).handle(records[:1])["batchItemFailures"] == []
    assert len(shadow_rows(db)) == 6


def test_a_failing_shadow_never_fails_a_task(db, capsys):
    task_ids, records = batch(db, 4)
    assert scorer(BrokenShadow()).handle(records)["batchItemFailures"] == []
    assert all(fetch_task(db, t)["status"] == "completed" for t in task_ids)
    assert shadow_rows(db) == []
    out = capsys.readouterr().out
    assert '"ShadowFailed":[1.0]' in out  # counted (the warning goes to the log)


def test_no_shadow_no_verdicts(db):
    _, records = batch(db, 2)
    assert scorer(None).handle(records)["batchItemFailures"] == []
    assert shadow_rows(db) == []


def test_compare_reads_the_latest_verdicts_of_one_shadow_version(db):
    _, records = batch(db, 4)
    scorer(STRICT).handle(records)
    verdicts = deps.scoring_store().shadow_verdicts(3)
    assert len(verdicts) == 3 and {v.shadow_version for v in verdicts} == {"lr-strict"}
    assert deps.scoring_store().shadow_verdicts(10, "lr-other") == []
    from ops.model_compare import compare_figures

    figures = compare_figures(deps.scoring_store().shadow_verdicts(10))
    assert figures["n"] == 4 and figures["live_version"] == LIVE.version
    assert sum(sum(row.values()) for row in figures["confusion"].values()) == 4
    assert figures["delta"]["max_abs"] == 0.0

"""The human review loop (issue 21; docs/reviews.md) through the app, on real PostgreSQL and moto
SQS: the queue, leases, verdicts, appeals (four eyes), statements of reasons, the errors, and 8
moderators at once over 500 tasks."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.domain.reviews import DSA_FIELDS
from tests.helpers import TEST_CLIENTS, execute, keyed_client
from tests.reviews_helpers import review_tasks, scored_task

A, B, MOD, OPS = "key-a", "key-b", "key-moderator", "key-ops"
MOD2 = "key-moderator-2"
MODERATORS = [f"key-mod-{n}" for n in range(8)]


@pytest.fixture()
def client(app_env, monkeypatch):
    # More moderators than tests/helpers.py's table has: registered for this module only.
    for key in [MOD2, *MODERATORS]:
        name = key.removeprefix("key-")
        monkeypatch.setitem(TEST_CLIENTS, key, (f"id-{name}", name, ("moderate",)))
        execute(app_env, "INSERT INTO api_clients (key_id, client, scopes) VALUES (%s, %s, '{moderate}') "
                         "ON CONFLICT (key_id) DO NOTHING", (f"id-{name}", name))
    from app import app

    with keyed_client(app, default_key=None) as c:
        yield c


def call(client, method: str, path: str, key: str | None, body: Any = None) -> Any:
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    headers = {"Content-Type": "application/json", **({"x-api-key": key} if key else {})}
    return client.http.request(method, path, headers=headers, body=raw)


def out(resp) -> dict:
    return json.loads(resp.body)


def expect(resp, status: int, code: str | None = None) -> dict:
    body = out(resp)
    assert resp.status_code == status, resp.body
    if code is not None:
        assert body["code"] == code, body
        assert set(body) >= {"code", "message", "detail"}
    return body


def claim(client, task_id: int, key: str) -> Any:
    return call(client, "POST", f"/moderation/reviews/{task_id}/claim", key)


def verdict(client, task_id: int, key: str, decision: str = "block", reason: str = "spam", note: str | None = None) -> Any:
    return call(client, "POST", f"/moderation/reviews/{task_id}/verdict", key,
                {"decision": decision, "reason": reason, **({"note": note} if note else {})})


def events(client, task_id: int, key: str = OPS) -> list[dict]:
    return out(call(client, "GET", f"/moderation/moderation_result/{task_id}/events", key))["events"]


def test_a_review_task_is_claimed_then_decided_by_its_lease_holder(client, app_env):
    task = scored_task(app_env, "client-a", "review", probability=0.31)
    queued = expect(call(client, "GET", "/moderation/reviews", MOD), 200)["tasks"]
    assert [(t["task_id"], t["kind"], t["probability"], t["name"]) for t in queued] == [(task, "review", 0.31, "iPhone 13")]
    lease = expect(claim(client, task, MOD), 200)
    assert lease["kind"] == "review" and lease["lease_holder"] == "moderator"
    # While the lease holds nobody else may claim or decide it, and others no longer see it queued.
    expect(claim(client, task, MOD2), 409, "lease_held")
    expect(verdict(client, task, MOD2), 409, "lease_required")
    assert expect(call(client, "GET", "/moderation/reviews", MOD2), 200)["tasks"] == []
    decided = expect(verdict(client, task, MOD, "block", "fraud", note="seller asks for prepayment"), 200)
    assert decided["decision"] == "block" and decided["is_violation"] is True
    assert decided["decided_by"] == "human" and decided["model_decision"] == "review"
    assert decided["probability"] == 0.31 and decided["reviewed_by"] == "moderator" and decided["review_reason"] == "fraud"
    assert decided["reviewed_at"] is not None
    # The owner reads the same in the result; the task left the queue; a second verdict finds nothing to decide.
    assert expect(call(client, "GET", f"/moderation/moderation_result/{task}", A), 200)["decided_by"] == "human"
    assert expect(call(client, "GET", "/moderation/reviews", MOD), 200)["tasks"] == []
    expect(verdict(client, task, MOD), 409, "not_in_queue")
    trail = [(e["kind"], e["actor"]) for e in events(client, task, A)]
    assert trail[-2:] == [("claimed", "moderator"), ("reviewed", "moderator")]


def test_an_expired_lease_puts_the_task_back_and_the_trail_says_so(client, app_env):
    task = scored_task(app_env, "client-a", "review")
    expect(claim(client, task, MOD), 200)
    execute(app_env, "UPDATE human_reviews SET lease_expires_at = now() - interval '1 second' WHERE task_id = %s", (task,))
    assert [t["task_id"] for t in out(call(client, "GET", "/moderation/reviews", MOD2))["tasks"]] == [task]
    expect(verdict(client, task, MOD), 409, "lease_required")  # the lease ran out: the console says so
    expect(claim(client, task, MOD2), 200)
    expect(verdict(client, task, MOD2, "allow", "other"), 200)
    kinds = [(e["kind"], e["actor"]) for e in events(client, task)]
    assert kinds[-4:] == [("claimed", "moderator"), ("lease_expired", "moderator"), ("claimed", "moderator-2"),
                          ("reviewed", "moderator-2")]


def test_the_reconciler_gives_back_a_lease_when_it_runs_out_once(client, app_env, sqs):
    """A lease nobody reclaims still leaves its `lease_expired` in the trail: the reconciler's sweep
    writes it when the lease runs out, once; a live lease and a decided task are left alone."""
    import app
    from devstack.runner import Runner

    lapsed, live, decided = (scored_task(app_env, "client-a", "review") for _ in range(3))
    for task in (lapsed, live, decided):
        expect(claim(client, task, MOD), 200)
    expect(verdict(client, decided, MOD, "allow", "other"), 200)
    execute(app_env, "UPDATE human_reviews SET lease_expires_at = now() - interval '1 second' WHERE task_id IN (%s, %s)",
            (lapsed, decided))
    url = sqs.get_queue_url(QueueName="moderation")["QueueUrl"]
    runner = Runner(sqs, url, app.score, reconcile=app.reconcile, wait_seconds=0, reconcile_every_seconds=0)
    report = runner.maybe_reconcile()
    assert report is not None and report["leases_expired"] == 1
    assert (runner.maybe_reconcile() or {}).get("leases_expired") == 0  # once
    assert [(e["kind"], e["actor"]) for e in events(client, lapsed)][-2:] == [("claimed", "moderator"),
                                                                            ("lease_expired", "moderator")]
    assert "lease_expired" not in [e["kind"] for e in events(client, live)]
    expect(claim(client, lapsed, MOD2), 200)  # back in the queue; the claim writes no second lease_expired
    assert [e["kind"] for e in events(client, lapsed)].count("lease_expired") == 1
    expect(claim(client, live, MOD2), 409, "lease_held")


def test_the_queue_pages_oldest_first_and_filters_by_kind(client, app_env):
    tasks = review_tasks(app_env, "client-a", 7)
    blocked = scored_task(app_env, "client-b", "block", probability=0.97)
    expect(call(client, "POST", "/moderation/appeals", B, {"task_id": blocked, "reason": "it is a real phone"}), 202)
    seen, cursor = [], None
    while True:
        page = out(call(client, "GET", "/moderation/reviews?limit=3" + (f"&cursor={cursor}" if cursor else ""), MOD))
        seen += [(t["task_id"], t["kind"]) for t in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [(t, "review") for t in tasks] + [(blocked, "appeal")]
    appeals = out(call(client, "GET", "/moderation/reviews?kind=appeal", MOD))["tasks"]
    assert [(t["task_id"], t["appeal_reason"], t["model_decision"]) for t in appeals] == \
        [(blocked, "it is a real phone", "block")]
    assert [t["task_id"] for t in out(call(client, "GET", "/moderation/reviews?kind=review&limit=2", MOD))["tasks"]] == tasks[:2]
    expect(call(client, "GET", "/moderation/reviews?kind=nope", MOD), 400, "invalid_parameter")
    expect(call(client, "GET", "/moderation/reviews", A), 403, "insufficient_scope")


def test_an_appeal_of_a_human_block_goes_to_another_moderator(client, app_env):
    task = scored_task(app_env, "client-a", "review")
    expect(claim(client, task, MOD), 200)
    expect(verdict(client, task, MOD, "block", "prohibited_item"), 200)
    accepted = expect(call(client, "POST", "/moderation/appeals", A, {"task_id": task, "reason": "allowed item"}), 202)
    assert accepted["appeal"] == "pending"
    assert expect(call(client, "GET", f"/moderation/moderation_result/{task}", A), 200)["appeal"] == "pending"
    # Four eyes: the moderator who blocked it neither sees nor may take the appeal.
    assert out(call(client, "GET", "/moderation/reviews", MOD))["tasks"] == []
    expect(claim(client, task, MOD), 409, "four_eyes")
    assert [t["task_id"] for t in out(call(client, "GET", "/moderation/reviews", MOD2))["tasks"]] == [task]
    expect(claim(client, task, MOD2), 200)
    result = expect(verdict(client, task, MOD2, "allow", "other"), 200)
    assert (result["decision"], result["appeal"], result["reviewed_by"], result["model_decision"]) == \
        ("allow", "overturned", "moderator-2", "review")
    assert result["is_violation"] is False
    kinds = [e["kind"] for e in events(client, task, A)]
    assert kinds[-5:] == ["claimed", "reviewed", "appealed", "claimed", "appeal_decided"]
    expect(call(client, "POST", "/moderation/appeals", A, {"task_id": task, "reason": "again"}), 409, "already_appealed")


def test_an_appeal_of_a_model_block_goes_to_any_moderator_and_may_be_upheld(client, app_env):
    task = scored_task(app_env, "client-a", "block", probability=0.99)
    expect(call(client, "POST", "/moderation/appeals", A, {"task_id": task, "reason": "why?"}), 202)
    expect(claim(client, task, MOD), 200)
    result = expect(verdict(client, task, MOD, "block", "fraud"), 200)
    assert (result["decision"], result["appeal"], result["decided_by"], result["model_decision"]) == \
        ("block", "upheld", "human", "block")
    statement = expect(call(client, "GET", f"/moderation/moderation_result/{task}/statement", A), 200)
    assert statement["automated_decision"] == "AUTOMATED_DECISION_NOT_AUTOMATED"
    assert statement["category"] == "STATEMENT_CATEGORY_SCAMS_AND_FRAUD"
    assert statement["redress"]["internal_complaint"] is False and statement["redress"]["appeal_state"] == "upheld"


def test_statements_of_reasons(client, app_env):
    model_block = scored_task(app_env, "client-a", "block", probability=0.95)
    allowed = scored_task(app_env, "client-a", "allow")
    statement = expect(call(client, "GET", f"/moderation/moderation_result/{model_block}/statement", A), 200)
    assert statement["automated_detection"] == "Yes" and statement["automated_decision"] == "AUTOMATED_DECISION_FULLY"
    assert statement["decision_ground"] == "DECISION_GROUND_INCOMPATIBLE_CONTENT"
    assert statement["decided_by"] == "model" and statement["redress"]["internal_complaint"] is True
    assert statement["puid"] == f"task-{model_block}" and "0.95" in statement["decision_facts"]
    expect(call(client, "GET", f"/moderation/moderation_result/{allowed}/statement", A), 409, "not_blocked")
    expect(call(client, "GET", f"/moderation/moderation_result/{model_block}/statement", B), 404, "task_not_found")
    assert call(client, "GET", f"/moderation/moderation_result/{model_block}/statement", OPS).status_code == 200


def test_bad_input_gets_the_apps_errors(client, app_env):
    mine = scored_task(app_env, "client-a", "review")
    allowed = scored_task(app_env, "client-a", "allow")
    expect(claim(client, mine, MOD), 200)
    expect(verdict(client, mine, MOD2), 409, "lease_required")  # without the lease
    expect(verdict(client, 10**9, MOD), 404, "task_not_found")  # unknown task
    expect(claim(client, 10**9, MOD), 404, "task_not_found")
    # A non-moderator: another client's task does not exist for it; its own, it may not decide.
    expect(verdict(client, mine, B), 404, "task_not_found")
    expect(claim(client, mine, B), 404, "task_not_found")
    expect(verdict(client, mine, A), 403, "insufficient_scope")
    expect(verdict(client, mine, MOD, "block", "rude"), 400, "invalid_body")  # unknown reason code
    expect(verdict(client, mine, MOD, "review", "spam"), 400, "invalid_body")
    expect(call(client, "POST", f"/moderation/reviews/{mine}/verdict", MOD, b"{not json"), 400, "invalid_body")
    expect(call(client, "POST", "/moderation/reviews/abc/claim", MOD), 400, "invalid_parameter")
    # Appeals: an allowed task, another client's, a second one, out of the window.
    expect(call(client, "POST", "/moderation/appeals", A, {"task_id": allowed, "reason": "x"}), 409, "not_blocked")
    expect(call(client, "POST", "/moderation/appeals", A, {"task_id": mine, "reason": "x"}), 409, "not_blocked")
    blocked = scored_task(app_env, "client-a", "block")
    expect(call(client, "POST", "/moderation/appeals", B, {"task_id": blocked, "reason": "x"}), 404, "task_not_found")
    expect(call(client, "POST", "/moderation/appeals", A, {"task_id": blocked, "reason": ""}), 400, "invalid_body")
    expect(call(client, "POST", "/moderation/appeals", A, {"task_id": blocked, "reason": "x"}), 202)
    expect(call(client, "POST", "/moderation/appeals", A, {"task_id": blocked, "reason": "x"}), 409, "already_appealed")
    old = scored_task(app_env, "client-a", "block", days_ago=15)
    expect(call(client, "POST", "/moderation/appeals", A, {"task_id": old, "reason": "x"}), 409, "appeal_window_closed")
    expect(call(client, "POST", "/moderation/appeals", MOD, {"task_id": blocked, "reason": "x"}), 403, "insufficient_scope")


def test_the_backlog_is_reported_by_the_pipeline_health(client, app_env):
    review_tasks(app_env, "client-a", 3)
    body = out(call(client, "GET", "/health/pipeline", None))
    assert body["reviews"]["review"] == 3 and body["reviews"]["appeal"] == 0
    assert body["reviews"]["oldest_seconds"] >= 0


def test_the_reconciler_emits_the_backlog_for_the_alarm(client, app_env, sqs, capsys):
    """Every scheduled run emits ReviewQueueDepth and ReviewOldestAge (function `reconcile`, what
    ReviewBacklogAgeAlarm watches), so the alarm needs no probe polling /health/pipeline."""
    import app
    from devstack.runner import Runner

    review_tasks(app_env, "client-a", 2)
    scored_task(app_env, "client-a", "review", days_ago=0.25)  # waiting six hours
    capsys.readouterr()
    url = sqs.get_queue_url(QueueName="moderation")["QueueUrl"]
    report = Runner(sqs, url, app.score, reconcile=app.reconcile, wait_seconds=0).maybe_reconcile()
    assert report is not None and report["reviews_waiting"] == 3
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    [doc] = [d for d in docs if d.get("function") == "reconcile" and "ReviewOldestAge" in d]
    assert doc["ReviewQueueDepth"] == [3.0] and doc["ReviewOldestAge"][0] >= 6 * 3600 * 1000 * 0.99
    metric_names = {m["Name"] for m in doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"ReviewQueueDepth", "ReviewOldestAge"} <= metric_names


def test_eight_moderators_at_once_over_500_tasks(client, app_env, monkeypatch):
    """No task decided twice, none lost, every lease used or expired. Each moderator abandons some
    claims (a closed tab) and does not come back to them; a 1 s lease sends those back to the queue
    for whoever comes next."""
    monkeypatch.setenv("REVIEW_LEASE_SECONDS", "1")
    monkeypatch.setenv("DB_POOL_SIZE", "8")
    from chalicelib import deps

    deps.reset()
    tasks = set(review_tasks(app_env, "client-a", 500))
    decided: list[tuple[int, str]] = []
    abandoned: list[tuple[int, str]] = []
    lock = threading.Lock()

    def moderate(key: str, seed: int) -> Counter:
        rng, seen = random.Random(seed), Counter()
        closed_tabs: set[int] = set()  # abandoned here: the queue still lists one's own lease, but no one looks
        while True:
            page = out(call(client, "GET", "/moderation/reviews?limit=20", key))["tasks"]
            if not page:
                if out(call(client, "GET", "/health/pipeline", None))["reviews"]["review"] == 0:
                    return seen
                time.sleep(0.2)  # the rest are leased: wait for verdicts or expiry
                continue
            page = [queued for queued in page if queued["task_id"] not in closed_tabs]
            if not page:
                time.sleep(0.05)  # only one's own abandoned leases: another moderator takes them once expired
                continue
            for queued in rng.sample(page, len(page)):
                resp = claim(client, queued["task_id"], key)
                seen[resp.status_code] += 1
                if resp.status_code == 200:
                    break
            else:
                continue
            task_id = queued["task_id"]
            if rng.random() < 0.05:
                closed_tabs.add(task_id)
                with lock:
                    abandoned.append((task_id, key.removeprefix("key-")))
                continue
            resp = verdict(client, task_id, key, rng.choice(["allow", "block"]), rng.choice(["spam", "fraud", "other"]))
            seen[("verdict", resp.status_code)] += 1
            assert resp.status_code in (200, 409), resp.body  # 409: the lease ran out meanwhile
            if resp.status_code == 200:
                with lock:
                    decided.append((task_id, key.removeprefix("key-")))

    with ThreadPoolExecutor(len(MODERATORS)) as pool:
        counts = list(pool.map(moderate, MODERATORS, range(len(MODERATORS))))
    assert all(not (set(c) - {200, 409, ("verdict", 200), ("verdict", 409)}) for c in counts), counts
    # Every task decided exactly once, by the moderator whose verdict was answered 200.
    assert sorted(t for t, _ in decided) == sorted(tasks)
    rows = execute(app_env, "SELECT id, decided_by, reviewed_by FROM moderation_results WHERE id = ANY(%s)", (list(tasks),))
    assert {r[0]: r[2] for r in rows} == dict(decided) and {r[1] for r in rows} == {"human"}
    trail = execute(app_env, "SELECT task_id, kind, actor FROM task_events WHERE task_id = ANY(%s) AND kind <> 'accepted'",
                    (list(tasks),))
    per_kind = Counter(k for _, k, _ in trail)
    assert Counter((t, k) for t, k, _ in trail if k == "reviewed") == Counter((t, "reviewed") for t in tasks)
    # Every lease was used (a verdict) or expired (and the next claim recorded it): none is left open.
    assert per_kind["claimed"] == per_kind["reviewed"] + per_kind["lease_expired"]
    # Each abandoned lease expired (the next moderator's claim recorded it); a verdict answered 409 had
    # lost its lease, which then expired too. (Had the moderators come back to their abandoned claims,
    # as the queue lets them, a quick enough run renewed every one and none expired: seen in CI.)
    lost = sum(c[("verdict", 409)] for c in counts)
    assert abandoned and len(abandoned) <= per_kind["lease_expired"] <= len(abandoned) + lost
    assert execute(app_env, "SELECT count(*) FROM human_reviews WHERE decided_at IS NULL")[0][0] == 0
    assert out(call(client, "GET", "/moderation/reviews", MODERATORS[0]))["tasks"] == []


def test_make_statements_exports_the_blocks_since_a_time(client, app_env, monkeypatch, capsys, tmp_path):
    from ops import statements

    old = scored_task(app_env, "client-a", "block", days_ago=3)
    model_block = scored_task(app_env, "client-a", "block", probability=0.9)
    reviewed = scored_task(app_env, "client-b", "review")
    scored_task(app_env, "client-a", "allow")
    expect(claim(client, reviewed, MOD), 200)
    expect(verdict(client, reviewed, MOD, "block", "misleading"), 200)
    monkeypatch.setenv("DATABASE_URL", app_env)
    since = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    capsys.readouterr()  # the app's own log and metric lines so far
    assert statements.main(["--since", since]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [s["puid"] for s in lines] == [f"task-{model_block}", f"task-{reviewed}"]  # not the old one
    assert set(lines[0]) == set(DSA_FIELDS)
    assert [s["automated_decision"] for s in lines] == ["AUTOMATED_DECISION_FULLY", "AUTOMATED_DECISION_NOT_AUTOMATED"]
    # The route answers the same statement, field for field.
    served = out(call(client, "GET", f"/moderation/moderation_result/{reviewed}/statement", B))
    assert {k: served[k] for k in DSA_FIELDS} == lines[1]
    out_file = tmp_path / "s.jsonl"
    assert statements.main(["--since", "2000-01-01", "--out", str(out_file), "--all-fields"]) == 0
    assert [json.loads(line)["task_id"] for line in out_file.read_text().splitlines()] == [old, model_block, reviewed]


def test_human_verdicts_are_labels_and_model_compare_reports_agreement(client, app_env, capsys):
    """The loop feeds the model: training/labels.py reads the moderators' verdicts, splits them by ad,
    weights them; make model-compare reports the live and shadow models' agreement with people."""
    import argparse

    from ops.model_compare import cmd_compare
    from training import labels, train

    tasks = review_tasks(app_env, "client-a", 6) + [scored_task(app_env, "client-a", "review") for _ in range(20)]
    for n, task in enumerate(tasks):
        expect(claim(client, task, MOD), 200)
        expect(verdict(client, task, MOD, "block" if n % 2 else "allow", "spam"), 200)
    execute(app_env, "INSERT INTO shadow_verdicts (task_id, shadow_version, live_version, live_probability, "
                     "shadow_probability, live_decision, shadow_decision) "
                     "SELECT id, 'lr-shadow', 'v-test', probability, 0.9, 'review', 'block' FROM moderation_results "
                     "WHERE id = ANY(%s)", (tasks[:4],))
    found = labels.load(app_env)
    assert sorted(h.task_id for h in found) == sorted(tasks)
    assert {h.task_id: h.is_violation for h in found} == {t: bool(n % 2) for n, t in enumerate(tasks)}
    train_side, test_side = labels.split(found, 42)
    assert {h.item_id for h in train_side}.isdisjoint({h.item_id for h in test_side})  # split by ad
    assert labels.split(found, 42) == (train_side, test_side)  # seeded
    artifact, _ = train.train(train.DEFAULT_N, 42, 0.95, 0.8, human=found)
    summary = artifact["training"]["human_labels"]
    assert (summary["n"], summary["train"] + summary["test"], summary["weight"]) == (26, 26, labels.HUMAN_WEIGHT)
    plain, _ = train.train(train.DEFAULT_N, 42, 0.95, 0.8)
    assert plain["version"] != artifact["version"] and "human_labels" not in plain["training"]
    capsys.readouterr()
    args = argparse.Namespace(database_url=app_env, local=False, shadow_version=None, n=500)
    assert cmd_compare(None, args) == 0
    printed = capsys.readouterr().out
    # Every model decision was `review` (it abstained): live agrees with no human verdict; the shadow
    # said block on 4, of which tasks[1] and tasks[3] were blocked by the person.
    assert "agreement with human verdicts (26 tasks a moderator decided): live 0.0%, shadow 50.0% (of the 4 it scored)" \
        in printed


def test_retention_keeps_tasks_waiting_for_a_person_and_purges_decided_ones_with_their_reviews(client, app_env):
    from chalicelib import deps

    waiting = scored_task(app_env, "client-a", "review")
    decided = scored_task(app_env, "client-a", "review")
    appealed = scored_task(app_env, "client-a", "block")
    expect(claim(client, decided, MOD), 200)
    expect(verdict(client, decided, MOD, "allow", "other"), 200)
    expect(call(client, "POST", "/moderation/appeals", A, {"task_id": appealed, "reason": "x"}), 202)
    execute(app_env, "UPDATE moderation_results SET created_at = now() - interval '90 days', "
                     "updated_at = now() - interval '90 days'")
    purged = deps.maintenance_store().purge_finished(datetime.now(UTC) - timedelta(days=30), 0, 10**9, 100)
    assert purged.tasks == 1
    assert sorted(r[0] for r in execute(app_env, "SELECT id FROM moderation_results")) == sorted([waiting, appealed])
    assert {r[0] for r in execute(app_env, "SELECT task_id FROM human_reviews")} == {appealed}


def test_an_ad_the_scorer_puts_in_the_review_band_enters_the_queue(client, app_env):
    """The real path: submitted through the API, scored by the scorer with the packaged model; an ad
    in its review band is queued with nothing written for it (the partial index), one outside is not."""
    from chalicelib import deps
    from chalicelib.domain.verdicts import decide
    from tests.helpers import insert_ad, sqs_record, task_body
    from training.dataset import generate_ads

    model = deps.service().model
    by_decision: dict[str, Any] = {}
    for ad in generate_ads(3000, 7):
        by_decision.setdefault(decide(model.predict_proba([ad.features()])[0], model.thresholds), ad)
        if {"review", "allow"} <= set(by_decision):
            break
    submitted = {}
    for decision in ("review", "allow"):
        ad = by_decision[decision]
        item = insert_ad(app_env, name=ad.name, description=ad.description, category=ad.category,
                         images_qty=ad.images_qty, verified=ad.is_verified_seller)
        resp = call(client, "POST", f"/moderation/async_predict?item_id={item}", A)
        submitted[decision] = (expect(resp, 202)["task_id"], item)
    assert deps.scorer().handle([sqs_record(task_body(t, i)) for t, i in submitted.values()]) == {"batchItemFailures": []}
    queued = out(call(client, "GET", "/moderation/reviews", MOD))["tasks"]
    assert [(t["task_id"], t["model_decision"], t["model_version"]) for t in queued] == \
        [(submitted["review"][0], "review", model.version)]
    assert execute(app_env, "SELECT count(*) FROM human_reviews")[0][0] == 0  # nothing written to queue it


def test_make_model_publish_trains_with_human_labels(client, app_env):
    """ops/models.py's publish builds its artifact with the verdicts when asked (--human-labels)."""
    import argparse

    from ops.models import build_artifact

    for task in review_tasks(app_env, "client-a", 4):
        expect(claim(client, task, MOD), 200)
        expect(verdict(client, task, MOD, "block", "fraud"), 200)
    args = argparse.Namespace(artifact=None, seed=42, target_precision=0.95, review_recall=0.8, family="lr",
                              human_labels=True, database_url=app_env)
    data, source, _ = build_artifact(args)
    assert json.loads(data)["training"]["human_labels"]["n"] == 4 and source.startswith("trained")


def test_v10_is_idempotent(client, app_env):
    """migrations/V10 run again (an operator re-applying it, or a database adopted half-way) changes nothing."""
    from pathlib import Path

    sql = (Path(__file__).resolve().parents[2] / "migrations" / "V10__reviews.sql").read_text()
    task = scored_task(app_env, "client-a", "review")
    expect(claim(client, task, MOD), 200)
    schema = ("SELECT table_name, column_name, data_type FROM information_schema.columns "
              "WHERE table_schema = 'public' ORDER BY 1, 2")
    before = execute(app_env, schema), execute(app_env, "SELECT indexname FROM pg_indexes ORDER BY 1")
    execute(app_env, sql)
    execute(app_env, sql)
    assert (execute(app_env, schema), execute(app_env, "SELECT indexname FROM pg_indexes ORDER BY 1")) == before
    expect(verdict(client, task, MOD, "allow", "other"), 200)  # the lease survived

"""Webhooks (issue 22; docs/webhooks.md) through the app on real PostgreSQL and moto SQS: the
routes with a stand-in for API Gateway's key check, the scorer and the sender invoked by the
runner's pollers (devstack/runner.py) as Lambda would, and a receiver that verifies every
delivery with the `standardwebhooks` package and dedupes on `webhook-id`
(toolkit/webhook_receiver.py)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

import app as chalice_app
from chalicelib import deps, outbound
from chalicelib.domain import webhooks as hooks
from chalicelib.storage.webhooks import record_events
from devstack.runner import Runner
from ops.dlq import DlqMessage
from tests.helpers import execute, insert_ad, keyed_client
from toolkit.webhook_receiver import Receiver, serve

A, B = "key-a", "key-b"


@pytest.fixture()
def env(app_env, monkeypatch) -> Iterator[str]:
    execute(app_env, "TRUNCATE webhook_attempts, webhook_deliveries, webhook_endpoints RESTART IDENTITY CASCADE")
    monkeypatch.setenv("WEBHOOK_ALLOW_HTTP", "1")
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "1")  # the receiver is on this machine (as under make run)
    monkeypatch.setenv("WEBHOOK_SCHEDULE", "0,0,0")  # retries at once, so the pollers see them now
    monkeypatch.setenv("DB_POOL_SIZE", "8")
    deps.reset()
    yield app_env
    deps.reset()


@pytest.fixture()
def client(env):
    with keyed_client(chalice_app.app, default_key=None) as c:
        yield c


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    with serve(Receiver()) as r:
        yield r


def call(client, method: str, path: str, key: str, body: Any = None) -> tuple[int, Any]:
    raw = b"" if body is None else json.dumps(body).encode()
    resp = client.http.request(method, path, headers={"Content-Type": "application/json", "x-api-key": key}, body=raw)
    return resp.status_code, json.loads(resp.body) if resp.body else None


def register(client, receiver: Receiver, key: str, path: str, events: list[str]) -> dict:
    status, body = call(client, "POST", "/webhooks/endpoints", key, {"url": receiver.url + path, "events": events})
    assert status == 201, body
    assert body["secret"].startswith("whsec_") and body["id"].startswith("ep_")
    receiver.secrets.setdefault(path, []).append(body["secret"])
    return body


def runners(sqs) -> tuple[Runner, Runner]:
    def url(name: str) -> str:
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]

    return (Runner(sqs, url("moderation"), chalice_app.score, batch_size=10, pollers=1),
            Runner(sqs, url("webhooks"), chalice_app.send_webhooks, batch_size=10, pollers=1))


def pump(sqs, rounds: int = 30) -> None:
    """Drain both queues as the event source mappings would, until both are empty."""
    score, send = runners(sqs)
    for _ in range(rounds):
        if score.poll_once(wait_seconds=0) + send.poll_once(wait_seconds=0) == 0:
            return


def submit(client, key: str, n: int = 1) -> list[int]:
    ids = []
    for _ in range(n):
        item_id = insert_ad(deps.get_settings().database_url or "")
        status, body = call(client, "POST", f"/moderation/async_predict?item_id={item_id}", key)
        assert status == 202, body
        ids.append(body["task_id"])
    return ids


def test_a_completion_is_pushed_signed_and_verifies_as_a_receiver_checks_it(client, sqs, receiver, env, capfd, caplog):
    endpoint = register(client, receiver, A, "/a", [hooks.COMPLETED, hooks.FAILED])
    tasks = submit(client, A, 3)
    pump(sqs)
    got = receiver.wait_for(3, 5, hooks.COMPLETED)
    assert sorted(d.payload["data"]["task_id"] for d in got) == sorted(tasks)
    for d in got:
        status, task = call(client, "GET", f"/moderation/moderation_result/{d.payload['data']['task_id']}", A)
        assert d.payload["data"] == {"task_id": task["task_id"], "item_id": task["item_id"], "status": "completed",
                                     "decision": task["decision"]}
        assert set(d.payload) == {"type", "timestamp", "data"} and len(d.body) < 20 * 1024
    assert receiver.rejected == []
    # The secret is shown once: the list has none.
    status, listed = call(client, "GET", "/webhooks/endpoints", A)
    assert status == 200 and [e["id"] for e in listed["endpoints"]] == [endpoint["id"]]
    assert "secret" not in json.dumps(listed)
    status, attempts = call(client, "GET", f"/webhooks/endpoints/{endpoint['id']}/attempts", A)
    assert status == 200 and len(attempts["attempts"]) == 3
    assert {(a["status_code"], a["outcome"], a["attempt"]) for a in attempts["attempts"]} == {(204, "delivered", 1)}
    assert all(a["latency_ms"] is not None and a["error"] is None for a in attempts["attempts"])
    status, rotated = call(client, "POST", f"/webhooks/endpoints/{endpoint['id']}/rotate", A)
    call(client, "POST", f"/webhooks/endpoints/{endpoint['id']}/test", A)
    pump(sqs)
    # No secret, and no signature made with one, in any log line of the API, the scorer or the sender.
    logged = "".join(capfd.readouterr()) + "".join(str(vars(r)) for r in caplog.records)  # each line, extras and all
    assert "webhook attempt" in logged  # the sender did log its attempts
    for secret in (endpoint["secret"], rotated["secret"]):
        assert secret not in logged and secret.removeprefix("whsec_") not in logged
    assert "v1," not in logged


def test_a_changed_byte_and_a_stale_timestamp_do_not_verify(client, sqs, receiver):
    register(client, receiver, A, "/a", [hooks.COMPLETED])
    submit(client, A)
    pump(sqs)
    [d] = receiver.wait_for(1, 5)
    secret = receiver.secrets["/a"][0]
    assert Webhook(secret).verify(d.body, d.headers)["type"] == hooks.COMPLETED  # as received
    changed = d.body[:-2] + bytes([d.body[-2] ^ 1]) + d.body[-1:]
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(changed, d.headers)
    stale = dict(d.headers, **{"webhook-timestamp": str(int(d.headers["webhook-timestamp"]) - 301)})
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(d.body, stale)
    # and the receiver refuses such deliveries (400), so the sender retries them
    assert receiver.handle("/a", changed, d.headers)[0] == 400


def test_a_client_sees_only_its_own_endpoints_and_events(client, sqs, receiver):
    mine = register(client, receiver, A, "/a", [hooks.COMPLETED])
    register(client, receiver, B, "/b", [hooks.COMPLETED])
    submit(client, A, 2)
    pump(sqs)
    receiver.wait_for(2, 5)
    assert {d.path for d in receiver.events()} == {"/a"}  # B's endpoint gets nothing of A's
    assert [e["url"] for e in call(client, "GET", "/webhooks/endpoints", B)[1]["endpoints"]] == [receiver.url + "/b"]
    for method, suffix, body in (("DELETE", "", None), ("POST", "/rotate", None), ("POST", "/test", None),
                                 ("GET", "/attempts", None), ("POST", "/enable", None),
                                 ("POST", "/replay", {"since": "2020-01-01T00:00:00Z"})):
        theirs = call(client, method, f"/webhooks/endpoints/{mine['id']}{suffix}", B, body)
        missing = call(client, method, f"/webhooks/endpoints/ep_missing{suffix}", B, body)
        assert theirs[0] == missing[0] == 404 and theirs[1]["code"] == missing[1]["code"] == "endpoint_not_found"
    assert call(client, "GET", f"/webhooks/endpoints/{mine['id']}/attempts", A)[0] == 200


def test_a_retry_keeps_its_webhook_id_and_only_2xx_counts(client, sqs, receiver):
    register(client, receiver, A, "/a", [hooks.COMPLETED])
    answers = iter([(503, {}), (302, {"location": "http://169.254.169.254/"})])
    receiver.answer = lambda path: next(answers, None)
    submit(client, A)
    pump(sqs)
    [d] = receiver.wait_for(1, 5)
    rows = execute(deps.get_settings().database_url or "", "SELECT event_id, attempts, status FROM webhook_deliveries")
    assert rows == [(d.event_id, 3, "delivered")]
    attempts = execute(deps.get_settings().database_url or "", "SELECT status_code, outcome FROM webhook_attempts ORDER BY id")
    assert attempts == [(503, "retry"), (302, "retry"), (204, "delivered")]


def test_retry_after_is_honoured_and_long_waits_are_held_in_the_database(client, sqs, receiver):
    register(client, receiver, A, "/a", [hooks.COMPLETED])
    receiver.answer = lambda path: (429, {"Retry-After": "1200"})
    submit(client, A)
    pump(sqs)
    db = deps.get_settings().database_url or ""
    [(wait, enqueued)] = execute(db, "SELECT extract(epoch FROM next_attempt_at - now()), enqueued_at FROM webhook_deliveries")
    assert 1100 < wait <= 1200 and enqueued is None  # beyond SQS's 900 s: no message yet
    assert deps.webhook_sender().sweep() == 0  # not due within 15 min
    execute(db, "UPDATE webhook_deliveries SET next_attempt_at = now() + interval '10 minutes'")
    receiver.answer = None
    assert deps.webhook_sender().sweep() == 1  # now SQS can hold it: a delayed message
    [(enqueued,)] = execute(db, "SELECT enqueued_at IS NOT NULL FROM webhook_deliveries")
    assert enqueued


def test_410_disables_the_endpoint_tells_the_others_and_it_can_be_enabled(client, sqs, receiver):
    gone = register(client, receiver, A, "/gone", [hooks.COMPLETED])
    register(client, receiver, A, "/ops", [hooks.ENDPOINT_DISABLED])
    receiver.answer = lambda path: (410, {}) if path == "/gone" else None
    submit(client, A)
    pump(sqs)
    [notice] = receiver.wait_for(1, 5, hooks.ENDPOINT_DISABLED)
    assert notice.payload["data"]["endpoint_id"] == gone["id"] and "410" in notice.payload["data"]["reason"]
    [endpoint] = [e for e in call(client, "GET", "/webhooks/endpoints", A)[1]["endpoints"] if e["id"] == gone["id"]]
    assert endpoint["enabled"] is False
    submit(client, A)  # nothing is sent to a disabled endpoint
    pump(sqs)
    db = deps.get_settings().database_url or ""
    assert execute(db, "SELECT count(*) FROM webhook_attempts WHERE endpoint_id = %s", (gone["id"],))[0][0] == 1
    receiver.answer = None
    status, body = call(client, "POST", f"/webhooks/endpoints/{gone['id']}/enable", A)
    assert status == 200 and body["enabled"] is True
    pump(sqs)
    [recovered] = receiver.wait_for(1, 5, hooks.ENDPOINT_ENABLED)
    assert recovered.path == "/gone"


def test_an_endpoint_failing_past_the_limit_is_disabled_and_exhausted_deliveries_are_parked(client, sqs, receiver,
                                                                                            monkeypatch):
    monkeypatch.setenv("WEBHOOK_DISABLE_AFTER_SECONDS", "3600")
    deps.reset()
    endpoint = register(client, receiver, A, "/a", [hooks.COMPLETED])
    receiver.answer = lambda path: (500, {})
    submit(client, A)
    pump(sqs)
    db = deps.get_settings().database_url or ""
    assert execute(db, "SELECT status, attempts FROM webhook_deliveries") == [("exhausted", 3)]
    outcomes = [a["outcome"] for a in call(client, "GET", f"/webhooks/endpoints/{endpoint['id']}/attempts", A)[1]["attempts"]]
    assert outcomes == ["exhausted", "retry", "retry"]
    dlq = sqs.receive_message(QueueUrl=sqs.get_queue_url(QueueName="webhooks_dlq")["QueueUrl"], MaxNumberOfMessages=10,
                              AttributeNames=["All"])
    [message] = dlq["Messages"]
    envelope = json.loads(message["Body"])
    assert envelope["endpoint_id"] == endpoint["id"] and envelope["attempts"] == 3 and envelope["error"] == "HTTP 500"
    shown = DlqMessage.from_sqs(message)  # what `make dlq ARGS="--queue webhooks --dlq webhooks_dlq list"` prints
    assert (shown.kind, shown.error, shown.retry_count) == ("exhausted", "HTTP 500", 3)
    # failing for longer than WEBHOOK_DISABLE_AFTER_SECONDS: the next failure disables it
    execute(db, "UPDATE webhook_endpoints SET failing_since = now() - interval '2 hours'")
    submit(client, A)
    pump(sqs)
    [(enabled, reason)] = execute(db, "SELECT enabled, disabled_reason FROM webhook_endpoints")
    assert enabled is False and "3600" in reason


def test_rotation_signs_with_both_secrets_for_the_window(client, sqs, receiver):
    endpoint = register(client, receiver, A, "/a", [hooks.COMPLETED])
    old = receiver.secrets["/a"][0]
    status, rotated = call(client, "POST", f"/webhooks/endpoints/{endpoint['id']}/rotate", A)
    assert status == 200 and rotated["secret"] != old and rotated["secret"].startswith("whsec_")
    until = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert timedelta(hours=23) < until - datetime.now(UTC) <= timedelta(hours=24)
    call(client, "POST", f"/webhooks/endpoints/{endpoint['id']}/test", A)
    pump(sqs)
    [d] = receiver.wait_for(1, 5, hooks.TEST)
    assert len(d.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, rotated["secret"]):  # a receiver on either secret verifies it
        assert Webhook(secret).verify(d.body, d.headers)["type"] == hooks.TEST
    receiver.secrets["/a"] = [rotated["secret"]]  # the receiver moved to the new secret
    execute(deps.get_settings().database_url or "", "UPDATE webhook_endpoints SET previous_until = now()")
    call(client, "POST", f"/webhooks/endpoints/{endpoint['id']}/test", A)
    pump(sqs)
    latest = [x for x in receiver.wait_for(2, 5, hooks.TEST) if x.event_id != d.event_id]
    assert len(latest) == 1 and len(latest[0].headers["webhook-signature"].split(" ")) == 1
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(latest[0].body, latest[0].headers)


def test_replay_after_an_outage_sends_the_same_ids_again(client, sqs, receiver):
    endpoint = register(client, receiver, A, "/a", [hooks.COMPLETED])
    submit(client, A, 2)
    pump(sqs)
    first = {d.event_id for d in receiver.wait_for(2, 5)}
    status, body = call(client, "POST", f"/webhooks/endpoints/{endpoint['id']}/replay", A,
                        {"since": (datetime.now(UTC) - timedelta(hours=1)).isoformat()})
    assert status == 202 and body["deliveries"] == 2
    pump(sqs)
    deadline = time.monotonic() + 5
    while len(receiver.verified) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [d.event_id for d in receiver.verified].count(next(iter(first))) == 2  # redelivered, same id
    assert {d.event_id for d in receiver.events()} == first  # the receiver's dedupe keeps one each
    # RFC 3339 allows offsets PostgreSQL does not (beyond ±15:59): taken, in UTC
    path = f"/webhooks/endpoints/{endpoint['id']}/replay"
    assert call(client, "POST", path, A, {"since": "2020-01-01T00:00:00+17:23"})[0] == 202
    assert call(client, "POST", path, A, {"since": 0})[0] == 400


def test_the_outbox_is_the_transaction_s_a_rollback_leaves_no_event(client, env, receiver):
    register(client, receiver, A, "/a", [hooks.COMPLETED])
    [task] = submit(client, A)
    with pytest.raises(RuntimeError), deps.database().transaction() as cur:
        cur.execute("UPDATE moderation_results SET status = 'completed', is_violation = false, probability = 0.1, "
                    "decision = 'allow', model_version = 'v', processed_at = now() WHERE id = %s", (task,))
        assert len(record_events(cur, [(hooks.COMPLETED, task)])) == 1
        raise RuntimeError("the state change failed")
    assert execute(env, "SELECT count(*) FROM webhook_deliveries")[0][0] == 0
    with deps.database().transaction() as cur:  # an event its own state does not back reports nothing
        assert record_events(cur, [(hooks.COMPLETED, task)]) == []


def test_many_clients_at_once_every_completion_delivered_once_verified(client, sqs, receiver):
    register(client, receiver, A, "/a", [hooks.COMPLETED])
    register(client, receiver, B, "/b", [hooks.COMPLETED])
    environ = os.environ  # Chalice's test client swaps os.environ per request, racily across threads: put it back
    try:
        with ThreadPoolExecutor(8) as pool:
            ids = [t for batch in pool.map(lambda k: submit(client, k, 10), [A, B] * 3) for t in batch]
    finally:
        os.environ = environ  # noqa: B003 - the very object, not its contents
    score, send = runners(sqs)

    def drain(runner: Runner) -> None:
        idle = 0
        while idle < 3:
            idle = idle + 1 if runner.poll_once(wait_seconds=0) == 0 else 0

    with ThreadPoolExecutor(4) as pool:  # two pollers per queue, as the event source mappings run
        list(pool.map(drain, [score, score, send, send]))
    pump(sqs)
    got = receiver.wait_for(60, 10)
    assert sorted(d.payload["data"]["task_id"] for d in got) == sorted(ids)
    assert {d.path for d in got if d.payload["data"]["task_id"] in ids[:10]} == {"/a"}
    assert receiver.rejected == []


def test_the_sender_refuses_private_addresses_after_resolving_on_the_deployed_stack(receiver):
    receiver.secrets["/a"] = []
    for url in (receiver.url + "/a", receiver.url.replace("127.0.0.1", "localhost") + "/a"):
        answer = outbound.post(url, b"{}", {}, timeout_seconds=2, allow_private=False)
        assert answer.status_code is None and answer.error and answer.error.startswith("refused")
    assert receiver.verified == [] and receiver.rejected == []  # nothing reached it
    assert outbound.post(receiver.url + "/a", b"{}", {}, timeout_seconds=2, allow_private=True).status_code == 400


def test_registration_refuses_http_and_private_urls_where_not_allowed(client, monkeypatch):
    monkeypatch.setenv("WEBHOOK_ALLOW_HTTP", "0")
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "0")
    deps.reset()
    for url in ("http://hooks.example.com/x", "https://127.0.0.1/x", "https://10.1.2.3/x", "https://169.254.169.254/x",
                "https://localhost/x", "ftp://hooks.example.com/"):
        status, body = call(client, "POST", "/webhooks/endpoints", A, {"url": url, "events": [hooks.COMPLETED]})
        assert status == 400 and body["code"] == "invalid_body", (url, body)
    status, body = call(client, "POST", "/webhooks/endpoints", A, {"url": "https://hooks.example.com/x",
                                                                    "events": [hooks.COMPLETED]})
    assert status == 201, body
    assert call(client, "POST", "/webhooks/endpoints", A, {"url": "https://hooks.example.com/x", "events": ["nope"]})[0] == 400


def test_a_moderators_verdict_and_an_appeal_decision_are_pushed(client, sqs, receiver, env):
    """The review loop's events (issue 21) go through the same outbox: written by the verdict's own
    transaction (chalicelib/storage/reviews.py, ReviewStore.decide), published after its commit."""
    from tests.reviews_helpers import scored_task

    register(client, receiver, A, "/a", [hooks.REVIEWED, hooks.APPEAL_DECIDED])
    task = scored_task(env, "client-a", "review", probability=0.6)
    moderator, other = "key-moderator", "key-tester"  # tests/helpers.py TEST_CLIENTS: both may moderate
    assert call(client, "POST", f"/moderation/reviews/{task}/claim", moderator)[0] == 200
    status, body = call(client, "POST", f"/moderation/reviews/{task}/verdict", moderator,
                        {"decision": "block", "reason": "fraud"})
    assert status == 200, body
    pump(sqs)
    [reviewed] = receiver.wait_for(1, 5, hooks.REVIEWED)
    assert reviewed.payload["data"] == {"task_id": task, "item_id": body["item_id"], "status": "completed",
                                        "decision": "block"}
    status, body = call(client, "POST", "/moderation/appeals", A, {"task_id": task, "reason": "it is a real offer"})
    assert status in (200, 202), body
    assert call(client, "POST", f"/moderation/reviews/{task}/claim", other)[0] == 200  # four eyes: not `moderator`
    assert call(client, "POST", f"/moderation/reviews/{task}/verdict", other,
                {"decision": "allow", "reason": "other"})[0] == 200
    pump(sqs)
    [decided] = receiver.wait_for(1, 5, hooks.APPEAL_DECIDED)
    assert decided.payload["data"]["decision"] == "allow" and decided.payload["data"]["task_id"] == task
    assert receiver.rejected == []
    # Another client's endpoint hears nothing of client-a's task.
    status, listed = call(client, "GET", "/webhooks/endpoints", B)
    assert status == 200 and listed["endpoints"] == []

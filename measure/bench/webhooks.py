"""Webhooks (issue 22; docs/webhooks.md): what push costs and how it holds up.

1. outbox cost: Scorer.handle at batch 100 on real PostgreSQL (SQS stubbed, as the batch
   section), with and without an endpoint subscribed to the tasks' client, rounds interleaved;
   the goal is that with webhooks it keeps at least 0.85 of the rate without (the outbox write
   shares the scoring transaction: one more statement per batch).
2. end to end on one `make run` stack with a local receiver that verifies every delivery with
   the `standardwebhooks` package and dedupes on `webhook-id` (toolkit/webhook_receiver.py):
   TASKS completions submitted through the batch route; completion -> webhook received
   (the payload's `timestamp`, written by the scoring transaction, to the receiver's clock:
   one machine) p50/p99; deliveries per second; and, once half of them have arrived, the
   receiver answers 503 for OUTAGE_S seconds: the goal is that every completion is still
   delivered (at least once, each verified), on the service's real retry schedule.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from devstack.stack import make_run
from measure.bench.batch import StubQueue, database, insert_tasks, sqs_records, stdout_to_devnull
from toolkit import stats
from toolkit.seed import DEMO_ADS
from toolkit.webhook_receiver import Receiver, serve

TARGET_KEEPS = 0.85
ROUNDS = 3
BATCH = 100
OUTAGE_S = 60
DRAIN_TIMEOUT_S = 1500  # the real schedule: after the outage a delivery may wait 5 min (its third step)
SUBMITTERS = 8
PACED, PACED_RATE = 200, 10  # the unloaded latency: tasks, per second


def steps() -> int:
    return 1 + ROUNDS + 3


def outbox_cost(messages: int, progress: Any) -> dict[str, Any]:
    from chalicelib.queue import TaskQueue
    from chalicelib.scoring.scorer import Scorer
    from chalicelib.serving.model import load_model
    from chalicelib.storage.db import Database
    from chalicelib.storage.scoring import ScoringStore

    published: list[int] = []
    with database() as url, stdout_to_devnull():
        store = ScoringStore(Database(url))
        # Two clients: `bench` subscribes nothing, `hooked` has one endpoint (nothing is sent: SQS is stubbed).
        scorer = Scorer(store, cast(TaskQueue, StubQueue()), load_model(), retry_base_seconds=5, default_max_receive_count=3,
                        publish=lambda due: published.append(len(due)))
        with Database(url).transaction() as cur:
            cur.execute("INSERT INTO webhook_endpoints (id, client_id, url, events, secret) VALUES "
                        "('ep_bench', 'hooked', 'https://hooks.example.com/x', '{moderation.completed}', 'plain:whsec_x')")
        progress.update(1)
        # Batch by batch, alternating: on a shared machine a neighbour's burst then hits both
        # series alike; each series' rate is BATCH over its median batch time.
        per_batch: dict[str, list[float]] = {"without": [], "with": []}
        for r in range(ROUNDS):
            progress.set_description_str(f"webhooks: batch {BATCH} with and without an endpoint, round {r + 1}/{ROUNDS}")
            series = {}
            for name, client in (("without", "bench"), ("with", "hooked")):
                tasks = insert_tasks(url, max(messages, 3000) // ROUNDS + BATCH)  # at least 10 batches a round
                with Database(url).transaction() as cur:
                    cur.execute("UPDATE moderation_results SET client_id = %s WHERE id = ANY(%s)",
                                (client, [t for t, _ in tasks]))
                records = sqs_records(tasks)
                series[name] = [records[i : i + BATCH] for i in range(0, len(records) - BATCH + 1, BATCH)]
            for name in series:
                scorer.handle(series[name][0])  # warm-up
            for pair in zip(series["without"][1:], series["with"][1:], strict=False):
                for name, batch in zip(("without", "with"), pair, strict=True):
                    started = time.perf_counter()
                    scorer.handle(batch)
                    per_batch[name].append(time.perf_counter() - started)
            progress.update(1)
        written = sum(published)
    without, with_ = (BATCH / stats.percentile(per_batch[k], 50) for k in ("without", "with"))
    return {"batch": BATCH, "msg_per_s_without": without, "msg_per_s_with": with_, "batches": len(per_batch["with"]),
            "ms_per_batch": {k: stats.summary([x * 1000 for x in v], 2) for k, v in per_batch.items()},
            "keeps": with_ / without, "target_keeps": TARGET_KEEPS, "deliveries_written": written}


def _http(method: str, url: str, key: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", "x-api-key": key})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def end_to_end(tasks: int, out_dir: Path, progress: Any) -> dict[str, Any]:
    progress.set_description_str("webhooks: starting make run and a receiver")
    log = out_dir / "webhooks-make-run.log"
    log.unlink(missing_ok=True)
    outage: dict[str, float] = {}
    with make_run(log=log) as stack, serve(Receiver()) as receiver:
        status, endpoint = _http("POST", f"{stack.api}/webhooks/endpoints", stack.api_key,
                                 {"url": receiver.url + "/bench", "events": ["moderation.completed"]})
        if status != 201:
            raise RuntimeError(f"could not register the receiver: {status} {endpoint}")
        receiver.secrets["/bench"] = [endpoint["secret"]]
        answers_lock = threading.Lock()

        def answer(path: str) -> tuple[int, dict[str, str]] | None:
            with answers_lock:
                if "start" not in outage and len(receiver.unique) >= PACED + tasks // 2:
                    outage["start"] = time.time()
                if "start" in outage and time.time() < outage["start"] + OUTAGE_S:
                    outage["refused"] = outage.get("refused", 0) + 1
                    return 503, {}
            return None

        # Unloaded first: PACED tasks one at a time, PACED_RATE a second, so the latency is the
        # pipeline's (queue, scorer, outbox, queue, sender), not a backlog's.
        progress.set_description_str(f"webhooks: {PACED} tasks at {PACED_RATE}/s")
        paced_ids = set()
        for i in range(PACED):
            status, body = _http("POST", f"{stack.api}/moderation/async_predict?item_id={i % DEMO_ADS + 1}", stack.api_key)
            if status == 202:
                paced_ids.add(body["task_id"])
            time.sleep(1 / PACED_RATE)
        paced = [d for d in receiver.wait_for(len(paced_ids), 60, "moderation.completed")
                 if d.payload["data"]["task_id"] in paced_ids]
        paced_ms = [(d.at - _epoch(d.payload["timestamp"])) * 1000 for d in paced]
        receiver.answer = answer
        progress.update(1)
        progress.set_description_str(f"webhooks: submitting {tasks} tasks")
        items = [i % DEMO_ADS + 1 for i in range(tasks)]
        chunks: Sequence[list[int]] = [items[i : i + 100] for i in range(0, len(items), 100)]
        started = time.time()
        with ThreadPoolExecutor(SUBMITTERS) as pool:
            answers = list(pool.map(lambda c: _http("POST", f"{stack.api}/moderation/async_predict/batch", stack.api_key,
                                                    {"item_ids": c}), chunks))
        task_ids = {item["task_id"] for s, body in answers if s == 202 for item in body["items"] if "task_id" in item}
        submitted = time.time() - started
        progress.update(1)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            got = {d.payload["data"]["task_id"] for d in receiver.events("moderation.completed")}
            progress.set_description_str(f"webhooks: {len(got)}/{len(task_ids)} delivered"
                                         + (", receiver answering 503" if outage.get("start", 0) + OUTAGE_S > time.time()
                                            else ""))
            if task_ids <= got:
                break
            time.sleep(1)
        delivered = [d for d in receiver.events("moderation.completed") if d.payload["data"]["task_id"] in task_ids]
        progress.update(1)
    latencies = [(d.at - _epoch(d.payload["timestamp"])) * 1000 for d in delivered]
    before = [ms for d, ms in zip(delivered, latencies, strict=True) if d.at < outage.get("start", float("inf"))]
    arrivals = sorted(d.at for d in delivered)
    steady = [t for t in arrivals if t < outage.get("start", float("inf"))]
    return {
        "tasks": len(task_ids), "submit_seconds": submitted,
        "delivered_unique": len({d.payload["data"]["task_id"] for d in delivered} & task_ids),
        "all_delivered": task_ids <= {d.payload["data"]["task_id"] for d in delivered},
        "deliveries_verified": len(receiver.verified), "duplicates": len(receiver.verified) - len(receiver.unique),
        "rejected": len(receiver.rejected), "outage_s": OUTAGE_S, "refused_503": outage.get("refused", 0),
        "paced": {"tasks": len(paced_ids), "per_s": PACED_RATE, "delivered": len(paced),
                  "completion_to_received_ms": stats.summary(paced_ms)},
        "completion_to_received_ms": stats.summary(latencies),
        "completion_to_received_ms_before_outage": stats.summary(before),
        "deliveries_per_s_before_outage": (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else None,
        "last_delivery_after_outage_end_s": (arrivals[-1] - outage["start"] - OUTAGE_S) if arrivals and "start" in outage
        else None,
    }


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def run(messages: int, tasks: int, out_dir: Path, progress: Any) -> dict[str, Any]:
    return {"outbox": outbox_cost(messages, progress), "e2e": end_to_end(tasks, out_dir, progress)}


def lines(r: dict[str, Any]) -> list[str]:
    o, e = r["outbox"], r["e2e"]
    lat, before = e["completion_to_received_ms"], e["completion_to_received_ms_before_outage"]
    p = e["paced"]["completion_to_received_ms"]
    return [
        "webhooks (issue 22)",
        f"  unloaded ({e['paced']['tasks']} tasks at {e['paced']['per_s']}/s): completion -> received p50 "
        f"{p.get('p50') or 0:.0f} ms, p99 {p.get('p99') or 0:.0f} ms ({e['paced']['delivered']} delivered)",
        f"  scorer batch {o['batch']}: {o['msg_per_s_without']:.0f} msg/s without an endpoint, {o['msg_per_s_with']:.0f} with "
        f"(keeps {o['keeps']:.2f}; goal >= {o['target_keeps']}: {'met' if o['keeps'] >= o['target_keeps'] else 'NOT met'})",
        f"  make run: {e['tasks']} completions submitted at once (batch route), {e['delivered_unique']} delivered, verified "
        f"({'all' if e['all_delivered'] else 'NOT all'}), {e['duplicates']} duplicates deduped, {e['rejected']} rejected; "
        f"receiver answered 503 for {e['outage_s']} s ({e['refused_503']} refusals)",
        f"  all at once, completion -> received (a backlog's wait): p50 {(lat.get('p50') or 0):.0f} ms, "
        f"p99 {(lat.get('p99') or 0):.0f} ms overall; "
        f"before the outage p50 {(before.get('p50') or 0):.0f} ms, p99 {(before.get('p99') or 0):.0f} ms",
        f"  deliveries per second before the outage: {e['deliveries_per_s_before_outage'] or 0:.0f}; last delivery "
        f"{e['last_delivery_after_outage_end_s'] or 0:.0f} s after the outage ended (the schedule's 5 s, then 5 min step)",
    ]

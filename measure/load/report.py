"""The figures of a load run, from what the clients recorded: pure functions.

Kept free of locust (which monkeypatches the standard library with gevent on
import) so that run.py, the bench and the tests can use it in an ordinary process.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from toolkit import stats

TERMINAL = ("completed", "failed")
# Request kinds, in report order: the load phase (each client's first request,
# then submits and polls), then the polls once every submit is answered.
KIND_LABELS = {
    "connect": "GET  /health (each client's first: connects)",
    "submit": "POST /moderation/async_predict",
    "poll": "GET  /moderation/moderation_result/{id} (load)",
    "drain": "GET  /moderation/moderation_result/{id} (drain)",
}
# Enough examples of server errors to diagnose them, without copying thousands.
MAX_ERROR_EXAMPLES = 20
# The overload profile's goal (docs/performance.md#under-overload-make-load-profileoverload):
# a submit is accepted, throttled or shed, nothing else; every 429/503 says when to come back
# (Retry-After); the answers come within this many ms.
OVERLOAD_STATUSES = ("202", "429", "503")
OVERLOAD_P99_MS = 5000.0


def parse_items(spec: str) -> list[int]:
    """Item ids from "1-300", "7" or "1-20,25,40-45"."""
    ids: list[int] = []
    for part in filter(None, spec.replace(" ", "").split(",")):
        low, sep, high = part.partition("-")
        try:
            first, last = int(low), int(high) if sep else int(low)
        except ValueError:
            raise ValueError(f"item ids must look like 1-300 or 1,2,5-9, got {spec!r}") from None
        if first < 1 or last < first:
            raise ValueError(f"bad item id range {part!r} in {spec!r}")
        ids.extend(range(first, last + 1))
    if not ids:
        raise ValueError(f"no item ids in {spec!r}")
    return ids


def latency(values: Sequence[float]) -> dict[str, float | None]:
    """count, then min_ms, p50_ms, p95_ms, p99_ms, max_ms (0.1 ms)."""
    return {k if k == "count" else f"{k}_ms": v for k, v in stats.summary(values, ndigits=1).items()}


@dataclass(frozen=True)
class Sample:
    """One HTTP request: status 0 means no response (connection error, timeout)."""

    kind: str
    status: int
    ms: float
    start: float  # epoch seconds


@dataclass
class Recording:
    """Everything the clients saw (the JSON locustfile.Recorder writes)."""

    submits_planned: int | None  # None: submits for a duration (the overload profile)
    submits_sent: int = 0
    samples: list[Sample] = field(default_factory=list)
    # Responses >= 500 and requests without a response: kind, status, detail.
    errors: list[dict[str, Any]] = field(default_factory=list)
    # Accepted task id -> its latest result body (None: never read).
    tasks: dict[int, dict[str, Any] | None] = field(default_factory=dict)
    # 202 answers without a task id: the API broke its contract.
    bad_bodies: int = 0
    drain_seconds: float = 0.0
    duration_s: float | None = None
    load_seconds: float = 0.0
    # 429/503 answers: (kind, status, had Retry-After, had a JSON error body) -> count.
    refusals: dict[tuple[str, int, bool, bool], int] = field(default_factory=dict)

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> Recording:
        planned = raw["submits_planned"]
        return cls(
            submits_planned=None if planned is None else int(planned),
            submits_sent=int(raw["submits_sent"]),
            samples=[Sample(str(k), int(s), float(ms), float(t)) for k, s, ms, t in raw["samples"]],
            errors=list(raw["errors"]),
            tasks={int(k): v for k, v in raw["tasks"].items()},
            bad_bodies=int(raw["bad_bodies"]),
            drain_seconds=float(raw["drain_seconds"]),
            duration_s=raw.get("duration_s"),
            load_seconds=float(raw.get("load_seconds") or 0.0),
            refusals={(str(k), int(s), bool(ra), bool(js)): int(n) for k, s, ra, js, n in raw.get("refusals", [])},
        )


def is_terminal(body: dict[str, Any] | None) -> bool:
    return body is not None and body.get("status") in TERMINAL


def _timestamp(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def task_figures(tasks: dict[int, dict[str, Any] | None]) -> dict[str, Any]:
    """Outcomes, submit->completed latency and end-to-end throughput.

    Both ends come from the server (created_at at insert, processed_at at the
    verdict), so client clocks and polling intervals do not enter the figures.
    """
    done = {t: body for t, body in tasks.items() if body is not None and is_terminal(body)}
    created = [c for body in done.values() if (c := _timestamp(body.get("created_at")))]
    processed = [p for body in done.values() if (p := _timestamp(body.get("processed_at")))]
    latencies = [(end - start).total_seconds() * 1000 for body in done.values() if body["status"] == "completed"
                 and (start := _timestamp(body.get("created_at"))) and (end := _timestamp(body.get("processed_at")))]
    not_terminal = sorted(set(tasks) - set(done))
    outcomes = Counter(body["status"] for body in done.values())
    all_done = bool(tasks) and not not_terminal and len(created) == len(processed) == len(tasks)
    span = (max(processed) - min(created)).total_seconds() if all_done else None
    return {
        "accepted": len(tasks),
        "completed": outcomes["completed"],
        "failed": outcomes["failed"],
        "not_terminal": len(not_terminal),
        "not_terminal_ids": not_terminal[:50],
        "submit_to_completed": latency(latencies),
        # None unless every accepted task is terminal: a partial figure would flatter.
        "first_submit_to_last_terminal_s": round(span, 3) if span is not None else None,
        "tasks_per_s": round(len(tasks) / span, 1) if span else None,
    }


def _status_counts(samples: Iterable[Sample]) -> dict[str, int]:
    counts = Counter(s.status for s in samples)
    return {("no response" if code == 0 else str(code)): n for code, n in sorted(counts.items())}


def _by_status(samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault("no response" if s.status == 0 else str(s.status), []).append(s)
    return groups


def request_figures(samples: Sequence[Sample]) -> dict[str, Any]:
    by_kind = {kind: [s for s in samples if s.kind == kind] for kind in [*KIND_LABELS, *{s.kind for s in samples}]}
    load = [s for s in samples if s.kind != "drain"]
    span = (max(s.start + s.ms / 1000 for s in load) - min(s.start for s in load)) if load else 0.0
    return {
        "load_phase": {"requests": len(load), "duration_s": round(span, 3),
                       "req_per_s": round(len(load) / span, 1) if span else None},
        "requests_total": len(samples),
        "by_kind": {kind: {**latency([s.ms for s in group]), "statuses": _status_counts(group)}
                    for kind, group in by_kind.items()},
        "status_counts": _status_counts(samples),
        "responses_5xx": sum(1 for s in samples if s.status >= 500),
        "no_response": sum(1 for s in samples if s.status == 0),
    }


def refusal_figures(refusals: dict[tuple[str, int, bool, bool], int]) -> dict[str, Any]:
    """The 429/503 answers, and how many lacked Retry-After or a JSON error body, by request kind."""
    kinds: dict[str, dict[str, int]] = {}
    for (kind, status, has_retry_after, shaped), n in sorted(refusals.items()):
        fig = kinds.setdefault(kind, {"429": 0, "503": 0, "without_retry_after": 0, "without_json_error": 0})
        fig[str(status)] += n
        fig["without_retry_after"] += 0 if has_retry_after else n
        fig["without_json_error"] += 0 if shaped else n
    total = sum(refusals.values())
    return {
        "total": total,
        "without_retry_after": sum(f["without_retry_after"] for f in kinds.values()),
        "without_json_error": sum(f["without_json_error"] for f in kinds.values()),
        "by_kind": kinds,
    }


def overload_problems(results: dict[str, Any]) -> list[str]:
    """Where a phase of the overload profile misses the goal (docs/performance.md#under-overload-make-load-profileoverload)."""
    submit, refusals, tasks = results["by_kind"]["submit"], results["refusals"], results["tasks"]
    others = {code: n for code, n in submit["statuses"].items() if code not in OVERLOAD_STATUSES}
    # Any kind (connect, drain polls too): a 5xx other than 503, or no answer at all.
    server = {code: n for code, n in results["status_counts"].items()
              if code == "no response" or (int(code) >= 500 and code != "503")}
    return [text for count, text in [
        (others, "submits answered other than 202/429/503: " + ", ".join(f"{c}: {n}" for c, n in others.items())),
        (server, "server errors: " + ", ".join(f"{c}: {n}" for c, n in server.items())),
        (refusals["without_retry_after"], f"{refusals['without_retry_after']} answers 429/503 without Retry-After"),
        (refusals["without_json_error"], f"{refusals['without_json_error']} answers 429/503 without a JSON error body"),
        ((submit["p99_ms"] or 0) >= OVERLOAD_P99_MS, f"submit p99 {submit['p99_ms']} ms, not under {OVERLOAD_P99_MS:.0f} ms"),
        (tasks["not_terminal"], f"{tasks['not_terminal']} accepted tasks did not reach completed/failed"),
        (not tasks["accepted"], "no submit was accepted (wrong URL, item ids or API key?)"),
        (results["bad_bodies"], f"{results['bad_bodies']} submits answered 202 without a task_id"),
    ] if count]


def summarise(rec: Recording, config: dict[str, Any]) -> dict[str, Any]:
    """The results document (build/load/results.json); "ok" is the exit status."""
    requests = request_figures(rec.samples)
    tasks = task_figures(rec.tasks)
    requests["load_phase"].update(submits_planned=rec.submits_planned, submits_sent=rec.submits_sent)
    if rec.duration_s:
        # From the first submit (every client connected) to the last answered one.
        submitting = rec.load_seconds
        requests["load_phase"].update(submitting_s=round(submitting, 3),
                                      submits_per_s=round(rec.submits_sent / submitting, 1) if submitting else None)
    problems = [text for count, text in [
        (requests["responses_5xx"], f"{requests['responses_5xx']} responses >= 500"),
        (requests["no_response"], f"{requests['no_response']} requests got no response (connection error or timeout)"),
        (tasks["not_terminal"], f"{tasks['not_terminal']} accepted tasks did not reach completed/failed"),
        (rec.submits_planned is not None and rec.submits_sent < rec.submits_planned,
         f"only {rec.submits_sent} of {rec.submits_planned} submits were sent (time limit)"),
        (not tasks["accepted"], "no submit was accepted (wrong URL, item ids or API key?)"),
        (rec.bad_bodies, f"{rec.bad_bodies} submits answered 202 without a task_id"),
    ] if count]
    return {
        "ok": not problems,
        "problems": problems,
        "config": config,
        **requests,
        "drain_phase": {"duration_s": round(rec.drain_seconds, 3), "requests": requests["by_kind"]["drain"]["count"]},
        "tasks": tasks,
        "refusals": refusal_figures(rec.refusals),
        "submit_by_status": {code: latency([s.ms for s in group]) for code, group in sorted(
            _by_status(s for s in rec.samples if s.kind == "submit").items())},
        "bad_bodies": rec.bad_bodies,
        "server_errors": rec.errors[:MAX_ERROR_EXAMPLES],
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_report(results: dict[str, Any], *, tolerated: tuple[str, ...] = ()) -> str:
    """The human-readable report; the same figures as the JSON. `tolerated`: statuses >= 500 that
    are an answer here, not a failure (the overload profile's 503: shed)."""
    load, tasks, cfg, drain = results["load_phase"], results["tasks"], results["config"], results["drain_phase"]
    submits = (f"{load['submits_sent']}/{load['submits_planned']} submits" if load["submits_planned"] is not None
               else f"{load['submits_sent']} submits in {load['submitting_s']:.1f} s ({load['submits_per_s'] or 0:.1f}/s)")
    lines = [
        "",
        f"load test: {cfg['users']} clients, {submits}, items {cfg['items']}, against {cfg['url']}",
        f"load phase   {load['requests']} requests in {load['duration_s']:.1f} s = {load['req_per_s'] or 0:.1f} req/s; "
        f"drain {drain['requests']} polls in {drain['duration_s']:.1f} s",
        "",
        f"  {'request':50} {'count':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}  statuses",
    ]
    for kind, fig in results["by_kind"].items():
        statuses = ", ".join(f"{code}: {n}" for code, n in fig["statuses"].items()) or "-"
        figures = "".join(f" {_ms(fig[k]):>8}" for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms"))
        lines.append(f"  {KIND_LABELS.get(kind, kind):50} {fig['count']:6d}{figures}  {statuses}")
    lines.append("  status counts: " + ", ".join(f"{code}: {n}" for code, n in results["status_counts"].items()))
    lat = tasks["submit_to_completed"]
    lines += [
        "",
        f"tasks        accepted {tasks['accepted']}, completed {tasks['completed']}, failed {tasks['failed']}, "
        f"not terminal {tasks['not_terminal']}",
        "submit -> completed (server created_at -> processed_at): "
        + ", ".join(f"{k} {_ms(lat[f'{k}_ms'])} ms" for k in ("p50", "p95", "p99", "max")),
    ]
    if tasks["tasks_per_s"] is not None:
        lines.append(f"end to end   {tasks['tasks_per_s']:.1f} tasks/s ({tasks['accepted']} accepted tasks, first submit "
                     f"to last terminal in {tasks['first_submit_to_last_terminal_s']:.1f} s)")
    else:
        why = "no task was accepted" if not tasks["accepted"] else "not every accepted task is terminal"
        lines.append(f"end to end   - tasks/s ({why})")
    refusals = results.get("refusals")
    if refusals and refusals["total"]:
        lines.append(f"429/503      {refusals['total']} answers; without Retry-After {refusals['without_retry_after']}, "
                     f"without a JSON error body {refusals['without_json_error']}")
    lines += _loud_errors(results, tolerated)
    lines += ["", "OK" if results["ok"] else "FAILED: " + "; ".join(results["problems"])]
    return "\n".join(lines)


def _loud_errors(results: dict[str, Any], tolerated: tuple[str, ...] = ()) -> list[str]:
    """Server errors must not hide in a table: a banner, and the first few answers."""
    codes = {c: n for c, n in results["status_counts"].items()
             if (c == "no response" or int(c) >= 500) and c not in tolerated}
    bad = sum(codes.values())
    if not bad:
        return []
    lines = ["", "!" * 100, f"!!! {bad} REQUESTS FAILED ON THE SERVER SIDE: " + ", ".join(f"{c}: {n}" for c, n in codes.items())]
    lines += [f"!!!   {e['kind']} -> {e['status'] or 'no response'}: {str(e['detail'])[:200]}"
              for e in results["server_errors"] if str(e["status"] or "no response") not in tolerated][:10]
    if len(results["server_errors"]) > 10:
        lines.append(f"!!!   ... (up to {MAX_ERROR_EXAMPLES} examples in the JSON results)")
    return [*lines, "!" * 100]


def format_overload(results: dict[str, Any]) -> str:
    """The overload profile's table: one row per phase, then what missed the goal."""
    head = (f"  {'clients':>7} {'submits':>7} {'/s':>6} {'202':>6} {'429':>6} {'503':>6} {'other':>6} "
            f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  {'Retry-After':>11} {'accepted':>8} {'terminal':>8}  goal")
    lines = ["", f"overload profile: goal: submits answered 202, 429 or 503 only; Retry-After on every 429/503; "
             f"submit p99 < {OVERLOAD_P99_MS / 1000:.0f} s; every accepted task completed/failed", head]
    for phase in results["phases"]:
        submit, load, tasks, refusals = (phase["by_kind"]["submit"], phase["load_phase"], phase["tasks"],
                                         phase["refusals"])
        statuses = submit["statuses"]
        other = sum(n for code, n in statuses.items() if code not in OVERLOAD_STATUSES)
        with_retry_after = f"{refusals['total'] - refusals['without_retry_after']}/{refusals['total']}"
        terminal = tasks["completed"] + tasks["failed"]
        lines.append(
            f"  {phase['config']['users']:>7} {submit['count']:>7} {load.get('submits_per_s') or 0:>6.0f} "
            + "".join(f"{statuses.get(code, 0):>6} " for code in OVERLOAD_STATUSES) + f"{other:>6} "
            + "".join(f"{_ms(submit[k]):>8} " for k in ("p50_ms", "p95_ms", "p99_ms"))
            + f" {with_retry_after:>11} {tasks['accepted']:>8} {terminal:>8}  {'met' if phase['ok'] else 'MISSED'}")
    for phase in results["phases"]:
        if phase["problems"]:
            lines.append(f"  {phase['config']['users']} clients: " + "; ".join(phase["problems"]))
    lines += ["", "OK" if results["ok"] else "FAILED: the goal was missed"]
    return "\n".join(lines)

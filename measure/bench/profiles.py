"""Turn profiles into a few named buckets a reader can act on.

Two sources:
- cProfile of the scorer's batch-100 run (in-process): a phase breakdown from
  the cumulative time of the scorer's entry points, and the top functions by
  own time, each labelled with the phase it belongs to;
- py-spy samples of `chalice local` and the runner under load (measure.bench.sampling
  records them): which library the CPU is in (exclusive, leaf upwards) and
  how much of it each app-level operation costs (inclusive).
"""

from __future__ import annotations

import cProfile
import pstats
import sysconfig
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from measure.bench.common import ROOT

_STDLIB = sysconfig.get_paths()["stdlib"] + "/"
_PROJECT = str(ROOT) + "/"
# --- scorer (cProfile) -------------------------------------------------------------

# Phase -> entry points (file suffix, function name) whose cumulative time is
# the phase. They never call one another, so the sums do not overlap; the
# rest of Scorer.handle is "other" (planning, the transaction's checkout, ...).
SCORER_PHASES: dict[str, list[tuple[str, str]]] = {
    "parse": [("chalicelib/decisions.py", "parse_record")],
    "claim SQL": [("chalicelib/storage.py", "_claim")],
    "model": [("chalicelib/scoring.py", "_score")],
    "write SQL + commit": [
        ("chalicelib/storage.py", "_write"),
        ("~", "<method '__exit__' of 'psycopg2.extensions.connection' objects>"),
    ],
    "logging": [("chalicelib/scoring.py", "_log_outcome")],
    # Outside _claim/_write: the pool handing out a fresh connection per transaction.
    "connect + close per transaction": [
        ("~", "<built-in method psycopg2._psycopg._connect>"),
        ("~", "<method 'close' of 'psycopg2.extensions.connection' objects>"),
    ],
}

# Own-time rows are labelled by the first rule whose text occurs in
# "file:function" (or "file:function <- caller" for split C functions).
_LABELS: list[tuple[str, tuple[str, ...]]] = [
    ("connect + close per transaction", ("_psycopg._connect", "'close' of 'psycopg2.extensions.connection'")),
    ("claim SQL", ("<- _claim", "storage.py:_claim")),
    ("write SQL + commit", ("<- _write", "storage.py:_write", "psycopg2.extensions.connection")),
    ("logging", ("aws_lambda_powertools", "logging/__init__.py", "_log_outcome", "json/encoder.py")),
    ("parse", ("pydantic", "parse_record", "_unwrap", "json/decoder.py", "TaskMessage")),
    ("model", ("chalicelib/model.py", "chalicelib/features.py", "_score", "re.Pattern", "math.fsum", "Counter")),
    ("SQL (execute: claim + write)", ("Cursor.execute", "psycopg2/extras.py:233:execute")),
    ("SQL (other)", ("psycopg2", "chalicelib/db.py", "chalicelib/storage.py")),
]


def _label(text: str) -> str:
    for group, needles in _LABELS:
        if any(n in text for n in needles):
            return group
    return "other"


def short_path(path: str) -> str:
    """A path without the noise: relative to site-packages, the project or the stdlib."""
    if "site-packages/" in path:  # also through a symlinked virtualenv
        return path.split("site-packages/", 1)[1]
    for prefix in (_PROJECT, _STDLIB):
        if path.startswith(prefix):
            return path[len(prefix):]
    return path


def _where(key: tuple[str, int, str]) -> str:
    filename, line, func = key
    return func if filename == "~" else f"{short_path(filename)}:{line}:{func}"


def scorer_breakdown(profiler: cProfile.Profile, *, batches: int, top: int = 12) -> dict[str, Any]:
    """Phases of Scorer.handle and its top functions, in ms per batch and % of handle."""
    stats: dict[tuple[str, int, str], tuple[int, int, float, float, dict[Any, Any]]] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    handle = [v[3] for k, v in stats.items() if k[0].endswith("chalicelib/scoring.py") and k[2] == "handle"]
    total = sum(handle)
    if not total:
        return {"error": "Scorer.handle not found in the profile"}

    def cumulative(entries: Sequence[tuple[str, str]]) -> float:
        return sum(v[3] for k, v in stats.items() for suffix, func in entries if k[0].endswith(suffix) and k[2] == func)

    phases = {name: cumulative(entries) for name, entries in SCORER_PHASES.items()}
    phases["other"] = max(0.0, total - sum(phases.values()))
    per_batch = max(1, batches)
    return {
        "handle_ms_per_batch": total * 1000 / per_batch,
        "phases": [
            {"phase": name, "ms_per_batch": s * 1000 / per_batch, "share": s / total} for name, s in phases.items()
        ],
        "top_own": _top_own(stats, total, per_batch, top),
        "top_cumulative": [
            {"function": _where(k), "ms_per_batch": v[3] * 1000 / per_batch, "share": v[3] / total,
             "calls_per_batch": v[1] / per_batch}
            for k, v in sorted(stats.items(), key=lambda kv: kv[1][3], reverse=True)[:top]
        ],
        "note": "cProfile inflates pure-Python work (model, pydantic) relative to time waiting on PostgreSQL",
    }


def _top_own(stats: dict[Any, Any], total: float, batches: int, top: int) -> list[dict[str, Any]]:
    rows: list[tuple[str, float, int]] = []
    for key, (_cc, calls, own, _cum, callers) in stats.items():
        if key[0] == "~" and len(callers) > 1:
            # A C function shared by phases (cursor.execute): one row per caller.
            for caller, (_c, ncalls, tt, _ct) in callers.items():
                rows.append((f"{_where(key)} <- {caller[2]}", tt, ncalls))
        else:
            rows.append((_where(key), own, calls))
    rows.sort(key=lambda r: r[1], reverse=True)
    return [
        {"function": name, "group": _label(name), "ms_per_batch": own * 1000 / batches, "share": own / total,
         "calls_per_batch": calls / batches}
        for name, own, calls in rows[:top]
    ]


# --- e2e (py-spy samples) ----------------------------------------------------------

# Exclusive: each sample goes to the library of the deepest frame that
# belongs to one (walking from the leaf up), so a stdlib leaf (socket, json,
# threading) counts for whoever called it. A rule matches if any of its texts
# occurs in the frame ("function (path)").
LIBRARY_RULES: list[tuple[str, tuple[str, ...]]] = [
    ("JSON logging (Powertools, logging)", ("aws_lambda_powertools/", "/logging/__init__.py")),
    ("boto3: signing", ("botocore/auth.py", "botocore/signers.py")),
    ("boto3: HTTP (urllib3)", ("urllib3/", "botocore/httpsession.py")),
    ("boto3: request building / parsing", ("botocore/", "boto3/", "s3transfer/")),
    ("psycopg2 + SQL code", ("psycopg2/", "chalicelib/db.py", "chalicelib/storage.py")),
    ("pydantic / parsing", ("pydantic", "chalicelib/decisions.py", "chalicelib/requests.py")),
    ("model", ("chalicelib/model.py", "chalicelib/features.py")),
    ("chalice local per-request machinery (HTTP server, thread per request, routing)",
     ("chalice/local.py", "chalice/app.py", "/http/server.py", "/socketserver.py")),
    ("runner (event building, loop)", ("devstack/runner.py",)),
    ("app code (other)", ("chalicelib/", "/app.py")),
]

# Inclusive: share of samples whose stack holds this call chain (adjacent
# frames, caller first; each element the end of a function's qualified name;
# a final "$" pins the chain to the leaf).
# An empty chain is "inside the role's threads but outside the first chain":
# for chalice local, its own per-request work around the view function.
OPERATIONS: dict[str, list[tuple[str, list[str]]]] = {
    "chalice": [
        ("POST /async_predict view (all the app does)", ["async_predict"]),
        ("  INSERT task (create_task transaction)", ["ModerationStore.create_task"]),
        ("  SendMessage (TaskQueue.send_task)", ["TaskQueue.send_task"]),
        ("  enqueued_at UPDATE (mark_enqueued, 2nd transaction)", ["ModerationStore.mark_enqueued"]),
        ("  connect to PostgreSQL (pool checkout)", ["Database._checkout"]),
        ("  waiting for a free pool connection", ["Database.transaction", "Semaphore.acquire"]),
        # The leaf is transaction() itself when it waits in C: `with conn` committing.
        ("  COMMIT (both transactions)", ["_GeneratorContextManager.__exit__", "Database.transaction", "$"]),
        ("chalice local around the view (HTTP parsing, routing, event, response)", []),
    ],
    "runner": [
        ("ReceiveMessage (poll_once -> SQS)", ["poll_once", "_api_call"]),
        ("Scorer.handle (the score Lambda)", ["Scorer.handle"]),
        ("  claim + write transaction (score_batch)", ["ModerationStore.score_batch"]),
        ("    of which COMMIT", ["_GeneratorContextManager.__exit__", "Database.transaction", "$"]),
        ("  connect to PostgreSQL (pool checkout)", ["Database._checkout"]),
        ("  waiting for a free pool connection", ["Database.transaction", "Semaphore.acquire"]),
        ("  model (Scorer._score)", ["Scorer._score"]),
        ("  parse records (parse_record)", ["parse_record"]),
        ("  per-message logging (_log_outcome)", ["_log_outcome"]),
        ("DeleteMessageBatch (invoke -> SQS)", ["invoke", "_api_call"]),
        ("Lambda event building (lambda_record)", ["lambda_record"]),
    ],
}

# The threads whose wall time is broken down (idle threads included): the
# per-request threads of chalice local, the runner's pollers.
ROLE_THREADS: dict[str, list[str]] = {"chalice": ["process_request_thread"], "runner": ["poll_once"]}


def parse_collapsed(lines: Iterable[str]) -> Counter[tuple[str, ...]]:
    """py-spy raw output ("root;...;leaf count") -> stacks (root first) with sample counts."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in lines:
        line = line.rstrip("\n")
        if not line or " " not in line:
            continue
        stack, _, count = line.rpartition(" ")
        frames = tuple(f for f in stack.split(";") if not f.startswith("process "))
        if count.isdigit():
            stacks[frames] += int(count)
    return stacks


def _function(frame: str) -> str:
    return frame.rsplit(" (", 1)[0]


def _classify(frames: tuple[str, ...]) -> str:
    for frame in reversed(frames):
        for name, needles in LIBRARY_RULES:
            if any(n in frame for n in needles):
                return name
    return "other (stdlib or interpreter outside these)"


def _holds(frames: tuple[str, ...], chain: list[str]) -> bool:
    names = [_function(f) for f in frames]
    if chain and chain[-1] == "$":
        chain = chain[:-1]
        return len(names) >= len(chain) and all(
            n.endswith(part) for n, part in zip(names[len(names) - len(chain):], chain, strict=True))
    for i in range(len(names) - len(chain) + 1):
        if all(names[i + j].endswith(part) for j, part in enumerate(chain)):
            return True
    return False


def _operations(role: str, stacks: Counter[tuple[str, ...]], total: int) -> list[dict[str, Any]]:
    ops = OPERATIONS.get(role, [])
    first = ops[0][1] if ops else []
    rows = []
    for label, chain in ops:
        if chain:
            hit = sum(n for frames, n in stacks.items() if _holds(frames, chain))
        else:
            hit = sum(n for frames, n in stacks.items() if not _holds(frames, first))
        rows.append({"operation": label, "share": hit / total})
    return rows


def _top_leaves(stacks: Counter[tuple[str, ...]], total: int, top: int) -> list[dict[str, Any]]:
    leaves: Counter[str] = Counter()
    for frames, n in stacks.items():
        if frames:
            leaves[_short_frame(frames[-1])] += n
    return [{"frame": k, "share": v / total} for k, v in leaves.most_common(top)]


def _role_threads(role: str, stacks: Counter[tuple[str, ...]]) -> tuple[Counter[tuple[str, ...]], str]:
    """The samples of the role's working threads, and what they are called."""
    markers = ROLE_THREADS.get(role, [])
    mine = Counter({f: n for f, n in stacks.items() if any(_holds(f, [m]) for m in markers)})
    if not mine:  # the marker function was renamed: fall back to every sampled thread
        return stacks, "all threads"
    return mine, " / ".join(markers) + " threads"


def spy_cpu(role: str, stacks: Counter[tuple[str, ...]], top: int = 10) -> dict[str, Any]:
    """Where the working threads' CPU goes: libraries (exclusive), app operations (inclusive), hottest leaves."""
    mine, threads = _role_threads(role, stacks)
    total = sum(mine.values())
    if not total:
        return {"samples": 0}
    libraries: Counter[str] = Counter()
    for frames, n in mine.items():
        libraries[_classify(frames)] += n
    return {
        "samples": total,
        "threads": threads,
        "share_of_process_samples": total / sum(stacks.values()),
        "libraries": [{"category": k, "share": v / total} for k, v in libraries.most_common()],
        "operations": _operations(role, mine, total),
        "top_leaf_frames": _top_leaves(mine, total, top),
    }


def spy_wall(role: str, stacks: Counter[tuple[str, ...]], top: int = 10) -> dict[str, Any]:
    """Where the role's working threads spend their wall time, waiting included (shares of thread-samples)."""
    mine, threads = _role_threads(role, stacks)
    total = sum(mine.values())
    if not total:
        return {"samples": 0}
    return {
        "thread_samples": total,
        "threads": threads,
        "operations": _operations(role, mine, total),
        "top_leaf_frames": _top_leaves(mine, total, top),
    }


def _short_frame(frame: str) -> str:
    func, _, path = frame.rpartition(" (")
    return f"{func} ({short_path(path.rstrip(')'))})"

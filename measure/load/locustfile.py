"""The simulated clients of `make load` (locust, headless; started by measure/load/run.py).

Each client connects (GET /health, reported as `connect`), then loops: take one
submit of the shared budget (--submits), POST /moderation/async_predict?item_id=N
for a random N of --items (expects 202 {task_id, status: pending, message}),
then poll one of its own unfinished tasks (GET /moderation/moderation_result/{id},
round robin). Once every submit is answered, the clients keep polling their
unfinished tasks, gently (`drain`), and the test stops when every accepted task
is completed/failed or --drain-timeout has passed. Every request is recorded
(kind, status, latency, start) and written to --raw-out as JSON when the test
stops, for measure/load/report.py. The API key comes from LOAD_API_KEY.

With --duration (the overload profile), there is no budget: once every client
has connected, they all submit for that many seconds, without pause and, with
--submit-only, without polling in between, then drain. A 429/503 is recorded
with whether it carried Retry-After and a JSON error body; while draining, a
client waits the Retry-After it was given (what a well-behaved client does),
while submitting it does not (the worst case the API must shed).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, ClassVar

import gevent
from locust import FastHttpUser, constant, events, task
from locust.env import Environment

from measure.load.report import MAX_ERROR_EXAMPLES, TERMINAL, parse_items

SUBMIT_PATH = "/moderation/async_predict"
RESULT_PATH = "/moderation/moderation_result/"
# A client with nothing to do waits this long instead of spinning (the CPU is
# shared with the server under test); while draining, between polls of a task
# still unfinished: re-reading it faster would only take CPU from the scorer
# being measured (on a deployed LocalStack each read is a Lambda invocation).
IDLE_SECONDS = 0.2
# Answers that tell a client to come back later, and the longest Retry-After a draining client honours.
REFUSALS = (429, 503)
MAX_RETRY_AFTER_SECONDS = 5.0


class Recorder:
    """What every client saw. One process, cooperative greenlets: no locks needed,
    since nothing here yields between reading and updating a counter."""

    def __init__(self) -> None:
        self.submits_planned = 0
        self.duration = 0.0  # > 0: submit for this long instead of a budget of submits
        self.users = 0
        self.connected = 0
        self.load_started: float | None = None  # monotonic; duration mode: once every client has connected
        self.deadline = 0.0
        self.in_flight = 0
        self.drain_timeout = 0.0
        self.claimed = 0
        self.answered = 0
        # (kind, status, had Retry-After, had a JSON error body {code, message}) -> count, for 429/503
        self.refusals: Counter[tuple[str, int, bool, bool]] = Counter()
        self.samples: list[tuple[str, int, float, float]] = []
        self.errors: list[dict[str, Any]] = []
        self.tasks: dict[int, dict[str, Any] | None] = {}
        self.unfinished: set[int] = set()
        self.bad_bodies = 0
        self.drain_started: float | None = None  # monotonic, once every submit is answered
        self.load_seconds = 0.0
        self.drain_seconds = 0.0
        self.stopping = False

    def start_load(self) -> None:
        self.load_started = time.monotonic()
        self.deadline = self.load_started + self.duration

    def claim(self) -> bool:
        """Take one submit: of the budget, or while the duration lasts."""
        if self.load_started is None:
            return False
        if self.duration > 0:
            return time.monotonic() < self.deadline
        if self.claimed < self.submits_planned:
            self.claimed += 1
            return True
        return False

    def maybe_drain(self) -> None:
        """The drain starts once every submit is answered: the budget's last, or the last in flight at the deadline."""
        if self.drain_started is not None or self.load_started is None:
            return
        over = time.monotonic() >= self.deadline if self.duration > 0 else self.answered >= self.submits_planned
        if over and self.in_flight == 0:
            self.drain_started = time.monotonic()
            self.load_seconds = self.drain_started - self.load_started

    def on_request(self, name: str, status: int, ms: float, start: float, detail: str | None) -> None:
        self.samples.append((name, status, ms, start))
        if (status == 0 or status >= 500) and len(self.errors) < MAX_ERROR_EXAMPLES:
            self.errors.append({"kind": name, "status": status, "detail": detail})

    def finished(self) -> bool:
        """Every submit answered, and every accepted task terminal or the drain time up."""
        if self.drain_started is None:
            return False
        self.drain_seconds = time.monotonic() - self.drain_started
        return not self.unfinished or self.drain_seconds > self.drain_timeout

    def dump(self, path: Path) -> None:
        if self.drain_started is not None:
            self.drain_seconds = time.monotonic() - self.drain_started
        path.write_text(json.dumps({
            "submits_planned": None if self.duration > 0 else self.submits_planned,
            "duration_s": self.duration or None,
            "load_seconds": self.load_seconds,
            "refusals": [[*key, n] for key, n in sorted(self.refusals.items())],
            # Only answered submits: one killed in flight (time limit) may or may not have created a task.
            "submits_sent": self.answered,
            "samples": self.samples,
            "errors": self.errors,
            "tasks": self.tasks,
            "bad_bodies": self.bad_bodies,
            "drain_seconds": self.drain_seconds,
        }))


RECORDER = Recorder()


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("ad-moderation load test")
    group.add_argument("--submits", type=int, default=2000, help="total submits across all clients")
    group.add_argument("--items", default="1-300", help="item ids to submit, e.g. 1-300 or 1-20,25")
    group.add_argument("--duration", type=float, default=0.0,
                       help="submit for this many seconds once every client has connected (0: --submits in all)")
    group.add_argument("--submit-only", action="store_true", help="no polling until the submits are over")
    group.add_argument("--drain-timeout", type=float, default=120.0, help="seconds to wait for tasks after the submits")
    group.add_argument("--drain-poll", type=float, default=0.5, help="seconds between polls of a task still unfinished")
    group.add_argument("--raw-out", default="raw.json", help="where to write every request and task seen")
    group.add_argument("--request-timeout", type=float, default=30.0, help="seconds per request")
    group.add_argument("--seed", type=int, default=20261125, help="item id choice, per client")


@events.init.add_listener
def _configure(environment: Environment, **_: Any) -> None:
    opts = environment.parsed_options
    if opts is None:
        return
    RECORDER.submits_planned, RECORDER.drain_timeout = opts.submits, opts.drain_timeout
    RECORDER.duration, RECORDER.users = opts.duration, opts.num_users
    if opts.duration <= 0:
        RECORDER.start_load()  # a budget: each client starts once it has connected
    ModerationClient.submit_only, ModerationClient.drain_poll = opts.submit_only, opts.drain_poll
    ModerationClient.item_ids = parse_items(opts.items)
    api_key = os.environ.get("LOAD_API_KEY", "")
    ModerationClient.headers = {"x-api-key": api_key} if api_key else {}
    ModerationClient.network_timeout = ModerationClient.connection_timeout = opts.request_timeout
    ModerationClient.seed = opts.seed


@events.request.add_listener
def _record(name: str, response_time: float, response: Any = None, exception: Any = None,
            start_time: float = 0.0, **_: Any) -> None:
    status = int(getattr(response, "status_code", 0) or 0)
    detail = (getattr(response, "text", None) or repr(exception)) if status == 0 or status >= 500 else None
    RECORDER.on_request(name, status, response_time, start_time, detail)
    if status in REFUSALS:
        body = _json(getattr(response, "text", None))
        shaped = isinstance(body, dict) and isinstance(body.get("code"), str) and isinstance(body.get("message"), str)
        RECORDER.refusals[(name, status, retry_after(response) is not None, shaped)] += 1


@events.test_stop.add_listener
def _dump(environment: Environment, **_: Any) -> None:
    if environment.parsed_options is not None:
        RECORDER.dump(Path(environment.parsed_options.raw_out))


class ModerationClient(FastHttpUser):
    """One marketplace backend: submits ads and polls for their verdicts."""

    wait_time = constant(0)
    # Set once from the command line (_configure), shared by every client.
    item_ids: ClassVar[list[int]] = [1]
    headers: ClassVar[dict[str, str]] = {}
    seed: ClassVar[int] = 0
    submit_only: ClassVar[bool] = False
    drain_poll: ClassVar[float] = 0.5
    _instances: ClassVar[int] = 0

    def on_start(self) -> None:
        ModerationClient._instances += 1
        self.rng = random.Random(self.seed + ModerationClient._instances)
        self.pending: deque[int] = deque()
        # Connect first, measured apart: a server with a short listen backlog (the
        # standard library's default is 5, `chalice local`'s own server) makes some
        # of the clients that connect at once wait for a SYN retransmit (1 s, 3 s),
        # which would otherwise land in the first submits' latency.
        self.client.get("/health", name="connect", headers=self.headers)
        RECORDER.connected += 1
        if RECORDER.load_started is None and RECORDER.connected >= RECORDER.users:
            RECORDER.start_load()  # duration mode: everyone at once, from the first submit

    @task
    def submit_then_poll(self) -> None:
        if RECORDER.load_started is None:
            gevent.sleep(IDLE_SECONDS / 4)  # the other clients are still connecting
            return
        submitted = RECORDER.claim()
        if submitted:
            RECORDER.in_flight += 1
            try:
                self.submit()
            finally:
                RECORDER.in_flight -= 1
                RECORDER.answered += 1
        RECORDER.maybe_drain()
        draining = RECORDER.drain_started is not None
        polls = bool(self.pending) and (draining or not self.submit_only)
        wait = self.poll(self.pending.popleft(), "drain" if draining else "poll") if polls else 0.0
        if RECORDER.finished() and not RECORDER.stopping and self.environment.runner is not None:
            RECORDER.stopping = True
            # From another greenlet: stopping kills the clients, this one included.
            gevent.spawn(self.environment.runner.quit)
        if RECORDER.stopping or (draining and wait) or not (submitted or polls):
            gevent.sleep(wait if draining and wait else IDLE_SECONDS)

    def submit(self) -> None:
        item_id = self.rng.choice(self.item_ids)
        with self.client.post(f"{SUBMIT_PATH}?item_id={item_id}", name="submit", data="", headers=self.headers,
                              catch_response=True) as resp:
            if resp.status_code != 202:
                return  # recorded with its status; locust marks it failed
            body = _json(resp.text)
            task_id = body.get("task_id") if isinstance(body, dict) else None
            if not isinstance(task_id, int) or body.get("status") != "pending" or "message" not in body:
                RECORDER.bad_bodies += 1
                resp.failure(f"202 without {{task_id, status: pending, message}}: {resp.text!r:.200}")
                return
            RECORDER.tasks[task_id] = None
            RECORDER.unfinished.add(task_id)
            self.pending.append(task_id)

    def poll(self, task_id: int, name: str) -> float:
        """Read the task. Terminal: 0. Else it goes to the back of this client's queue, and the answer is
        how long to wait before the next poll: the Retry-After of a 429/503, else --drain-poll."""
        with self.client.get(f"{RESULT_PATH}{task_id}", name=name, headers=self.headers, catch_response=True) as resp:
            body = _json(resp.text) if resp.status_code == 200 else None
            later = retry_after(resp) if resp.status_code in REFUSALS else None
        if isinstance(body, dict):
            RECORDER.tasks[task_id] = body
            if body.get("status") in TERMINAL:
                RECORDER.unfinished.discard(task_id)
                return 0.0
        self.pending.append(task_id)
        return min(later, MAX_RETRY_AFTER_SECONDS) if later is not None else self.drain_poll


def retry_after(response: Any) -> float | None:
    """The Retry-After of a response, in seconds (the delay-seconds form; a date counts as 1 s), or None."""
    headers = getattr(response, "headers", None)
    value = headers.get("Retry-After") if headers is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0


def _json(text: str | None) -> Any:
    try:
        return json.loads(text or "")
    except ValueError:
        return None

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
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import deque
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
DRAIN_POLL_SECONDS = 0.5


class Recorder:
    """What every client saw. One process, cooperative greenlets: no locks needed,
    since nothing here yields between reading and updating a counter."""

    def __init__(self) -> None:
        self.submits_planned = 0
        self.drain_timeout = 0.0
        self.claimed = 0
        self.answered = 0
        self.samples: list[tuple[str, int, float, float]] = []
        self.errors: list[dict[str, Any]] = []
        self.tasks: dict[int, dict[str, Any] | None] = {}
        self.unfinished: set[int] = set()
        self.bad_bodies = 0
        self.drain_started: float | None = None  # monotonic, once every submit is answered
        self.drain_seconds = 0.0
        self.stopping = False

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
            "submits_planned": self.submits_planned,
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
    group.add_argument("--drain-timeout", type=float, default=120.0, help="seconds to wait for tasks after the submits")
    group.add_argument("--raw-out", default="raw.json", help="where to write every request and task seen")
    group.add_argument("--request-timeout", type=float, default=30.0, help="seconds per request")
    group.add_argument("--seed", type=int, default=20261125, help="item id choice, per client")


@events.init.add_listener
def _configure(environment: Environment, **_: Any) -> None:
    opts = environment.parsed_options
    if opts is None:
        return
    RECORDER.submits_planned, RECORDER.drain_timeout = opts.submits, opts.drain_timeout
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

    @task
    def submit_then_poll(self) -> None:
        submitted = RECORDER.claimed < RECORDER.submits_planned
        if submitted:
            RECORDER.claimed += 1
            try:
                self.submit()
            finally:
                RECORDER.answered += 1
                if RECORDER.answered == RECORDER.submits_planned:
                    RECORDER.drain_started = time.monotonic()
        draining = RECORDER.drain_started is not None
        done = self.poll(self.pending.popleft(), "drain" if draining else "poll") if self.pending else True
        if RECORDER.finished() and not RECORDER.stopping and self.environment.runner is not None:
            RECORDER.stopping = True
            # From another greenlet: stopping kills the clients, this one included.
            gevent.spawn(self.environment.runner.quit)
        if RECORDER.stopping or (draining and not done) or not (submitted or self.pending):
            gevent.sleep(DRAIN_POLL_SECONDS if draining else IDLE_SECONDS)

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

    def poll(self, task_id: int, name: str) -> bool:
        """Read the task; True if it is terminal, else it goes to the back of this client's queue."""
        with self.client.get(f"{RESULT_PATH}{task_id}", name=name, headers=self.headers, catch_response=True) as resp:
            body = _json(resp.text) if resp.status_code == 200 else None
        if isinstance(body, dict):
            RECORDER.tasks[task_id] = body
            if body.get("status") in TERMINAL:
                RECORDER.unfinished.discard(task_id)
                return True
        self.pending.append(task_id)
        return False


def _json(text: str | None) -> Any:
    try:
        return json.loads(text or "")
    except ValueError:
        return None

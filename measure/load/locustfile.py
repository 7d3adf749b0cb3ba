"""The simulated clients of `make load` (locust, headless; started by measure/load/run.py).

Each client connects (GET /health, reported apart), then loops: claim one submit from the shared budget (--submits), POST
/moderation/async_predict?item_id=N for a random N of --items (expects 202
{task_id, status, message}), then poll one of its own unfinished tasks with
GET /moderation/moderation_result/{task_id}, round robin. When the whole
budget has been answered, the run stops; measure/load/run.py then drains what is still
pending. Every request is recorded (kind, status, latency, start) and written
to --raw-out as JSON when the test stops, for measure/load/report.py.

    locust -f measure/load/locustfile.py --headless -u 32 -r 32 --host http://127.0.0.1:8000 \
        --submits 2000 --items 1-300 --raw-out /tmp/raw.json

The API key (x-api-key, for the deployed API) comes from --api-key or LOAD_API_KEY.
"""

from __future__ import annotations

import json
import os
import random
from collections import deque
from pathlib import Path
from typing import Any, ClassVar

import gevent
from locust import FastHttpUser, constant, events, task
from locust.env import Environment

from measure.load.report import MAX_ERROR_EXAMPLES, TERMINAL, parse_items

SUBMIT_PATH = "/moderation/async_predict"
RESULT_PATH = "/moderation/moderation_result/"
# A client with nothing to do (budget spent, nothing pending) waits this long
# instead of spinning: the CPU is shared with the server under test.
IDLE_SECONDS = 0.2


class Recorder:
    """What every client saw. One process, cooperative greenlets: no locks needed,
    since nothing here yields between reading and updating a counter."""

    def __init__(self) -> None:
        self.submits_planned = 0
        self.claimed = 0
        self.answered = 0
        self.samples: list[tuple[str, int, float, float]] = []
        self.errors: list[dict[str, Any]] = []
        self.tasks: dict[int, dict[str, Any] | None] = {}
        self.bad_bodies = 0

    def claim_submit(self) -> bool:
        if self.claimed >= self.submits_planned:
            return False
        self.claimed += 1
        return True

    def submit_answered(self) -> bool:
        """Count an answered submit; True for the last one of the budget."""
        self.answered += 1
        return self.answered == self.submits_planned

    def on_request(self, name: str, status: int, ms: float, start: float, detail: str | None) -> None:
        self.samples.append((name, status, ms, start))
        if (status == 0 or status >= 500) and len(self.errors) < MAX_ERROR_EXAMPLES:
            self.errors.append({"kind": name, "status": status, "detail": detail})

    def dump(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "submits_planned": self.submits_planned,
            # Only answered submits: one killed in flight (time limit) may or may not have created a task.
            "submits_sent": self.answered,
            "samples": self.samples,
            "errors": self.errors,
            "tasks": self.tasks,
            "bad_bodies": self.bad_bodies,
        }))


RECORDER = Recorder()


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("ad-moderation load test")
    group.add_argument("--submits", type=int, default=2000, help="total submits across all clients, then stop")
    group.add_argument("--items", default="1-300", help="item ids to submit, e.g. 1-300 or 1-20,25")
    group.add_argument("--api-key", default=os.environ.get("LOAD_API_KEY", ""), help="x-api-key header (deployed API)")
    group.add_argument("--raw-out", default="build/load/raw.json", help="where to write every request and task seen")
    group.add_argument("--request-timeout", type=float, default=30.0, help="seconds per request")
    group.add_argument("--seed", type=int, default=20261125, help="item id choice, per client")


@events.init.add_listener
def _configure(environment: Environment, **_: Any) -> None:
    opts = environment.parsed_options
    if opts is None:
        return
    RECORDER.submits_planned = opts.submits
    ModerationClient.item_ids = parse_items(opts.items)
    ModerationClient.headers = {"x-api-key": opts.api_key} if opts.api_key else {}
    ModerationClient.network_timeout = ModerationClient.connection_timeout = opts.request_timeout
    ModerationClient.seed = opts.seed


@events.request.add_listener
def _record(name: str, response_time: float, response: Any = None, exception: Any = None,
            start_time: float = 0.0, **_: Any) -> None:
    status = int(getattr(response, "status_code", 0) or 0)
    detail = None
    if status == 0 or status >= 500:
        detail = getattr(response, "text", None) or repr(exception)
    RECORDER.on_request(name, status, response_time, start_time, detail)


@events.test_stop.add_listener
def _dump(environment: Environment, **_: Any) -> None:
    opts = environment.parsed_options
    if opts is not None:
        RECORDER.dump(Path(opts.raw_out))


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
        submitted = RECORDER.claim_submit()
        if submitted:
            try:
                self.submit()
            finally:
                if RECORDER.submit_answered():
                    # Every submit of the budget is answered: stop the load phase. From
                    # another greenlet, since stopping kills the clients, this one included.
                    runner = self.environment.runner
                    if runner is not None:
                        gevent.spawn(runner.quit)
        if self.pending:
            self.poll(self.pending.popleft())
        elif not submitted:
            gevent.sleep(IDLE_SECONDS)

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
            self.pending.append(task_id)

    def poll(self, task_id: int) -> None:
        with self.client.get(f"{RESULT_PATH}{task_id}", name="poll", headers=self.headers, catch_response=True) as resp:
            body = _json(resp.text) if resp.status_code == 200 else None
            if isinstance(body, dict):
                RECORDER.tasks[task_id] = body
                if body.get("status") in TERMINAL:
                    return
            self.pending.append(task_id)  # not done yet: back of this client's queue


def _json(text: str | None) -> Any:
    try:
        return json.loads(text or "")
    except ValueError:
        return None

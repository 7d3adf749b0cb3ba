"""Schemathesis, through its Python API, against a running API and its own
/openapi.json: every phase (examples, coverage, fuzzing, stateful through the
document's links) and every check, unless a test names one to leave out and
says why. Returns what happened, for the test to assert on and print.

    .venv/bin/python tests/contract/contract_fuzz.py http://127.0.0.1:8000 API_KEY

runs the same thing by hand against any stack (`make run` prints its key).
"""

from __future__ import annotations

import functools
import os
import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Cases per operation and phase: enough to find what a fuzzer finds here in
# about a minute on a small machine; CONTRACT_MAX_EXAMPLES raises it.
DEFAULT_MAX_EXAMPLES = 40


@dataclass
class Report:
    seed: int
    cases: int = 0
    operations: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    # One example per (check, operation, title); failing_checks counts them all.
    failures: dict[tuple[str, str, str], str] = field(default_factory=dict)
    failing_checks: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # 503 {"status": "degraded"} from the pipeline probe: its documented answer, not a failure.
    degraded: int = 0

    def server_errors(self) -> int:
        """Responses >= 500 other than the pipeline probe's "degraded"."""
        return sum(n for status, n in self.statuses.items() if status >= 500) - self.degraded

    def summary(self) -> str:
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return (
            f"{self.cases} cases over {len(self.operations)} operations in {self.seconds:.0f} s (seed {self.seed}); "
            f"{len(self.failures)} distinct failures ({self.failing_checks} failing checks), {len(self.errors)} errors; "
            f"responses by status {{{codes}}}"
        )

    def problems(self) -> list[str]:
        return list(self.failures.values()) + self.errors


# `make run`'s server (devstack/chalice_local.py) enforces API keys as API Gateway
# does, so the auth checks run against it too (its key: CHALICE_LOCAL + api_key).
# Its HTTP server (python's http.server) answers methods it has no handler for
# (TRACE, QUERY) before Chalice sees them; they are left out of the coverage
# phase's unexpected methods. Everything else is checked.
CHALICE_LOCAL = {
    "unexpected_methods": ["get", "put", "post", "delete", "patch"],
}


# GET /health/pipeline answers 503 {"status": "degraded"} when the DLQ holds
# messages or a task is unfinished too long (docs/architecture.md#health): that is what an
# uptime probe alerts on. The fuzzer's own requests park messages in the DLQ (it
# closes ads that have queued tasks), so that 503 is the probe telling the
# truth; schemathesis's not_a_server_error check cannot tell it from a crash.
DEGRADED_PROBES = {"GET /health/pipeline"}


def _is_degraded_answer(label: str, response: Any) -> bool:
    if label not in DEGRADED_PROBES or response is None or response.status_code != 503:
        return False
    try:
        return bool(response.json().get("status") == "degraded")
    except ValueError:
        return False


# The statuses that count as "invalid input refused": schemathesis's defaults plus 413.
REJECTION_STATUSES = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]
# What "a valid request accepted" may answer: schemathesis's defaults plus 422, which only the
# legacy contract answers (the `Moderation-Contract: legacy` header the fuzzer sends): its rules
# the document's one body schema cannot state, e.g. a required `description` (docs/clients.md#contracts).
# The current contract never answers 422, so a valid request it refuses (400) still fails the check.
ACCEPTANCE_STATUSES = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
# The headers that frame the HTTP message: the client sets them from the body and the URL. The
# fuzzer, given room for extra headers, once generated `Content-Length: S+GW d Ut"oC...` (seed
# 852832205): an unframeable request that the HTTP server (LocalStack's Twisted, API Gateway's
# front) refuses with a bare 400 before any API sees it, which the checks then blame on the API.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "host", "connection"})


def _drop_framing_headers(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """schemathesis before_call hook: what the API answers is fuzzed, not the HTTP framing."""
    for name in [n for n in (case.headers or {}) if n.lower() in FRAMING_HEADERS]:
        del case.headers[name]


@functools.cache
def _register_hooks() -> None:
    """Once per process: schemathesis 4 runs before_call hooks from its global dispatcher only."""
    import schemathesis

    schemathesis.hook("before_call")(_drop_framing_headers)


# CI fuzzes with one fixed seed, so a seed-dependent find cannot block a
# landing at random; a developer's run draws a new seed each time (printed,
# and replayable with CONTRACT_SEED) to keep finding new cases.
CI_SEED = 20261125


def _seed() -> int:
    if os.environ.get("CONTRACT_SEED"):
        return int(os.environ["CONTRACT_SEED"])
    if os.environ.get("CI"):
        return CI_SEED
    return random.randrange(2**31)


def run(
    base_url: str,
    *,
    api_key: str | None = None,
    disabled_checks: dict[str, str] | None = None,
    with_security_parameters: bool = True,
    unexpected_methods: list[str] | None = None,
    max_examples: int | None = None,
    rate_limit: str | None = None,
    seed: int | None = None,
) -> Report:
    """Fuzz the API at base_url from base_url + /openapi.json.

    disabled_checks: check name -> the reason it cannot hold against this target.
    """
    import schemathesis
    from schemathesis.config import SchemathesisConfig
    from schemathesis.engine import events

    _register_hooks()
    seed = seed if seed is not None else _seed()
    config: dict[str, Any] = {
        "seed": seed,
        "base-url": base_url,
        "request-timeout": 30,
        "generation": {
            "max-examples": max_examples or int(os.environ.get("CONTRACT_MAX_EXAMPLES") or DEFAULT_MAX_EXAMPLES),
            # No .hypothesis/ example database written into the repository.
            "database": "none",
            "with-security-parameters": with_security_parameters,
        },
        "checks": {
            "enabled": True,
            # A body over MAX_BODY_BYTES is refused with 413 before it is
            # validated; schemathesis's default list of rejections lacks 413.
            "negative_data_rejection": {"expected-statuses": REJECTION_STATUSES},
            "positive_data_acceptance": {"expected-statuses": ACCEPTANCE_STATUSES},
            **{name: {"enabled": False} for name in (disabled_checks or {})},
        },
        "phases": {"stateful": {"max-steps": 20}},
        "warnings": False,
    }
    if unexpected_methods is not None:
        config["phases"]["coverage"] = {"unexpected-methods": unexpected_methods}
    if api_key:
        config["auth"] = {"openapi": {"apiKey": {"api_key": api_key}}}
    if rate_limit:
        config["rate-limit"] = rate_limit
    schema = schemathesis.openapi.from_url(
        f"{base_url.rstrip('/')}/openapi.json", config=SchemathesisConfig.from_dict(config)
    )
    report = Report(seed=seed)
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            _scenario(report, event.recorder)
        elif isinstance(event, events.NonFatalError):
            report.errors.append(f"{event.label}: {type(event.value).__name__}: {event.value}")
        elif isinstance(event, events.FatalError):
            report.errors.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            report.seconds = event.running_time
    return report


def _scenario(report: Report, recorder: Any) -> None:
    report.cases += len(recorder.cases)
    report.operations |= {node.value.operation.label for node in recorder.cases.values()}
    degraded: set[str] = set()
    for case_id, interaction in recorder.interactions.items():
        if interaction.response is not None:
            report.statuses[interaction.response.status_code] += 1
            if _is_degraded_answer(recorder.cases[case_id].value.operation.label, interaction.response):
                report.degraded += 1
                degraded.add(case_id)
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.failure_info is None:
                continue
            label = recorder.cases[case_id].value.operation.label
            if check.name == "not_a_server_error" and case_id in degraded:
                continue
            failure = check.failure_info.failure
            report.failing_checks += 1
            report.failures.setdefault(
                (check.name, label, failure.title),
                f"[{check.name}] {label}: {failure.title}\n{failure.message}\n{check.failure_info.code_sample}",
            )


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    # A deployed API (its URL has a path), or make run's server.
    local = argv[0].rstrip("/").count("/") == 2
    report = run(argv[0], api_key=argv[1], **(CHALICE_LOCAL if local else {}))  # type: ignore[arg-type]
    for problem in report.problems():
        print(problem, end="\n\n")
    print(report.summary())
    return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

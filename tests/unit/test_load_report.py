"""measure/load/report.py: the overload profile's judgement, from what the clients recorded."""

from __future__ import annotations

from typing import Any

from measure.load.report import Recording, Sample, overload_problems, summarise

DONE = {"status": "completed", "created_at": "2026-11-29T10:00:00+00:00", "processed_at": "2026-11-29T10:00:01+00:00"}


def phase(samples: list[tuple[str, int, float]], refusals: dict[tuple[str, int, bool, bool], int],
          tasks: dict[int, dict[str, Any] | None]) -> dict[str, Any]:
    rec = Recording(submits_planned=None, submits_sent=sum(1 for k, _, _ in samples if k == "submit"),
                    samples=[Sample(k, status, ms, 1_800_000_000.0 + i) for i, (k, status, ms) in enumerate(samples)],
                    tasks=tasks, duration_s=30.0, load_seconds=30.0, refusals=refusals)
    return summarise(rec, {"users": 4})


def test_a_phase_that_sheds_with_retry_after_meets_the_goal():
    results = phase([("connect", 200, 5.0), ("submit", 202, 40.0), ("submit", 503, 1000.0), ("submit", 429, 3.0),
                     ("drain", 503, 1000.0), ("drain", 200, 4.0)],
                    {("submit", 503, True, True): 1, ("submit", 429, True, True): 1, ("drain", 503, True, True): 1},
                    {1: DONE})
    assert overload_problems(results) == []
    assert results["refusals"]["total"] == 3 and results["refusals"]["by_kind"]["submit"] == {
        "429": 1, "503": 1, "without_retry_after": 0, "without_json_error": 0}
    assert set(results["submit_by_status"]) == {"202", "429", "503"}
    assert results["load_phase"]["submits_per_s"] == 0.1  # 3 submits in 30 s
    # The default judgement, for which any 503 is a server error, does not hold here.
    assert not results["ok"]


def test_each_way_of_missing_the_goal_is_named():
    results = phase([("submit", 202, 5200.0), ("submit", 500, 10.0), ("submit", 0, 30000.0), ("submit", 503, 900.0),
                     ("drain", 502, 10.0)],
                    {("submit", 503, False, False): 1}, {1: {"status": "pending"}})
    problems = overload_problems(results)
    assert problems == [
        "submits answered other than 202/429/503: no response: 1, 500: 1",
        "server errors: no response: 1, 500: 1, 502: 1",
        "1 answers 429/503 without Retry-After",
        "1 answers 429/503 without a JSON error body",
        "submit p99 30000.0 ms, not under 5000 ms",
        "1 accepted tasks did not reach completed/failed",
    ]
    assert overload_problems(phase([("submit", 503, 1000.0)], {("submit", 503, True, True): 1}, {})) == [
        "no submit was accepted (wrong URL, item ids or API key?)"]

"""The bench's outputs: a terminal table, results.json and a chart (PNG)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from measure.bench.table import table


def _ms(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:,.0f} ms" if v >= 100 else f"{v:.1f} ms"


def _rate(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def cold_lines(r: dict[str, Any]) -> list[str]:
    t = r["targets"]
    out = [f"1. COLD START per function: fresh interpreter, import app + the function's module + load_model() "
           f"({r['runs']} runs; target median <= {t['median_ms']:.0f} ms and >= {t['speedup_vs_sklearn']:.0f}x "
           f"faster than sklearn)"]
    rows = []
    for f in r["functions"]:
        total, parts = f["total_ms"], f["parts_p50_ms"]
        ok = total["p50"] <= t["median_ms"] and f["speedup_vs_sklearn"] >= t["speedup_vs_sklearn"]
        rows.append([f["name"], f["module"], _ms(total["p50"]), _ms(total["min"]), _ms(total["max"]),
                     f"{f['speedup_vs_sklearn']:.1f}x", _verdict(ok),
                     " + ".join(f"{k.split('_')[-1]} {v:.0f}" for k, v in parts.items())])
    for f in r.get("registry", []):
        total, parts = f["total_ms"], f["parts_p50_ms"]
        rows.append([f["name"], f["module"], _ms(total["p50"]), _ms(total["min"]), _ms(total["max"]),
                     f"{f['speedup_vs_sklearn']:.1f}x", _verdict(total["p50"] <= t["median_ms"]),
                     " + ".join(f"{k.split('_')[-1]} {v:.0f}" for k, v in parts.items())])
    s = r["sklearn"]["total_ms"]
    rows.append(["sklearn (the old way)", "import sklearn + pickle.load", _ms(s["p50"]), _ms(s["min"]), _ms(s["max"]),
                 "1.0x", "", ""])
    out += table(["function", "module", "median", "min", "max", "vs sklearn", "target", "median parts (ms)"], rows,
                  align="llrrrrll")
    out.append(f"  {r['note']}")
    if "registry_note" in r:
        out.append(f"  + registry: {r['registry_note']}")
    return out


def batch_lines(r: dict[str, Any]) -> list[str]:
    out = [f"2. SCORER THROUGHPUT by batch size: Scorer.handle on {r['database']}; SQS {r['sqs']}"]
    rows = []
    keep_target = r.get("target_shadow_keeps", 0.6)
    ceiling_target = r.get("target_of_ceiling", 0.6)
    trails = r.get("postgres_alone_trail") or [None] * len(r["scorer"])
    for sc, sh, pg, pgt in zip(r["scorer"], r["scorer_shadow"], r["postgres_alone"], trails, strict=True):
        target = r["targets"].get(str(sc["batch"]))
        verdict = f">= {target:.0f}x {_verdict(sc['ratio_to_batch1'] >= target)}" if target else ""
        keeps = f"{sh['keeps_of_scorer']:.2f}" + (f" (>= {keep_target} {_verdict(sh['keeps_of_scorer'] >= keep_target)})"
                                                  if sc["batch"] == 100 else "")
        lat = sc["ms_per_batch"]
        of_pg = sc.get("of_postgres_alone", sc["msg_per_s"] / pg["msg_per_s"])
        ceiling = f"{of_pg:.2f}" + (f" (>= {ceiling_target} {_verdict(of_pg >= ceiling_target)})" if sc["batch"] == 100 else "")
        of_pgt = sc.get("of_postgres_alone_trail")
        ceiling_trail = "-" if of_pgt is None else f"{of_pgt:.2f}" + (
            f" ({_verdict(of_pgt >= ceiling_target)})" if sc["batch"] == 100 else "")
        rows.append([str(sc["batch"]), _rate(sc["msg_per_s"]), f"{sc['ratio_to_batch1']:.1f}x", verdict, ceiling,
                     ceiling_trail,
                     f"{lat['p50']:.1f} / {lat['p95']:.1f}", _rate(sh["msg_per_s"]), keeps, _rate(pg["msg_per_s"]),
                     f"{pg['ratio_to_batch1']:.1f}x", _rate(pgt["msg_per_s"]) if pgt else "-",
                     f"{sc['messages']} / {sc['completed']}"])
    out += table(["batch", "scorer msg/s", "x batch 1", "target", "of PG alone", "of PG+trail", "ms/batch p50/p95",
                   "+ shadow msg/s", "keeps", "PG alone msg/s", "x b1", "PG+trail msg/s", "msgs / completed"], rows)
    out.append("  + shadow: the scorer with a shadow version set (every task scored twice, the shadow's verdicts "
               "written after the commit); keeps = its rate / the scorer's")
    out.append("  PG alone: the same claim + write transaction through the store, every task completed: no parsing, "
               "no model, no logging (the ceiling); PG+trail: the same, writing also the trail row per task that the "
               "scorer's write carries")
    return out


def e2e_lines(r: dict[str, Any]) -> list[str]:
    raw, load = r["raw_sqs"], r["load"]
    tasks, submit = load["tasks"], load["by_kind"]["submit"]
    ratio_ok = r["ratio_e2e_to_raw_sqs"] >= r["target_ratio"]
    out = [f"3. END TO END: one `make run` stack (ready in {r['startup_s']:.1f} s)"]
    out += table(["", "figure", "detail"], [
        ["raw SQS (scratch queue)", f"{_rate(raw['msg_per_s'])} msg/s",
         f"{raw['messages']} msgs, {raw['senders']} senders x SendMessage, {raw['receivers']} receivers x "
         "ReceiveMessage(10)+DeleteMessageBatch"],
        ["e2e (HTTP -> completed)", f"{_rate(tasks['tasks_per_s'])} tasks/s",
         f"make load: {load['config']['submits']} submits from {load['config']['users']} clients, "
         f"{_rate(load['load_phase']['req_per_s'])} req/s, statuses {load['status_counts']}"],
        ["ratio e2e / raw SQS", f"{r['ratio_e2e_to_raw_sqs']:.2f}", f"target >= {r['target_ratio']}: {_verdict(ratio_ok)}"],
        ["responses >= 500", str(load["responses_5xx"]),
         f"no response: {load['no_response']}; unfinished: {tasks['not_terminal']}; {'; '.join(load['problems'])}"],
    ], align="lrl")
    out += table(["latency", "p50", "p95", "p99", "max"], [
        [f"POST /moderation/async_predict ({submit['count']})", *(_ms(submit[f"{k}_ms"]) for k in ("p50", "p95", "p99", "max"))],
        ["submit -> completed (processed_at - created_at)",
         *(_ms(tasks["submit_to_completed"][f"{k}_ms"]) for k in ("p50", "p95", "p99", "max"))],
    ])
    return out


def render(results: dict[str, Any]) -> str:
    m = results["meta"]
    out = [f"ad-moderation bench  {m['started']}  commit {m['commit']}  python {m['python']}  "
           f"{m['cpus']} CPUs, load average {m['load_average']} at start  ({m['seconds']:.0f} s)",
           "figures on a shared machine are indicative; the bench reports, it asserts nothing", ""]
    from measure.bench.cost import lines as cost_lines
    from measure.bench.trees import lines as trees_lines
    from measure.bench.webhooks import lines as webhooks_lines

    sections: dict[str, Callable[[dict[str, Any]], list[str]]] = {"cold": cold_lines, "batch": batch_lines,
                                                                  "e2e": e2e_lines, "trees": trees_lines,
                                                                  "cost": cost_lines,
                                                                  "webhooks": webhooks_lines}
    for key, lines in sections.items():
        if key in results:
            out += [*lines(results[key]), ""]
        elif key in results.get("errors", {}):
            out.append(f"({key}: FAILED: {results['errors'][key]})")
        else:
            out.append(f"({key}: not run)")
    return "\n".join(out).rstrip() + "\n"


def _clean(value: Any) -> Any:
    """Strict JSON: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(_clean(results), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def write_chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from measure.bench.cost import chart as _chart_cost

    fig, axes = plt.subplots(1, 4, figsize=(24, 5.5))
    m = results["meta"]
    fig.suptitle(f"ad-moderation bench, {m['started']}, commit {m['commit']} ({m['cpus']} CPUs, shared: indicative)")
    panels = (("cold", _chart_cold), ("batch", _chart_batch), ("e2e", _chart_e2e), ("cost", _chart_cost))
    for ax, (key, draw) in zip(axes, panels, strict=True):
        if key in results:
            draw(ax, results[key])
        else:
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"{key}: not run", ha="center", va="center", fontsize=14, color="grey")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(ax: Any, xs: list[float], heights: list[float], fmt: Callable[[float], str], **kwargs: Any) -> None:
    for bar in ax.bar(xs, heights, **kwargs):
        if bar.get_height():
            ax.annotate(fmt(bar.get_height()), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")


def _chart_cold(ax: Any, r: dict[str, Any]) -> None:
    registry = [(f["name"].replace(" + ", "\n+ "), f["total_ms"]["p50"]) for f in r.get("registry", [])]
    rows = ([(f["name"], f["total_ms"]["p50"]) for f in r["functions"]] + registry
            + [("sklearn\nunpickle", r["sklearn"]["total_ms"]["p50"])])
    _bars(ax, list(range(len(rows))), [ms for _, ms in rows], lambda v: f"{v:.0f} ms",
          color=["tab:blue"] * len(r["functions"]) + ["tab:cyan"] * len(registry) + ["tab:grey"])
    ax.set_xticks(range(len(rows)), [name for name, _ in rows], fontsize=7)
    ax.axhline(r["targets"]["median_ms"], color="tab:red", linestyle="--", label=f"target {r['targets']['median_ms']:.0f} ms")
    ax.set_ylabel("ms (median)")
    ax.set_title("Cold start per function: import app + module + model")
    ax.legend(loc="upper left")


def _chart_batch(ax: Any, r: dict[str, Any]) -> None:
    sizes = [row["batch"] for row in r["scorer"]]
    series = [("scorer (Scorer.handle)", "scorer", "tab:blue"), ("scorer + shadow", "scorer_shadow", "tab:cyan"),
              ("PostgreSQL alone", "postgres_alone", "tab:orange"),
              ("PostgreSQL alone + trail", "postgres_alone_trail", "tab:red")]
    series = [s for s in series if s[1] in r]
    width = 0.8 / len(series)
    for i, (label, key, color) in enumerate(series):
        _bars(ax, [j + (i - (len(series) - 1) / 2) * width for j in range(len(sizes))], [row["msg_per_s"] for row in r[key]],
              lambda v: f"{v:,.0f}", width=width, label=label, color=color)
    ax.set_yscale("log")
    ax.set_xticks(range(len(sizes)), [
        f"batch {row['batch']}\nscorer {row['ratio_to_batch1']:.1f}x b1"
        + (f"\n{row['of_postgres_alone']:.2f} of PG" if "of_postgres_alone" in row else "")
        + (f"\n{row['of_postgres_alone_trail']:.2f} of PG+trail" if "of_postgres_alone_trail" in row else "")
        for row in r["scorer"]], fontsize=7)
    ax.set_ylabel("messages / s (log scale)")
    ax.set_title("Scorer throughput by batch size (PostgreSQL real, SQS stubbed)")
    ax.legend(loc="upper left")


def _chart_e2e(ax: Any, r: dict[str, Any]) -> None:
    raw, e2e = r["raw_sqs"]["msg_per_s"], r["load"]["tasks"]["tasks_per_s"] or 0.0
    _bars(ax, [0, 1], [raw, e2e], lambda v: f"{v:,.1f}/s", color=["tab:grey", "tab:blue"], width=0.5)
    ax.set_xticks([0, 1], ["raw SQS\n(send + receive + delete)", "end to end\n(HTTP -> completed)"])
    ax.axhline(raw * r["target_ratio"], color="tab:red", linestyle="--", label=f"target: {r['target_ratio']} x raw SQS")
    ax.set_ylabel("messages or tasks / s")
    ax.set_title(f"Throughput on one make run stack: ratio {r['ratio_e2e_to_raw_sqs']:.2f}")
    ax.legend(loc="upper right")

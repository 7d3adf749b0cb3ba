"""The bench's outputs: a terminal table, results.json and a chart (PNG)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from measure.bench.common import ROOT

# --- terminal --------------------------------------------------------------------


def _ms(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:,.0f} ms" if v >= 100 else f"{v:.1f} ms"


def _rate(v: float | None) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def _pct(v: float) -> str:
    return f"{v * 100:4.0f} %"


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _table(headers: list[str], rows: list[list[str]], indent: str = "  ", align: str = "") -> list[str]:
    """Columns sized to their content; `align` has one letter per column (l/r), default: first left, rest right."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(cells: list[str]) -> str:
        return indent + "  ".join(
            str(c).ljust(w) if a == "l" else str(c).rjust(w) for c, w, a in zip(cells, widths, align, strict=True)
        ).rstrip()

    return [line(headers), indent + "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def cold_lines(r: dict[str, Any]) -> list[str]:
    t = r["targets"]
    out = [f"1. COLD START per function: fresh interpreter, import app + the function's module + load_model() "
           f"({r['runs']} runs; target median <= {t['median_ms']:.0f} ms and >= {t['speedup_vs_sklearn']:.0f}x "
           f"faster than sklearn)"]
    rows = []
    for f in r["functions"]:
        if f.get("skipped"):
            rows.append([f["name"], f["module"], "skipped", "", "", "", "", "", f["skipped"]])
            continue
        parts = f["parts_median_ms"]
        ok = f["median_ms"] <= t["median_ms"] and f["speedup_vs_sklearn"] >= t["speedup_vs_sklearn"]
        rows.append([f["name"], f["module"], _ms(f["median_ms"]), _ms(f["p90_ms"]), _ms(f["min_ms"]),
                     _ms(f["wall_median_ms"]),
                     f"{f['speedup_vs_sklearn']:.1f}x ({f['speedup_vs_sklearn_min']:.1f}x)", _verdict(ok),
                     f"app {parts['import_app']:.0f} + module {parts['import_module']:.0f} + model {parts['load_model']:.0f}"])
    s = r["sklearn"]
    rows.append(["sklearn (the old way)", "import sklearn + pickle.load", _ms(s["median_ms"]), _ms(s["p90_ms"]),
                 _ms(s["min_ms"]), _ms(s["wall_median_ms"]), "1.0x (1.0x)", "", s["module"]])
    out += _table(["function", "module", "median", "p90", "min", "process", "vs sklearn", "target", "median parts (ms)"],
                  rows, align="llrrrrrll")
    out.append("  median/p90/min: from the first statement; process: median of the whole interpreter, start-up included; "
               "vs sklearn: ratio of medians (of minimums)")
    out.append("  where `import app` spends its time (python -X importtime, one run, cumulative; "
               "indented = imported by the line above):")
    for m in r["importtime_top"]:
        out.append(f"    {m['cumulative_ms']:7.1f} ms  (self {m['self_ms']:5.1f})  {'  ' * m['depth']}{m['module']}")
    if r.get("importtime_by_package"):
        out.append("  the same run by top-level package (own time of its modules): "
                   + ", ".join(f"{p['package']} {p['self_ms']:.0f} ms" for p in r["importtime_by_package"]))
    return out


def batch_lines(r: dict[str, Any]) -> list[str]:
    out = [f"2. SCORER THROUGHPUT by batch size: Scorer.handle on {r['database']}; SQS {r['sqs']}"]
    s = r["postgres_settings"]
    out.append(f"  PostgreSQL {s['server_version']}, fsync={s['fsync']}, synchronous_commit={s['synchronous_commit']}: "
               f"one-row UPDATE+COMMIT on a kept connection takes {r['commit_ms_p50']:.1f} ms (p50)")
    rows = []
    for sc, pg, kept in zip(r["scorer"], r["postgres_alone"], r["postgres_kept_connection"], strict=True):
        target = r["targets"].get(str(sc["batch"]))
        verdict = f">= {target:.0f}x {_verdict(sc['ratio_to_batch1'] >= target)}" if target else ""
        rows.append([str(sc["batch"]), _rate(sc["msg_per_s"]), f"{sc['ratio_to_batch1']:.1f}x", verdict,
                     f"{sc['ms_per_batch_p50']:.1f} / {sc['ms_per_batch_p95']:.1f}", f"{sc['cpu_ms_per_message'] * 1000:.0f}",
                     _rate(pg["msg_per_s"]), f"{pg['ratio_to_batch1']:.1f}x",
                     _rate(kept["msg_per_s"]), f"{kept['ratio_to_batch1']:.1f}x",
                     f"{sc['messages']} / {sc['completed']}"])
    out += _table(["batch", "scorer msg/s", "x batch 1", "target", "ms/batch p50/p95", "CPU us/msg", "PG alone msg/s", "x b1",
                   "PG kept conn msg/s", "x b1", "msgs / completed"], rows)
    out.append("  scorer rows: median of 3 rounds interleaved across sizes; CPU us/msg: this process's CPU (scorer + driver)")
    out.append("  PG alone: the same claim + write transaction via ModerationStore.score_batch with a trivial decide, "
               "through the app's Database")
    out.append("  PG kept conn: the same, over one connection kept open (no per-transaction connection handling): the ceiling")
    lg = r["logging"]
    out.append(f"  logging (batch 100, {lg['rounds']} alternated rounds, logs to /dev/null): "
               f"{_rate(lg['msg_per_s_logs_off'])} msg/s off, {_rate(lg['msg_per_s_logs_on'])} msg/s on; "
               f"CPU {lg['cpu_ms_per_message_logs_off'] * 1000:.0f} -> {lg['cpu_ms_per_message_logs_on'] * 1000:.0f} us "
               f"per message = {lg['ms_per_message_cost'] * 1000:.0f} us, {_pct(lg['share_of_cpu_logs_on']).strip()} "
               "of the scorer process's CPU with logs on")
    out += _scorer_profile_lines(r["profile"])
    return out


def _scorer_profile_lines(p: dict[str, Any]) -> list[str]:
    if "error" in p:
        return [f"  profile: {p['error']}"]
    out = [f"  where a batch of 100 goes (cProfile, logs on; {p['handle_ms_per_batch']:.1f} ms per batch under the "
           f"profiler, {_rate(p['msg_per_s_under_profiler'])} msg/s; {p['file']}):"]
    out += _table(["phase", "ms/batch", "share"],
                  [[x["phase"], f"{x['ms_per_batch']:.2f}", _pct(x["share"])] for x in p["phases"]], indent="    ")
    out.append("    top functions by own time:")
    top = [[x["function"][:90], x["group"], f"{x['ms_per_batch']:.2f}", _pct(x["share"]), f"{x['calls_per_batch']:.0f}"]
           for x in p["top_own"]]
    out += _table(["function", "group", "ms/batch", "share", "calls/batch"], top, indent="      ", align="llrrr")
    return out


def e2e_lines(r: dict[str, Any]) -> list[str]:
    raw, e = r["raw_sqs"], r["e2e"]
    ratio_ok = r["ratio_e2e_to_raw_sqs"] >= r["target_ratio"]
    out = [f"3. END TO END: one `make run` stack (ready in {r['startup_s']:.1f} s)"]
    rows = [
        ["raw SQS (scratch queue)", f"{_rate(raw['msg_per_s'])} msg/s",
         f"{raw['messages']} msgs, {raw['senders']} senders x SendMessage, {raw['receivers']} receivers x "
         f"ReceiveMessage(10)+DeleteMessageBatch; send alone {_rate(raw['send_only_msg_per_s'])} msg/s; errors {raw['errors']}"],
        ["e2e (HTTP -> completed)", f"{_rate(e['tasks_per_s'])} tasks/s",
         f"{e['requests']} POSTs from {e['clients']} clients ({_rate(e['post_per_s'])} POST/s), statuses {e['status_codes']}, "
         f"tasks {e['task_statuses']}"],
        ["ratio e2e / raw SQS", f"{r['ratio_e2e_to_raw_sqs']:.2f}", f"target >= {r['target_ratio']}: {_verdict(ratio_ok)}"],
        ["responses >= 500", str(e["responses_5xx"]), f"no response at all: {e['no_response']}; "
                                                     f"unfinished at timeout: {e['unfinished_at_timeout']}"],
    ]
    out += _table(["", "figure", "detail"], rows, align="lrl")
    lat = [["POST /moderation/async_predict", *(_ms(e["post_ms"][k]) for k in ("p50", "p95", "p99", "max"))],
           ["submit -> completed (processed_at - created_at)",
            *(_ms(e["submit_to_completed_ms"][k]) for k in ("p50", "p95", "p99", "max"))]]
    out += _table(["latency", "p50", "p95", "p99", "max"], lat)
    tcp = e.get("tcp_during_posts") or {}
    out.append(f"  POSTs taking >= 1 s: {e['posts_over_1s']}; kernel TCP counters while posting (whole network namespace): "
               + (", ".join(f"{k} +{v}" for k, v in tcp.items()) or "n/a")
               + " (a full listen backlog drops the SYN; the client resends it after 1 s)")
    signs = r.get("make_run_log", {})
    out.append("  make run's log over the whole section: "
               + ", ".join(f"{k}: {v}" for k, v in signs.items() if k != "file") + f" ({signs.get('file')})")
    cpu_e2e, cpu_raw = e.get("cpu"), raw.get("cpu")
    if cpu_e2e and cpu_raw:
        out.append(f"  CPU used (cores of {cpu_e2e['machine_cores']:.0f}; from /proc, the whole run):")
        parts = list(dict.fromkeys([*cpu_e2e["cores_busy"], *cpu_raw["cores_busy"]]))
        out += _table(["part", "e2e run", "raw SQS run"],
                      [[k, f"{cpu_e2e['cores_busy'].get(k, 0.0):.2f}", f"{cpu_raw['cores_busy'].get(k, 0.0):.2f}"]
                       for k in parts], indent="    ", align="lrr")
    return out


def profile_lines(r: dict[str, Any]) -> list[str]:
    p = r["profile"]
    out = [f"4. WHERE THE E2E TIME GOES: py-spy on chalice local and the runner during {r['profiled_run']['requests']} "
           f"more tasks ({_rate(r['profiled_run']['tasks_per_s'])} tasks/s under the sampler)"]
    if "error" in p:
        return [*out, f"  not sampled: {p['error']}"]
    out.append(f"  {p['tool']}; the CPU each process used is under 3.")
    for role, title in (("chalice", "chalice local (the API)"), ("runner", "runner (event source mapping + score)")):
        data = p.get(role, {})
        cpu, wall = data.get("cpu", {}), data.get("wall", {})
        out.append(f"  {title}")
        if cpu.get("samples"):
            out.append(f"    CPU of the {cpu['threads']} by library ({cpu['samples']} GIL samples; each to the deepest "
                       "library on its stack):")
            out += [f"      {_pct(x['share'])}  {x['category']}" for x in cpu["libraries"] if x["share"] >= 0.005]
            out.append("    CPU by operation (inclusive):")
            out += [f"      {_pct(x['share'])}  {x['operation']}" for x in cpu["operations"]]
            out.append("    hottest CPU frames (leaf):")
            out += [f"      {_pct(x['share'])}  {x['frame']}" for x in cpu["top_leaf_frames"][:6]]
        if wall.get("thread_samples"):
            out.append(f"    wall time of the {wall['threads']} by operation (waits included; "
                       f"{wall['thread_samples']} thread-samples):")
            out += [f"      {_pct(x['share'])}  {x['operation']}" for x in wall["operations"]]
            out.append("    where those threads are (leaf):")
            out += [f"      {_pct(x['share'])}  {x['frame']}" for x in wall["top_leaf_frames"][:6]]
    return out


def render(results: dict[str, Any]) -> str:
    m = results["meta"]
    out = [f"ad-moderation bench  {m['started']}  commit {m['commit']}  python {m['python']}  "
           f"{m['cpus']} CPUs, load average {m['load_average']} at start  ({m['seconds']:.0f} s)"]
    if m.get("uncommitted_changes"):
        out.append(f"measured with uncommitted changes to: {', '.join(m['uncommitted_changes'])}")
    out += ["figures on a shared machine are indicative; the bench reports, it asserts nothing", ""]
    sections: list[tuple[str, Callable[[dict[str, Any]], list[str]]]] = [
        ("cold", cold_lines), ("batch", batch_lines), ("e2e", e2e_lines), ("e2e", profile_lines)]
    for key, lines in sections:
        if key in results:
            out += [*lines(results[key]), ""]
    for key in m["skipped_sections"]:
        out.append(f"({key}: not run)")
    for key, error in results.get("errors", {}).items():
        out.append(f"({key}: FAILED: {error})")
    return "\n".join(out).rstrip() + "\n"


# --- results.json -------------------------------------------------------------------


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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(results), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


# --- chart ----------------------------------------------------------------------------


def write_chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(15, 10.5))
    m = results["meta"]
    fig.suptitle(f"ad-moderation bench, {m['started']}, commit {m['commit']} ({m['cpus']} CPUs, shared: indicative)",
                 fontsize=13)
    for ax, key, draw in ((axes[0][0], "cold", _chart_cold), (axes[0][1], "batch", _chart_batch),
                          (axes[1][0], "e2e", _chart_latency), (axes[1][1], "e2e", _chart_e2e)):
        if key in results:
            draw(ax, results[key])
        else:
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"{key}: not run", ha="center", va="center", fontsize=14, color="grey")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bar_labels(ax: Any, bars: Any, fmt: Callable[[float], str], fontsize: int = 9) -> None:
    for b in bars:
        h = b.get_height()
        if h and math.isfinite(h):
            ax.annotate(fmt(h), (b.get_x() + b.get_width() / 2, h), ha="center", va="bottom", fontsize=fontsize,
                        xytext=(0, 2), textcoords="offset points")


def _chart_cold(ax: Any, r: dict[str, Any]) -> None:
    rows = [f for f in r["functions"] if not f.get("skipped")] + [r["sklearn"] | {"name": "sklearn\nunpickle"}]
    names = [f["name"] for f in rows]
    medians = [f["median_ms"] for f in rows]
    errors = [[0] * len(rows), [f["p90_ms"] - f["median_ms"] for f in rows]]
    colors = ["tab:blue"] * (len(rows) - 1) + ["tab:grey"]
    ax.bar(names, medians, color=colors, yerr=errors, capsize=4)
    for x, f in enumerate(rows):  # above the whisker, so the two never overlap
        ax.annotate(f"{f['median_ms']:.0f} ms", (x, f["p90_ms"]), ha="center", va="bottom", fontsize=9,
                    xytext=(0, 3), textcoords="offset points")
    ax.axhline(r["targets"]["median_ms"], color="tab:red", linestyle="--", linewidth=1.2,
               label=f"target {r['targets']['median_ms']:.0f} ms")
    speedup = r["targets"]["speedup_vs_sklearn"]
    ax.axhline(r["sklearn"]["median_ms"] / speedup, color="tab:orange", linestyle=":", linewidth=1.5,
               label=f"sklearn median / {speedup:.0f} (the speed-up target)")
    ax.set_ylabel("ms (median, whisker to p90)")
    ax.set_title("Cold start per function: import app + module + model")
    ax.set_ylim(top=max(f["p90_ms"] for f in rows) * 1.12)
    ax.legend(loc="upper left")


def _chart_batch(ax: Any, r: dict[str, Any]) -> None:
    series = [("scorer (Scorer.handle)", r["scorer"], "tab:blue"),
              ("PostgreSQL alone (app's Database)", r["postgres_alone"], "tab:orange"),
              ("PostgreSQL alone, kept connection", r["postgres_kept_connection"], "tab:green")]
    sizes = [row["batch"] for row in r["scorer"]]
    width = 0.27
    for i, (label, rows, color) in enumerate(series):
        xs = [j + (i - 1) * width for j in range(len(sizes))]
        bars = ax.bar(xs, [row["msg_per_s"] for row in rows], width, label=label, color=color)
        _bar_labels(ax, bars, lambda v: f"{v:,.0f}", fontsize=8)
    ticks = []
    for row in r["scorer"]:
        target = r["targets"].get(str(row["batch"]))
        ticks.append(f"batch {row['batch']}\nscorer {row['ratio_to_batch1']:.1f}x batch 1"
                     + (f"\n(target {target:.0f}x)" if target else ""))
    ax.set_yscale("log")
    ax.set_xticks(range(len(sizes)), ticks)
    ax.set_ylabel("messages / s (log scale)")
    ax.set_title("Scorer throughput by batch size (PostgreSQL real, SQS stubbed)")
    top = max(row["msg_per_s"] for _, rows, _ in series for row in rows)
    ax.set_ylim(top=top * 4)
    ax.legend(loc="upper left", fontsize=9)


def _chart_latency(ax: Any, r: dict[str, Any]) -> None:
    e = r["e2e"]
    keys = ["p50", "p95", "p99"]
    groups = [("POST async_predict", e["post_ms"], "tab:purple"),
              ("submit -> completed", e["submit_to_completed_ms"], "tab:cyan")]
    width = 0.38
    for i, (label, values, color) in enumerate(groups):
        xs = [j + (i - 0.5) * width for j in range(len(keys))]
        bars = ax.bar(xs, [values[k] or 0 for k in keys], width, label=label, color=color)
        _bar_labels(ax, bars, lambda v: f"{v:,.0f}")
    ax.set_xticks(range(len(keys)), keys)
    ax.set_ylabel("ms")
    ax.set_title(f"Latency under {e['clients']} concurrent clients ({e['requests']} tasks)")
    ax.legend(loc="upper left")


def _chart_e2e(ax: Any, r: dict[str, Any]) -> None:
    raw, e = r["raw_sqs"]["msg_per_s"], r["e2e"]["tasks_per_s"]
    bars = ax.bar(["raw SQS\n(send + receive + delete)", "end to end\n(HTTP -> completed)"], [raw, e],
                  color=["tab:grey", "tab:blue"], width=0.5)
    _bar_labels(ax, bars, lambda v: f"{v:,.1f}/s")
    ax.axhline(raw * r["target_ratio"], color="tab:red", linestyle="--", linewidth=1.2,
               label=f"target: {r['target_ratio']} x raw SQS")
    ax.set_ylabel("messages or tasks / s")
    ax.set_title(f"Throughput on one make run stack: ratio {r['ratio_e2e_to_raw_sqs']:.2f}")
    ax.set_ylim(top=max(raw, e) * 1.2)
    ax.legend(loc="upper right")


def relative(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)

"""`make model-compare`: shadow against live over the latest N tasks both scored
(ops/models.py's `compare`): a table and build/models/compare-<shadow>.png."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chalicelib.serving.registry import SHADOW
from toolkit import names
from toolkit.registry import Registry

OUT_DIR = names.BUILD_DIR / "models"
DECISIONS = ("allow", "review", "block")


class OpsError(RuntimeError):
    """A make model-* command cannot do what was asked (the message says why; exit 1)."""


def compare_figures(verdicts: Sequence[Any]) -> dict[str, Any]:
    """Agreement, the live x shadow decision confusion and the probability deltas."""
    from toolkit import stats

    confusion = {live: dict.fromkeys(DECISIONS, 0) for live in DECISIONS}
    for v in verdicts:
        confusion[v.live_decision][v.shadow_decision] += 1
    deltas = [v.shadow_probability - v.live_probability for v in verdicts]
    absolute = [abs(d) for d in deltas]
    n = len(verdicts)
    return {
        "n": n,
        "live_version": verdicts[0].live_version if len({v.live_version for v in verdicts}) == 1 else "several",
        "shadow_version": verdicts[0].shadow_version,
        "agreement": sum(confusion[d][d] for d in DECISIONS) / n,
        "confusion": confusion,
        "rates": {who: {d: sum(1 for v in verdicts if getattr(v, f"{who}_decision") == d) / n for d in DECISIONS}
                  for who in ("live", "shadow")},
        "delta": {"mean": sum(deltas) / n, "mean_abs": sum(absolute) / n, "p50_abs": stats.percentile(absolute, 50),
                  "p95_abs": stats.percentile(absolute, 95), "max_abs": max(absolute)},
    }


def compare_chart(verdicts: Sequence[Any], figures: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (heat, scatter, hist) = plt.subplots(1, 3, figsize=(18, 5.5))
    matrix = [[figures["confusion"][live][shadow] for shadow in DECISIONS] for live in DECISIONS]
    heat.imshow(matrix, cmap="Blues")
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            heat.text(j, i, str(count), ha="center", va="center", fontsize=12,
                      color="white" if count > max(map(max, matrix)) / 2 else "black")
    heat.set_xticks(range(3), [f"shadow {d}" for d in DECISIONS])
    heat.set_yticks(range(3), [f"live {d}" for d in DECISIONS])
    heat.set_title(f"Decisions: agreement {figures['agreement']:.1%} of {figures['n']}")
    scatter.scatter([v.live_probability for v in verdicts], [v.shadow_probability for v in verdicts], s=8, alpha=0.5)
    scatter.plot([0, 1], [0, 1], color="grey", linewidth=1)
    scatter.set_xlabel(f"live {figures['live_version']}")
    scatter.set_ylabel(f"shadow {figures['shadow_version']}")
    scatter.set_title("Probability of a violation, per task")
    hist.hist([v.shadow_probability - v.live_probability for v in verdicts], bins=40, color="tab:purple")
    hist.set_xlabel("shadow - live probability")
    d = figures["delta"]
    hist.set_title(f"Deltas: mean {d['mean']:+.4f}, |p95| {d['p95_abs']:.4f}, |max| {d['max_abs']:.4f}")
    fig.suptitle(f"shadow {figures['shadow_version']} against live {figures['live_version']}, latest {figures['n']} tasks")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def human_figures(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The live and shadow models' agreement with people (docs/reviews.md#the-loop-feeds-the-model): of
    the tasks a moderator decided, the share where the model decided the same (`review` is the model
    abstaining: it counts as disagreeing). None when no person decided anything."""
    if not rows:
        return None
    shadowed = [r for r in rows if r["shadow"] is not None]
    return {
        "n": len(rows),
        "live": sum(1 for r in rows if r["live"] == r["human"]) / len(rows),
        "shadow_n": len(shadowed),
        "shadow": sum(1 for r in shadowed if r["shadow"] == r["human"]) / len(shadowed) if shadowed else None,
    }


def print_human(figures: dict[str, Any] | None) -> None:
    if figures is None:
        return
    shadow = ("no shadow verdicts of these tasks" if figures["shadow"] is None
              else f"shadow {figures['shadow']:.1%} (of the {figures['shadow_n']} it scored)")
    print(f"  agreement with human verdicts ({figures['n']} tasks a moderator decided): live {figures['live']:.1%}, {shadow}")


def cmd_compare(registry: Registry | None, args: argparse.Namespace) -> int:
    """The comparison; with no shadow alias set, says so and returns 1 (the verdicts a
    shadow left stay readable with --shadow-version)."""
    from chalicelib.storage.db import Database
    from chalicelib.storage.reviews import ReviewStore
    from chalicelib.storage.scoring import ScoringStore

    url = args.database_url or os.environ.get("DATABASE_URL")
    if not url and args.local:
        url = names.database_url(int(os.environ.get("EMBEDDED_PG_PORT") or names.RUN_PG_PORT))
    if not url:
        raise OpsError("which database? --database-url or DATABASE_URL")
    if registry is not None and not args.shadow_version:
        aliases, _ = registry.aliases()
        if SHADOW not in aliases:
            print(f"no shadow alias is set in s3://{registry.bucket} (make model-unset ALIAS=shadow removes it; "
                  "promoting its version to live clears it): nothing is being compared. Set one with "
                  "make model-promote ALIAS=shadow VERSION=..., or read an earlier shadow's verdicts with "
                  "--shadow-version VERSION")
            return 1
    db = Database(url)
    try:
        verdicts = ScoringStore(db).shadow_verdicts(args.n, args.shadow_version)
        shadow_version = verdicts[0].shadow_version if verdicts else args.shadow_version
        humans = human_figures(ReviewStore(db).human_agreement(shadow_version))
    finally:
        db.close()
    if not verdicts:
        print("no shadow verdicts yet: make model-promote ALIAS=shadow VERSION=..., then let tasks be scored")
        print_human(humans)
        return 0
    f = compare_figures(verdicts)
    print(f"shadow {f['shadow_version']} against live {f['live_version']}, the latest {f['n']} tasks both scored")
    print(f"  agreement (same decision): {f['agreement']:.1%}")
    print("  decisions          " + "".join(f"{'shadow ' + d:>14}" for d in DECISIONS) + f"{'live rate':>12}")
    for live in DECISIONS:
        print(f"  live {live:<14}" + "".join(f"{f['confusion'][live][s]:>14}" for s in DECISIONS)
              + f"{f['rates']['live'][live]:>12.1%}")
    print("  shadow rate        " + "".join(f"{f['rates']['shadow'][d]:>14.1%}" for d in DECISIONS))
    print_human(humans)
    d = f["delta"]
    print(f"  probability delta (shadow - live): mean {d['mean']:+.4f}; |delta| mean {d['mean_abs']:.4f}, "
          f"p50 {d['p50_abs']:.4f}, p95 {d['p95_abs']:.4f}, max {d['max_abs']:.4f}")
    path = compare_chart(verdicts, f, OUT_DIR / f"compare-{f['shadow_version']}.png")
    print(f"chart: {path.relative_to(names.ROOT) if path.is_relative_to(names.ROOT) else path}")
    return 0

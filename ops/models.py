"""`make model-*`: the model registry (toolkit/registry.py) from a terminal.

    python -m ops.models [--local] [--bucket NAME | --stack NAME] [--endpoint-url URL] COMMAND
      publish  [--artifact PATH] [--target-precision P] [--review-recall R] [--seed S] [--promote ALIAS]
               train a model (or take a runtime artifact .json, or a pickled scikit-learn Pipeline .pkl)
               and store it as a new immutable version; prints the version, its thresholds and metrics
      list     versions, metrics, thresholds, where each alias points, recent alias changes,
               and (with --local or --api) the version the API serves
      promote  VERSION [--alias live]     point an alias at a version (atomic, audited)
      rollback [--alias live]             back to the version the alias named before its last promotion
      unset    ALIAS                      remove an alias (e.g. stop shadow scoring)
      compare  [--n 500]                  shadow against live over the latest N shadow verdicts: a table
                                          and build/models/compare-<shadow>.png

--local (what make passes): make run's registry: its LocalStack (AWS_ENDPOINT_URL, else
http://127.0.0.1:4566, with test credentials), the bucket it creates, its database
(EMBEDDED_PG_PORT) and API (PORT). `AWS_ENDPOINT_URL=` (empty) means AWS. Which bucket:
--bucket / MODEL_BUCKET, else the ModelBucketName output of --stack (a deployed stack),
else, with --local, make run's. Errors go to stderr; exit 0 ok, 1 error, 2 usage.

A .pkl is unpickled, which runs whatever code it holds: publish only pickles you trust.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.serving.registry import LIVE, SHADOW, RegistryError
from toolkit import logs, names
from toolkit.registry import Registry, publisher

log = logs.get("models")
OUT_DIR = names.BUILD_DIR / "models"
DECISIONS = ("allow", "review", "block")


class OpsError(RuntimeError):
    pass


# --- where -------------------------------------------------------------------------


def use_local_defaults() -> None:
    """--local: make run's LocalStack unless AWS_ENDPOINT_URL names another, with test
    credentials for a local endpoint; an empty AWS_ENDPOINT_URL means AWS."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    if endpoint == "":
        del os.environ["AWS_ENDPOINT_URL"]
        return
    endpoint = endpoint or names.RUN_ENDPOINT
    if urlsplit(endpoint).hostname in (names.HOST, "localhost"):
        for key, value in names.local_aws_env(endpoint).items():
            os.environ.setdefault(key, value)


def bucket_of(args: argparse.Namespace) -> str:
    if bucket := args.bucket or os.environ.get("MODEL_BUCKET"):
        return str(bucket)
    if args.stack:
        cfn = boto3.client("cloudformation", endpoint_url=args.endpoint_url)
        outputs = cfn.describe_stacks(StackName=args.stack)["Stacks"][0].get("Outputs", [])
        found = [o["OutputValue"] for o in outputs if o["OutputKey"] == "ModelBucketName"]
        if not found:
            raise OpsError(f"stack {args.stack} has no ModelBucketName output (deployed before the registry?)")
        return str(found[0])
    if args.local:
        return names.MODEL_BUCKET
    raise OpsError("which registry? --bucket NAME (or MODEL_BUCKET), or --stack NAME of a deployed stack")


def api_serves(api: str) -> str | None:
    """The model version the API at `api` reports in GET /health, if it answers."""
    try:
        with urllib.request.urlopen(f"{api.rstrip('/')}/health", timeout=2) as resp:  # noqa: S310 - a URL we build
            body = json.loads(resp.read())
    except (OSError, ValueError):
        return None
    return str(body.get("checks", {}).get("model", {}).get("version") or "") or None


# --- publish -----------------------------------------------------------------------


def build_artifact(args: argparse.Namespace) -> tuple[bytes, str, dict[str, Any]]:
    """(artifact bytes, source, extra metadata): trained here, or read from --artifact."""
    from training import train

    path: Path | None = args.artifact
    if path is None:
        artifact, evaluation = train.train(train.DEFAULT_N, args.seed, args.target_precision, args.review_recall)
        print(train.report(artifact))
        plot = evaluation.plot(OUT_DIR / f"{artifact['version']}-precision_recall.png",
                               f"{artifact['version']}: precision/recall and the chosen thresholds")
        print(f"precision/recall curve: {plot.relative_to(names.ROOT) if plot.is_relative_to(names.ROOT) else plot}")
        return train.render(artifact), f"trained (seed {args.seed})", {}
    data = path.read_bytes()
    if path.suffix == ".json":
        return data, f"artifact {path.name}", {}
    from training.convert import UnsupportedPipeline

    try:
        pipeline = pickle.loads(data)  # noqa: S301 - the user's own file (see the module docstring)
        artifact, evaluation = train.from_pipeline(
            pipeline, source=f"pickled scikit-learn pipeline {path.name}", source_sha256=hashlib.sha256(data).hexdigest(),
            target_precision=args.target_precision, review_recall=args.review_recall, data_fingerprint=args.data_fingerprint)
    except UnsupportedPipeline as err:
        raise OpsError(f"{path}: cannot be served: {err}") from err
    print(train.report(artifact))
    evaluation.plot(OUT_DIR / f"{artifact['version']}-precision_recall.png", f"{artifact['version']} ({path.name})")
    return train.render(artifact), f"pickle {path.name}", {"converted_from": path.name}


def cmd_publish(registry: Registry, args: argparse.Namespace) -> int:
    from training.thresholds import ThresholdError

    try:
        data, source, extra = build_artifact(args)
    except ThresholdError as err:
        raise OpsError(str(err)) from err
    if args.note:
        extra["note"] = args.note
    published, meta = registry.publish_artifact(data, source=source, by=args.by, **extra)
    verb = "published" if published.created else "already published (same bytes), nothing written:"
    print(f"{verb} {published.version}  sha256 {published.sha256[:16]}  to s3://{registry.bucket}")
    print(f"  thresholds: block >= {meta['threshold']}"
          + (f", review >= {meta['review_threshold']}" if meta["review_threshold"] is not None else ", no review band"))
    print("  held-out: " + "  ".join(f"{k} {v}" for k, v in meta["metrics"].items() if v is not None))
    if args.promote:
        return _promote(registry, args.promote, published.version, args.by)
    print(f"next: make model-promote VERSION={published.version} [ALIAS={SHADOW}]")
    return 0


# --- list --------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def cmd_list(registry: Registry, args: argparse.Namespace) -> int:
    versions = registry.versions()
    aliases, _ = registry.aliases()
    pointing: dict[str, list[str]] = {}
    for alias, entry in sorted(aliases.items()):
        pointing.setdefault(entry.version, []).append(alias)
    endpoint = registry.s3.meta.endpoint_url
    print(f"registry s3://{registry.bucket} at {endpoint}")
    if not versions:
        print("  no versions yet: make model-publish")
        return 0
    rows = [[m["version"], str(m.get("published_at", ""))[:19].replace("T", " "), str(m.get("published_by", "")),
             *(_fmt(m["metrics"].get(k)) for k in ("precision", "recall", "f1", "roc_auc")),
             _fmt(m.get("threshold")), _fmt(m.get("review_threshold")), str(m.get("sklearn") or "-"),
             (str(m.get("data_fingerprint") or "-"))[:12], ",".join(pointing.get(m["version"], [])), str(m.get("source", ""))]
            for m in versions]
    headers = ["VERSION", "PUBLISHED (UTC)", "BY", "PREC", "RECALL", "F1", "AUC", "BLOCK>=", "REVIEW>=", "SKLEARN",
               "DATA", "ALIAS", "SOURCE"]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print("held-out metrics at BLOCK>= (precision, recall, F1) and ROC AUC; DATA: training data fingerprint")
    for alias, entry in sorted(aliases.items()):
        before = f"; before: {', '.join(entry.history[:3])}" if entry.history else ""
        print(f"{alias:>7} -> {entry.version}  (since {entry.promoted_at} by {entry.promoted_by}{before})")
    if args.api and (serving := api_serves(args.api)):
        print(f"    API {args.api} serves {serving} (GET /health; it follows `live` within MODEL_ALIAS_CHECK_SECONDS)")
    changes = registry.audit(limit=5)
    if changes:
        print("recent alias changes:")
        for c in changes:
            print(f"  {c['at']}  {c['action']:<8} {c['alias']:<7} {c['from'] or '-'} -> {c['to'] or '-'}  by {c['by']}")
    return 0


# --- aliases -----------------------------------------------------------------------


def _promote(registry: Registry, alias: str, version: str, by: str, *, rollback: bool = False) -> int:
    before, after = registry.promote(alias, version, by, rollback=rollback)
    if before is after:
        print(f"{alias} already points at {version}: nothing changed")
        return 0
    meta = registry.metadata(after.version)
    print(f"{alias}: {before.version if before else '(unset)'} -> {after.version}"
          f"  (block >= {meta['threshold']}, review >= {_fmt(meta.get('review_threshold'))}, "
          f"held-out precision {_fmt(meta['metrics'].get('precision'))}, recall {_fmt(meta['metrics'].get('recall'))})")
    undo = (f"make model-promote VERSION={before.version} ALIAS={alias}" if rollback and before
             else f"make model-rollback ALIAS={alias}")
    print(f"the functions follow within MODEL_ALIAS_CHECK_SECONDS (default 60 s); undo: {undo}")
    return 0


def cmd_promote(registry: Registry, args: argparse.Namespace) -> int:
    return _promote(registry, args.alias, args.version, args.by)


def cmd_rollback(registry: Registry, args: argparse.Namespace) -> int:
    return _promote(registry, args.alias, "", args.by, rollback=True)


def cmd_unset(registry: Registry, args: argparse.Namespace) -> int:
    before = registry.unset(args.alias, args.by)
    print(f"{args.alias}: {before.version} -> (unset)" if before else f"{args.alias} was not set")
    return 0


# --- compare -----------------------------------------------------------------------


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


def cmd_compare(_: Registry | None, args: argparse.Namespace) -> int:
    from chalicelib.storage.db import Database
    from chalicelib.storage.scoring import ScoringStore

    url = args.database_url or os.environ.get("DATABASE_URL")
    if not url and args.local:
        url = names.database_url(int(os.environ.get("EMBEDDED_PG_PORT") or names.RUN_PG_PORT))
    if not url:
        raise OpsError("which database? --database-url or DATABASE_URL")
    db = Database(url)
    try:
        verdicts = ScoringStore(db).shadow_verdicts(args.n, args.shadow_version)
    finally:
        db.close()
    if not verdicts:
        print("no shadow verdicts yet: make model-promote ALIAS=shadow VERSION=..., then let tasks be scored")
        return 0
    f = compare_figures(verdicts)
    print(f"shadow {f['shadow_version']} against live {f['live_version']}, the latest {f['n']} tasks both scored")
    print(f"  agreement (same decision): {f['agreement']:.1%}")
    print("  decisions          " + "".join(f"{'shadow ' + d:>14}" for d in DECISIONS) + f"{'live rate':>12}")
    for live in DECISIONS:
        print(f"  live {live:<14}" + "".join(f"{f['confusion'][live][s]:>14}" for s in DECISIONS)
              + f"{f['rates']['live'][live]:>12.1%}")
    print("  shadow rate        " + "".join(f"{f['rates']['shadow'][d]:>14.1%}" for d in DECISIONS))
    d = f["delta"]
    print(f"  probability delta (shadow - live): mean {d['mean']:+.4f}; |delta| mean {d['mean_abs']:.4f}, "
          f"p50 {d['p50_abs']:.4f}, p95 {d['p95_abs']:.4f}, max {d['max_abs']:.4f}")
    path = compare_chart(verdicts, f, OUT_DIR / f"compare-{f['shadow_version']}.png")
    print(f"chart: {path.relative_to(names.ROOT) if path.is_relative_to(names.ROOT) else path}")
    return 0


# --- main --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from training.options import DEFAULT_SEED, add_threshold_args

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--local", action="store_true", default=argparse.SUPPRESS, help="make run's registry, database and API")
    common.add_argument("--bucket", default=argparse.SUPPRESS, help="the registry's bucket (default: $MODEL_BUCKET)")
    common.add_argument("--stack", default=argparse.SUPPRESS, help="a deployed stack: its ModelBucketName output")
    common.add_argument("--endpoint-url", default=argparse.SUPPRESS, help="S3 endpoint (default: $AWS_ENDPOINT_URL, else AWS)")
    common.add_argument("--by", default=argparse.SUPPRESS, help="who publishes/promotes (default: $MODEL_PUBLISHER or user@host)")
    parser = argparse.ArgumentParser(prog="python -m ops.models", parents=[common], description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("publish", parents=[common], help="train (or take --artifact) and publish a new version")
    p.add_argument("--artifact", type=Path, help="a runtime artifact (.json) or a pickled scikit-learn Pipeline (.pkl)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="training data and split seed")
    add_threshold_args(p, plot=False)
    p.add_argument("--data-fingerprint", help="a pickle's training data fingerprint, to record")
    p.add_argument("--note", help="free text kept with the version")
    p.add_argument("--promote", metavar="ALIAS", help="also point this alias at it")
    p.set_defaults(func=cmd_publish)
    sub.add_parser("list", parents=[common], help="versions, metrics, thresholds, aliases").set_defaults(func=cmd_list)
    p = sub.add_parser("promote", parents=[common], help="point an alias at a version")
    p.add_argument("version")
    p.add_argument("--alias", default=LIVE)
    p.set_defaults(func=cmd_promote)
    p = sub.add_parser("rollback", parents=[common], help="back to the alias's previous version")
    p.add_argument("--alias", default=LIVE)
    p.set_defaults(func=cmd_rollback)
    p = sub.add_parser("unset", parents=[common], help="remove an alias")
    p.add_argument("alias")
    p.set_defaults(func=cmd_unset)
    p = sub.add_parser("compare", parents=[common], help="shadow against live over the latest N tasks")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--shadow-version", help="default: the latest shadow version with verdicts")
    p.add_argument("--database-url", help="default: $DATABASE_URL, with --local make run's database")
    p.set_defaults(func=cmd_compare)
    for p in (parser, *sub.choices.values()):
        p.add_argument("--api", default=argparse.SUPPRESS, help="an API URL to ask which version it serves")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logs.setup()
    args = build_parser().parse_args(argv)
    defaults = {"local": False, "bucket": None, "stack": None, "endpoint_url": None, "by": None, "api": None}
    for key, value in defaults.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    if args.local:
        use_local_defaults()
        if not (args.bucket or args.stack):  # make run's registry: ask its API too
            args.api = args.api or names.endpoint(int(os.environ.get("PORT") or names.RUN_API_PORT))
    args.by = args.by or publisher()
    try:
        if args.command == "compare":
            return int(args.func(None, args))
        s3 = boto3.client("s3", endpoint_url=args.endpoint_url)
        return int(args.func(Registry(s3, bucket_of(args)), args))
    except (OpsError, RegistryError) as err:
        log.error("%s", err)
        return 1
    except (BotoCoreError, ClientError) as err:
        log.error("%s: %s", type(err).__name__, err)
        return 1


if __name__ == "__main__":
    sys.exit(main())

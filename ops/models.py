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
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.serving.registry import LIVE, SHADOW, RegistryError
from ops.model_compare import OUT_DIR, OpsError, cmd_compare
from toolkit import logs, names
from toolkit.registry import Registry, publisher

log = logs.get("models")


class UsageError(OpsError):
    """What was asked cannot be read as a model (exit 2)."""


def check_window() -> str:
    """The functions' re-check window, as configured here (MODEL_ALIAS_CHECK_SECONDS; 60 by default)."""
    seconds = os.environ.get("MODEL_ALIAS_CHECK_SECONDS")
    return f"MODEL_ALIAS_CHECK_SECONDS={seconds} s" if seconds else "MODEL_ALIAS_CHECK_SECONDS (60 s, the default)"


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


def mirror_of(args: argparse.Namespace, bucket: str) -> Path | None:
    """A local registry's copy in the state directory (toolkit/registry.py, Registry.restore):
    make run's bucket, or a deployed LocalStack stack's (by stack name: its bucket's
    name changes with each deploy). None for AWS."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or args.endpoint_url
    if not endpoint or urlsplit(endpoint).hostname not in (names.HOST, "localhost"):
        return None
    return names.model_registry_mirror(args.stack or bucket)


def api_serves(api: str) -> str | None:
    """The model version the API at `api` reports in GET /health, if it answers."""
    model = api_model(api)
    return str(model.get("version") or "") or None if model else None


def api_model(api: str) -> dict[str, Any] | None:
    """GET /health's model check of the API at `api` (version served, refusal), if it answers."""
    try:
        with urllib.request.urlopen(f"{api.rstrip('/')}/health", timeout=2) as resp:  # noqa: S310 - a URL we build
            body = json.loads(resp.read())
    except urllib.error.HTTPError as err:  # 503: a dependency is down; the body still says what serves
        try:
            body = json.loads(err.read())
        except ValueError:
            return None
    except (OSError, ValueError):
        return None
    model = body.get("checks", {}).get("model")
    return dict(model) if isinstance(model, dict) else None


# --- publish -----------------------------------------------------------------------


def build_artifact(args: argparse.Namespace) -> tuple[bytes, str, dict[str, Any]]:
    """(artifact bytes, source, extra metadata): trained here, or read from --artifact."""
    from training import train

    path: Path | None = args.artifact
    if path is None:
        human = None
        if getattr(args, "human_labels", False):  # the moderators' verdicts (docs/reviews.md#the-loop-feeds-the-model)
            from training import labels

            human = labels.load(args.database_url or os.environ.get("DATABASE_URL") or names.database_url(
                int(os.environ.get("EMBEDDED_PG_PORT") or names.RUN_PG_PORT)))
        artifact, evaluation = train.train(train.DEFAULT_N, args.seed, args.target_precision, args.review_recall,
                                           args.family, human=human)
        print(train.report(artifact))
        plot = evaluation.plot(OUT_DIR / f"{artifact['version']}-precision_recall.png",
                               f"{artifact['version']}: precision/recall and the chosen thresholds")
        print(f"precision/recall curve: {plot.relative_to(names.ROOT) if plot.is_relative_to(names.ROOT) else plot}")
        family = "" if args.family == "lr" else f", {args.family}"
        return train.render(artifact), f"trained (seed {args.seed}{family})", {}
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UsageError(f"{path}: cannot read it: {err.strerror or err}") from err
    if path.suffix == ".json":
        return data, f"artifact {path.name}", {}
    from training.convert import UnsupportedPipeline

    pipeline = load_pipeline(path, data)
    try:
        # Nothing of the file (its name, its bytes) goes into the artifact: the version
        # names the model, so the same model from any file publishes as the same version.
        artifact, evaluation = train.from_pipeline(
            pipeline, source="a scikit-learn pipeline (pickle or joblib)", source_sha256=None,
            target_precision=args.target_precision, review_recall=args.review_recall, data_fingerprint=args.data_fingerprint)
    except UnsupportedPipeline as err:
        raise UsageError(f"{path}: cannot be served: {err}") from err
    print(train.report(artifact))
    evaluation.plot(OUT_DIR / f"{artifact['version']}-precision_recall.png", f"{artifact['version']} ({path.name})")
    return train.render(artifact), f"pipeline {path.name}", {"converted_from": path.name,
                                                               "source_sha256": hashlib.sha256(data).hexdigest()}


def load_pipeline(path: Path, data: bytes) -> Any:
    """The object a pickle or a joblib file holds; UsageError naming the file otherwise."""
    import io

    try:
        return pickle.loads(data)  # noqa: S301 - the user's own file (see the module docstring)
    except Exception as first:  # noqa: BLE001 - not a plain pickle: perhaps joblib's format
        try:
            import joblib

            return joblib.load(io.BytesIO(data))  # joblib.dump's files (numpy arrays stored apart)
        except Exception:  # noqa: BLE001 - neither: say so in one line
            raise UsageError(f"{path}: not a pickle or joblib file of a scikit-learn pipeline "
                             f"({type(first).__name__}: {str(first)[:120]})") from None


def cmd_publish(registry: Registry, args: argparse.Namespace) -> int:
    from training.thresholds import ThresholdError

    try:
        data, source, extra = build_artifact(args)
    except ThresholdError as err:
        raise OpsError(str(err)) from err
    if args.note:
        extra["note"] = args.note
    published, meta = registry.publish_artifact(data, source=source, by=args.by, **extra)
    verb = ("published" if published.created else
            f"repaired (its stored bytes, sha256 {published.repaired[:12]}, did not match; the published ones are back):"
            if published.repaired else "already published (same content), nothing written:")
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
    if args.api and (model := api_model(args.api)):
        print(serving_line(args.api, model, aliases.get(LIVE)))
    changes = registry.audit(limit=5)
    if changes:
        print("recent alias changes:")
        for c in changes:
            print(f"  {c['at']}  {c['action']:<8} {c['alias']:<7} {c['from'] or '-'} -> {c['to'] or '-'}  by {c['by']}")
    return 0


def serving_line(api: str, model: dict[str, Any], live: Any) -> str:
    """What the API serves, and why it is not what `live` names when it is not."""
    serving = model.get("version")
    line = f"    API {api} serves {serving} (GET /health)"
    refused = model.get("refused")
    if refused:
        return (line + f": version {refused.get('version')} refused ({refused.get('reason')}); /health says degraded. "
                "make model-publish with its original artifact repairs a changed object, or promote another version")
    if live is None:
        return line + ": no `live` alias, the packaged model serves"
    if serving != live.version:
        return line + (f": `live` names {live.version} since {live.promoted_at}; it follows within "
                       f"{model.get('check_seconds') or 'MODEL_ALIAS_CHECK_SECONDS'} s of a change")
    return line


# --- aliases -----------------------------------------------------------------------


def _promote(registry: Registry, alias: str, version: str, by: str, *, rollback: bool = False) -> int:
    before, after, cleared = registry.promote_change(alias, version, by, rollback=rollback)
    if before is after:
        print(f"{alias} already points at {version}: nothing changed")
        return 0
    meta = registry.metadata(after.version)
    print(f"{alias}: {before.version if before else '(unset)'} -> {after.version}"
          f"  (block >= {meta['threshold']}, review >= {_fmt(meta.get('review_threshold'))}, "
          f"held-out precision {_fmt(meta['metrics'].get('precision'))}, recall {_fmt(meta['metrics'].get('recall'))})")
    undo = (f"make model-promote VERSION={before.version} ALIAS={alias}" if rollback and before
             else f"make model-rollback ALIAS={alias}")
    if cleared:
        print(f"{cleared[0]}: {cleared[1].version} -> (unset): it is live now, and one version is not scored twice")
    print(f"verified before the move: sha256, loads, probe ads. The functions follow within {check_window()}; "
          f"undo: {undo}")
    return 0


def cmd_promote(registry: Registry, args: argparse.Namespace) -> int:
    return _promote(registry, args.alias, args.version, args.by)


def cmd_rollback(registry: Registry, args: argparse.Namespace) -> int:
    return _promote(registry, args.alias, "", args.by, rollback=True)


def cmd_unset(registry: Registry, args: argparse.Namespace) -> int:
    before = registry.unset(args.alias, args.by)
    print(f"{args.alias}: {before.version} -> (unset)" if before else f"{args.alias} was not set")
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
    p.add_argument("--artifact", type=Path,
                   help="a runtime artifact (.json), or a scikit-learn Pipeline saved with pickle or joblib")
    p.add_argument("--family", choices=("lr", "gbt", "hgb"), default="lr",
                   help="what to train: logistic regression, gradient-boosted trees, histogram boosting")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="training data and split seed")
    add_threshold_args(p, plot=False)
    p.add_argument("--data-fingerprint", help="a pickle's training data fingerprint, to record")
    p.add_argument("--human-labels", action="store_true",
                   help="train with the moderators' verdicts too (DATABASE_URL, else make run's database)")
    p.add_argument("--database-url", help="where the human verdicts are (default: $DATABASE_URL, else make run's)")
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
        s3 = boto3.client("s3", endpoint_url=args.endpoint_url)
        try:
            bucket = bucket_of(args)
        except OpsError:
            if args.command == "compare":  # compare needs only a database
                return int(args.func(None, args))
            raise
        return int(args.func(Registry(s3, bucket, mirror_of(args, bucket)), args))
    except UsageError as err:
        log.error("%s", err)
        return 2
    except (OpsError, RegistryError) as err:
        log.error("%s", err)
        return 1
    except (BotoCoreError, ClientError) as err:
        log.error("%s: %s", type(err).__name__, err)
        return 1


if __name__ == "__main__":
    sys.exit(main())

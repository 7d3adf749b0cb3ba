"""`make enable-partial-batch STAGE=dev`: the post-deploy step for `chalice deploy` users.

`chalice deploy` creates the scoring function's SQS event source mapping without
FunctionResponseTypes (aws/chalice#2029), so Lambda would ignore the handler's
`batchItemFailures`. This sets on that mapping what the packaged template sets at deploy time
(ReportBatchItemFailures, and BatchSize, MaximumBatchingWindowInSeconds and
ScalingConfig.MaximumConcurrency from infra/stages.json), and creates the functions' log groups
with their retention: their roles may write to them but not create them. Idempotent; re-run it
after every `chalice deploy`. The same in AWS CLI terms: docs/deploy.md.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import boto3

from infra.package import stage_settings
from infra.policies import function_name
from toolkit import logs, names

log = logs.get("enable-partial-batch")

LOG_RETENTION_DAYS = 30


def enable(stage: str, lambda_client: Any, logs_client: Any) -> list[str]:
    """Apply the settings; return what was done, one line each."""
    settings = stage_settings(stage)
    queue = names.queues().main
    score = function_name(stage, "score")
    mappings = [
        m
        for m in lambda_client.list_event_source_mappings(FunctionName=score)["EventSourceMappings"]
        if m["EventSourceArn"].split(":")[-1] == queue
    ]
    if not mappings:
        raise RuntimeError(f"{score} has no event source mapping on queue {queue!r}: run `chalice deploy --stage {stage}` first")
    done = []
    for m in mappings:
        lambda_client.update_event_source_mapping(
            UUID=m["UUID"],
            FunctionResponseTypes=["ReportBatchItemFailures"],
            ScalingConfig={"MaximumConcurrency": int(settings["scoring_max_concurrency"])},
            BatchSize=int(settings["scoring_batch_size"]),
            MaximumBatchingWindowInSeconds=int(settings["scoring_batching_window_seconds"]),
        )
        done.append(
            f"{m['UUID']} ({score} <- {queue}): ReportBatchItemFailures, BatchSize={settings['scoring_batch_size']}, "
            f"MaximumConcurrency={settings['scoring_max_concurrency']}, "
            f"MaximumBatchingWindowInSeconds={settings['scoring_batching_window_seconds']}"
        )
    for fn in names.functions():
        group = f"/aws/lambda/{function_name(stage, fn)}"
        existing = logs_client.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
        if not any(g["logGroupName"] == group for g in existing):
            logs_client.create_log_group(logGroupName=group)
            done.append(f"created log group {group}")
        logs_client.put_retention_policy(logGroupName=group, retentionInDays=LOG_RETENTION_DAYS)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.enable_partial_batch", description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="dev")
    args = parser.parse_args(argv)
    logs.setup()
    try:
        for line in enable(args.stage, boto3.client("lambda"), boto3.client("logs")):
            print(line)
    except Exception as err:  # noqa: BLE001 - a CLI: say what failed, exit 1
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

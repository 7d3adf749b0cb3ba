"""The least-privilege IAM policy of every function, per stage: .chalice/policy-<stage>-<function>.json.

Chalice reads those files (`autogen_policy: false`, `iam_policy_file` per function in
.chalice/config.json) for both `chalice deploy` and `chalice package`. They are generated from
SQS_ACTIONS below and committed; a unit test fails when they drift from it.

    python -m infra.policies          # rewrite the files
    python -m infra.policies --check  # exit 1 if a file differs

Chalice policy files cannot hold CloudFormation intrinsics, so their ARNs have `*` for the
region and the account (never for an action or a whole resource); `make package` makes them
exact in the template. A stage with `"tracing": true` in infra/stages.json also gets the two
X-Ray actions, which cannot name a resource (`"Resource": "*"`), and a stage whose functions may
run in a VPC (`"vpc"`) the EC2 actions Lambda manages their network interfaces with.
"""


from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from chalicelib.config import WEBHOOK_DLQ_NAME, WEBHOOK_QUEUE_NAME
from toolkit import logs, names

log = logs.get("policies")

QUEUE, DLQ = names.queues().main, names.queues().dlq
# The webhooks' queue and DLQ (issue 22; docs/webhooks.md), as chalicelib/config.py names them.
HOOKS, HOOKS_DLQ = WEBHOOK_QUEUE_NAME, WEBHOOK_DLQ_NAME
SIDS = {QUEUE: "MainQueue", DLQ: "DeadLetterQueue", HOOKS: "WebhookQueue", HOOKS_DLQ: "WebhookDeadLetterQueue"}

# What each function calls (see chalicelib/queue.py); every function of .chalice/config.json
# needs an entry. The scoring function's role is also what Lambda's event source mapping polls
# with, hence Receive/Delete/GetQueueAttributes on the main queue.
SQS_ACTIONS: dict[str, dict[str, list[str]]] = {
    # submit -> SendMessageBatch; /health -> GetQueueAttributes on both queues
    "api_handler": {
        QUEUE: ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"],
        DLQ: ["sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
    },
    # event source mapping + backoff (ChangeMessageVisibilityBatch) + envelopes to the DLQ
    "score": {
        QUEUE: ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
                "sqs:ReceiveMessage"],
        DLQ: ["sqs:GetQueueUrl", "sqs:SendMessage"],
    },
    # re-sends tasks whose send was lost
    "reconcile": {QUEUE: ["sqs:GetQueueUrl", "sqs:SendMessage"]},
    # only the database
    "migrate": {},
    # the webhooks' event source mapping, the next attempt as a delayed message, exhausted envelopes
    "send_webhooks": {
        HOOKS: ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
                "sqs:ReceiveMessage", "sqs:SendMessage"],
        HOOKS_DLQ: ["sqs:GetQueueUrl", "sqs:SendMessage"],
    },
}
# Who sends webhook deliveries to their queue after writing them (issue 22): the scorer after its
# batch's commit, the API (test, replay, enable), the reconciler (retries held in the database).
for _function in ("api_handler", "score", "reconcile"):
    SQS_ACTIONS[_function][HOOKS] = ["sqs:GetQueueUrl", "sqs:SendMessage"]
# The KMS key that seals webhook secrets (WEBHOOK_KMS_KEY_ID): the API encrypts (register, rotate),
# the sender decrypts. `WebhookSecretsKey` is the template's logical id: `make package` makes the ARN exact.
KMS_ACTIONS = {"api_handler": ["kms:Encrypt"], "send_webhooks": ["kms:Decrypt"]}
WEBHOOK_KEY = "WebhookSecretsKey"
# The model registry (chalicelib/serving/registry.py): the functions that score read aliases.json
# and the versions, nothing else, and write nothing (the tooling publishes and promotes).
# ListBucket only so that a missing key is a 404 (an empty registry), not a 403.
# `ModelBucket` is the template's logical id: `make package` makes the ARN exact
# (infra/package.py); it is no valid bucket name, so it can match no real bucket.
MODEL_BUCKET = "ModelBucket"
S3_READERS = ("api_handler", "score")
# What Lambda's active tracing sends the function's segments with
# (AWSXRayDaemonWriteAccess minus the sampling reads, which only the SDK uses).
XRAY_ACTIONS = ["xray:PutTelemetryRecords", "xray:PutTraceSegments"]
# What Lambda manages a VPC function's network interfaces with, using the function's role
# (AWSLambdaVPCAccessExecutionRole's EC2 actions, which it grants on "*"). The interfaces do not
# exist before Lambda creates them, so the writes name the kinds of resource they touch (the
# account's network interfaces, subnets and security groups); the two reads can only take "*".
VPC_WRITE_ACTIONS = ["ec2:AssignPrivateIpAddresses", "ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface",
                     "ec2:UnassignPrivateIpAddresses"]
VPC_WRITE_RESOURCES = [f"arn:aws:ec2:*:*:{kind}/*" for kind in ("network-interface", "security-group", "subnet")]
VPC_READ_ACTIONS = ["ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"]
# infra/stages.json "vpc": the functions run in the VPC the deploy names ("required": its
# parameters have no default and check-infra insists on it in prod), or may ("optional": only
# when the deploy gives subnets).
VPC_MODES = ("optional", "required")


def stage_table() -> dict[str, dict[str, Any]]:
    """infra/stages.json without its `_comment` keys: the per-stage deployment settings."""
    return {k: v for k, v in json.loads(names.STAGES_FILE.read_text()).items() if not k.startswith("_")}


# The deployable stages (.chalice/config.json also has `local`, for chalice local).
STAGES = tuple(stage_table())


def tracing_enabled(stage: str) -> bool:
    return bool(stage_table().get(stage, {}).get("tracing", False))


def vpc_mode(stage: str) -> str | None:
    mode = stage_table().get(stage, {}).get("vpc")
    if mode is not None and mode not in VPC_MODES:
        raise ValueError(f"infra/stages.json: {stage}.vpc is {mode!r}, not one of {', '.join(VPC_MODES)}")
    return mode


def function_name(stage: str, function: str) -> str:
    """The Lambda function name, as `chalice deploy` names it (infra/package.py uses the same)."""
    return f"{names.APP_NAME}-{stage}" if function == "api_handler" else f"{names.APP_NAME}-{stage}-{function}"


def secret_name(stage: str) -> str:
    """Name of the Secrets Manager secret that holds the database URL."""
    return f"{names.APP_NAME}/{stage}/database"


def policy_file(stage: str, function: str) -> Path:
    return names.CHALICE_DIR / f"policy-{stage}-{function}.json"


def policy(stage: str, function: str) -> dict[str, Any]:
    statements: list[dict[str, Any]] = [
        {
            "Sid": "OwnLogGroupOnly",
            "Effect": "Allow",
            # No logs:CreateLogGroup: the template creates the group (with retention).
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": f"arn:aws:logs:*:*:log-group:/aws/lambda/{function_name(stage, function)}:*",
        },
        {
            "Sid": "DatabaseUrlSecret",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue"],
            # Secrets Manager appends "-" and 6 random characters to the name.
            "Resource": f"arn:aws:secretsmanager:*:*:secret:{secret_name(stage)}-??????",
        },
    ]
    for queue, actions in SQS_ACTIONS[function].items():
        statements.append(
            {"Sid": SIDS[queue], "Effect": "Allow", "Action": sorted(actions), "Resource": f"arn:aws:sqs:*:*:{queue}"}
        )
    if function in KMS_ACTIONS:
        statements.append({"Sid": "WebhookSecretsKey", "Effect": "Allow", "Action": KMS_ACTIONS[function],
                           "Resource": f"arn:aws:kms:*:*:key/{WEBHOOK_KEY}"})
    if function in S3_READERS:
        statements += [
            {"Sid": sid, "Effect": "Allow", "Action": [action], "Resource": f"arn:aws:s3:::{MODEL_BUCKET}{key}"}
            for sid, action, key in (("ModelAliases", "s3:GetObject", "/aliases.json"),
                                     ("ModelVersions", "s3:GetObject", "/versions/*"),
                                     ("ModelRegistryList", "s3:ListBucket", ""))
        ]
    if tracing_enabled(stage):
        # Lambda refuses Tracing: Active on a function whose role lacks these.
        statements.append({"Sid": "XRayTracing", "Effect": "Allow", "Action": XRAY_ACTIONS, "Resource": "*"})
    if vpc_mode(stage):
        statements += [
            {"Sid": "VpcNetworkInterfaces", "Effect": "Allow", "Action": VPC_WRITE_ACTIONS, "Resource": VPC_WRITE_RESOURCES},
            {"Sid": "VpcDescribe", "Effect": "Allow", "Action": VPC_READ_ACTIONS, "Resource": "*"},
        ]
    return {"Version": "2012-10-17", "Statement": statements}


def render(stage: str, function: str) -> str:
    return json.dumps(policy(stage, function), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    logs.setup()
    parser = argparse.ArgumentParser(prog="python -m infra.policies", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file differs")
    args = parser.parse_args(argv)
    stale = []
    for stage in STAGES:
        for function in names.functions():
            path, text = policy_file(stage, function), render(stage, function)
            if path.exists() and path.read_text() == text:
                continue
            if args.check:
                stale.append(str(path.relative_to(names.ROOT)))
            else:
                path.write_text(text)
                log.info("wrote %s", path.relative_to(names.ROOT))
    if stale:
        log.error("out of date (run `python -m infra.policies`): %s", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

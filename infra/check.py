"""`make check-infra`: refuse a packaged template that breaks the design's rules.

    python -m infra.check [build/package/sam.json] [--budget N]
    python -m infra.check --checkov [build/package/sam.json]

The second form runs checkov (its own virtualenv, `make checkov`) on the template, with the checks
infra/skipped-checks.md lists as not applying skipped, and exits with checkov's status.

Reads the template `make package` wrote (SAM before the transform; a transformed template with
AWS::Lambda::EventSourceMapping resources works too) and exits 1 with one `FAIL [rule] ...` line
per violation. The rules and why each matters: docs/deploy.md#build-and-check-make-package-make-check-infra. The connection
budget comes from --budget, else the template's Metadata.AdModeration.DbConnectionBudget
(infra/stages.json, via make package), else DEFAULT_DB_CONNECTION_BUDGET.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.policies import VPC_READ_ACTIONS, XRAY_ACTIONS
from toolkit import logs, names

log = logs.get("check")

# Where `make package` (infra/package.py) writes the template.
DEFAULT_TEMPLATE = names.BUILD_DIR / "package" / "sam.json"
# Most PostgreSQL connections the app may hold when nothing else says so.
DEFAULT_DB_CONNECTION_BUDGET = 20
VISIBILITY_FACTOR = 6
# CloudFormation / Lambda defaults when a property is absent.
DEFAULT_VISIBILITY_TIMEOUT = 30
DEFAULT_LAMBDA_TIMEOUT = 3
DEFAULT_RETENTION = 345600
# A function "uses the database" if it gets one of these variables.
DB_ENV_VARS = ("DATABASE_SECRET_ARN", "DATABASE_URL")
# Actions that cannot be scoped to a resource: Resource "*" is the only option.
RESOURCELESS_ACTIONS = frozenset({
    "cloudwatch:PutMetricData", *XRAY_ACTIONS, *VPC_READ_ACTIONS, "sqs:ListQueues", "secretsmanager:GetRandomPassword",
})
FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")
# SQS event source limits (Lambda's CreateEventSourceMapping).
SQS_MAX_BATCH = 10000
SQS_MAX_BATCH_WITHOUT_WINDOW = 10
MAX_BATCHING_WINDOW = 300
DEFAULT_SQS_BATCH = 10
# Every function's alarms on these AWS/Lambda metrics.
LAMBDA_ALARM_METRICS = ("Errors", "Throttles")
# The application metrics (CloudWatch embedded metric format, Powertools).
METRICS_NAMESPACE = "AdModeration"
# Stages whose database path must be private and verified: functions in a VPC, TLS with verify-full.
PRODUCTION_STAGES = frozenset({"prod"})
# What the API's access log must record per request ($context variables).
ACCESS_LOG_FIELDS = ("$context.requestId", "$context.identity.apiKeyId", "$context.resourcePath", "$context.httpMethod",
                     "$context.status", "$context.responseLatency", "$context.identity.sourceIp")
RETAIN = "Retain"


@dataclass(frozen=True)
class Violation:
    rule: str
    message: str

    def __str__(self) -> str:
        return f"FAIL [{self.rule}] {self.message}"


@dataclass(frozen=True)
class Mapping:
    """An SQS event source mapping, from a SAM event or an ESM resource."""

    name: str
    function: str | None
    queue: str | None
    properties: dict[str, Any]


def _ref_target(value: Any) -> str | None:
    """Logical id behind Ref / Fn::GetAtt, or None."""
    if isinstance(value, dict):
        if "Ref" in value and isinstance(value["Ref"], str):
            return value["Ref"].split(".")[0]
        if "Fn::GetAtt" in value:
            att = value["Fn::GetAtt"]
            return (att[0] if isinstance(att, list) else str(att).split(".")[0]) or None
    return None


def _as_int(value: Any, default: int) -> int | None:
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return None  # an intrinsic: cannot be checked statically


def queue_by_name(resources: dict[str, Any], name: str) -> str | None:
    for logical_id, res in resources.items():
        if res.get("Type") == "AWS::SQS::Queue" and res.get("Properties", {}).get("QueueName") == name:
            return logical_id
    return None


def _queue_of(value: Any, resources: dict[str, Any]) -> str | None:
    target = _ref_target(value)
    if target is not None:
        return target
    arn = value.get("Fn::Sub") if isinstance(value, dict) else value
    if isinstance(arn, list):
        arn = arn[0]
    if isinstance(arn, str) and ":sqs:" in arn:
        return queue_by_name(resources, arn.rsplit(":", 1)[1])
    return None


def sqs_mappings(template: dict[str, Any]) -> list[Mapping]:
    resources = template.get("Resources", {})
    found: list[Mapping] = []
    for logical_id, res in resources.items():
        props = res.get("Properties", {}) or {}
        if res.get("Type") == "AWS::Serverless::Function":
            for event_id, event in (props.get("Events") or {}).items():
                if event.get("Type") == "SQS":
                    ep = event.get("Properties", {}) or {}
                    queue = _queue_of(ep.get("Queue"), resources)
                    found.append(Mapping(f"{logical_id}.Events.{event_id}", logical_id, queue, ep))
        elif res.get("Type") == "AWS::Lambda::EventSourceMapping":
            queue = _queue_of(props.get("EventSourceArn"), resources)
            if queue is not None and resources.get(queue, {}).get("Type") == "AWS::SQS::Queue":
                found.append(Mapping(logical_id, _ref_target(props.get("FunctionName")), queue, props))
    return found


def _function_props(template: dict[str, Any], logical_id: str | None) -> dict[str, Any]:
    res = template.get("Resources", {}).get(logical_id or "", {})
    props = dict(template.get("Globals", {}).get("Function", {})) if res.get("Type") == "AWS::Serverless::Function" else {}
    props.update(res.get("Properties", {}) or {})
    return props


def check_queues(template: dict[str, Any]) -> Iterator[Violation]:
    resources = template.get("Resources", {})
    for m in sqs_mappings(template):
        if "ReportBatchItemFailures" not in (m.properties.get("FunctionResponseTypes") or []):
            yield Violation(
                "partial-batch",
                f"{m.name}: SQS event source lacks FunctionResponseTypes: [ReportBatchItemFailures]; "
                "the handler's batchItemFailures would be ignored",
            )
        if m.queue is None or resources.get(m.queue, {}).get("Type") != "AWS::SQS::Queue":
            yield Violation("visibility-timeout", f"{m.name}: its queue is not a queue of this template; cannot check it")
            continue
        qprops = resources[m.queue].get("Properties", {}) or {}
        fprops = _function_props(template, m.function)
        visibility = _as_int(qprops.get("VisibilityTimeout"), DEFAULT_VISIBILITY_TIMEOUT)
        timeout = _as_int(fprops.get("Timeout"), DEFAULT_LAMBDA_TIMEOUT)
        if visibility is not None and timeout is not None and visibility < VISIBILITY_FACTOR * timeout:
            yield Violation(
                "visibility-timeout",
                f"{m.queue} VisibilityTimeout {visibility} s < {VISIBILITY_FACTOR} x {m.function} Timeout {timeout} s "
                f"= {VISIBILITY_FACTOR * timeout} s",
            )
        redrive = qprops.get("RedrivePolicy")
        if not redrive:
            yield Violation(
                "redrive", f"{m.queue} (consumed by {m.function}) has no RedrivePolicy: poison messages never leave it"
            )
            continue
        dlq = _ref_target(redrive.get("deadLetterTargetArn")) if isinstance(redrive, dict) else None
        if dlq is None or resources.get(dlq, {}).get("Type") != "AWS::SQS::Queue":
            continue  # a DLQ outside this template: its retention is not ours to see
        dlq_retention = _as_int(resources[dlq].get("Properties", {}).get("MessageRetentionPeriod"), DEFAULT_RETENTION)
        main_retention = _as_int(qprops.get("MessageRetentionPeriod"), DEFAULT_RETENTION)
        if dlq_retention is not None and main_retention is not None and dlq_retention < main_retention:
            yield Violation(
                "dlq-retention",
                f"{dlq} MessageRetentionPeriod {dlq_retention} s < {m.queue}'s {main_retention} s: "
                "redriven messages keep their first enqueue time and could expire in the DLQ at once",
            )


def _uses_database(props: dict[str, Any]) -> bool:
    variables = ((props.get("Environment") or {}).get("Variables")) or {}
    return any(v in variables for v in DB_ENV_VARS)


def connection_budget(template: dict[str, Any], override: int | None = None) -> int:
    if override is not None:
        return override
    meta = (template.get("Metadata") or {}).get("AdModeration") or {}
    return int(meta.get("DbConnectionBudget", DEFAULT_DB_CONNECTION_BUDGET))


def check_connection_budget(template: dict[str, Any], budget: int) -> Iterator[Violation]:
    consumers = {m.function: m for m in sqs_mappings(template)}
    parts: list[str] = []
    total = 0
    for logical_id in functions(template):
        props = _function_props(template, logical_id)
        if not _uses_database(props):
            continue
        mapping = consumers.get(logical_id)
        scaling = (mapping.properties.get("ScalingConfig") or {}) if mapping else {}
        limits = (_as_int(scaling.get("MaximumConcurrency"), -1), _as_int(props.get("ReservedConcurrentExecutions"), -1))
        bounds = [x for x in limits if x is not None and x >= 0]
        if not bounds:
            yield Violation("connection-budget", (
                f"{mapping.name}: no ScalingConfig.MaximumConcurrency (nor reserved concurrency on {logical_id}): "
                "SQS could scale it to 1,000 environments = 1,000 connections") if mapping else (
                f"{logical_id} uses the database but has no ReservedConcurrentExecutions: its connections are unbounded"))
            continue
        total += min(bounds)
        parts.append(f"{logical_id} {min(bounds)} ({'MaximumConcurrency' if mapping else 'reserved'})")
    if total > budget:
        yield Violation(
            "connection-budget",
            f"up to {total} PostgreSQL connections ({' + '.join(parts)}; 1 per environment) > budget {budget}",
        )


def statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM policy statement of the template, with where it is."""
    for logical_id, res in template.get("Resources", {}).items():
        props = res.get("Properties", {}) or {}
        rtype = res.get("Type")
        docs: list[tuple[str, Any]] = []
        if rtype == "AWS::IAM::Role":
            docs = [(f"{logical_id}.{p.get('PolicyName', '?')}", p.get("PolicyDocument")) for p in props.get("Policies", [])]
        elif rtype in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy"):
            docs = [(logical_id, props.get("PolicyDocument"))]
        elif rtype == "AWS::Serverless::Function":
            policies = props.get("Policies")
            policies = policies if isinstance(policies, list) else [policies] if policies else []
            docs = [(f"{logical_id}.Policies", p) for p in policies if isinstance(p, dict) and "Statement" in p]
        for where, doc in docs:
            for i, stmt in enumerate(_as_list((doc or {}).get("Statement"))):
                yield f"{where} statement {stmt.get('Sid') or i}", stmt


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value] if value is not None else []


def check_iam(template: dict[str, Any]) -> Iterator[Violation]:
    for where, stmt in statements(template):
        if stmt.get("Effect", "Allow") != "Allow":
            continue
        if "NotAction" in stmt:
            yield Violation("iam-wildcard-action", f"{where}: NotAction allows every action but a few")
        actions = [a for a in _as_list(stmt.get("Action")) if isinstance(a, str)]
        wild = [a for a in actions if "*" in a or "?" in a]
        if wild:
            yield Violation("iam-wildcard-action", f"{where}: wildcard action(s) {', '.join(wild)}; list the actions")
        resources = _as_list(stmt.get("Resource"))
        if "*" in resources or "NotResource" in stmt:
            scoped = [a for a in actions if a not in RESOURCELESS_ACTIONS]
            if scoped:
                yield Violation(
                    "iam-wildcard-resource",
                    f"{where}: Resource \"*\" for {', '.join(scoped)}, which can name their resources",
                )


def check_batching(template: dict[str, Any]) -> Iterator[Violation]:
    for m in sqs_mappings(template):
        size = _as_int(m.properties.get("BatchSize"), DEFAULT_SQS_BATCH)
        window = _as_int(m.properties.get("MaximumBatchingWindowInSeconds"), 0)
        if size is not None and not 1 <= size <= SQS_MAX_BATCH:
            yield Violation("batch-size", f"{m.name}: BatchSize {size} is outside 1..{SQS_MAX_BATCH}")
        elif size is not None and window is not None and size > SQS_MAX_BATCH_WITHOUT_WINDOW and window < 1:
            yield Violation(
                "batch-size",
                f"{m.name}: BatchSize {size} > {SQS_MAX_BATCH_WITHOUT_WINDOW} needs MaximumBatchingWindowInSeconds >= 1 "
                f"(it is {window}); SQS event sources refuse it",
            )
        if window is not None and not 0 <= window <= MAX_BATCHING_WINDOW:
            yield Violation(
                "batch-size", f"{m.name}: MaximumBatchingWindowInSeconds {window} is outside 0..{MAX_BATCHING_WINDOW}"
            )


def functions(template: dict[str, Any]) -> list[str]:
    return [k for k, r in template.get("Resources", {}).items() if r.get("Type") in FUNCTION_TYPES]


def _names_function(value: Any, logical_id: str, props: dict[str, Any]) -> bool:
    """Is VALUE (an alarm dimension) this function: its Ref, or its literal FunctionName?"""
    return _ref_target(value) == logical_id or (value is not None and value == props.get("FunctionName"))


def check_lambda_alarms(template: dict[str, Any]) -> Iterator[Violation]:
    resources = template.get("Resources", {})
    alarms = [
        r.get("Properties", {}) or {}
        for r in resources.values()
        if r.get("Type") == "AWS::CloudWatch::Alarm" and (r.get("Properties") or {}).get("Namespace") == "AWS/Lambda"
    ]
    for logical_id in functions(template):
        props = resources[logical_id].get("Properties", {}) or {}
        for metric in LAMBDA_ALARM_METRICS:
            covered = any(
                a.get("MetricName") == metric
                and any(
                    d.get("Name") == "FunctionName" and _names_function(d.get("Value"), logical_id, props)
                    for d in a.get("Dimensions") or []
                )
                for a in alarms
            )
            if not covered:
                yield Violation(
                    "lambda-alarms",
                    f"{logical_id} has no alarm on AWS/Lambda {metric} (an AWS::CloudWatch::Alarm with "
                    f"Dimensions FunctionName = {{Ref: {logical_id}}}): its {metric.lower()} would go unnoticed",
                )


def _dashboard_text(body: Any) -> str:
    """The dashboard body as text, with Refs and GetAtts written as ${Id} and ${Id.Attr}:
    a Fn::Join (what `make package` writes), a Fn::Sub string, a string, or anything else as JSON."""
    if isinstance(body, dict) and "Fn::Join" in body:
        separator, parts = body["Fn::Join"]
        return str(separator).join(_part_text(p) for p in parts)
    if isinstance(body, dict) and "Fn::Sub" in body:
        sub = body["Fn::Sub"]
        body = sub[0] if isinstance(sub, list) else sub
    return body if isinstance(body, str) else json.dumps(body)


def _part_text(part: Any) -> str:
    if isinstance(part, dict) and "Ref" in part:
        return f"${{{part['Ref']}}}"
    if isinstance(part, dict) and "Fn::GetAtt" in part:
        att = part["Fn::GetAtt"]
        return f"${{{'.'.join(att) if isinstance(att, list) else att}}}"
    return part if isinstance(part, str) else json.dumps(part)


def _names(text: str, logical_id: str, literal: Any) -> bool:
    """Does the dashboard text name a resource: ${Id} or ${Id.Attr} (its Ref or GetAtt), or its literal name?"""
    if f"${{{logical_id}}}" in text or f"${{{logical_id}." in text:
        return True
    return isinstance(literal, str) and (f'"{literal}"' in text or f'\\"{literal}\\"' in text)


def check_dashboard(template: dict[str, Any]) -> Iterator[Violation]:
    resources = template.get("Resources", {})
    bodies = [
        _dashboard_text((r.get("Properties") or {}).get("DashboardBody"))
        for r in resources.values()
        if r.get("Type") == "AWS::CloudWatch::Dashboard"
    ]
    if not bodies:
        yield Violation("dashboard", "no AWS::CloudWatch::Dashboard: operators have no view of the queues and functions")
        return
    text = "\n".join(bodies)
    for logical_id, res in resources.items():
        props = res.get("Properties", {}) or {}
        if res.get("Type") == "AWS::SQS::Queue" and not _names(text, logical_id, props.get("QueueName")):
            yield Violation("dashboard", f"the dashboard does not show queue {logical_id}")
        elif res.get("Type") in FUNCTION_TYPES and not _names(text, logical_id, props.get("FunctionName")):
            yield Violation("dashboard", f"the dashboard does not show function {logical_id}")
    if METRICS_NAMESPACE not in text:
        yield Violation("dashboard", f"the dashboard shows none of the app's metrics (namespace {METRICS_NAMESPACE})")


def _stage(template: dict[str, Any]) -> str | None:
    stage = ((template.get("Metadata") or {}).get("AdModeration") or {}).get("Stage")
    return stage if isinstance(stage, str) else None


def check_metrics_env(template: dict[str, Any]) -> Iterator[Violation]:
    stage = _stage(template)
    for logical_id in functions(template):
        variables = ((_function_props(template, logical_id).get("Environment") or {}).get("Variables")) or {}
        if variables.get("POWERTOOLS_METRICS_NAMESPACE") != METRICS_NAMESPACE:
            yield Violation(
                "metrics-env",
                f"{logical_id}: POWERTOOLS_METRICS_NAMESPACE is {variables.get('POWERTOOLS_METRICS_NAMESPACE')!r}, "
                f"not {METRICS_NAMESPACE!r}: its metrics would be missing from the dashboard",
            )
        if "STAGE" not in variables or (stage is not None and variables["STAGE"] != stage):
            yield Violation(
                "metrics-env",
                f"{logical_id}: STAGE is {variables.get('STAGE')!r}, not the packaged stage {stage!r}: "
                "the dashboard filters the app's metrics on it",
            )


def _role_actions(template: dict[str, Any], role: Any) -> set[str]:
    role_id = _ref_target(role) or ""
    only_role = {"Resources": {role_id: template.get("Resources", {}).get(role_id, {})}}
    allowed = [stmt for _, stmt in statements(only_role) if stmt.get("Effect", "Allow") == "Allow"]
    return {a for stmt in allowed for a in _as_list(stmt.get("Action")) if isinstance(a, str)}


def check_tracing(template: dict[str, Any]) -> Iterator[Violation]:
    for logical_id in functions(template):
        props = _function_props(template, logical_id)
        active = props.get("Tracing") == "Active" or (props.get("TracingConfig") or {}).get("Mode") == "Active"
        if not active or "Role" not in props:
            continue  # no tracing, or SAM builds the role (and adds the X-Ray policy itself)
        missing = set(XRAY_ACTIONS) - _role_actions(template, props["Role"])
        if missing:
            yield Violation(
                "tracing-permissions",
                f"{logical_id} has active tracing but its role does not allow {', '.join(sorted(missing))}: "
                "Lambda refuses the function (see infra/policies.py)",
            )


def check_encryption(template: dict[str, Any]) -> Iterator[Violation]:
    for logical_id, res in template.get("Resources", {}).items():
        props = res.get("Properties", {}) or {}
        if res.get("Type") == "AWS::SQS::Queue" and props.get("SqsManagedSseEnabled") is not True \
                and not props.get("KmsMasterKeyId"):
            yield Violation("queue-encryption", f"{logical_id}: no explicit encryption at rest "
                            "(SqsManagedSseEnabled: true, or KmsMasterKeyId)")


def _dead_letter_queues(resources: dict[str, Any]) -> set[str]:
    targets = [((r.get("Properties") or {}).get("RedrivePolicy") or {}).get("deadLetterTargetArn")
               for r in resources.values() if r.get("Type") == "AWS::SQS::Queue"]
    return {t for t in (_ref_target(x) for x in targets) if t}


def check_retention(template: dict[str, Any]) -> Iterator[Violation]:
    """What ops need after the stack is deleted or a resource replaced: the DLQ's envelopes, the logs."""
    resources = template.get("Resources", {})
    kept = _dead_letter_queues(resources) | {k for k, r in resources.items() if r.get("Type") == "AWS::Logs::LogGroup"}
    for logical_id in sorted(kept):
        res = resources[logical_id]
        missing = [p for p in ("DeletionPolicy", "UpdateReplacePolicy") if res.get(p) != RETAIN]
        if missing:
            yield Violation("retain", f"{logical_id} ({res.get('Type')}) lacks "
                            f"{' and '.join(f'{p}: Retain' for p in missing)}: deleting or replacing the stack would delete it")
        if res.get("Type") == "AWS::Logs::LogGroup" and not (res.get("Properties") or {}).get("RetentionInDays"):
            yield Violation("retain", f"{logical_id}: no RetentionInDays (kept, and paid for, forever)")


def check_access_log(template: dict[str, Any]) -> Iterator[Violation]:
    resources = template.get("Resources", {})
    for logical_id, res in resources.items():
        if res.get("Type") not in ("AWS::Serverless::Api", "AWS::ApiGateway::Stage"):
            continue
        setting = (res.get("Properties") or {}).get("AccessLogSetting")
        if not setting:
            yield Violation("access-log", f"{logical_id}: no AccessLogSetting: no record of which client called what")
            continue
        group = _ref_target(setting.get("DestinationArn"))
        if group is None or resources.get(group, {}).get("Type") != "AWS::Logs::LogGroup":
            yield Violation("access-log", f"{logical_id}: the access log does not go to a log group of this template")
        missing = [f for f in ACCESS_LOG_FIELDS if f not in str(setting.get("Format", ""))]
        if missing:
            yield Violation("access-log", f"{logical_id}: the access log format lacks {', '.join(missing)}")


def check_private_database(template: dict[str, Any]) -> Iterator[Violation]:
    """Production stages: every function that uses the database runs in a VPC and demands verified TLS."""
    stage = _stage(template)
    if stage not in PRODUCTION_STAGES:
        return
    params = template.get("Parameters", {})
    for logical_id in functions(template):
        props = _function_props(template, logical_id)
        if not _uses_database(props):
            continue
        vpc = props.get("VpcConfig")
        if not isinstance(vpc, dict) or "Fn::If" in vpc:
            yield Violation("vpc", f"{logical_id}: {stage} functions must run in the database's VPC: an unconditional "
                            "VpcConfig (infra/stages.json \"vpc\": \"required\")")
        else:
            for key in ("SubnetIds", "SecurityGroupIds"):
                value, param = vpc.get(key), _ref_target(vpc.get(key))
                given = bool(value) if param is None else param in params and "Default" not in params[param]
                if not given:
                    yield Violation("vpc", f"{logical_id}: VpcConfig.{key} is empty or has a default: the deploy must name them")
        variables = ((props.get("Environment") or {}).get("Variables")) or {}
        if str(variables.get("DB_REQUIRE_TLS", "")).lower() != "true" or not variables.get("DB_SSL_ROOT_CERT"):
            yield Violation("db-tls", f"{logical_id}: {stage} needs DB_REQUIRE_TLS=true and DB_SSL_ROOT_CERT (the CA bundle "
                            "make package ships), or the database is reached without verifying that it is the database")


def check(template: dict[str, Any], budget: int | None = None) -> list[Violation]:
    return [
        *check_queues(template),
        *check_batching(template),
        *check_connection_budget(template, connection_budget(template, budget)),
        *check_iam(template),
        *check_tracing(template),
        *check_lambda_alarms(template),
        *check_dashboard(template),
        *check_metrics_env(template),
        *check_encryption(template),
        *check_retention(template),
        *check_access_log(template),
        *check_private_database(template),
    ]


_SKIP_SECTION = re.compile(r"^## (\w+)", re.MULTILINE)
_SKIP_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \|", re.MULTILINE)


def skipped_checks(tool: str) -> list[str]:
    """The ids infra/skipped-checks.md lists under `## <tool>` (checkov, bandit, ruff)."""
    text = names.SKIPPED_CHECKS_FILE.read_text()
    sections = _SKIP_SECTION.split(text)  # [preamble, name, body, name, body, ...]
    bodies = {name: body for name, body in zip(sections[1::2], sections[2::2], strict=True)}
    return _SKIP_ROW.findall(bodies.get(tool, ""))


def checkov_command(*templates: Path, output: str = "cli") -> list[str]:
    files = [arg for template in templates for arg in ("--file", str(template))]
    quiet = ["--compact", "--quiet"] if output == "cli" else []  # JSON: the passed checks too, per file
    return [str(names.CHECKOV_VENV / "bin" / "checkov"), *files, "--framework", "cloudformation",
            "--skip-check", ",".join(skipped_checks("checkov")), *quiet, "--skip-download", "--output", output]


def _checkov(command: list[str]) -> subprocess.CompletedProcess[str]:
    if not (names.CHECKOV_VENV / "bin" / "checkov").exists():
        raise FileNotFoundError(f"checkov is not installed in {names.CHECKOV_VENV}: run `make checkov`")
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def run_checkov(template: Path) -> subprocess.CompletedProcess[str]:
    """checkov on the template, the skip list applied; its output and status."""
    return _checkov(checkov_command(template))


def checkov_failures(*templates: Path) -> dict[Path, list[str]]:
    """The ids of the checks each template fails, from one checkov run over all of them (checkov's
    start-up, ~8 s of CPU, is most of a run's cost). Raises RuntimeError when checkov did not
    report on every template (a parse error, a crash): a template it never read has not passed."""
    result = _checkov(checkov_command(*templates, output="json"))
    try:
        report = json.loads(result.stdout)
    except ValueError:
        raise RuntimeError(f"checkov printed no JSON (exit {result.returncode}):\n{result.stdout}{result.stderr}") from None
    results = report["results"] if isinstance(report, dict) else {}
    wanted = {t.resolve(): t for t in templates}
    failed: dict[Path, list[str]] = {t: [] for t in templates}
    read: set[Path] = set()
    for kind in ("passed_checks", "failed_checks"):
        for entry in results.get(kind, []):
            template = wanted.get(Path(entry["file_abs_path"]).resolve())
            if template is not None:
                read.add(template)
                if kind == "failed_checks":
                    failed[template].append(entry["check_id"])
    if unread := [str(t) for t in templates if t not in read] + [str(e) for e in results.get("parsing_errors", [])]:
        raise RuntimeError(f"checkov did not check {', '.join(unread)}:\n{result.stderr[-3000:]}")
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.check", description="Check the packaged template's rules.")
    parser.add_argument("template", nargs="?", type=Path, default=DEFAULT_TEMPLATE)
    parser.add_argument("--budget", type=int, default=None, help="DB connection budget (default: template Metadata, else 20)")
    parser.add_argument("--checkov", action="store_true", help="run checkov (skips: infra/skipped-checks.md) instead")
    args = parser.parse_args(argv)
    logs.setup()
    if not args.template.exists():
        log.error("%s does not exist; run `make package` first", args.template)
        return 2
    if args.checkov:
        try:
            result = run_checkov(args.template)
        except FileNotFoundError as err:
            log.error("%s", err)
            return 2
        print(result.stdout, end="")
        print(result.stderr, end="", file=sys.stderr)
        # checkov does not count the checks --skip-check removes: say which, and where the reasons are.
        print(f"checkov skipped {', '.join(skipped_checks('checkov'))} "
              f"(why each does not apply: {names.SKIPPED_CHECKS_FILE.relative_to(names.ROOT)})")
        return result.returncode
    template = json.loads(args.template.read_text())
    violations = check(template, args.budget)
    for v in violations:
        print(v, file=sys.stderr)
    if violations:
        print(f"{args.template}: {len(violations)} problem(s)", file=sys.stderr)
        return 1
    mappings = sqs_mappings(template)
    print(
        f"{args.template}: OK ({len(mappings)} SQS mapping(s), "
        f"DB connection budget {connection_budget(template, args.budget)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

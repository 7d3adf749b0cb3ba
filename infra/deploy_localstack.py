"""`make deploy-localstack`: the deployed topology on this machine, without Docker.

    API Gateway -> API Lambda -> SQS -> event source mapping -> scoring Lambda -> PostgreSQL

exactly as `make package` builds it for AWS (the same sam.json and
deployment.zip), deployed with the same `aws cloudformation package` /
`aws cloudformation deploy` commands, to LocalStack:

1. PostgreSQL: the embedded server (pip wheel) in .local/pg-deploy on port
   54330 (EMBEDDED_PG_PORT), or DATABASE_URL if set. (`.local` is
   LOCAL_STATE_DIR if set, as for `make run`.) The secret gets
   FUNCTION_DATABASE_URL if set (the address the functions must use, e.g. from
   Lambda containers of a LocalStack in Docker), else the same URL.
2. LocalStack in host mode (.venv-localstack) on its own endpoint,
   http://127.0.0.1:4567 (--endpoint, env LOCALSTACK_ENDPOINT), state in
   .local/localstack-deploy: never `make run`'s 4566. A deployed stack's event
   source mapping consumes the `moderation` queue of its endpoint, so a `make run`
   sharing that endpoint would lose every message to it (make run refuses
   such an endpoint: devstack/consumers.py). It gets two plugins pip-installed
   into that venv here: the `local-process` Lambda executor
   (infra/localstack_executor: functions run as local processes under this
   interpreter) and a provider for Lambda-backed custom resources
   (infra/localstack_customresource: LocalStack Community skips `Custom::*`
   resources, so the migrations would never run). Or whatever already answers
   at the endpoint (e.g. docker-compose.localstack.yml), reused.
   Started in the background: it keeps running after this command; stop it
   with `make deploy-localstack-stop`.
3. The database URL as a Secrets Manager secret (ad-moderation/<stage>/database);
   the template only gets its ARN (parameter DatabaseSecretArn).
4. `make package` (infra/package.py), then `aws cloudformation package` (code
   to an S3 bucket on LocalStack) and `aws cloudformation deploy`. The
   migrations run inside the deploy (custom resource -> migrate function).
5. Demo data if the database is empty, a smoke call of GET /health, and the
   API URL + API key.

    python -m infra.deploy_localstack [--endpoint URL] [--stage dev] [--no-package] [--package-dir DIR]
    python -m infra.deploy_localstack stop [--endpoint URL]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.package import DEFAULT_OUT, TEMPLATE_NAME, package
from infra.policies import function_name, secret_name
from toolkit.localstack import DEFAULT_SERVICES, HostLocalStack, LocalStackError, endpoint_answers
from toolkit.names import ROOT

# Not make run's 4566: two stacks on one endpoint share its queues (see above).
DEFAULT_ENDPOINT = "http://127.0.0.1:4567"
# Where deploy-localstack started LocalStack before it had an endpoint of its
# own; `stop` still stops one started there (found by its pid file, never by port).
LEGACY_ENDPOINT = "http://127.0.0.1:4566"
DEFAULT_PG_PORT = 54330  # make run's embedded server uses 54329
# Overridable like make run's, so a test can run a deployment of its own.
LOCAL = Path(os.environ.get("LOCAL_STATE_DIR") or ROOT / ".local")
LOCALSTACK_DATA = LOCAL / "localstack-deploy"
PG_DATA = LOCAL / "pg-deploy"
# LocalStack plugins pip-installed into .venv-localstack: source folder -> module.
PLUGINS = {
    # runs Lambda functions as local processes (no Docker)
    ROOT / "infra" / "localstack_executor": "localstack_local_executor",
    # Lambda-backed custom resources (Custom::*), which LocalStack Community skips
    ROOT / "infra" / "localstack_customresource": "localstack_custom_resource",
}
_PLUGINS_STAMP = ".ad-moderation-plugins.stamp"
AWS_CLI = Path(sys.executable).parent / "aws"
REGION = "us-east-1"
FUNCTIONS = ("api_handler", "score", "reconcile", "migrate")
LOCAL_AWS_ENV = {
    "AWS_DEFAULT_REGION": REGION,
    # LocalStack accepts any credentials; never used against AWS.
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
}


class DeployError(RuntimeError):
    pass


def say(text: str) -> None:
    print(f"[deploy-localstack] {text}", flush=True)


# --------------------------------------------------------------------------
# LocalStack with the local-process Lambda executor
# --------------------------------------------------------------------------


def plugins_hash() -> str:
    digest = hashlib.sha256()
    for src, module in PLUGINS.items():
        for path in sorted([src / "pyproject.toml", *(src / module).glob("*.py")]):
            digest.update(f"{src.name}/{path.name}".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def ensure_plugins_installed(stack: HostLocalStack) -> None:
    """Install LocalStack (if needed) and our plugins (PLUGINS) into its virtualenv.

    A stamp in the venv records the plugins' source hash: changed plugins are
    reinstalled, unchanged ones cost nothing. The install runs from copies,
    because setuptools would leave build/ and *.egg-info in the source folders.
    """
    stack.ensure_installed()
    stamp = stack.venv_dir / _PLUGINS_STAMP
    wanted = plugins_hash()
    with contextlib.suppress(OSError):
        if stamp.read_text().strip() == wanted:
            return
    say(f"installing the LocalStack plugins ({', '.join(p.name for p in PLUGINS)}) into {stack.venv_dir}")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    with tempfile.TemporaryDirectory() as tmp:
        copies = []
        for src in PLUGINS:
            dst = Path(tmp) / src.name
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
            copies.append(str(dst))
        result = subprocess.run(
            [str(stack.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", *copies],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    if result.returncode != 0:
        raise DeployError(f"could not install the LocalStack plugins:\n{result.stdout}{result.stderr}")
    stamp.write_text(wanted + "\n")


def lambda_executor_env(python: str | None = None) -> dict[str, str]:
    """LocalStack settings that make it run Lambda functions as local processes."""
    return {
        "LAMBDA_RUNTIME_EXECUTOR": "local-process",
        # The functions' interpreter: Python 3.11 like the Lambda runtime, with
        # boto3 (the runtime provides it on AWS); the rest comes from the zip.
        "LOCALSTACK_LAMBDA_PYTHON": python or sys.executable,
        # The schedule of `reconcile` is an EventBridge rule.
        "SERVICES": DEFAULT_SERVICES + ",events",
        # Environments idle longer than this are stopped (each holds a DB connection).
        "LAMBDA_KEEPALIVE_MS": "600000",
        # SQS on AWS long-polls, so a new message reaches the function within about a
        # second; LocalStack's poller backs off up to 10 s on an empty queue instead.
        "LAMBDA_EVENT_SOURCE_MAPPING_MAX_BACKOFF_ON_EMPTY_POLL_SEC": "1",
    }


def start_localstack(endpoint: str, data_dir: Path = LOCALSTACK_DATA, *, detach: bool) -> HostLocalStack | None:
    """Start LocalStack with the executor, or return None if something already answers there."""
    if endpoint_answers(endpoint):
        stack = HostLocalStack(data_dir=data_dir, endpoint=endpoint)
        if stack.running() is None:
            say(
                f"reusing the LocalStack at {endpoint}, which this command did not start: it must be able to run "
                "Lambda functions (Docker, or host mode with LAMBDA_RUNTIME_EXECUTOR=local-process)"
            )
        else:
            say(f"reusing the LocalStack at {endpoint} started by an earlier deploy-localstack")
        return None
    stack = HostLocalStack(data_dir=data_dir, endpoint=endpoint)
    ensure_plugins_installed(stack)
    started = time.monotonic()
    stack.start(extra_env=lambda_executor_env(), detach=detach)
    say(f"LocalStack ready at {endpoint} in {time.monotonic() - started:.1f} s (log: {stack.log_file})")
    return stack


# --------------------------------------------------------------------------
# Deploy
# --------------------------------------------------------------------------


@dataclass
class Deployment:
    stack_name: str
    stage: str
    endpoint: str
    api_url: str
    api_key: str
    secret_arn: str
    outputs: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def function_name(self, function: str) -> str:
        return function_name(self.stage, function)


def aws_env(endpoint: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(LOCAL_AWS_ENV)
    env["AWS_ENDPOINT_URL"] = endpoint
    return env


def aws(endpoint: str, *args: str, timeout: float = 600) -> dict[str, Any]:
    """Run the AWS CLI against the endpoint; parsed JSON output ({} if none)."""
    cmd = [str(AWS_CLI), "--output", "json", *args]
    result = subprocess.run(cmd, env=aws_env(endpoint), capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise DeployError(f"`aws {' '.join(args)}` failed ({result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    out = result.stdout.strip()
    if not out.startswith(("{", "[")):
        return {"text": out}
    return dict(json.loads(out))


def boto(endpoint: str, service: str) -> Any:
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=LOCAL_AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )


def ensure_secret(endpoint: str, name: str, database_url: str) -> str:
    """Create or update the secret holding the database URL; return its ARN."""
    sm = boto(endpoint, "secretsmanager")
    try:
        arn = sm.describe_secret(SecretId=name)["ARN"]
        sm.put_secret_value(SecretId=arn, SecretString=database_url)
    except sm.exceptions.ResourceNotFoundException:
        arn = sm.create_secret(Name=name, SecretString=database_url, Description="ad-moderation database URL")["ARN"]
    return str(arn)


def ensure_bucket(endpoint: str, name: str) -> None:
    s3 = boto(endpoint, "s3")
    try:
        s3.head_bucket(Bucket=name)
    except Exception:  # noqa: BLE001 - any error: try to create it
        s3.create_bucket(Bucket=name)


def _stack_failure(endpoint: str, stack_name: str) -> str:
    """The failed events of a stack, for the error message."""
    try:
        events = aws(endpoint, "cloudformation", "describe-stack-events", "--stack-name", stack_name)["StackEvents"]
    except DeployError as err:
        return str(err)
    failed = [
        f"  {e['LogicalResourceId']} ({e['ResourceType']}): {e['ResourceStatus']} {e.get('ResourceStatusReason', '')}"
        for e in events
        if "FAILED" in e["ResourceStatus"]
    ]
    return "\n".join(reversed(failed[:15])) or "(no failed events)"


def upload_template(endpoint: str, bucket: str, key: str, path: Path) -> str:
    """Put the template in S3 and return its URL: CloudFormation refuses an
    inline TemplateBody over 51,200 bytes (the packaged template, with its
    dashboard and alarms, is larger), so it deploys by TemplateURL, as
    `aws cloudformation deploy --s3-bucket` does on AWS."""
    boto(endpoint, "s3").put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    return f"{endpoint.rstrip('/')}/{bucket}/{key}"


def deploy_change_set(endpoint: str, stack_name: str, template_url: str, parameters: dict[str, str]) -> bool:
    """Create or update the stack through a change set; False if there was nothing to change.

    The same calls as `aws cloudformation deploy --capabilities CAPABILITY_IAM
    CAPABILITY_AUTO_EXPAND --parameter-overrides ... --no-fail-on-empty-changeset`,
    whose waiters poll every 30 s: on LocalStack a deploy takes a few seconds,
    so polling every 0.5 s here cuts ~30 s from every deploy.
    """
    cfn = boto(endpoint, "cloudformation")
    try:
        status = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]["StackStatus"]
    except cfn.exceptions.ClientError:
        status = None
    if status == "ROLLBACK_COMPLETE":  # a failed first create: CloudFormation requires a delete first
        cfn.delete_stack(StackName=stack_name)
        _wait_stack(cfn, stack_name, ok=("DELETE_COMPLETE",), gone_ok=True)
        status = None
    change_set = f"deploy-{int(time.time() * 1000)}"
    cfn.create_change_set(
        StackName=stack_name,
        ChangeSetName=change_set,
        ChangeSetType="CREATE" if status in (None, "REVIEW_IN_PROGRESS") else "UPDATE",
        TemplateURL=template_url,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    deadline = time.monotonic() + 300
    while True:
        cs = cfn.describe_change_set(StackName=stack_name, ChangeSetName=change_set)
        if cs["Status"] in ("CREATE_COMPLETE", "FAILED"):
            break
        if time.monotonic() > deadline:
            raise DeployError(f"change set {change_set} still {cs['Status']} after 300 s")
        time.sleep(0.5)
    if cs["Status"] == "FAILED":
        reason = cs.get("StatusReason", "")
        if "didn't contain changes" in reason or "No updates" in reason:
            cfn.delete_change_set(StackName=stack_name, ChangeSetName=change_set)
            return False
        raise DeployError(f"change set failed: {reason}")
    cfn.execute_change_set(StackName=stack_name, ChangeSetName=change_set)
    _wait_stack(cfn, stack_name, ok=("CREATE_COMPLETE", "UPDATE_COMPLETE"))
    return True


def _wait_stack(cfn: Any, stack_name: str, *, ok: tuple[str, ...], gone_ok: bool = False, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]["StackStatus"]
        except cfn.exceptions.ClientError:
            if gone_ok:
                return
            raise
        if status in ok:
            return
        if not status.endswith("_IN_PROGRESS"):
            raise DeployError(f"stack {stack_name} ended in {status}")
        if time.monotonic() > deadline:
            raise DeployError(f"stack {stack_name} still {status} after {timeout:.0f} s")
        time.sleep(0.5)


def migrations_via_custom_resource(endpoint: str, stack_name: str) -> bool:
    """True if the DatabaseMigrations custom resource was really executed.

    The migrate function names the resource `<LogicalId>-schema`; a LocalStack
    without a custom resource provider marks it done without calling anyone.
    """
    res = aws(endpoint, "cloudformation", "describe-stack-resource", "--stack-name", stack_name,
              "--logical-resource-id", "DatabaseMigrations")["StackResourceDetail"]
    return str(res.get("PhysicalResourceId", "")).endswith("-schema")


def deploy(
    *,
    endpoint: str,
    database_url: str,
    stage: str = "dev",
    stack_name: str | None = None,
    package_dir: Path = DEFAULT_OUT,
    build: bool = True,
    log: Callable[[str], None] = say,
) -> Deployment:
    """Package (unless build=False), then deploy the stack to the AWS endpoint; return its coordinates."""
    stack_name = stack_name or f"ad-moderation-{stage}"
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    if build:
        info = package(stage, package_dir)
        log(f"packaged in {info['seconds']:.1f} s: deployment.zip {info['zip_bytes'] / 1e6:.1f} MB")
        timings["package"] = info["seconds"]
    template = package_dir / TEMPLATE_NAME
    if not template.exists():
        raise DeployError(f"{template} does not exist: run `make package` first")

    t1 = time.monotonic()
    secret_arn = ensure_secret(endpoint, secret_name(stage), database_url)
    account = secret_arn.split(":")[4]
    bucket = f"ad-moderation-artifacts-{account}"
    ensure_bucket(endpoint, bucket)
    packaged = package_dir / "packaged.json"
    aws(endpoint, "cloudformation", "package", "--template-file", str(template), "--s3-bucket", bucket,
        "--s3-prefix", stack_name, "--output-template-file", str(packaged), "--use-json")
    timings["upload"] = time.monotonic() - t1

    t2 = time.monotonic()
    log(f"deploying stack {stack_name} (change set, as `aws cloudformation deploy` does)")
    try:
        url = upload_template(endpoint, bucket, f"{stack_name}/packaged-{int(time.time())}.json", packaged)
        deploy_change_set(endpoint, stack_name, url, {"DatabaseSecretArn": secret_arn})
    except DeployError as err:
        raise DeployError(f"{err}\nFailed resources:\n{_stack_failure(endpoint, stack_name)}") from None
    timings["deploy"] = time.monotonic() - t2

    migrations = migrations_via_custom_resource(endpoint, stack_name)
    if not migrations:
        # A LocalStack without custom resource support (Community in Docker)
        # skips the resource: apply the migrations the same way, by hand.
        log("the DatabaseMigrations custom resource did not run here; invoking the migrate function directly")
        result = boto(endpoint, "lambda").invoke(FunctionName=function_name(stage, "migrate"), Payload=b"{}")
        if result.get("FunctionError"):
            raise DeployError(f"migrate failed: {result['Payload'].read().decode(errors='replace')[:2000]}")

    desc = aws(endpoint, "cloudformation", "describe-stacks", "--stack-name", stack_name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in desc.get("Outputs", [])}
    api_url = f"{endpoint.rstrip('/')}/restapis/{outputs['RestAPIId']}/api/_user_request_"
    key = aws(endpoint, "apigateway", "get-api-key", "--api-key", outputs["ApiKeyId"], "--include-value")["value"]
    timings["total"] = time.monotonic() - t0
    return Deployment(stack_name, stage, endpoint, api_url, str(key), secret_arn, outputs, timings)


# --------------------------------------------------------------------------
# After the deploy: cold starts from the functions' REPORT log lines
# --------------------------------------------------------------------------

_REPORT = re.compile(r"REPORT RequestId: \S+\s+Duration: ([\d.]+) ms.*?(?:Init Duration: ([\d.]+) ms)?\s*$")


def cold_starts(endpoint: str, stage: str) -> dict[str, list[dict[str, float]]]:
    """Per function: the invocations that had an Init Duration (cold starts), from CloudWatch Logs."""
    logs = boto(endpoint, "logs")
    out: dict[str, list[dict[str, float]]] = {}
    for fn in FUNCTIONS:
        name = function_name(stage, fn)
        try:
            events = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}", filterPattern="REPORT")["events"]
        except Exception:  # noqa: BLE001 - no log group yet: never invoked
            events = []
        starts = []
        for e in events:
            m = _REPORT.search(e["message"].strip())
            if m and m.group(2):
                starts.append({"init_ms": float(m.group(2)), "duration_ms": float(m.group(1))})
        out[fn] = starts
    return out


def http_json(method: str, url: str, *, api_key: str | None = None, timeout: float = 30) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["x-api-key"] = api_key
    if not url.startswith(("http://", "https://")):
        raise ValueError(url)
    req = urllib.request.Request(  # noqa: S310 - scheme checked
        url, data=b"" if method == "POST" else None, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - scheme checked
            body = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        body, status = err.read(), err.code
    try:
        return status, json.loads(body or b"null")
    except ValueError:
        return status, body.decode(errors="replace")


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def _up(args: argparse.Namespace) -> int:
    from toolkit.postgres import EmbeddedPostgres
    from toolkit.seed import seed_demo_data

    started = time.monotonic()
    database_url = os.environ.get("DATABASE_URL", "")
    if database_url:
        say("PostgreSQL: using DATABASE_URL")
    else:
        pg = EmbeddedPostgres(PG_DATA, port=args.pg_port)
        database_url = pg.start()
        say(f"PostgreSQL ready: {database_url} (data {PG_DATA}; the functions connect to it over TCP)")
    start_localstack(args.endpoint, detach=True)
    # The functions may need another address for the same database than this
    # host does (Lambda containers of a LocalStack in Docker: not 127.0.0.1).
    function_url = os.environ.get("FUNCTION_DATABASE_URL") or database_url
    d = deploy(endpoint=args.endpoint, database_url=function_url, stage=args.stage, build=not args.no_package,
               package_dir=args.package_dir)
    seeded = seed_demo_data(database_url)
    if seeded:
        say(f"seeded {seeded} demo ads (item_id 1..{seeded})")
    t = time.monotonic()
    status, health = http_json("GET", f"{d.api_url}/health")
    health_s = time.monotonic() - t
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in d.timings.items())
    say(f"deployed in {time.monotonic() - started:.1f} s overall ({timings})")
    say(f"GET /health -> {status} in {health_s:.2f} s (with a cold start if no API environment was warm): {json.dumps(health)}")
    print(
        f"""
  API URL   {d.api_url}
  API key   {d.api_key}
  stack     {d.stack_name} on {d.endpoint}   (AWS_ENDPOINT_URL={d.endpoint} aws cloudformation describe-stacks)

  curl -s -X POST -H "x-api-key: {d.api_key}" "{d.api_url}/moderation/async_predict?item_id=1"
  curl -s -H "x-api-key: {d.api_key}" "{d.api_url}/moderation/moderation_result/1"

  logs:  AWS_ENDPOINT_URL={d.endpoint} aws logs tail /aws/lambda/{d.function_name('score')}
  stop:  {stop_command(d.endpoint)}
""",
        flush=True,
    )
    return 0 if status == 200 else 1


def stop_command(endpoint: str) -> str:
    # The stop must look at the same endpoint (and state dir) as the deploy.
    prefix = "" if endpoint == DEFAULT_ENDPOINT else f"LOCALSTACK_ENDPOINT={endpoint} "
    if "LOCAL_STATE_DIR" in os.environ:
        prefix += f"LOCAL_STATE_DIR={LOCAL} "
    return f"{prefix}make deploy-localstack-stop"


def _down(args: argparse.Namespace) -> int:
    from toolkit.postgres import EmbeddedPostgres

    stopped = []
    for endpoint in dict.fromkeys((args.endpoint, LEGACY_ENDPOINT)):
        # Only a LocalStack this command started (its pid file in LOCALSTACK_DATA),
        # never one that merely answers on the port.
        localstack = HostLocalStack(data_dir=LOCALSTACK_DATA, endpoint=endpoint)
        if localstack.running() is not None:
            localstack.stop()
            stopped.append(endpoint)
    say(f"LocalStack stopped at {', '.join(stopped)}" if stopped else "no LocalStack started by deploy-localstack was running")
    EmbeddedPostgres(PG_DATA, port=args.pg_port).stop()
    say("PostgreSQL stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.deploy_localstack", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=("up", "stop"), default="up")
    parser.add_argument(
        "--endpoint",
        default=os.environ.get("LOCALSTACK_ENDPOINT", DEFAULT_ENDPOINT),
        help=f"LocalStack for the deployment (default {DEFAULT_ENDPOINT}, env LOCALSTACK_ENDPOINT; not make run's)",
    )
    parser.add_argument("--pg-port", type=int, default=int(os.environ.get("EMBEDDED_PG_PORT", DEFAULT_PG_PORT)))
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--no-package", action="store_true", help="deploy the package directory as it is")
    parser.add_argument("--package-dir", type=Path, default=DEFAULT_OUT, help="where to build/find the package")
    args = parser.parse_args(argv)
    try:
        return _down(args) if args.command == "stop" else _up(args)
    except (DeployError, LocalStackError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""`make deploy-localstack`: the deployed topology on this machine, without Docker.

    API Gateway -> API Lambda -> SQS -> event source mapping -> scoring Lambda -> PostgreSQL

The template and zip `make package` builds for AWS, deployed with the same calls (`aws
cloudformation package`, a change set) to a LocalStack in host mode whose Lambda functions run as
local processes (infra/localstack_executor), against an embedded PostgreSQL. Both are its own
(names.DEPLOY_*), never make run's: a deployed event source mapping consumes the `moderation`
queue of its endpoint, so a `make run` there would lose every message. They keep running after
the command; `stop` stops them. The steps, timings and the Docker variant: docs/deploy.md.

    python -m infra.deploy_localstack [up] [--endpoint URL] [--pg-port N] [--stage dev] [--no-package]
    python -m infra.deploy_localstack stop [--endpoint URL] [--pg-port N]

Env: DEPLOY_LOCALSTACK_ENDPOINT, DEPLOY_PG_PORT (the defaults of --endpoint and --pg-port),
LOCAL_STATE_DIR (as for `make run`), DATABASE_URL (instead of the embedded server),
FUNCTION_DATABASE_URL (the database as the functions reach it, if another address).
With the embedded server the functions connect as names.APP_DB_ROLE, by password.
"""


from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import psycopg2
import urllib3
from botocore.exceptions import ClientError, WaiterError

from infra.package import DEFAULT_OUT, SECRET_PARAMETER, TEMPLATE_NAME, package
from infra.policies import function_name, secret_name
from toolkit import logs, names
from toolkit.localstack import DEFAULT_SERVICES, HostLocalStack, LocalStackError, endpoint_answers
from toolkit.postgres import EmbeddedPostgres, EmbeddedPostgresError
from toolkit.seed import seed_demo_data

log = logs.get("deploy-localstack")

LOCAL = names.state_dir()
LOCALSTACK_DATA = LOCAL / "localstack-deploy"
PG_DATA = LOCAL / "pg-deploy"
EXECUTOR = names.ROOT / "infra" / "localstack_executor"
EXECUTOR_STAMP = ".ad-moderation-executor.stamp"
AWS_CLI = Path(sys.executable).parent / "aws"
# The CLI's waiters poll every 30 s; a LocalStack deploy takes seconds.
WAIT = {"Delay": 2, "MaxAttempts": 300}


class DeployError(RuntimeError):
    pass


def client(endpoint: str, service: str) -> Any:
    creds = names.LOCAL_CREDENTIALS
    return boto3.client(service, endpoint_url=endpoint, region_name=names.REGION,
                        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"], aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"])


def ensure_executor_installed(stack: HostLocalStack) -> None:
    """Install LocalStack (if needed) and the executor plugin into its virtualenv.

    A stamp in the venv records the plugin's source hash, so an unchanged plugin costs nothing.
    pip installs from a copy: setuptools would leave build/ and *.egg-info in the source folder.
    """
    stack.ensure_installed()
    sources = sorted([EXECUTOR / "pyproject.toml", *EXECUTOR.glob("localstack_local_executor/*.py")])
    wanted = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sources)).hexdigest()
    stamp = stack.venv_dir / EXECUTOR_STAMP
    if stamp.exists() and stamp.read_text().strip() == wanted:
        return
    log.info("installing the LocalStack executor plugin (%s) into %s", EXECUTOR.name, stack.venv_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    with tempfile.TemporaryDirectory() as tmp:
        copy = shutil.copytree(EXECUTOR, Path(tmp) / EXECUTOR.name, ignore=shutil.ignore_patterns("build", "*.egg-info"))
        pip = [str(stack.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", str(copy)]
        result = subprocess.run(pip, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise DeployError(f"could not install the LocalStack executor plugin:\n{result.stdout}{result.stderr}")
    stamp.write_text(wanted + "\n")


def executor_env() -> dict[str, str]:
    """LocalStack settings that make it run Lambda functions as local processes."""
    return {
        "LAMBDA_RUNTIME_EXECUTOR": "local-process",
        # The functions' interpreter: this one, Python 3.11 like the Lambda runtime, with boto3
        # (which the runtime provides on AWS); everything else comes from the zip.
        "LOCALSTACK_LAMBDA_PYTHON": sys.executable,
        # The schedule of `reconcile` is an EventBridge rule; webhook secrets are sealed with KMS (issue 22).
        "SERVICES": DEFAULT_SERVICES + ",events,kms",
        # Environments idle longer than this are stopped (each holds a DB connection).
        "LAMBDA_KEEPALIVE_MS": "600000",
        # SQS on AWS long-polls, so a message reaches the function within about a second;
        # LocalStack's poller backs off up to 10 s on an empty queue instead.
        "LAMBDA_EVENT_SOURCE_MAPPING_MAX_BACKOFF_ON_EMPTY_POLL_SEC": "1",
    }


def start_localstack(endpoint: str) -> None:
    """Start LocalStack with the executor in the background, unless something answers there."""
    stack = HostLocalStack(data_dir=LOCALSTACK_DATA, endpoint=endpoint)
    if endpoint_answers(endpoint):
        if stack.running() is not None:
            log.info("reusing the LocalStack at %s started by an earlier deploy-localstack", endpoint)
        else:
            log.warning("reusing the LocalStack at %s, which this command did not start: it must be able to run "
                        "Lambda functions (Docker, or host mode with LAMBDA_RUNTIME_EXECUTOR=local-process)", endpoint)
        return
    ensure_executor_installed(stack)
    started = time.monotonic()
    # Detached: the deployed stack must outlive this command (deploy-localstack-stop ends it).
    stack.start(extra_env=executor_env(), detach=True)
    log.info("LocalStack ready at %s in %.1f s (log: %s)", endpoint, time.monotonic() - started, stack.log_file)


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


def ensure_secret(endpoint: str, name: str, database_url: str) -> str:
    """Create or update the secret holding the database URL; return its ARN."""
    sm = client(endpoint, "secretsmanager")
    try:
        arn = sm.describe_secret(SecretId=name)["ARN"]
        sm.put_secret_value(SecretId=arn, SecretString=database_url)
    except sm.exceptions.ResourceNotFoundException:
        arn = sm.create_secret(Name=name, SecretString=database_url)["ARN"]
    return str(arn)


def upload(endpoint: str, stack_name: str, template: Path, secret_arn: str) -> str:
    """`aws cloudformation package` (the zip to S3), then the packaged template to S3; its URL.

    By TemplateURL because CloudFormation refuses an inline template over 51,200 bytes (the
    packaged one, with its dashboard and alarms, is larger), as `aws cloudformation deploy
    --s3-bucket` does on AWS.
    """
    bucket = f"{names.APP_NAME}-artifacts-{secret_arn.split(':')[4]}"
    s3 = client(endpoint, "s3")
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        s3.create_bucket(Bucket=bucket)
    packaged = template.with_name("packaged.json")
    cmd = [str(AWS_CLI), "cloudformation", "package", "--template-file", str(template), "--s3-bucket", bucket,
           "--s3-prefix", stack_name, "--output-template-file", str(packaged), "--use-json"]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **names.local_aws_env(endpoint)}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise DeployError(f"`aws cloudformation package` failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    key = f"{stack_name}/packaged-{int(time.time())}.json"
    s3.put_object(Bucket=bucket, Key=key, Body=packaged.read_bytes())
    return f"{endpoint.rstrip('/')}/{bucket}/{key}"


def deploy_change_set(cfn: Any, stack_name: str, template_url: str, parameters: dict[str, str]) -> bool:
    """Create or update the stack through a change set; False if there was nothing to change.

    The calls of `aws cloudformation deploy --capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND
    --no-fail-on-empty-changeset`, with the same waiters polling every WAIT["Delay"] s.
    """
    try:
        status = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]["StackStatus"]
    except ClientError:
        status = None
    if status == "ROLLBACK_COMPLETE":  # a failed first create: CloudFormation wants a delete first
        cfn.delete_stack(StackName=stack_name)
        cfn.get_waiter("stack_delete_complete").wait(StackName=stack_name, WaiterConfig=WAIT)
        status = None
    kind = "CREATE" if status in (None, "REVIEW_IN_PROGRESS") else "UPDATE"
    change_set = cfn.create_change_set(
        StackName=stack_name,
        ChangeSetName=f"deploy-{int(time.time() * 1000)}",
        ChangeSetType=kind,
        TemplateURL=template_url,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
    )["Id"]
    try:
        cfn.get_waiter("change_set_create_complete").wait(ChangeSetName=change_set, WaiterConfig=WAIT)
    except WaiterError as err:
        reason = str(err.last_response.get("StatusReason", err))
        if "didn't contain changes" in reason or "No updates" in reason:
            cfn.delete_change_set(ChangeSetName=change_set)
            return False
        raise DeployError(f"change set failed: {reason}") from None
    cfn.execute_change_set(ChangeSetName=change_set)
    cfn.get_waiter(f"stack_{kind.lower()}_complete").wait(StackName=stack_name, WaiterConfig=WAIT)
    return True


def failed_events(cfn: Any, stack_name: str) -> str:
    try:
        events = cfn.describe_stack_events(StackName=stack_name)["StackEvents"]
    except ClientError as err:
        return str(err)
    failed = [f"  {e['LogicalResourceId']} ({e['ResourceType']}): {e['ResourceStatus']} {e.get('ResourceStatusReason', '')}"
              for e in events if "FAILED" in e["ResourceStatus"]]
    return "\n".join(reversed(failed[:15])) or "(no failed events)"


# The one difference between the stack deployed to LocalStack and the template for AWS: its webhook
# receivers are on this machine, over http (the tests', `make bench`'s), so registering and sending
# to them is allowed here (docs/webhooks.md#safe-to-run-on-the-internet); the AWS template refuses both.
LOCAL_WEBHOOK_ENV = {"WEBHOOK_ALLOW_HTTP": "1", "WEBHOOK_ALLOW_PRIVATE": "1"}


def local_receivers(template: Path) -> Path:
    """A copy of the packaged template whose functions allow webhook receivers on this machine."""
    body = json.loads(template.read_text())
    for res in body["Resources"].values():
        if res.get("Type") == "AWS::Serverless::Function":
            res["Properties"].setdefault("Environment", {}).setdefault("Variables", {}).update(LOCAL_WEBHOOK_ENV)
    local = template.with_name("sam-localstack.json")
    local.write_text(json.dumps(body))
    return local


def deploy(*, endpoint: str, database_url: str, stage: str = "dev", package_dir: Path = DEFAULT_OUT,
           build: bool = True) -> Deployment:
    """Package (unless build=False), then deploy the stack to the endpoint; return its coordinates."""
    stack_name = f"{names.APP_NAME}-{stage}"
    timings: dict[str, float] = {}
    started = time.monotonic()
    if build:
        info = package(stage, package_dir)
        log.info("packaged in %.1f s: deployment.zip %.1f MB", info["seconds"], info["zip_bytes"] / 1e6)
        timings["package"] = info["seconds"]
    template = package_dir / TEMPLATE_NAME
    if not template.exists():
        raise DeployError(f"{template} does not exist: run `make package` first")

    t = time.monotonic()
    secret_arn = ensure_secret(endpoint, secret_name(stage), database_url)
    template_url = upload(endpoint, stack_name, local_receivers(template), secret_arn)
    timings["upload"] = time.monotonic() - t

    t = time.monotonic()
    log.info("deploying stack %s (a change set, as `aws cloudformation deploy` makes)", stack_name)
    cfn = client(endpoint, "cloudformation")
    try:
        deploy_change_set(cfn, stack_name, template_url, {SECRET_PARAMETER: secret_arn})
    except (DeployError, WaiterError, ClientError) as err:
        raise DeployError(f"{err}\nFailed resources:\n{failed_events(cfn, stack_name)}") from None
    timings["deploy"] = time.monotonic() - t

    outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=stack_name)["Stacks"][0]["Outputs"]}
    # LocalStack Community has no provider for Lambda-backed custom resources: it marks
    # DatabaseMigrations done without calling `migrate`. So call it as CloudFormation would on
    # AWS (applying the migrations again is a no-op), with the resource's properties that matter:
    # the stack's own key, registered as a client (docs/clients.md).
    event = {"ResourceProperties": {"StackClientKeyId": outputs["ApiKeyId"]}}
    result = client(endpoint, "lambda").invoke(FunctionName=function_name(stage, "migrate"),
                                               Payload=json.dumps(event).encode())
    if result.get("FunctionError"):
        raise DeployError(f"migrate failed: {result['Payload'].read().decode(errors='replace')[:2000]}")

    api_url = f"{endpoint.rstrip('/')}/restapis/{outputs['RestAPIId']}/api/_user_request_"
    key = client(endpoint, "apigateway").get_api_key(apiKey=outputs["ApiKeyId"], includeValue=True)["value"]
    restore_model_registry(endpoint, stack_name, outputs.get("ModelBucketName"))
    timings["total"] = time.monotonic() - started
    return Deployment(stack_name, stage, endpoint, api_url, str(key), secret_arn, outputs, timings)


def restore_model_registry(endpoint: str, stack_name: str, bucket: str | None) -> None:
    """The stack's model registry as the state directory kept it (make model-* with
    STACK= keeps the copy): LocalStack forgets its buckets on a restart, and the
    bucket's name is new with each deploy."""
    from toolkit.registry import Registry

    if bucket:
        restored = Registry(client(endpoint, "s3"), bucket, names.model_registry_mirror(stack_name)).restore()
        if restored:
            log.info("model registry: %d object(s) restored into s3://%s from the state directory", restored, bucket)


def app_database_url(pg: EmbeddedPostgres, *, keep: str | None = None) -> str:
    """The URL the functions connect with: the app's login role (names.APP_DB_ROLE), which must give
    its password, so a rotation is real (docs/operations/secret-rotation.md). `keep`: the URL the
    secret holds now; its password is kept if it is the role's and still logs in (a redeploy then
    changes nothing for warm functions), else the role gets a new random one."""
    password = secrets.token_urlsafe(24)
    if keep:
        parts = urlsplit(keep)
        if parts.username == names.APP_DB_ROLE and parts.password and parts.port == pg.port:
            try:
                psycopg2.connect(keep, connect_timeout=5).close()
                password = unquote(parts.password)
            except psycopg2.OperationalError:
                pass
    return pg.ensure_login_role(names.APP_DB_ROLE, password)


def secret_value(endpoint: str, name: str) -> str | None:
    try:
        return str(client(endpoint, "secretsmanager").get_secret_value(SecretId=name)["SecretString"])
    except ClientError:
        return None


def up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    database_url = os.environ.get("DATABASE_URL", "")
    pg = None
    if database_url:
        log.info("PostgreSQL: using DATABASE_URL (the functions connect as its user)")
    else:
        pg = EmbeddedPostgres(PG_DATA, port=args.pg_port)
        database_url = pg.start()
        log.info("PostgreSQL ready: %s (data %s; the functions connect to it over TCP)", database_url, PG_DATA)
    start_localstack(args.endpoint)
    function_url = os.environ.get("FUNCTION_DATABASE_URL") or database_url
    if pg is not None and not os.environ.get("FUNCTION_DATABASE_URL"):
        function_url = app_database_url(pg, keep=secret_value(args.endpoint, secret_name(args.stage)))
        log.info("the functions connect as %s (password in the secret %s)", names.APP_DB_ROLE, secret_name(args.stage))
    d = deploy(endpoint=args.endpoint, database_url=function_url, stage=args.stage, build=not args.no_package,
               package_dir=args.package_dir)
    seeded = seed_demo_data(database_url)
    if seeded:
        log.info("seeded %d demo ads (item_id 1..%d)", seeded, seeded)
    t = time.monotonic()
    health = urllib3.request("GET", f"{d.api_url}/health", timeout=30)
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in d.timings.items())
    log.info("deployed in %.1f s overall (%s)", time.monotonic() - started, timings)
    log.info("GET /health -> %d in %.2f s (with a cold start if no API environment was warm): %s",
             health.status, time.monotonic() - t, health.data.decode(errors="replace"))
    # The command's output: what a user copies.
    # The AWS CLI this project installs is v1: `aws logs tail` (v2 only) does not exist there.
    env = " ".join(f"{k}={v}" for k, v in names.local_aws_env(d.endpoint).items())
    print(f"""
  API URL   {d.api_url}
  API key   {d.api_key}   (the stack's own; one per client: make api-key ARGS="create <client>")
  stack     {d.stack_name} on {d.endpoint}

  curl -s -X POST -H "x-api-key: {d.api_key}" "{d.api_url}/moderation/async_predict?item_id=1"
  curl -s -H "x-api-key: {d.api_key}" "{d.api_url}/moderation/moderation_result/1"

  export {env}
  aws cloudformation describe-stacks --stack-name {d.stack_name}
  aws logs filter-log-events --log-group-name /aws/lambda/{d.function_name('score')} --max-items 20
  stop:  {stop_command(args)}
""", flush=True)
    return 0 if health.status == 200 else 1


def stop_command(args: argparse.Namespace) -> str:
    """`make deploy-localstack-stop`, with what makes it look at the same endpoint, port and state."""
    prefix = "" if args.endpoint == names.DEPLOY_ENDPOINT else f"DEPLOY_LOCALSTACK_ENDPOINT={args.endpoint} "
    prefix += "" if args.pg_port == names.DEPLOY_PG_PORT else f"DEPLOY_PG_PORT={args.pg_port} "
    prefix += f"LOCAL_STATE_DIR={LOCAL} " if "LOCAL_STATE_DIR" in os.environ else ""
    return f"{prefix}make deploy-localstack-stop"


def stop(args: argparse.Namespace) -> int:
    # Only a LocalStack this command started (its pid file), never one that merely answers there.
    HostLocalStack(data_dir=LOCALSTACK_DATA, endpoint=args.endpoint).stop()
    log.info("LocalStack at %s stopped (if deploy-localstack had started it)", args.endpoint)
    EmbeddedPostgres(PG_DATA, port=args.pg_port).stop()
    log.info("PostgreSQL stopped")
    return 0


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m infra.deploy_localstack", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", choices=("up", "stop"), default="up")
    parser.add_argument("--endpoint", default=os.environ.get("DEPLOY_LOCALSTACK_ENDPOINT", names.DEPLOY_ENDPOINT),
                        help="LocalStack of the deployment (env DEPLOY_LOCALSTACK_ENDPOINT; never make run's)")
    parser.add_argument("--pg-port", type=int, default=int(os.environ.get("DEPLOY_PG_PORT", names.DEPLOY_PG_PORT)),
                        help="port of its embedded PostgreSQL (env DEPLOY_PG_PORT)")
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--no-package", action="store_true", help="deploy the package directory as it is")
    parser.add_argument("--package-dir", type=Path, default=DEFAULT_OUT, help="where to build/find the package")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logs.setup()
    args = arguments(argv)
    try:
        return stop(args) if args.command == "stop" else up(args)
    except (DeployError, LocalStackError, EmbeddedPostgresError) as err:
        log.error("%s", err)
        return 1


if __name__ == "__main__":
    sys.exit(main())

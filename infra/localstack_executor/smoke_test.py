"""Smoke test for the local-process Lambda executor against a running LocalStack.

    /work/main/.venv/bin/python infra/localstack_executor/smoke_test.py [--endpoint http://127.0.0.1:4567]

Checks: create-function -> Active, invoke returns the handler's JSON (+ env vars, context), an
erroring handler gives FunctionError, a timeout is enforced and the environment recovers, and an
SQS event source mapping with ReportBatchItemFailures deletes good messages while the bad one ends
in the DLQ (maxReceiveCount 2). Prints cold-start and warm-invoke latencies. Exits non-zero on failure.
"""

import argparse
import io
import json
import statistics
import sys
import time
import uuid
import zipfile

import boto3
from botocore.config import Config

HANDLERS = {
    "ok.py": '''
import json, os, sys
import helper

def handler(event, context):
    print("hello from ok handler", json.dumps(event))
    print("to stderr", file=sys.stderr)
    return {
        "echo": event,
        "greeting": os.environ.get("GREETING"),
        "function_name": context.function_name,
        "request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "arn": context.invoked_function_arn,
        "memory": context.memory_limit_in_mb,
        "log_group": context.log_group_name,
        "region": os.environ.get("AWS_REGION"),
        "endpoint": os.environ.get("AWS_ENDPOINT_URL"),
        "handler_env": os.environ.get("_HANDLER"),
        "task_root": os.environ.get("LAMBDA_TASK_ROOT"),
        "cwd": os.getcwd(),
        "python": "%d.%d" % sys.version_info[:2],
        "helper": helper.VALUE,
    }
''',
    "helper.py": "VALUE = 'imported-from-task-root'\n",
    "boom.py": '''
def handler(event, context):
    raise ValueError("boom: " + str(event.get("why")))
''',
    "slow.py": '''
import time
def handler(event, context):
    print("sleeping", event.get("sleep"))
    time.sleep(event.get("sleep", 0))
    return {"slept": event.get("sleep", 0)}
''',
    "batch.py": '''
def handler(event, context):
    failures = []
    for record in event.get("Records", []):
        print("record", record["messageId"], record["body"])
        if record["body"] == "bad":
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
''',
}

ROLE_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}

FAILURES = []


def check(cond, what):
    print(("  PASS " if cond else "  FAIL ") + what)
    if not cond:
        FAILURES.append(what)


def zip_code():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, src in HANDLERS.items():
            zf.writestr(name, src)
    return buf.getvalue()


def wait_active(lam, name, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        cfg = lam.get_function_configuration(FunctionName=name)
        if cfg["State"] != "Pending":
            return cfg
        time.sleep(0.1)
    raise RuntimeError(f"{name} still Pending after {timeout}s")


def invoke(lam, name, event):
    start = time.perf_counter()
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode(), LogType="Tail")
    elapsed = (time.perf_counter() - start) * 1000
    body = resp["Payload"].read()
    return resp, json.loads(body) if body else None, elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", default="http://127.0.0.1:4567")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--runtime", default="python3.11")
    args = parser.parse_args()

    session = boto3.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name=args.region
    )
    cfg = Config(retries={"max_attempts": 1}, read_timeout=120)
    iam = session.client("iam", endpoint_url=args.endpoint, config=cfg)
    lam = session.client("lambda", endpoint_url=args.endpoint, config=cfg)
    sqs = session.client("sqs", endpoint_url=args.endpoint, config=cfg)
    suffix = uuid.uuid4().hex[:8]
    created = []

    role_arn = iam.create_role(
        RoleName=f"smoke-role-{suffix}", AssumeRolePolicyDocument=json.dumps(ROLE_POLICY)
    )["Role"]["Arn"]
    code = zip_code()

    def create(name, handler, timeout=10, env=None):
        kwargs = dict(
            FunctionName=name,
            Runtime=args.runtime,
            Role=role_arn,
            Handler=handler,
            Code={"ZipFile": code},
            Timeout=timeout,
            MemorySize=256,
        )
        if env:
            kwargs["Environment"] = {"Variables": env}
        lam.create_function(**kwargs)
        created.append(name)

    try:
        print("1) create-function + invoke")
        name = f"smoke-ok-{suffix}"
        t0 = time.perf_counter()
        create(name, "ok.handler", env={"GREETING": "hi there"})
        conf = wait_active(lam, name)
        t_active = (time.perf_counter() - t0) * 1000
        check(conf["State"] == "Active", f"state Active (got {conf['State']} {conf.get('StateReason', '')})")
        resp, body, first_ms = invoke(lam, name, {"n": 1})
        cold_ms = (time.perf_counter() - t0) * 1000
        print("  response:", json.dumps(body))
        check("FunctionError" not in resp, "no FunctionError")
        check(body and body.get("echo") == {"n": 1}, "event echoed")
        check(body and body.get("greeting") == "hi there", "function env var honoured")
        check(body and body.get("function_name") == name, "context.function_name")
        check(body and 0 < body.get("remaining_ms", 0) <= 10000, "context.get_remaining_time_in_millis")
        check(body and body.get("handler_env") == "ok.handler", "_HANDLER set")
        check(body and body.get("helper") == "imported-from-task-root", "code dir on sys.path")
        check(body and body.get("endpoint", "").startswith("http://"), "AWS_ENDPOINT_URL set")
        check(body and body.get("python") == args.runtime[len("python"):], "runtime's Python used")
        logs = __import__("base64").b64decode(resp.get("LogResult", "")).decode()
        check("hello from ok handler" in logs and "to stderr" in logs, "stdout/stderr in LogResult")
        check("REPORT RequestId" in logs, "REPORT line in logs")
        warm = []
        for i in range(20):
            _, b, ms = invoke(lam, name, {"n": i})
            warm.append(ms)
        print(
            f"  create->Active {t_active:.0f} ms; cold start create->first response {cold_ms:.0f} ms "
            f"(first invoke call {first_ms:.0f} ms); warm invoke median "
            f"{statistics.median(warm):.1f} ms, min {min(warm):.1f}, max {max(warm):.1f} (n=20)"
        )

        # the first function also pays for LocalStack lazily loading its lambda/iam/sts providers:
        # measure a second one for the cold start of a warm LocalStack
        name2 = f"smoke-ok2-{suffix}"
        t0 = time.perf_counter()
        create(name2, "ok.handler")
        wait_active(lam, name2)
        t_active2 = (time.perf_counter() - t0) * 1000
        resp, body, first_ms2 = invoke(lam, name2, {"n": 2})
        cold_ms2 = (time.perf_counter() - t0) * 1000
        check("FunctionError" not in resp, "second function invokes")
        print(
            f"  second function (LocalStack warm): create->Active {t_active2:.0f} ms; "
            f"create->first response {cold_ms2:.0f} ms (first invoke call {first_ms2:.0f} ms)"
        )

        print("2) erroring handler")
        name = f"smoke-boom-{suffix}"
        create(name, "boom.handler")
        wait_active(lam, name)
        resp, body, _ = invoke(lam, name, {"why": "testing"})
        print("  response:", json.dumps(body)[:300])
        check(resp.get("FunctionError") == "Unhandled", "FunctionError Unhandled")
        check(body.get("errorType") == "ValueError", "errorType ValueError")
        check(body.get("errorMessage") == "boom: testing", "errorMessage")
        check(bool(body.get("stackTrace")), "stackTrace present")

        print("3) bad handler name -> init error")
        name = f"smoke-badmod-{suffix}"
        create(name, "nosuchmodule.handler")
        wait_active(lam, name)
        resp, body, _ = invoke(lam, name, {})
        print("  response:", json.dumps(body)[:300])
        check(resp.get("FunctionError") == "Unhandled", "FunctionError on import error")
        check(body.get("errorType") == "Runtime.ImportModuleError", "Runtime.ImportModuleError")

        print("4) timeout enforced and environment recovers")
        name = f"smoke-slow-{suffix}"
        create(name, "slow.handler", timeout=2)
        wait_active(lam, name)
        resp, body, ms = invoke(lam, name, {"sleep": 30})
        print(f"  response after {ms:.0f} ms:", json.dumps(body)[:300])
        check(resp.get("FunctionError") == "Unhandled", "FunctionError on timeout")
        check("Task timed out after 2.00 seconds" in (body or {}).get("errorMessage", ""), "timeout message")
        check(1900 <= ms < 6000, "returned near the 2 s timeout")
        resp, body, ms = invoke(lam, name, {"sleep": 0})
        check("FunctionError" not in resp and body == {"slept": 0}, f"next invoke works ({ms:.0f} ms, re-init)")

        print("5) SQS event source mapping with ReportBatchItemFailures + DLQ")
        name = f"smoke-batch-{suffix}"
        create(name, "batch.handler")
        wait_active(lam, name)
        dlq_url = sqs.create_queue(QueueName=f"smoke-dlq-{suffix}")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        q_url = sqs.create_queue(
            QueueName=f"smoke-q-{suffix}",
            Attributes={
                "VisibilityTimeout": "5",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}),
            },
        )["QueueUrl"]
        q_arn = sqs.get_queue_attributes(QueueUrl=q_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        esm = lam.create_event_source_mapping(
            EventSourceArn=q_arn,
            FunctionName=name,
            BatchSize=10,
            MaximumBatchingWindowInSeconds=1,
            FunctionResponseTypes=["ReportBatchItemFailures"],
        )
        esm_uuid = esm["UUID"]
        deadline = time.time() + 30
        while time.time() < deadline:
            if lam.get_event_source_mapping(UUID=esm_uuid)["State"] == "Enabled":
                break
            time.sleep(0.5)
        for body_ in ("good-1", "bad", "good-2"):
            sqs.send_message(QueueUrl=q_url, MessageBody=body_)
        t_sent = time.time()
        dlq_bodies, main_left = [], None
        deadline = time.time() + 60
        while time.time() < deadline:
            msgs = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            dlq_bodies += [m["Body"] for m in msgs]
            if dlq_bodies:
                break
        t_dlq = time.time() - t_sent
        attrs = sqs.get_queue_attributes(
            QueueUrl=q_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        main_left = int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
        print(f"  DLQ bodies after {t_dlq:.1f} s: {dlq_bodies}; messages left in source queue: {main_left}")
        check(dlq_bodies == ["bad"], "only the bad message reached the DLQ")
        check(main_left == 0, "good messages deleted from the source queue")
        lam.delete_event_source_mapping(UUID=esm_uuid)
        for url in (q_url, dlq_url):
            sqs.delete_queue(QueueUrl=url)
    finally:
        for name in created:
            try:
                lam.delete_function(FunctionName=name)
            except Exception as e:  # pragma: no cover
                print("cleanup:", e)
        try:
            iam.delete_role(RoleName=f"smoke-role-{suffix}")
        except Exception:
            pass

    print(f"{len(FAILURES)} failed" if FAILURES else "all checks passed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())

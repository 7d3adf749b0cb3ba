"""End to end on the deployed topology: the packaged template and zip,
deployed to a real LocalStack (host mode, no Docker) the way `make
deploy-localstack` does it (tests/e2e/deployed_stack.py), with the functions
running as local processes against an embedded PostgreSQL:

    API Gateway -> API Lambda -> SQS -> event source mapping -> scoring Lambda -> PostgreSQL
"""

from __future__ import annotations

import io
import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import psycopg2
import pytest
import urllib3

from tests.e2e.deployed_stack import FIXTURE_TIMINGS, Deployed, cold_starts, poll_result
from toolkit import names

pytestmark = pytest.mark.e2e
# The stack is the session's `deployed` (tests/conftest.py), shared with the contract fuzz.
TIMINGS: dict[str, Any] = FIXTURE_TIMINGS


def test_the_stack_is_the_packaged_topology(deployed: Deployed):
    lam = deployed.client("lambda")
    score = deployed.d.function_name("score")
    (esm,) = lam.list_event_source_mappings(FunctionName=score)["EventSourceMappings"]
    assert esm["EventSourceArn"].endswith(":moderation")
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert esm["BatchSize"] == 10 and esm["MaximumBatchingWindowInSeconds"] == 1
    assert esm.get("ScalingConfig", {}).get("MaximumConcurrency") == 5
    config = lam.get_function(FunctionName=score)["Configuration"]
    assert config["Timeout"] == 30 and config["MemorySize"] == 512
    env = config["Environment"]["Variables"]
    # The function gets the secret's ARN, never the URL itself.
    assert env["DATABASE_SECRET_ARN"] == deployed.d.secret_arn
    assert "DATABASE_URL" not in env and deployed.database_url not in json.dumps(env)
    # ReservedConcurrentExecutions is in the template (infra/check.py counts it)
    # but LocalStack 2026.3's CloudFormation provider does not apply it.
    # The migrations ran during the deploy (the `migrate` function; LocalStack Community skips
    # the custom resource that calls it on AWS).
    applied = {r[0] for r in deployed.sql("SELECT migration_id FROM _yoyo_migration")}
    assert applied == {p.stem for p in names.MIGRATIONS_DIR.glob("*.sql")}
    groups = deployed.client("logs").describe_log_groups(logGroupNamePrefix="/aws/lambda/ad-moderation-dev")["logGroups"]
    # RetentionInDays (30) is in the template; LocalStack 2026.3 creates the groups without it.
    assert {g["logGroupName"] for g in groups} == {f"/aws/lambda/{deployed.d.function_name(f)}" for f in names.functions()}
    alarms = deployed.client("cloudwatch").describe_alarms()["MetricAlarms"]
    assert {"ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage"} <= {a["MetricName"] for a in alarms}
    # Errors and Throttles of every function (infra/resources.json).
    lambda_alarms = {(a["MetricName"], d["Value"]) for a in alarms for d in a.get("Dimensions", [])
                     if d["Name"] == "FunctionName"}
    assert {(m, deployed.d.function_name(f)) for f in names.functions() for m in ("Errors", "Throttles")} <= lambda_alarms


def test_submit_with_the_api_key_and_poll_until_completed(deployed: Deployed):
    started = time.monotonic()
    status, body = deployed.post("/moderation/async_predict?item_id=1", api_key=deployed.d.api_key)
    TIMINGS["first_submit_s"] = time.monotonic() - started
    assert status == 202, body
    assert body["status"] == "pending" and body["message"] == "Moderation request accepted"
    result = poll_result(deployed, body["task_id"])
    TIMINGS["submit_to_completed_s"] = time.monotonic() - started
    assert result["status"] == "completed", result
    assert result["model_version"].startswith("lr-") and 0 <= result["probability"] <= 1
    status, health = deployed.get("/health")
    assert status == 200 and health["checks"]["database"]["ok"] and health["checks"]["queue"]["ok"]


def test_write_routes_need_the_api_key(deployed: Deployed):
    for path in ("/moderation/async_predict?item_id=1", "/async_predict?item_id=1", "/moderation/simple_predict?item_id=1"):
        assert deployed.post(path)[0] == 403, path
        assert deployed.post(path, api_key="not-the-key")[0] == 403, path
    assert deployed.post("/moderation/simple_predict?item_id=2", api_key=deployed.d.api_key)[0] == 200
    # A read of an unknown task: 404 (Deployed.get sends the key, which reads may require too).
    assert deployed.get("/moderation/moderation_result/99999999")[0] == 404


def api_key_command(deployed: Deployed, *args: str) -> subprocess.CompletedProcess[str]:
    """`make api-key ARGS="..."` against this stack: ops.api_keys with the stack's endpoint in AWS_ENDPOINT_URL."""
    env = {**os.environ, **names.local_aws_env(deployed.endpoint)}
    return subprocess.run([sys.executable, "-m", "ops.api_keys", "--local", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_each_client_has_its_own_key_and_revoking_one_leaves_the_others_working(deployed: Deployed):
    created = {}
    for client, limits in (("alice", ()), ("bob", ("--rate", "5", "--burst", "10", "--quota", "1000"))):
        result = api_key_command(deployed, "create", client, *limits, "--json")
        assert result.returncode == 0, result.stderr
        created[client] = json.loads(result.stdout)
    assert created["alice"]["plan"] == "ad-moderation-dev-client"  # the stack's plan: its limits apply per key
    assert created["bob"]["plan"] == "ad-moderation-dev-client-bob"  # other limits: a plan of its own
    assert created["bob"]["limits"] == "5 req/s, burst 10, 1000 a DAY"
    listed = {row["client"]: row for row in map(json.loads, api_key_command(deployed, "list", "--json").stdout.splitlines())}
    assert set(listed) == {"client", "alice", "bob"} and listed["client"]["managed_by_stack"]
    assert listed["bob"]["plan"] == "ad-moderation-dev-client-bob"

    keys = {"alice": created["alice"]["key"], "bob": created["bob"]["key"], "stack": deployed.d.api_key}
    for who, key in keys.items():
        status, body = deployed.post("/moderation/async_predict?item_id=1", api_key=key)
        assert status == 202, (who, body)
        assert deployed.get(f"/moderation/moderation_result/{body['task_id']}", api_key=key)[0] == 200, who

    revoked = api_key_command(deployed, "revoke", "alice", "--yes")
    assert revoked.returncode == 0 and "revoked: client alice" in revoked.stdout, revoked.stderr
    assert deployed.post("/moderation/async_predict?item_id=1", api_key=keys["alice"])[0] == 403
    assert deployed.get("/moderation/moderation_result/1", api_key=keys["alice"])[0] == 403
    for who in ("bob", "stack"):
        status, body = deployed.post("/moderation/async_predict?item_id=2", api_key=keys[who])
        assert status == 202, who
        assert deployed.get(f"/moderation/moderation_result/{body['task_id']}", api_key=keys[who])[0] == 200, who

    # Revoking bob takes its own plan with it; the stack's own key is the stack's to remove.
    assert api_key_command(deployed, "revoke", "bob", "--yes").returncode == 0
    plans = {p["name"] for p in deployed.client("apigateway").get_usage_plans()["items"]}
    assert "ad-moderation-dev-client-bob" not in plans and "ad-moderation-dev-client" in plans
    refused = api_key_command(deployed, "revoke", "client", "--yes")
    assert refused.returncode == 1 and "the stack's own key" in refused.stderr
    assert api_key_command(deployed, "revoke", "alice").returncode == 2  # no terminal, no --yes: usage error
    assert api_key_command(deployed, "create", "Not A Name").returncode == 2


def test_what_localstack_enforces_of_api_keys(deployed: Deployed):
    """LocalStack 2026.3 Community checks that the key belongs to a usage plan of the stage and is enabled
    (what docs/deploy.md says was verified here); it does not throttle or count quotas (its own source says so)."""
    apigw = deployed.client("apigateway")
    key = json.loads(api_key_command(deployed, "create", "carol", "--json").stdout)
    try:
        assert deployed.get("/moderation/tasks", api_key=key["key"])[0] == 200
        apigw.update_api_key(apiKey=key["key_id"], patchOperations=[{"op": "replace", "path": "/enabled", "value": "false"}])
        assert deployed.get("/moderation/tasks", api_key=key["key"])[0] == 403
    finally:
        api_key_command(deployed, "revoke", "carol", "--yes")


def test_the_stage_writes_json_access_logs_to_its_own_log_group(deployed: Deployed):
    """The setting, as deployed (LocalStack stores it but writes no access log lines: AWS does)."""
    stage = deployed.client("apigateway").get_stage(restApiId=deployed.d.outputs["RestAPIId"], stageName="api")
    settings = stage["accessLogSettings"]
    group = deployed.d.outputs["ApiAccessLogGroupName"]
    # The log group's Arn attribute, ending in ":*" as CloudFormation gives it (API Gateway takes either form).
    assert group == "/aws/apigateway/ad-moderation-dev/access"
    assert settings["destinationArn"].removesuffix(":*").endswith(f":log-group:{group}")
    assert "$context.identity.apiKeyId" in settings["format"] and "$context.status" in settings["format"]
    groups = deployed.client("logs").describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    assert [g["logGroupName"] for g in groups] == [group]


SCHEDULED_EVENT = {"version": "0", "id": "e2e", "detail-type": "Scheduled Event", "source": "aws.events",
                   "account": "000000000000", "time": "2026-11-23T12:00:00Z", "region": "us-east-1",
                   "resources": ["arn:aws:events:us-east-1:000000000000:rule/e2e"], "detail": {}}


@pytest.mark.parametrize(("function", "event"), [("reconcile", SCHEDULED_EVENT), ("migrate", {})])
def test_a_function_without_its_database_fails_naming_what_is_missing(deployed: Deployed, function: str,
                                                                       event: dict[str, Any]):
    """reconcile (like the API and the scorer) fails its init; migrate fails in its handler, which
    always answers CloudFormation's custom resource (a failed init would answer nothing)."""
    lam = deployed.client("lambda")
    name = deployed.d.function_name(function)
    env = lam.get_function_configuration(FunctionName=name)["Environment"]["Variables"]

    def configure(variables: dict[str, str]) -> None:
        lam.update_function_configuration(FunctionName=name, Environment={"Variables": variables})
        lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1})

    configure({k: v for k, v in env.items() if k != "DATABASE_SECRET_ARN"})
    try:
        out = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode())
        body = out["Payload"].read().decode()
        assert out.get("FunctionError"), body
        assert "ConfigurationError" in body and "DATABASE_URL" in body and "DATABASE_SECRET_ARN" in body, body
    finally:
        configure(env)
    assert "FunctionError" not in lam.invoke(FunctionName=name, Payload=json.dumps(event).encode())


def test_poison_and_busy_messages_in_one_batch_through_the_real_mapping(deployed: Deployed):
    """LocalStack's own event source mapping, with partial batch responses.

    One batch: a good task, a poison message and a task whose row another
    transaction holds. The good one completes, the poison one is parked in
    the DLQ as an envelope, and the busy one is reported in batchItemFailures:
    it stays in the queue (deleted only if ReportBatchItemFailures were off)
    and completes on its second delivery once the lock is gone.
    """
    sqs = deployed.client("sqs")
    queue_url, dlq_url = deployed.d.outputs["ModerationQueueUrl"], deployed.d.outputs["ModerationDLQUrl"]
    good, busy = (r[0] for r in deployed.sql(
        "INSERT INTO moderation_results (item_id, client_id) VALUES (2, 'e2e'), (3, 'e2e') RETURNING id"))
    locker = psycopg2.connect(deployed.database_url)
    try:
        with locker.cursor() as cur:
            cur.execute("SELECT id FROM moderation_results WHERE id = %s FOR UPDATE", (busy,))
        sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": "good", "MessageBody": json.dumps({"task_id": good, "item_id": 2, "timestamp": "2026-11-23T12:00:00Z"})},
                {"Id": "poison", "MessageBody": "not json"},
                {"Id": "busy", "MessageBody": json.dumps({"task_id": busy, "item_id": 3, "timestamp": "2026-11-23T12:00:00Z"})},
            ],
        )
        assert poll_result(deployed, good)["status"] == "completed"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            messages = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0).get("Messages", [])
            if messages:
                break
            time.sleep(0.3)
        envelopes = [json.loads(m["Body"]) for m in messages]
        assert [e["original_message"] for e in envelopes] == ["not json"]
        assert envelopes[0]["error"].startswith("malformed message body") and envelopes[0]["error_kind"] == "permanent"
        # The busy one was handed back (backoff), not deleted with the others, and not yet done. Its
        # first delivery is waited for (its `attempt` row in the trail): the mapping may hand it over in
        # a batch of its own, after the others, and it must meet the lock, not a released row.
        deadline = time.monotonic() + 20
        while True:
            attrs = sqs.get_queue_attributes(
                QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
            )["Attributes"]
            in_queue = int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
            tried = deployed.sql("SELECT count(*) FROM task_events WHERE task_id = %s AND kind = 'attempt'", (busy,))[0][0]
            if (in_queue == 1 and tried) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert in_queue == 1 and tried, (attrs, tried)
        assert deployed.sql("SELECT status FROM moderation_results WHERE id = %s", (busy,)) == [("pending",)]
    finally:
        locker.close()  # releases the row lock
    result = poll_result(deployed, busy, timeout=45)
    assert result["status"] == "completed" and result["attempts"] >= 2, result


def test_enable_partial_batch_restores_what_chalice_deploy_leaves_out(deployed: Deployed):
    """`make enable-partial-batch`, on a mapping reset to what `chalice deploy` creates."""
    from infra.enable_partial_batch import enable

    lam, logs = deployed.client("lambda"), deployed.client("logs")
    score = deployed.d.function_name("score")
    (esm,) = lam.list_event_source_mappings(FunctionName=score)["EventSourceMappings"]
    lam.update_event_source_mapping(UUID=esm["UUID"], FunctionResponseTypes=[], MaximumBatchingWindowInSeconds=0)
    assert not lam.get_event_source_mapping(UUID=esm["UUID"]).get("FunctionResponseTypes")
    done = enable("dev", lam, logs)
    assert done[0].startswith(esm["UUID"])
    after = lam.get_event_source_mapping(UUID=esm["UUID"])
    assert after["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert after["MaximumBatchingWindowInSeconds"] == 1 and after["ScalingConfig"]["MaximumConcurrency"] == 5
    groups = logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/ad-moderation-dev")["logGroups"]
    assert {g.get("retentionInDays") for g in groups} == {30}


FUNCTIONS_PY = """
import time

def boom(event, context):
    raise ValueError("boom: " + str(event.get("why")))

def slow(event, context):
    time.sleep(event.get("sleep", 0))
    return {"slept": event.get("sleep", 0), "remaining_ms": context.get_remaining_time_in_millis()}
"""


def test_the_local_executor_fails_and_times_out_as_lambda_does(deployed: Deployed):
    """What an SQS-triggered function relies on beyond the happy path (infra/localstack_executor):
    an exception or an import error is a FunctionError with AWS's error document, a hung handler
    is stopped at its timeout, and the next invocation gets a fresh environment."""
    lam = deployed.client("lambda")
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    role = deployed.client("iam").create_role(RoleName="executor-test", AssumeRolePolicyDocument=json.dumps(trust))
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as zf:
        zf.writestr("fns.py", FUNCTIONS_PY)

    for name, handler, timeout in (("boom", "fns.boom", 10), ("missing", "nosuchmodule.handler", 10), ("slow", "fns.slow", 2)):
        lam.create_function(FunctionName=f"executor-{name}", Runtime="python3.11", Role=role["Role"]["Arn"],
                            Handler=handler, Code={"ZipFile": code.getvalue()}, Timeout=timeout)
        lam.get_waiter("function_active_v2").wait(FunctionName=f"executor-{name}", WaiterConfig={"Delay": 1})

    def invoke(name: str, event: dict[str, Any]) -> tuple[str | None, dict[str, Any], float]:
        started = time.monotonic()
        out = lam.invoke(FunctionName=f"executor-{name}", Payload=json.dumps(event).encode())
        return out.get("FunctionError"), json.loads(out["Payload"].read()), time.monotonic() - started

    error, body, _ = invoke("boom", {"why": "testing"})
    assert (error, body["errorType"], body["errorMessage"]) == ("Unhandled", "ValueError", "boom: testing")
    assert body["stackTrace"]
    error, body, _ = invoke("missing", {})
    assert (error, body["errorType"]) == ("Unhandled", "Runtime.ImportModuleError")
    error, body, took = invoke("slow", {"sleep": 30})
    assert error == "Unhandled" and "Task timed out after 2.00 seconds" in body["errorMessage"]
    assert took < 6
    error, body, _ = invoke("slow", {"sleep": 0})  # a fresh environment: the hung one was killed
    assert error is None and body["slept"] == 0 and 0 < body["remaining_ms"] <= 2000


def submit_until_accepted(deployed: Deployed, item_id: int, log: list[dict[str, Any]]) -> int | None:
    """A client as the API asks them to be: one Idempotency-Key per submission, a 503 retried
    (after 0.2 s here, not its Retry-After: the test is short) with the same key. Every answer
    goes to `log`; the task id once accepted, None if still refused after 20 tries."""
    headers = {"x-api-key": deployed.d.api_key, "Idempotency-Key": f"rotation-{uuid.uuid4()}"}
    for _ in range(20):
        started = time.monotonic()
        resp = urllib3.request("POST", f"{deployed.d.api_url}/moderation/async_predict?item_id={item_id}",
                               headers=headers, timeout=30, retries=False)
        log.append({"started": started, "seconds": time.monotonic() - started, "status": resp.status,
                    "retry_after": resp.headers.get("Retry-After"),
                    "error": resp.data.decode(errors="replace")[:200] if resp.status >= 400 else None})
        if resp.status != 503:
            return int(json.loads(resp.data)["task_id"]) if resp.status == 202 else None
        time.sleep(0.2)
    return None


def log_lines(deployed: Deployed, function: str, text: str) -> int:
    """How many of the function's CloudWatch log events contain `text`."""
    logs, group, count, token = deployed.client("logs"), f"/aws/lambda/{deployed.d.function_name(function)}", 0, None
    while True:
        page = logs.filter_log_events(logGroupName=group, **({"nextToken": token} if token else {}))
        count += sum(text in e["message"] for e in page["events"])
        if not (token := page.get("nextToken")):
            return count


def test_a_password_rotation_under_load_loses_nothing_and_needs_no_deploy(deployed: Deployed,
                                                                          capsys: pytest.CaptureFixture[str]):
    """Issue 14 item 10. Clients submit while ops rotate the functions' database password (the
    role's password, then the secret's AWSCURRENT), then the role's sessions end as in a failover.
    The warm functions' next connect is refused; they re-read the secret and reconnect: nothing is
    lost, no 500, every task completes, and no function is redeployed or reconfigured.

    Four clients, paced (0.2 s between submissions) so the scorer, which drains LocalStack's queue
    at about 9 tasks/s here, keeps up and the test stays short."""
    lam, role = deployed.client("lambda"), names.APP_DB_ROLE
    functions = [deployed.d.function_name(f) for f in ("api_handler", "score")]
    unchanged = ("LastModified", "CodeSha256", "RevisionId", "Environment")

    def configuration() -> dict[str, dict[str, Any]]:
        return {f: {k: c.get(k) for k in unchanged} for f in functions
                for c in [lam.get_function_configuration(FunctionName=f)]}

    # Powertools' JSON line (the executor echoes a plain copy of each line too).
    reread = '"message":"database secret re-read'
    before, reread_before = configuration(), {f: log_lines(deployed, f, reread) for f in ("api_handler", "score")}
    old = urlsplit(deployed.function_url)
    new_url = names.database_url(old.port or 0, old.path.lstrip("/"), user=role, password=secrets.token_urlsafe(24))
    log: list[dict[str, Any]] = []
    accepted: list[int | None] = []
    stop = threading.Event()

    def client(n: int) -> None:
        while not stop.is_set():
            accepted.append(submit_until_accepted(deployed, 1 + (n * 7 + len(accepted)) % 20, log))
            time.sleep(0.2)

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    # Rotate once the API and the scorer are warm on the old password (a task completed), after 2 s of load at least.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
            time.monotonic() - started > 2 and [i for i in accepted if i] and deployed.sql(
                "SELECT 1 FROM moderation_results WHERE id = ANY(%s) AND status = 'completed'", ([i for i in accepted if i],))):
        time.sleep(0.2)
    rotated = time.monotonic()
    [(rotated_at,)] = deployed.sql("SELECT clock_timestamp()")
    deployed.sql(f"ALTER ROLE {role} PASSWORD %s", (urlsplit(new_url).password,))  # setSecret
    deployed.client("secretsmanager").put_secret_value(SecretId=deployed.d.secret_arn, SecretString=new_url)
    ended = deployed.sql("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = %s", (role,))
    time.sleep(5)
    stop.set()
    for t in threads:
        t.join()
    clients_done = time.monotonic()

    statuses = Counter(entry["status"] for entry in log)
    assert set(statuses) <= {202, 503}, statuses  # no 500, 502 or 504; a 503 is retried
    refused = [e for e in log if e["status"] == 503]
    assert all(e["retry_after"] for e in refused)
    # A transaction in flight when its session is ended fails (503, retried); a rejected password never does.
    assert len(refused) <= len(ended), [(round(e["started"] - rotated, 2), e["error"]) for e in refused]
    assert None not in accepted and len(set(accepted)) == len(accepted), "a submission was lost or answered twice"
    assert any(e["started"] > rotated + 1 and e["status"] == 202 for e in log), "nothing accepted after the rotation"
    deadline = time.monotonic() + 60
    while True:
        done = dict(deployed.sql("SELECT status, count(*) FROM moderation_results WHERE id = ANY(%s) GROUP BY status",
                                 (accepted,)))
        if done.get("completed") == len(accepted) or done.get("failed") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert done == {"completed": len(accepted)}, done
    drained = time.monotonic()

    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(deployed.function_url, connect_timeout=5)
    # The functions' sessions now: opened since the rotation, so on the new password, as the role.
    sessions = dict(deployed.sql("SELECT backend_start > %s, count(*) FROM pg_stat_activity WHERE usename = %s "
                                 "AND application_name = %s GROUP BY 1", (rotated_at, role, "ad-moderation")))
    assert sessions.get(True, 0) >= 2 and not sessions.get(False), sessions
    deadline = time.monotonic() + 15  # log lines reach CloudWatch shortly after the response
    while True:
        rereads = {f: log_lines(deployed, f, reread) - n for f, n in reread_before.items()}
        if sum(rereads.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert sum(rereads.values()) >= 1, f"no warm function re-read the secret ({len(ended)} sessions ended)"
    assert configuration() == before, "a function was redeployed or reconfigured"

    p50_before = statistics.median(e["seconds"] for e in log if e["started"] < rotated)
    around = [e["seconds"] for e in log if rotated <= e["started"] < rotated + 2]
    retried = deployed.sql("SELECT count(*) FROM moderation_results WHERE id = ANY(%s) AND attempts > 1", (accepted,))
    figures = {
        "requests": len(log), "statuses": dict(statuses), "tasks_completed": done["completed"],
        "tasks_retried": retried[0][0], "sessions_ended": len(ended), "warm_up_s": round(rotated - started, 1),
        "rereads_logged": rereads,
        "sessions_after": sessions.get(True, 0), "p50_before_s": round(p50_before, 3),
        "max_in_2s_after_rotation_s": round(max(around, default=0.0), 3),
        "p50_after_s": round(statistics.median(e["seconds"] for e in log if e["started"] >= rotated), 3),
        "503s": [(round(e["started"] - rotated, 2), e["error"]) for e in refused],
        "clients_s": round(clients_done - started, 1), "drain_s": round(drained - clients_done, 1),
        "test_s": round(time.monotonic() - started, 1),
    }
    with capsys.disabled():
        print("\n[rotation e2e] " + json.dumps(figures))


def test_cold_starts_are_recorded(deployed: Deployed, capsys: pytest.CaptureFixture[str]):
    # The schedule fires once a minute; invoke the reconciler once so it is measured too.
    out = deployed.client("lambda").invoke(
        FunctionName=deployed.d.function_name("reconcile"), Payload=json.dumps(SCHEDULED_EVENT).encode()
    )
    payload = json.loads(out["Payload"].read())
    assert "FunctionError" not in out, payload
    assert set(payload) == {"resent", "unreceived", "failed_stuck", "purged", "webhooks_sent", "reviews_waiting",
                            "leases_expired"}
    # The webhook sender runs when a delivery is due; an empty batch measures its cold start here.
    out = deployed.client("lambda").invoke(
        FunctionName=deployed.d.function_name("send_webhooks"), Payload=json.dumps({"Records": []}).encode()
    )
    assert "FunctionError" not in out, json.loads(out["Payload"].read())
    deadline = time.monotonic() + 10  # logs reach CloudWatch shortly after the response
    while True:
        starts = cold_starts(deployed)
        if all(starts.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for fn in names.functions():
        assert starts[fn], f"no cold start logged for {fn}"
    TIMINGS["cold_start_init_ms"] = {fn: [s["init_ms"] for s in v] for fn, v in starts.items()}
    TIMINGS["cold_start_first_invoke_ms"] = {fn: v[0]["duration_ms"] for fn, v in starts.items() if v}
    with capsys.disabled():
        print("\n[deployed e2e] " + json.dumps({k: v if isinstance(v, dict) else round(v, 2) for k, v in TIMINGS.items()}))

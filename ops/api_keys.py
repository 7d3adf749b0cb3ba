"""One API key per client (`make api-key`; docs/operations/api-keys.md).

    python -m ops.api_keys create <client> [--scope SCOPES] [--contract legacy|current]
                                           [--rate R] [--burst B] [--quota N] [--period DAY|WEEK|MONTH]
    python -m ops.api_keys list [--json]
    python -m ops.api_keys contract <client> legacy|current
    python -m ops.api_keys revoke <client> [--yes]

Against a deployed stack (`--stage dev`, or `--stack-name`): its API Gateway usage plan, on AWS (an
empty or unset AWS_ENDPOINT_URL) or on LocalStack (`--local`: make deploy-localstack's endpoint and
test credentials unless AWS_ENDPOINT_URL is set; or `--endpoint-url`). Each client gets a key of its
own, named <stack>-<client>. The usage plan's throttle and quota apply to each of its keys
separately, so one noisy client never throttles another; a client given its own limits (--rate,
--burst, --quota, --period; the others default to the stack plan's) gets a usage plan of its own,
<stack>-client-<client>, because API Gateway sets limits per plan (and per method), not per key.
Revoking removes the key from its plan and deletes it (and the client's own plan): that client gets
403, every other client keeps working.

With `--make-run`: the keys of `make run` (its state dir; toolkit/local_keys.py), which it enforces
the same way, without quotas or throttles.

Scopes (docs/clients.md): `--scope` (repeatable, or comma-separated) of submit (the default), close,
moderate, admin; `list` shows them. On a deployed stack the key's client and scopes are a row of
api_clients in the stack's (private) database, written by invoking the stack's `migrate` function
(the operator needs lambda:InvokeFunction on it); make run keeps them in its key store.

Contracts (docs/clients.md#contracts): `--contract legacy` pins the client to the older FastAPI
services' answers (422, 200 on submit); the default is the client's pin if it has one (`make migrate`
pins the clients it moves over to legacy), else current. Without `--scope` a legacy client's key gets
submit and close. `contract <client> legacy|current` changes the pin later; `list` shows it.

Exit codes: 0 ok, 1 error or aborted, 2 usage (or --yes needed). The key itself is printed once, on
create; later, `aws apigateway get-api-key --api-key <id> --include-value` shows it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.domain.clients import CONTRACTS, CURRENT, SCOPES, parse_scopes
from ops.dlq import EXIT_ERROR, EXIT_OK, EXIT_USAGE, OpsError, UsageError, confirm
from toolkit import logs, names
from toolkit.local_keys import LocalKeys

CLIENT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
STACK_CLIENT = "client"  # the key the stack itself creates (ClientApiKey, named <stack>-client)
PERIODS = ("DAY", "WEEK", "MONTH")

log = logs.get("api-key")


@dataclass(frozen=True, slots=True)
class Limits:
    rate: float | None = None  # requests per second, steady
    burst: int | None = None
    quota: int | None = None  # requests per period
    period: str | None = None

    def given(self) -> bool:
        return any(v is not None for v in (self.rate, self.burst, self.quota, self.period))

    @classmethod
    def of_plan(cls, plan: dict[str, Any]) -> Limits:
        throttle, quota = plan.get("throttle") or {}, plan.get("quota") or {}
        return cls(throttle.get("rateLimit"), throttle.get("burstLimit"), quota.get("limit"), quota.get("period"))

    def over(self, base: Limits) -> Limits:
        """These limits, each one not given taken from `base`."""
        return Limits(rate=base.rate if self.rate is None else self.rate,
                      burst=base.burst if self.burst is None else self.burst,
                      quota=base.quota if self.quota is None else self.quota,
                      period=base.period if self.period is None else self.period)

    def text(self) -> str:
        throttle = f"{self.rate:g} req/s, burst {self.burst}" if self.rate is not None else "no throttle"
        quota = f"{self.quota} a {self.period}" if self.quota is not None else "no quota"
        return f"{throttle}, {quota}"


@dataclass(frozen=True, slots=True)
class ClientKey:
    client: str
    key_id: str
    enabled: bool
    plan: str
    limits: str
    created: str
    managed_by_stack: bool = False
    scopes: tuple[str, ...] = ()
    contract: str = CURRENT


@dataclass(frozen=True, slots=True)
class Created:
    client: str
    key: str  # the value: printed once
    key_id: str
    plan: str
    limits: str
    scopes: tuple[str, ...] = ()
    contract: str = CURRENT


def _ordered(scopes: frozenset[str]) -> tuple[str, ...]:
    return tuple(s for s in SCOPES if s in scopes)


def check_client_name(client: str) -> str:
    if not CLIENT_NAME.match(client):
        raise UsageError(f"client name {client!r}: use 1-63 lower-case letters, digits and '-', starting with a letter or digit")
    return client


class StackKeys:
    """The client keys of one deployed stack, in API Gateway."""

    def __init__(self, apigateway: Any, cloudformation: Any, stack_name: str, lambda_client: Any = None) -> None:
        self.apigw, self.stack, self.lambda_ = apigateway, stack_name, lambda_client
        self._cfn = cloudformation
        try:
            stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
        except ClientError as err:
            raise OpsError(f"no stack {stack_name!r} at {cloudformation.meta.endpoint_url}: {err}") from err
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        missing = [k for k in ("RestAPIId", "UsagePlanId", "ApiKeyId") if k not in outputs]
        if missing:
            raise OpsError(f"stack {stack_name} has no output {', '.join(missing)}: deploy the current template first")
        self.api_id, self.stack_key_id = outputs["RestAPIId"], outputs["ApiKeyId"]
        self.shared_plan = self.apigw.get_usage_plan(usagePlanId=outputs["UsagePlanId"])
        self.where = f"stack {stack_name}"
        self.hint = "the plan's limits apply to each of its keys alone; on AWS a new key may take a few seconds to work"

    def key_name(self, client: str) -> str:
        return f"{self.stack}-{client}"

    def own_plan_name(self, client: str) -> str:
        return f"{self.stack}-client-{client}"

    def _pages(self, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        for page in self.apigw.get_paginator(operation).paginate(**kwargs):
            yield from page.get("items", [])

    def plans(self) -> list[dict[str, Any]]:
        """The usage plans that admit keys to this stack's API: the stack's and the clients' own."""
        return [p for p in self._pages("get_usage_plans")
                if any(s.get("apiId") == self.api_id for s in p.get("apiStages", []))]

    def find(self, client: str) -> dict[str, Any] | None:
        name = self.key_name(client)
        return next((k for k in self._pages("get_api_keys", nameQuery=name) if k.get("name") == name), None)

    def _registrations(self, request: dict[str, Any]) -> dict[str, Any]:
        """api_clients through the stack's `migrate` function (the database is private)."""
        if self.lambda_ is None:
            raise OpsError("no Lambda client to reach the stack's migrate function with")
        function = self._cfn.describe_stack_resource(StackName=self.stack, LogicalResourceId="Migrate")
        name = function["StackResourceDetail"]["PhysicalResourceId"]
        answer = self.lambda_.invoke(FunctionName=name, Payload=json.dumps({"clients": request}).encode())
        body = json.loads(answer["Payload"].read() or b"{}")
        if answer.get("FunctionError") or "error" in body:
            raise OpsError(f"{name} refused {request.get('action')}: {body.get('error') or body}")
        return dict(body)

    def list(self) -> list[ClientKey]:
        registered = {r["key_id"]: r for r in self._registrations({"action": "list"})["clients"]}
        out = []
        for plan in self.plans():
            for member in self._pages("get_usage_plan_keys", usagePlanId=plan["id"]):
                key = self.apigw.get_api_key(apiKey=member["id"])
                prefix = f"{self.stack}-"
                client = key["name"][len(prefix):] if key["name"].startswith(prefix) else key["name"]
                out.append(ClientKey(client=client, key_id=key["id"], enabled=bool(key.get("enabled")),
                                     plan=plan.get("name", plan["id"]), limits=Limits.of_plan(plan).text(),
                                     created=str(key.get("createdDate", ""))[:19],
                                     managed_by_stack=key["id"] == self.stack_key_id,
                                     scopes=_ordered(frozenset(registered.get(key["id"], {}).get("scopes", ()))),
                                     contract=registered.get(key["id"], {}).get("contract", CURRENT)))
        return sorted(out, key=lambda k: (not k.managed_by_stack, k.client))

    def create(self, client: str, limits: Limits, scopes: frozenset[str] | None = None,
               contract: str | None = None) -> Created:
        """A new key for the client in the stack's plan, or in a plan of its own with these limits,
        registered with its scopes (api_clients) and contract (client_contracts) before the key is
        shown. None: the client's pin, and its contract's default scopes (the migrate function decides)."""
        if client == STACK_CLIENT:
            raise OpsError(f"{self.key_name(client)} is the stack's own key (ClientApiKey): pick another client name")
        if (existing := self.find(client)) is not None:
            raise OpsError(f"client {client!r} already has a key here ({existing['id']}): revoke it first")
        key = self.apigw.create_api_key(name=self.key_name(client), enabled=True,
                                        description=f"{self.stack}: client {client} (make api-key)")
        try:
            plan = self.shared_plan
            if limits.given():
                plan = self._create_own_plan(client, limits.over(Limits.of_plan(self.shared_plan)))
            put = {"action": "put", "key_id": key["id"], "client": client, "contract": contract,
                   "scopes": sorted(scopes) if scopes is not None else None}
            registered = self._registrations(put)
            self.apigw.create_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY")
        except (ClientError, BotoCoreError, OpsError):
            self._delete_quietly(key["id"])  # no key without a plan and a client (it would admit nobody)
            raise
        return Created(client, key["value"], key["id"], plan["name"], Limits.of_plan(plan).text(),
                       _ordered(frozenset(registered.get("scopes", ()))), str(registered.get("contract", CURRENT)))

    def pin(self, client: str, contract: str) -> str:
        """Pin the client to `contract`: its requests speak it within CLIENTS_CACHE_SECONDS."""
        return str(self._registrations({"action": "contract", "client": client, "contract": contract})["contract"])

    def _create_own_plan(self, client: str, limits: Limits) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "name": self.own_plan_name(client),
            "description": f"{self.stack}: the limits of client {client} (make api-key)",
            "apiStages": [{"apiId": s["apiId"], "stage": s["stage"]} for s in self.shared_plan["apiStages"]],
        }
        if limits.rate is not None or limits.burst is not None:
            kwargs["throttle"] = {k: v for k, v in (("rateLimit", limits.rate), ("burstLimit", limits.burst)) if v is not None}
        if limits.quota is not None:
            kwargs["quota"] = {"limit": limits.quota, "period": limits.period or "DAY"}
        return dict(self.apigw.create_usage_plan(**kwargs))

    def revoke(self, client: str) -> str:
        """Out of its plan(s), then deleted (with the client's own plan); the key id."""
        key = self.find(client)
        if key is None:
            raise OpsError(f"client {client!r} has no key in stack {self.stack}")
        if key["id"] == self.stack_key_id:
            raise OpsError(f"{key['name']} is the stack's own key (CloudFormation's ClientApiKey): it goes with the stack")
        for plan in self.plans():
            members = {m["id"] for m in self._pages("get_usage_plan_keys", usagePlanId=plan["id"])}
            if key["id"] in members:
                # Out of the plan first: from then on API Gateway refuses the key, whatever happens next.
                self.apigw.delete_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"])
            if plan.get("name") == self.own_plan_name(client):
                self._delete_plan(plan)
        self.apigw.delete_api_key(apiKey=key["id"])
        self._registrations({"action": "delete", "key_id": key["id"]})
        return str(key["id"])

    def _delete_plan(self, plan: dict[str, Any]) -> None:
        # API Gateway deletes only a plan without API stages.
        stages = [f"{s['apiId']}:{s['stage']}" for s in plan.get("apiStages", [])]
        ops = [{"op": "remove", "path": "/apiStages", "value": stage} for stage in stages]
        if ops:
            self.apigw.update_usage_plan(usagePlanId=plan["id"], patchOperations=ops)
        self.apigw.delete_usage_plan(usagePlanId=plan["id"])

    def _delete_quietly(self, key_id: str) -> None:
        try:
            self.apigw.delete_api_key(apiKey=key_id)
        except (ClientError, BotoCoreError) as err:
            log.warning("could not delete the half-made key %s: %s", key_id, err)


class MakeRunKeys:
    """make run's keys (toolkit/local_keys.py), behind the same three operations."""

    def __init__(self) -> None:
        self.keys = LocalKeys()
        self.where = "make run"
        self.hint = f"make run's server reads {self.keys.path} on every change"

    def create(self, client: str, limits: Limits, scopes: frozenset[str] | None = None,
               contract: str | None = None) -> Created:
        if limits.given():
            raise UsageError("make run enforces keys, not quotas or throttles: give limits to a deployed stack's keys")
        try:
            key = self.keys.create(client, scopes=scopes, contract=contract or CURRENT)
        except KeyError as err:
            raise OpsError(str(err.args[0])) from None
        return Created(client, key.value, key.id, "make run", "none", key.key.scopes, key.key.contract)

    def pin(self, client: str, contract: str) -> str:
        try:
            return self.keys.pin(client, contract).contract
        except KeyError as err:
            raise OpsError(str(err.args[0])) from None

    def list(self) -> list[ClientKey]:
        return [ClientKey(k.client, k.id, True, "make run", "none", k.created, scopes=k.scopes, contract=k.contract)
                for k in self.keys.keys().values()]

    def revoke(self, client: str) -> str:
        try:
            return self.keys.revoke(client).id
        except KeyError as err:
            raise OpsError(str(err.args[0])) from None


def print_table(rows: list[ClientKey]) -> None:
    header = ("CLIENT", "KEY ID", "SCOPES", "CONTRACT", "ENABLED", "PLAN", "LIMITS (each key)", "CREATED")
    table = [header, *[(r.client + (" (the stack's own)" if r.managed_by_stack else ""), r.key_id,
                        ",".join(r.scopes) or "none (not registered)", r.contract, "yes" if r.enabled else "no", r.plan, r.limits,
                        r.created) for r in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def stack_keys(args: argparse.Namespace) -> StackKeys:
    endpoint = getattr(args, "endpoint_url", None)
    if args.local and endpoint is None and "AWS_ENDPOINT_URL" not in os.environ:
        endpoint = names.DEPLOY_ENDPOINT
        os.environ.update({k: v for k, v in names.LOCAL_CREDENTIALS.items() if k not in os.environ})
    endpoint = endpoint if endpoint is not None else os.environ.get("AWS_ENDPOINT_URL")
    # An empty AWS_ENDPOINT_URL means AWS itself, not "endpoint ''".
    apigw, cfn, lambda_ = (boto3.client(s, endpoint_url=endpoint or None) for s in ("apigateway", "cloudformation", "lambda"))
    return StackKeys(apigw, cfn, args.stack_name or f"{names.APP_NAME}-{args.stage}", lambda_)


def execute(args: argparse.Namespace, keys: StackKeys | MakeRunKeys) -> int:
    if args.command == "create":
        try:
            scopes = parse_scopes(args.scope) if args.scope else None
        except ValueError as err:
            raise UsageError(str(err)) from None
        created = keys.create(check_client_name(args.client), Limits(args.rate, args.burst, args.quota, args.period),
                              scopes, args.contract)
        if args.json:
            print(json.dumps(asdict(created)))
        else:
            print(f"client   {created.client}\nkey      {created.key}   (shown once: keep it now)\n"
                  f"key id   {created.key_id}\nscopes   {','.join(created.scopes)}\ncontract {created.contract}\n"
                  f"plan     {created.plan}: {created.limits}\nsend it as the x-api-key header; {keys.hint}")
    elif args.command == "list":
        rows = keys.list()
        if args.json:
            for row in rows:
                print(json.dumps(asdict(row)))
        else:
            print_table(rows)
    elif args.command == "contract":
        client = check_client_name(args.client)
        pinned = keys.pin(client, args.contract)
        print(json.dumps({"client": client, "contract": pinned}) if args.json else f"client {client}: contract {pinned}")
    else:
        client = check_client_name(args.client)
        confirm(f"revoke the key of client {client} in {keys.where} (its requests get 403 from then on)?", args.yes)
        print(f"revoked: client {client}, key id {keys.revoke(client)} (deleted)")
    return EXIT_OK


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--stage", default=argparse.SUPPRESS, help="the stack ad-moderation-<stage> (default dev)")
    common.add_argument("--stack-name", default=argparse.SUPPRESS)
    common.add_argument("--endpoint-url", default=argparse.SUPPRESS, help="default: $AWS_ENDPOINT_URL, else AWS")
    common.add_argument("--local", action="store_true", default=argparse.SUPPRESS,
                        help="make deploy-localstack's LocalStack unless AWS_ENDPOINT_URL is set (empty: AWS)")
    common.add_argument("--make-run", action="store_true", default=argparse.SUPPRESS,
                        help="make run's keys (its state dir) instead of a deployed stack's")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    parser = argparse.ArgumentParser(prog="python -m ops.api_keys", parents=[common],
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", parents=[common], help="a new key for a client (printed once)")
    create.add_argument("client")
    create.add_argument("--scope", action="append", metavar="SCOPES",
                        help=f"what the key may do, any of {', '.join(SCOPES)} (repeat or comma-separate; "
                        "default submit; docs/clients.md)")
    create.add_argument("--contract", choices=CONTRACTS, default=None,
                        help="the answers its requests get (docs/clients.md#contracts): legacy (the older FastAPI "
                        "services') or current; default: the client's pin, else current")
    create.add_argument("--rate", type=float, help="requests per second (a plan of the client's own)")
    create.add_argument("--burst", type=int, help="burst (a plan of the client's own)")
    create.add_argument("--quota", type=int, help="requests per --period (a plan of the client's own)")
    create.add_argument("--period", choices=PERIODS, help="the quota's period (default DAY)")
    sub.add_parser("list", parents=[common], help="every client's key, scopes, contract, plan and limits")
    pin = sub.add_parser("contract", parents=[common], help="pin a client to a contract (docs/clients.md#contracts)")
    pin.add_argument("client")
    pin.add_argument("contract", choices=CONTRACTS)
    revoke = sub.add_parser("revoke", parents=[common], help="delete a client's key: it gets 403, the others keep working")
    revoke.add_argument("client")
    revoke.add_argument("--yes", action="store_true", help="do not ask (required without a terminal)")
    args = parser.parse_args(argv)
    for name, default in (("stage", "dev"), ("stack_name", None), ("local", False), ("make_run", False), ("json", False),
                          ("yes", False), ("scope", None), ("contract", None), ("rate", None), ("burst", None), ("quota", None),
                          ("period", None)):
        if not hasattr(args, name):
            setattr(args, name, default)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logs.setup()
    try:
        args = parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) and EXIT_USAGE
    try:
        return execute(args, MakeRunKeys() if args.make_run else stack_keys(args))
    except OpsError as err:
        log.error("%s", err)
        return err.exit_code
    except (ClientError, BotoCoreError) as err:
        log.error("%s", err)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

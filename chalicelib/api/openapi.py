"""The OpenAPI 3.1 document, generated from the contract (chalicelib/api/models.py:
the models and the route registry) and Chalice's route table (paths, methods,
which routes need the API key, path parameters).

Only GET /openapi.json imports this module, and it builds the document once per
process: rendering JSON Schema for every model costs tens of milliseconds that
no other request should pay, least of all a cold start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from chalicelib.api import models as contract
from chalicelib.api import routes as table
from chalicelib.api.models import Id
from chalicelib.api.routes import ALIASES, OPERATIONS, Operation, Param, Reply

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"
REF = "#/components/schemas/{model}"
API_KEY_SCHEME = "apiKey"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

DESCRIPTION = """\
Serverless ad moderation: score an ad now (`/moderation/predict`, `/moderation/simple_predict`), or submit a
task (`/moderation/async_predict`, one ad; `/moderation/async_predict/batch`, up to 100) and poll
`/moderation/moderation_result/{task_id}`. Tasks go `pending` → `processing` → `completed` | `failed`.

**API key.** Every moderation and task route needs an `x-api-key` header, one key per client; without a
valid one API Gateway answers 403 `{"code": "forbidden", ...}`. `make run` checks keys the same way (its
key is printed at start). `/health`, `/docs` and `/openapi.json` are open.

**Clients and scopes.** A key is a client's, with scopes (`x-scopes` on each operation): `submit` (submit,
score, read its own tasks, appeal its blocks), `close`, `moderate` (the review queue), `admin` (read every
client's tasks). A route without its scope answers 403 `insufficient_scope`. Another client's task answers 404 `task_not_found`,
as one that does not exist; Idempotency-Keys are per client.

**Query strings.** A query parameter an operation does not list, or one given twice, answers 400
`invalid_parameter`, on every route. A method a path does not have is
405 with `Allow` under `chalice local`; on the deployed API, API Gateway answers it with 403
`{"message": "Missing Authentication Token"}`, as it does for an unknown path.

**Overload.** Any route may answer 429 (API Gateway's throttle: the stage's rate, or the client's usage
plan) or 503 `overloaded` (`make run`: too many requests in flight) / `service_unavailable` (the deployed
API: the API function did not answer, e.g. at its reserved concurrency), each with `Retry-After`; nothing
was done, so the same request can be sent again then. The health probes are never refused for load.

**Errors** are JSON: a machine `code`, a human `message`, `detail` (the same text, for clients of the older
FastAPI services), `parameter` for a bad parameter, `errors` (one per field) for a bad body. A 503 carries
`Retry-After`. Never a stack trace.

**Two contracts** (pinned per client, as Stripe pins API versions; `make api-key ARGS="create <client>
--contract legacy"`): `current`, described by each operation's replies, and `legacy`, the older FastAPI
services' answers: 200 where `current` answers 202, 422 `{"detail": [{"loc", "msg", "type"}]}` where it
answers 400 `invalid_parameter` / `invalid_body`, `{"detail": "..."}` for every other error, `description`
required by `/moderation/predict`, close's `message`. The `Moderation-Contract` header asks for the other one
on a request. The older services' paths (`/predict`, `/simple_predict`, `/async_predict`,
`/moderation_result/{task_id}`, `/close`) are deprecated aliases, and the ad may be named by a JSON body
`{"item_id": N}` instead of the query parameter, under either contract.
"""


class RouteEntryLike(Protocol):
    """What this module reads from chalice.app.RouteEntry."""

    api_key_required: bool
    view_args: list[str]


Routes = Mapping[str, Mapping[str, RouteEntryLike]]


class ContractError(ValueError):
    """The route table and the contract disagree: a bug, caught by tests."""


def document(routes: Routes) -> dict[str, Any]:
    """The whole document."""
    models = _models()
    refs, defs = models_json_schema(models, ref_template=REF)
    paths: dict[str, Any] = {}
    for path, methods in routes.items():
        item: dict[str, Any] = {}
        for method, entry in methods.items():
            item[method.lower()] = _operation(method, path, entry, refs)
        paths[path] = dict(sorted(item.items(), key=lambda kv: METHODS.index(kv[0])))
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "ad-moderation",
            "version": API_VERSION,
            "description": DESCRIPTION,
            "license": {"name": "Proprietary", "identifier": "LicenseRef-Proprietary"},
        },
        "tags": [
            {"name": table.TAG_MODERATION, "description": "Score ads, submit moderation tasks"},
            {"name": table.TAG_TASKS, "description": "Task state and history"},
            {"name": table.TAG_SERVICE, "description": "Health and these docs"},
            {"name": "reviews", "description": "The human review queue, appeals, statements of reasons, the console"},
        ],
        # Relative: the API's base URL is wherever this document is served from
        # (an API Gateway stage, a custom domain, LocalStack, chalice local),
        # so one document serves them all; Swagger UI resolves it that way too.
        "servers": [{"url": ".", "description": "this API: where this document is served"}],
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                API_KEY_SCHEME: {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": "Your client's key (`make api-key ARGS=\"create <client>\"`; the stack's own: "
                    "output ApiKeyId). Checked by API Gateway, and by `make run`, which prints its key.",
                }
            },
        },
    }


def _models() -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    """Every model the registry names: bodies as validated, replies as serialized."""
    seen: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
    for op in OPERATIONS.values():
        if op.body is not None:
            seen[(op.body, "validation")] = None
        for reply in op.replies.values():
            for model in _reply_models(reply):
                seen[(model, "serialization")] = None
    seen[(contract.GatewayError, "serialization")] = None
    seen[(contract.LegacyError, "serialization")] = None
    seen[(contract.LegacyValidationError, "serialization")] = None
    return list(seen)


def _reply_models(reply: Reply) -> tuple[type[BaseModel], ...]:
    if reply.model is None:
        return ()
    return reply.model if isinstance(reply.model, tuple) else (reply.model,)


def _lookup(method: str, path: str) -> tuple[Operation, bool]:
    """The route's operation, and whether the route is a deprecated alias."""
    if (method, path) in OPERATIONS:
        return OPERATIONS[(method, path)], False
    alias = ALIASES.get((method, path))
    if alias is None or (alias.method, alias.path) not in OPERATIONS:
        raise ContractError(f"{method} {path} is a route of app.py without an entry in chalicelib/api/models.py")
    return OPERATIONS[(alias.method, alias.path)], True


def _operation(method: str, path: str, entry: RouteEntryLike, refs: Mapping[Any, Any]) -> dict[str, Any]:
    op, is_alias = _lookup(method, path)
    declared = {p.name for p in op.params if p.location == "path"}
    if declared != set(entry.view_args):
        raise ContractError(f"{method} {path}: path parameters {sorted(entry.view_args)} but the contract has {sorted(declared)}")
    out: dict[str, Any] = {
        "tags": [op.tag],
        "summary": op.summary,
        "operationId": op.operation_id + ("_alias" if is_alias else ""),
    }
    if is_alias:
        canonical = ALIASES[(method, path)].path
        out["deprecated"] = True
        out["summary"] = f"{op.summary} (deprecated alias of {method} {canonical})"
        out["description"] = f"The path of the older FastAPI/Kafka services; use `{method} {canonical}`. " + op.description
    elif op.description:
        out["description"] = op.description
    params = op.params + ((table.CONTRACT,) if table.scopes_of(method, path) is not None else ())
    if params:
        out["parameters"] = [_parameter(p) for p in params]
    if table.canonical(method, path) in table.ITEM_BODY:
        out["description"] = (out.get("description", "") + " The ad may instead be given as a JSON body "
                              '`{"item_id": N}` (the query parameter wins when both are).').strip()
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": dict(refs[(op.body, "validation")])}},
        }
    responses = {str(status): _response(reply, refs) for status, reply in sorted(op.replies.items())}
    responses["400"] = _bad_query(op.replies.get(400), refs)
    scopes = table.scopes_of(method, path)
    if bool(entry.api_key_required) != (scopes is not None):
        raise ContractError(f"{method} {path}: needs the API key but no scope, or a scope but no key")
    if scopes is not None:
        out["security"] = [{API_KEY_SCHEME: []}]
        named = " or ".join(f"`{s}`" for s in sorted(scopes))
        out["x-scopes"] = sorted(scopes)
        out["description"] = (out.get("description", "") + f" Scope: {named}.").strip()
        schemas = [{"$ref": REF.format(model="GatewayError")}, {"$ref": REF.format(model="Error")}]
        responses["403"] = {
            "description": "API Gateway (and `make run`): missing or wrong `x-api-key`; or "
            + table.FORBIDDEN_SCOPE.format(scopes=named),
            "content": {"application/json": {"schema": {"anyOf": schemas}}},
        }
    else:
        out["security"] = []
    responses["429"] = _response(table.THROTTLED, refs)
    responses["503"] = _response(_unavailable(op.replies.get(503), path), refs)
    if scopes is not None:
        _legacy(responses, op, refs)
    if op.operation_id == "async_predict" and "202" in responses:
        responses["202"]["links"] = _task_links()
    out["responses"] = dict(sorted(responses.items()))
    return out


def _legacy(responses: dict[str, Any], op: Operation, refs: Mapping[Any, Any]) -> None:
    """The legacy contract's answers beside the current ones (chalicelib/api/legacy.py): its 200
    for a 202, its 422, and `{"detail": "..."}` as one more shape of every error."""
    if 202 in op.replies and 200 not in op.replies:
        own = op.replies[202]
        responses["200"] = _response(Reply("Under the legacy contract: " + own.description, own.model), refs)
    responses["422"] = _response(Reply("Under the legacy contract: a rejected parameter or body (FastAPI's "
                                       "validation error), where the current contract answers 400",
                                       contract.LegacyValidationError), refs)
    legacy = {"$ref": REF.format(model="LegacyError")}
    for status, answer in responses.items():
        if status.startswith(("4", "5")) and status not in ("400", "422", "429"):
            content = answer["content"]["application/json"]
            shapes = content["schema"].get("anyOf") or [content["schema"]]
            content["schema"] = {"anyOf": [*shapes, legacy]}
            answer["description"] += "; under the legacy contract `{\"detail\": \"...\"}`"


def _bad_query(own: Reply | None, refs: Mapping[Any, Any]) -> dict[str, Any]:
    """Every route's 400 for an unknown or repeated query parameter, with the route's own 400s."""
    if own is None:
        return _response(Reply(table.BAD_QUERY[0].upper() + table.BAD_QUERY[1:], contract.Error), refs)
    models = _reply_models(own)
    return _response(own._replace(description=f"{own.description}; or {table.BAD_QUERY}",
                                  model=models if contract.Error in models else (*models, contract.Error)), refs)


def _unavailable(own: Reply | None, path: str) -> Reply:
    """The route's own 503 (if any), and the 503 of overload every route may answer: its
    description and models joined, with Retry-After."""
    text = table.NOT_SHED if path in table.NEVER_SHED else table.SHED
    if own is None:
        return Reply(text[0].upper() + text[1:], contract.Error, headers=table.THROTTLED.headers)
    models = _reply_models(own)
    return own._replace(description=f"{own.description}; or {text}",
                        model=models if contract.Error in models else (*models, contract.Error),
                        headers={**(own.headers or {}), **table.THROTTLED.headers})


def _parameter(param: Param) -> dict[str, Any]:
    schema = dict(param.schema) if param.schema is not None else _id_schema()
    return {
        "name": param.name,
        "in": param.location,
        "required": param.required or param.location == "path",
        "description": param.description,
        "schema": schema,
    }


def _id_schema() -> dict[str, Any]:
    """An id parameter: the same schema as the ids in bodies."""
    return TypeAdapter(Id).json_schema()


def _response(reply: Reply, refs: Mapping[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"description": reply.description}
    models = _reply_models(reply)
    if models:
        schemas = [dict(refs[(m, "serialization")]) for m in models]
        schema: dict[str, Any] = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    elif reply.media_type == "application/json":
        schema = {"type": "object"}
    else:
        schema = {"type": "string"}
    out["content"] = {reply.media_type: {"schema": schema}}
    if reply.headers:
        out["headers"] = {
            name: {"description": text, "required": required, "schema": {"type": "string"}}
            for name, (text, required) in reply.headers.items()
        }
    return out


def _task_links() -> dict[str, Any]:
    """Where a new task can be looked at: lets a client (and a fuzzer) follow it."""
    task_id = {"task_id": "$response.body#/task_id"}
    return {
        "GetResult": {"operationId": "moderation_result", "parameters": task_id},
        "GetEvents": {"operationId": "moderation_events", "parameters": task_id},
    }

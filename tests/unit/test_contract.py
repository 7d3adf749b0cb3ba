"""The contract (chalicelib/api/models.py) against the code it describes, and the
OpenAPI document generated from it. No servers."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from app import app
from chalicelib.api import models as contract
from chalicelib.api import openapi, routes
from chalicelib.domain.tasks import Task, TaskEvent
from chalicelib.moderation.service import event_view, task_view

ROOT = Path(__file__).resolve().parents[2]
ROUTES = {(method, path) for path, methods in app.routes.items() for method in methods}


@pytest.fixture(scope="module")
def doc() -> dict:
    return openapi.document(app.routes)


def test_every_route_has_exactly_one_contract_entry():
    documented = set(routes.OPERATIONS) | set(routes.ALIASES)
    assert ROUTES - documented == set(), "routes of app.py missing from chalicelib/api/models.py"
    assert documented - ROUTES == set(), "contract entries for routes app.py does not have"
    assert not set(routes.OPERATIONS) & set(routes.ALIASES)
    for alias in routes.ALIASES.values():
        assert (alias.method, alias.path) in routes.OPERATIONS


def test_the_result_models_have_exactly_the_fields_the_use_cases_return():
    now = datetime.now(UTC)
    task = Task(1, 2, "failed", None, None, None, "boom", "transient", 3, "boom", now, now, now, now, None)
    assert list(contract.TaskResult.model_fields) == list(task_view(task))
    event = TaskEvent(now, "attempt", 1, "transient", "boom", "m-1", None)
    assert list(contract.TaskEvent.model_fields) == list(event_view(event))
    shaped = contract.TaskResult.model_validate(task_view(task)).model_dump(mode="json")
    assert shaped == task_view(task)  # timestamps keep their `+00:00` form


def test_event_kinds_are_the_databases():
    # V3 made the check; V10 (the review loop) replaced it with a longer list.
    sql = (ROOT / "migrations" / "V10__reviews.sql").read_text()
    check = re.search(r"task_events_kind_check CHECK \(kind IN \(([^)]*)\)", sql, re.S)
    assert check is not None
    kinds = set(re.findall(r"'(\w+)'", check.group(1)))
    assert kinds == set(contract.EventKind.__args__)  # type: ignore[attr-defined]


def test_the_document_is_valid_openapi_3_1(doc):
    from schemathesis.specs.openapi.definitions import OPENAPI_31

    Draft202012Validator(OPENAPI_31).validate(doc)
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    assert doc["openapi"] == "3.1.0"


def test_the_document_covers_every_route_with_its_auth_and_statuses(doc):
    operation_ids = []
    for method, path in ROUTES:
        op = doc["paths"][path][method.lower()]
        operation_ids.append(op["operationId"])
        entry = app.routes[path][method]
        if entry.api_key_required:
            assert op["security"] == [{"apiKey": []}]
            assert {"403", "429"} <= set(op["responses"])
        else:
            assert op["security"] == []
        for name in entry.view_args:
            assert any(p["in"] == "path" and p["name"] == name and p["required"] for p in op["parameters"])
        assert op.get("deprecated", False) == ((method, path) in routes.ALIASES)
    assert len(operation_ids) == len(set(operation_ids))
    assert {path for _, path in ROUTES if not app.routes[path][_].api_key_required} == {
        "/health", "/health/pipeline", "/openapi.json", "/docs", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css",
        "/console", "/console/console.js", "/console/console.css"}
    submit = doc["paths"]["/moderation/async_predict"]["post"]
    assert set(submit["responses"]) >= {"202", "400", "404", "409", "503"}
    assert submit["responses"]["503"]["headers"]["Retry-After"]["required"] is True
    assert "Idempotent-Replayed" in submit["responses"]["202"]["headers"]
    assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" and not p["required"] for p in submit["parameters"])
    batch = doc["paths"]["/moderation/async_predict/batch"]["post"]
    assert set(batch["responses"]) >= {"202", "400", "413", "415", "503"}
    body = doc["components"]["schemas"]["BatchRequest"]["properties"]["item_ids"]
    assert (body["minItems"], body["maxItems"]) == (1, contract.MAX_BATCH_ITEMS)
    listing = doc["paths"]["/moderation/tasks"]["get"]
    assert set(listing["responses"]) == {"200", "400", "403", "422", "429", "503"}  # 422: the legacy contract
    assert [(p["name"], p["required"]) for p in listing["parameters"]] == [
        ("item_id", False), ("status", False), ("limit", False), ("cursor", False),
        ("Moderation-Contract", False)]  # the legacy contract's header, on every keyed operation
    limit = listing["parameters"][2]["schema"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, contract.MAX_PAGE, contract.DEFAULT_PAGE)
    assert doc["components"]["schemas"]["TaskPage"]["properties"]["tasks"]["items"] == {"$ref": "#/components/schemas/TaskResult"}
    assert doc["components"]["securitySchemes"]["apiKey"] == {
        "type": "apiKey", "in": "header", "name": "x-api-key",
        "description": doc["components"]["securitySchemes"]["apiKey"]["description"]}


def test_every_route_documents_the_429_and_503_of_overload_with_retry_after(doc):
    """Any route may be throttled (API Gateway) or shed (`make run`, or the API function at its
    reserved concurrency); each answer says when to come back. A route's own 503 keeps its models."""
    for method, path in ROUTES:
        responses = doc["paths"][path][method.lower()]["responses"]
        for status in ("429", "503"):
            assert responses[status]["headers"]["Retry-After"]["required"] is True, (method, path, status)
        text = responses["503"]["description"]
        assert "service_unavailable" in text and ("overloaded" in text) == (path not in routes.NEVER_SHED)
    submit = doc["paths"]["/moderation/async_predict"]["post"]["responses"]["503"]
    assert submit["description"].startswith("`dependency_unavailable`")
    health = doc["paths"]["/health"]["get"]["responses"]["503"]["content"]["application/json"]["schema"]
    assert health == {"anyOf": [{"$ref": "#/components/schemas/Health"}, {"$ref": "#/components/schemas/Error"}]}


def test_the_document_is_built_lazily():
    """Cold start: serving any other route never renders JSON Schema."""
    import subprocess
    import sys

    code = "import sys, app\nfrom chalicelib import api\nprint('chalicelib.api.openapi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize(
    ("key", "ok"),
    [("a", True), ("x" * 255, True), ("inner space", True), ("~!", True), ("", False), (" a", False), ("a ", False),
     ("x" * 256, False), ("ключ", False), ("a\tb", False), ("a\x7fb", False)],
)
def test_idempotency_keys(key, ok):
    assert contract.valid_idempotency_key(key) is ok
    # The header's schema in the document says the same.
    assert bool(re.fullmatch(contract.IDEMPOTENCY_KEY_PATTERN, key)) is ok


def test_chalice_errors_get_the_contract_shape():
    from chalice import Response

    from chalicelib.api.responses import contract_error

    resp = contract_error(Response(body={"Code": "MethodNotAllowedError", "Message": "Unsupported method: PUT"},
                                   status_code=405, headers={"Allow": "GET"}))
    assert resp.status_code == 405 and resp.headers["Allow"] == "GET"
    assert resp.body == {"code": "method_not_allowed", "message": "Unsupported method: PUT",
                         "detail": "Unsupported method: PUT"}
    assert contract_error(Response(body={"Code": "UnsupportedMediaType", "Message": "m"}, status_code=415)).body["code"] \
        == "unsupported_media_type"
    ours = Response(body={"code": "x", "message": "m", "detail": "m"}, status_code=404)
    assert contract_error(ours) is ours


def test_the_vendored_docs_assets_are_the_published_ones():
    """chalicelib/api/static/README.md: swagger-ui-dist from npm, unmodified."""
    static = ROOT / "chalicelib" / "api" / "static"
    sums = dict(reversed(line.split()) for line in (static / "SHA256SUMS").read_text().splitlines() if line.strip())
    assert set(sums) >= {"swagger-ui-bundle.js", "swagger-ui.css", "LICENSE"}
    for name, digest in sums.items():
        assert hashlib.sha256((static / name).read_bytes()).hexdigest() == digest, name


def test_every_route_has_its_scopes_and_only_keyed_routes_need_one():
    """The route x scope table (chalicelib/api/routes.py, SCOPES) covers exactly the
    operations, and a route needs a scope exactly when it needs the API key."""
    assert set(routes.SCOPES) == set(routes.OPERATIONS)
    for method, path in ROUTES:
        needed = routes.scopes_of(method, path)
        assert bool(app.routes[path][method].api_key_required) == (needed is not None), (method, path)


def test_the_document_gives_each_keyed_route_its_scopes_and_a_403(doc):
    for method, path in ROUTES:
        op = doc["paths"][path][method.lower()]
        needed = routes.scopes_of(method, path)
        assert "400" in op["responses"]
        if needed is None:
            assert "403" not in op["responses"] and "x-scopes" not in op
            continue
        assert op["x-scopes"] == sorted(needed)
        assert "insufficient_scope" in op["responses"]["403"]["description"]
        refs = {s["$ref"].rsplit("/", 1)[-1] for s in op["responses"]["403"]["content"]["application/json"]["schema"]["anyOf"]}
        assert refs == {"GatewayError", "Error", "LegacyError"}  # LegacyError: the legacy contract's {"detail"}


def test_docs_clients_md_shows_the_route_scope_table_as_the_code_has_it():
    """docs/clients.md, "Routes and scopes": one row per route (aliases beside their route), its
    scopes as chalicelib/api/routes.py SCOPES has them."""
    text = (ROOT / "docs" / "clients.md").read_text()
    table = text.split("## Routes and scopes", 1)[1].split("\n\n", 2)[1]
    shown: dict[tuple[str, str], frozenset[str] | None] = {}
    for row in table.splitlines()[2:]:
        route_cell, scope_cell = row.strip("|").split("|")
        scopes = None if "open" in scope_cell else frozenset(re.findall(r"`(\w+)`", scope_cell))
        if "only `submit`" in scope_cell:  # claim and verdict: `submit` gets in only to be answered 404/403
            scopes = frozenset({"moderate", "submit"})
        for method, path in re.findall(r"`(GET|POST|DELETE) ([^`]+)`", route_cell):
            shown[(method, path)] = scopes
        if "(and its two files)" in route_cell:
            shown.update({("GET", "/docs/swagger-ui-bundle.js"): None, ("GET", "/docs/swagger-ui.css"): None})
            shown.update({("GET", "/console/console.js"): None, ("GET", "/console/console.css"): None})
    assert shown == {route: routes.scopes_of(*route) for route in ROUTES}

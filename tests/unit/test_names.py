"""Every port, endpoint, queue and function name is defined once (issue 12).

The tooling's definitions live in toolkit/names.py (queue names read from
infra/resources.json, function names from .chalice/config.json), the shipped
app's in chalicelib/config.py. Any other Python file that spells one of them
as a literal is a second copy that can drift; this test names it.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

from chalicelib import config
from toolkit import names

HOMES = {Path("toolkit/names.py"), Path("chalicelib/config.py")}
# The same word, meaning something else.
NOT_QUEUES = {("chalicelib/api/routes.py", "moderation")}  # an OpenAPI tag
PORTS = {names.RUN_LOCALSTACK_PORT, names.RUN_PG_PORT, names.RUN_API_PORT, names.DEPLOY_LOCALSTACK_PORT, names.DEPLOY_PG_PORT}


def _python_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "*.py"], cwd=names.ROOT, capture_output=True, text=True, check=True).stdout
    # Tests may spell values out to check them; everything else may not.
    return [Path(p) for p in out.split() if not p.startswith("tests/")]


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _copies(path: Path, queue_names: set[str]) -> Iterator[str]:
    tree = ast.parse((names.ROOT / path).read_text(), str(path))
    docstrings = _docstrings(tree)
    port_in_text = re.compile(r":(" + "|".join(str(p) for p in PORTS) + r")\b")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or id(node) in docstrings:
            continue
        value = node.value
        if isinstance(value, int) and not isinstance(value, bool) and value in PORTS:
            yield f"{path}:{node.lineno}: port {value}"
        elif isinstance(value, str) and value in queue_names and (str(path), value) not in NOT_QUEUES:
            yield f"{path}:{node.lineno}: name {value!r}"
        elif isinstance(value, str) and port_in_text.search(value):
            yield f"{path}:{node.lineno}: port in {value[:60]!r}"


def test_no_second_copy_of_a_port_or_queue_name() -> None:
    queue_names = {names.queues().main, names.queues().dlq}
    copies = [c for path in _python_files() if path not in HOMES for c in _copies(path, queue_names)]
    assert copies == [], "defined in toolkit/names.py or chalicelib/config.py; use those:\n" + "\n".join(copies)


def test_the_app_and_the_template_name_the_same_queues() -> None:
    assert (config.QUEUE_NAME, config.DLQ_NAME) == (names.queues().main, names.queues().dlq)
    # and the webhooks' pair (issue 22)
    queues = {p["QueueName"] for p in names.queue_resources().values()}
    assert {config.WEBHOOK_QUEUE_NAME, config.WEBHOOK_DLQ_NAME} <= queues


def test_functions_come_from_the_chalice_config() -> None:
    chalice = json.loads(names.CHALICE_CONFIG_FILE.read_text())
    assert names.functions() == tuple(chalice["lambda_functions"]) == ("api_handler", "score", "reconcile", "migrate",
                                                                                "send_webhooks")  # issue 22


def test_the_two_local_stacks_never_share_a_port() -> None:
    run = {names.RUN_LOCALSTACK_PORT, names.RUN_PG_PORT, names.RUN_API_PORT}
    deploy = {names.DEPLOY_LOCALSTACK_PORT, names.DEPLOY_PG_PORT}
    assert not run & deploy


def test_the_scorers_redrive_count_is_the_templates() -> None:
    resources = json.loads(names.RESOURCES_FILE.read_text())["Resources"]
    main = next(r for r in resources.values() if r["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in r["Properties"])
    assert names.max_receive_count() == main["Properties"]["RedrivePolicy"]["maxReceiveCount"] == 3

"""`make run` reloads the app when app.py or chalicelib/ changes (devstack/reload.py), on a copy of the app
(DEVSTACK_APP_DIR): the API and the runner serve the new code, PostgreSQL and LocalStack are the same processes,
and code that does not import leaves the running app as it was."""

from __future__ import annotations

import shutil
import time
import urllib.error
from collections.abc import Callable
from http.client import HTTPException

import pytest

from devstack.stack import ports_of
from tests.e2e.e2e_stack import Stack, http, make_run
from toolkit.names import ROOT
from toolkit.procs import holder

pytestmark = pytest.mark.e2e

PROBE = '''

@app.route("/reload-probe")
def reload_probe() -> dict[str, str]:
    return {"served": "the new code"}
'''


def _eventually(check: Callable[[], bool], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        # The API restarting: refused, reset, or cut off mid-answer (IncompleteRead: the old server stopped
        # between its headers and its body).
        except (urllib.error.URLError, ConnectionError, HTTPException):
            pass
        time.sleep(0.3)
    return False


def _complete_a_task(stack: Stack) -> None:
    status, body = http("POST", f"{stack.api}/moderation/async_predict?item_id=1", key=stack.api_key)
    assert status == 202, body
    url = f"{stack.api}/moderation/moderation_result/{body['task_id']}"
    assert _eventually(lambda: http("GET", url, key=stack.api_key)[1]["status"] == "completed", 30)


def test_a_change_under_app_or_chalicelib_reloads_the_app_only(tmp_path_factory: pytest.TempPathFactory):
    app_dir = tmp_path_factory.mktemp("app")
    shutil.copy2(ROOT / "app.py", app_dir / "app.py")
    skip = shutil.ignore_patterns("__pycache__", "deployments", "deployed", "venv")
    for folder in ("chalicelib", ".chalice"):
        shutil.copytree(ROOT / folder, app_dir / folder, ignore=skip)
    with make_run(tmp_path_factory, extra_env={"DEVSTACK_APP_DIR": str(app_dir)}) as stack:
        servers = [holder(port) for port in ports_of(stack.env)[1:]]  # PostgreSQL, LocalStack: "name (pid N)"
        assert all(servers), servers
        assert http("GET", f"{stack.api}/reload-probe")[0] == 404

        with (app_dir / "app.py").open("a") as f:
            f.write(PROBE)
        assert _eventually(lambda: http("GET", f"{stack.api}/reload-probe") == (200, {"served": "the new code"})), \
            stack.log.read_text()[-3000:]
        assert _eventually(lambda: "the API and the runner run the new code" in stack.log.read_text())
        log = stack.log.read_text()
        assert "reload: app.py changed" in log, log[-3000:]
        assert _eventually(lambda: stack.log.read_text().count("polling http") == 2), "the runner was not restarted"
        _complete_a_task(stack)  # the new runner scores

        api = holder(ports_of(stack.env)[0])
        errors = app_dir / "chalicelib" / "errors.py"
        errors.write_text(errors.read_text() + "\ndef broken(:\n")
        assert _eventually(lambda: "the new code does not import" in stack.log.read_text()), stack.log.read_text()[-3000:]
        assert "chalicelib/errors.py" in stack.log.read_text()
        # The running app is the one before the broken save, and still scores.
        assert holder(ports_of(stack.env)[0]) == api
        assert http("GET", f"{stack.api}/reload-probe") == (200, {"served": "the new code"})
        _complete_a_task(stack)
        assert [holder(port) for port in ports_of(stack.env)[1:]] == servers

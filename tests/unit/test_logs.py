"""The app's log lines: one JSON line each, on Lambda and under `chalice local`."""

from __future__ import annotations

import json
import subprocess
import sys


def test_a_log_line_is_written_once_as_json() -> None:
    # A fresh interpreter: logging's handlers are process state.
    code = (
        "import app\n"
        "from chalicelib.logs import logger\n"
        "logger.info('one line', extra={'task_id': 7})\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    lines = [line for line in (out.stdout + out.stderr).splitlines() if "one line" in line]
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert record["message"] == "one line" and record["task_id"] == 7 and record["service"] == "ad-moderation"

"""The host-mode LocalStack (toolkit/localstack.py) listens where GATEWAY_LISTEN says, and nowhere else:
its Twisted gateway, left to itself, binds every interface (toolkit/localstack_runtime.py); and it keeps
its files in its own folder, never in the machine-wide ones another instance uses."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from toolkit.localstack import RUNTIME_SCRIPT


def listening(endpoint: str) -> list:
    """The sockets listening on the endpoint's port, whatever their address."""
    port = urlsplit(endpoint).port
    return [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.laddr.port == port]


def test_localstack_listens_on_the_host_it_was_given_only(localstack_endpoint: str) -> None:
    listeners = listening(localstack_endpoint)
    assert [c.laddr.ip for c in listeners] == ["127.0.0.1"], listeners
    owner = psutil.Process(listeners[0].pid)
    assert str(RUNTIME_SCRIPT) in owner.cmdline()
    with urllib.request.urlopen(f"{localstack_endpoint}/_localstack/health", timeout=10) as resp:
        assert json.loads(resp.read())["services"]["sqs"] in ("available", "running")


def test_localstack_keeps_its_files_in_its_own_folder(localstack_endpoint: str) -> None:
    """On a machine LocalStack takes for a container (this CI's), it used the container's
    /var/lib/localstack and /tmp/localstack, shared by every instance: two starting at once
    wrote and read one TLS certificate there."""
    port = urlsplit(localstack_endpoint).port
    [listener] = listening(localstack_endpoint)
    root = Path(psutil.Process(listener.pid).environ()["FILESYSTEM_ROOT"])
    assert root.name == "filesystem" and f"port-{port}" in root.parts
    assert [p.relative_to(root).as_posix() for p in root.rglob("server.test.pem")] == ["var/lib/localstack/cache/server.test.pem"]

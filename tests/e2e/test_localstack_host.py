"""The host-mode LocalStack (toolkit/localstack.py) listens where GATEWAY_LISTEN says, and nowhere else:
its Twisted gateway, left to itself, binds every interface (toolkit/localstack_runtime.py)."""

from __future__ import annotations

import json
import urllib.request
from urllib.parse import urlsplit

import psutil

from toolkit.localstack import RUNTIME_SCRIPT


def test_localstack_listens_on_the_host_it_was_given_only(localstack_endpoint: str) -> None:
    port = urlsplit(localstack_endpoint).port
    listeners = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    assert [c.laddr.ip for c in listeners] == ["127.0.0.1"], listeners
    owner = psutil.Process(listeners[0].pid)
    assert str(RUNTIME_SCRIPT) in owner.cmdline()
    with urllib.request.urlopen(f"{localstack_endpoint}/_localstack/health", timeout=10) as resp:
        assert json.loads(resp.read())["services"]["sqs"] in ("available", "running")

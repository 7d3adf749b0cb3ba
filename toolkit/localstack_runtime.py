"""LocalStack's runtime, as `python -m localstack.runtime.main` starts it, with its gateway on Twisted
bound to GATEWAY_LISTEN's host. Run by LocalStack's own interpreter (.venv-localstack, Python 3.13)
with -P, so this folder's modules do not shadow its packages (toolkit/localstack.py starts it).

Why not Hypercorn, the gateway GATEWAY_LISTEN is honoured by: each request through Hypercorn costs
LocalStack about a quarter more CPU than through Twisted (its default, and the Docker image's):
the deployed contract fuzz, 1,900 requests, 55-60 s of LocalStack's CPU against 44 s. But
LocalStack 2026.3's Twisted server binds IPv4 to every interface whatever GATEWAY_LISTEN says
(localstack/runtime/server/twisted.py: "TODO: interface = host?"): an unauthenticated AWS on the
LAN. Here the module's `endpoints` gets an IPv4 listener bound to the host asked for; nothing else
of LocalStack changes. tests/e2e/test_localstack_host.py checks where it listens.
"""

from __future__ import annotations

import os
import runpy
from typing import Any


def main() -> None:
    # LocalStack's packages: importable only by its interpreter, so imported here.
    from localstack.runtime.server import twisted as twisted_server
    from twisted.internet import endpoints

    host = os.environ["GATEWAY_LISTEN"].rsplit(":", 1)[0]

    class BoundEndpoints:
        """What localstack.runtime.server.twisted uses of twisted.internet.endpoints."""

        TCP6ServerEndpoint = endpoints.TCP6ServerEndpoint

        @staticmethod
        def TCP4ServerEndpoint(reactor: Any, port: int, backlog: int = 50, interface: str = "") -> Any:  # Twisted's name
            return endpoints.TCP4ServerEndpoint(reactor, port, backlog, interface or host)

    twisted_server.endpoints = BoundEndpoints
    runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

"""plux plugin registered in the ``localstack.lambda.runtime_executor`` entry-point group.

LocalStack resolves ``LAMBDA_RUNTIME_EXECUTOR=<name>`` through a plux ``PluginManager`` for that
namespace and calls ``manager.load(name).load()``; ``load()`` must return the RuntimeExecutor class.
"""

from __future__ import annotations

from typing import Any

from localstack.services.lambda_.invocation.plugins import RuntimeExecutorPlugin

from localstack_local_executor import PLUGIN_NAME


class LocalProcessRuntimeExecutorPlugin(RuntimeExecutorPlugin):
    name = PLUGIN_NAME

    def load(self, *args: Any, **kwargs: Any) -> type:
        from localstack_local_executor.executor import LocalProcessRuntimeExecutor

        return LocalProcessRuntimeExecutor

"""LocalStack Lambda runtime executor running Python functions as local processes.

Enable with ``LAMBDA_RUNTIME_EXECUTOR=local-process`` after installing this package into the
LocalStack virtualenv. See README.md next to pyproject.toml.
"""

PLUGIN_NAME = "local-process"
WRITTEN_FOR_LOCALSTACK = "2026.3.0"

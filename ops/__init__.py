"""Operator tools: run them as modules, e.g. `python -m ops.dlq list`."""

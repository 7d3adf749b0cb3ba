"""Offline model training: dataset generation and fitting. Never imported by the Lambda."""

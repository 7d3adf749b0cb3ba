"""Settings: no database default, so a misconfigured function says what is missing (issue 14)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from chalicelib import config, deps


@pytest.fixture()
def no_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_SECRET_ARN", raising=False)
    deps.reset()
    yield
    deps.reset()


def test_settings_without_a_database_name_both_variables(no_database: None) -> None:
    with pytest.raises(config.ConfigurationError) as err:
        config.get_settings()
    assert "DATABASE_URL" in str(err.value) and "DATABASE_SECRET_ARN" in str(err.value)


def test_an_empty_variable_counts_as_unset(no_database: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "")
    with pytest.raises(config.ConfigurationError):
        config.get_settings()


def test_the_url_wins_over_the_secret(no_database: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db.example/x")
    monkeypatch.setenv("DATABASE_SECRET_ARN", "never-read")
    assert deps.database_url() == "postgresql://u@db.example/x"


def test_the_secret_is_fetched_where_the_adapters_are_built(no_database: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import mock_aws

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        arn = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name="ad-moderation/test/database", SecretString="postgresql://u:p@db.example/x\n"
        )["ARN"]
        monkeypatch.setenv("DATABASE_SECRET_ARN", arn)
        assert config.get_settings().database_url is None
        assert deps.database_url() == "postgresql://u:p@db.example/x"


def test_a_bad_integer_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCORING_BATCH_SIZE", "ten")
    with pytest.raises(config.ConfigurationError, match="SCORING_BATCH_SIZE"):
        config.batch_size()


ROOT = Path(__file__).resolve().parents[2]


def _import_app(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`import app` in a fresh interpreter, as a Lambda runtime loads the handler module."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "DATABASE_SECRET_ARN", "DB_REQUIRE_TLS", "DB_SSL_ROOT_CERT")}
    return subprocess.run([sys.executable, "-c", "import app"], cwd=ROOT, env={**base, **env}, capture_output=True,
                          text=True, check=False)


def test_a_deployed_function_without_its_database_fails_at_init_naming_what_is_missing() -> None:
    result = _import_app({"AWS_LAMBDA_FUNCTION_NAME": "ad-moderation-dev-score"})
    assert result.returncode != 0
    assert "ConfigurationError" in result.stderr
    assert "DATABASE_URL" in result.stderr and "DATABASE_SECRET_ARN" in result.stderr


def test_a_deployed_function_requiring_tls_without_its_ca_bundle_fails_at_init() -> None:
    result = _import_app({"AWS_LAMBDA_FUNCTION_NAME": "ad-moderation-prod", "DATABASE_SECRET_ARN": "arn:x",
                          "DB_REQUIRE_TLS": "true", "DB_SSL_ROOT_CERT": "chalicelib/certs/missing.pem"})
    assert result.returncode != 0 and "DB_SSL_ROOT_CERT" in result.stderr, result.stderr


def test_the_custom_resources_function_fails_in_its_handler_which_answers_cloudformation() -> None:
    """A failed init sends CloudFormation nothing (the stack would wait an hour); migrate's handler answers FAILED."""
    result = _import_app({"AWS_LAMBDA_FUNCTION_NAME": "ad-moderation-dev-migrate", "_HANDLER": "app.migrate"})
    assert result.returncode == 0, result.stderr
    result = _import_app({"AWS_LAMBDA_FUNCTION_NAME": "ad-moderation-dev-score", "_HANDLER": "app.score"})
    assert result.returncode != 0 and "DATABASE_SECRET_ARN" in result.stderr


def test_init_reads_only_the_environment() -> None:
    """With its settings, a function's init succeeds without reaching the secret or the database
    (nothing answers at the endpoint: any call would fail the import)."""
    result = _import_app({"AWS_LAMBDA_FUNCTION_NAME": "ad-moderation-dev", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
                          "DATABASE_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:000000000000:secret:x"})
    assert result.returncode == 0, result.stderr


def test_outside_lambda_importing_the_app_needs_no_database() -> None:
    """Tests, `chalice local`, `chalice package` import app.py without a database."""
    result = _import_app({})
    assert result.returncode == 0, result.stderr


def test_a_bad_boolean_is_a_configuration_error(no_database: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db.example/x")
    monkeypatch.setenv("DB_REQUIRE_TLS", "maybe")
    with pytest.raises(config.ConfigurationError, match="DB_REQUIRE_TLS"):
        config.get_settings()


@pytest.mark.parametrize(("raw", "expected"), [(None, None), ("", None), ("3", 3), ("7", 7)])
def test_max_receive_count_is_optional(no_database: None, monkeypatch: pytest.MonkeyPatch, raw: str | None,
                                       expected: int | None) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db.example/x")
    if raw is None:
        monkeypatch.delenv("MAX_RECEIVE_COUNT", raising=False)
    else:
        monkeypatch.setenv("MAX_RECEIVE_COUNT", raw)
    assert config.get_settings().max_receive_count == expected


def test_a_negative_max_receive_count_is_refused(no_database: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db.example/x")
    monkeypatch.setenv("MAX_RECEIVE_COUNT", "-1")
    with pytest.raises(config.ConfigurationError, match="MAX_RECEIVE_COUNT"):
        config.get_settings()

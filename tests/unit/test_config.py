"""Settings: no database default, so a misconfigured function says what is missing (issue 14)."""

from __future__ import annotations

from collections.abc import Iterator

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

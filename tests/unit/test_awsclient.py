"""chalicelib.awsclient: botocore clients built without botocore's census of every service."""

from __future__ import annotations

import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import UnknownServiceError

from chalicelib import awsclient


@pytest.fixture(autouse=True)
def region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def test_the_clients_the_app_builds_are_botocores() -> None:
    for service in ("sqs", "secretsmanager", "s3"):
        client = awsclient.create(service, Config(connect_timeout=2))
        reference = botocore.session.get_session().create_client(service)
        assert client.meta.service_model.service_name == service
        assert client.meta.service_model.api_version == reference.meta.service_model.api_version
        assert sorted(client.meta.service_model.operation_names) == sorted(reference.meta.service_model.operation_names)
        assert client.meta.endpoint_url == reference.meta.endpoint_url


def test_the_check_looks_for_one_service_and_the_list_is_botocores() -> None:
    loader = awsclient._loader(None)
    known = loader.list_available_services("service-2")
    assert "sqs" in known and "no-such-service" not in known and "" not in known and "../sqs" not in known
    full = botocore.session.get_session().get_component("data_loader").list_available_services("service-2")
    assert list(known) == full


def test_an_unknown_service_is_refused_as_botocore_refuses_it() -> None:
    with pytest.raises(UnknownServiceError):
        awsclient.create("no-such-service", Config())


def test_aws_data_path_is_honoured(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    loader = awsclient._loader(botocore.session.get_session().get_config_variable("data_path"))
    assert str(tmp_path) in loader.search_paths

"""A real LocalStack (host mode) for the end-to-end suites that need one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import free_port


@pytest.fixture(scope="session")
def localstack_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from toolkit.localstack import HostLocalStack

    ls = HostLocalStack(data_dir=tmp_path_factory.mktemp("localstack"), endpoint=f"http://127.0.0.1:{free_port()}")
    ls.start()
    yield ls.endpoint
    ls.stop()

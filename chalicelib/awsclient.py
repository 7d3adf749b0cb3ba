"""botocore clients without the service census: a fifth of an SQS client's cold start.

Before it loads a service's model, botocore's Loader checks the name against every
service it knows: a directory listing of ~400 services and a stat per candidate file
(`Loader.list_available_services`, twice per client: the model and its endpoint rules).
That census was about 20 ms (40 under load) of the 60-150 ms the API's and the scorer's first call spends
building its SQS client (make bench, cold start with the registry; measured with
cProfile). `ServiceLoader` answers the check by looking for the one service asked
about; everything else, and the full list when something iterates it, is botocore's.
docs/performance.md#where-the-time-goes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any


def create(service: str, config: Any) -> Any:
    """A botocore client for `service` (botocore.session.get_session().create_client, with the loader below)."""
    import botocore.session

    session = botocore.session.get_session()
    session.register_component("data_loader", _loader(session.get_config_variable("data_path")))
    return session.create_client(service, config=config)


def _loader(data_path: str | None) -> Any:
    """botocore.loaders.create_loader's loader (AWS_DATA_PATH honoured), as a ServiceLoader."""
    from botocore.loaders import Loader

    class ServiceLoader(Loader):
        def list_available_services(self, type_name: str) -> _KnownServices:
            return _KnownServices(self, type_name)

    extra = [os.path.expanduser(os.path.expandvars(p)) for p in data_path.split(os.pathsep)] if data_path else None
    return ServiceLoader(extra_search_paths=extra) if extra else ServiceLoader()


class _KnownServices:
    """`name in services` looks for that service's directory only; iterating lists them all."""

    def __init__(self, loader: Any, type_name: str) -> None:
        self._loader, self._type_name = loader, type_name

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(name) and os.sep not in name and any(
            os.path.isdir(os.path.join(path, name)) for path in self._loader.search_paths)

    def __iter__(self) -> Iterator[str]:
        from botocore.loaders import Loader

        return iter(Loader.list_available_services(self._loader, self._type_name))


class Lazy:
    """A client built on its first use, not when its owner is built.

    The scorer's clean batch touches no SQS (its messages are acknowledged by the
    batch response); only a back-off, a retry or a DLQ send does. Building the
    client there, and not on every cold start's first batch, keeps botocore's
    model loading (most of the scorer's cold start after the model) off the path
    of a batch that does not need it. docs/performance.md#where-the-time-goes.
    Built under a lock: `chalice local` serves requests on threads.
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        return self._client is not None

    def __getattr__(self, name: str) -> Any:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._factory()
                client = self._client
        return getattr(client, name)

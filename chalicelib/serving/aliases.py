"""Which model a function serves: the registry's aliases, followed without a deploy.

At cold start a function reads aliases.json and loads the version `live` names
(and, for the scorer, `shadow`); then, at most every MODEL_ALIAS_CHECK_SECONDS,
it asks S3 whether aliases.json changed (a conditional GET: 304 when not) and
adopts what changed. A version is adopted only once its bytes match the sha256
the alias recorded, it loads, and its probe ads score as its publisher scored
them; otherwise it is refused (logged, and counted as the ModelRefused metric
an alarm watches) and the version already serving keeps serving. Without a
registry (MODEL_BUCKET unset), or until its `live` alias is set, the packaged
artifact serves.

Callers take one `Snapshot` per batch or request, so a switch happens between
batches, never inside one: every verdict of a batch comes from one version.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from chalicelib.domain.features import AdFeatures
from chalicelib.domain.verdicts import Thresholds
from chalicelib.logs import logger
from chalicelib.serving.model import loads
from chalicelib.serving.registry import (
    ALIASES_KEY,
    LIVE,
    SHADOW,
    AliasEntry,
    ObjectReader,
    RegistryError,
    artifact_key,
    parse_aliases,
)
from chalicelib.serving.registry import sha256 as digest


class Model(Protocol):
    """What scoring needs of a model: chalicelib.serving.model.Model, or a test's fake."""

    @property
    def version(self) -> str: ...

    @property
    def thresholds(self) -> Thresholds: ...

    def predict_proba(self, ads: Sequence[AdFeatures]) -> list[float]: ...


class Snapshot(NamedTuple):
    """The versions to score one batch (or answer one request) with."""

    live: Model
    shadow: Model | None = None


@runtime_checkable
class Models(Protocol):
    """The versions to score with now."""

    def snapshot(self) -> Snapshot: ...


class Pinned:
    """One model for ever: the packaged artifact without a registry, or a test's model."""

    def __init__(self, live: Model, shadow: Model | None = None) -> None:
        self._snapshot = Snapshot(live, shadow)

    def snapshot(self) -> Snapshot:
        return self._snapshot


def as_models(model: Model | Models) -> Models:
    """A source of snapshots; a bare model is pinned."""
    return model if isinstance(model, Models) else Pinned(model)


class Followed:
    """The models the registry's aliases name, re-checked at most every `check_seconds`."""

    def __init__(self, reader: ObjectReader, fallback: Callable[[], Model], *, function: str, check_seconds: float,
                 shadow: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self._reader = reader
        self._fallback = fallback
        self._function = function
        self._check_seconds = check_seconds
        self._aliases = (LIVE, SHADOW) if shadow else (LIVE,)
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._etag: str | None = None
        self._next_check = 0.0
        # Loaded versions by (version, sha256): promoting the shadow to live costs no fetch.
        self._loaded: dict[tuple[str, str], Model] = {}

    def snapshot(self) -> Snapshot:
        current = self._snapshot
        if current is not None and self._clock() < self._next_check:
            return current
        # One thread re-checks; the others go on with what serves (they wait only at cold start).
        if current is not None and not self._lock.acquire(blocking=False):
            return current
        if current is None:
            self._lock.acquire()
        try:
            if self._snapshot is None or self._clock() >= self._next_check:
                self._refresh()
            return self._serving()
        finally:
            self._lock.release()

    def _serving(self) -> Snapshot:
        """What serves now; the packaged model until something else was adopted."""
        if self._snapshot is None:
            self._snapshot = Snapshot(self._fallback())
        return self._snapshot

    def _refresh(self) -> None:
        self._next_check = self._clock() + self._check_seconds
        try:
            fetched = self._reader.get(ALIASES_KEY, if_none_match=self._etag)
        except KeyError:  # an empty registry: nothing was ever promoted
            if self._snapshot is None:
                logger.info("model registry has no aliases yet; serving the packaged model",
                            extra={"bucket": self._reader.bucket})
                self._serving()
            return
        except RegistryError as exc:
            self._refuse("registry unreadable", None, str(exc))
            return
        if fetched is None:  # 304: nothing changed
            return
        try:
            aliases = parse_aliases(fetched.body)
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with it, the current models keep serving
            self._refuse(f"{ALIASES_KEY} unreadable", None, f"{type(exc).__name__}: {exc}")
            return
        self._adopt(aliases, fetched.etag)

    def _adopt(self, aliases: Mapping[str, AliasEntry], etag: str) -> None:
        current = self._snapshot
        models: dict[str, Model | None] = {}
        complete = True
        for alias in self._aliases:
            entry = aliases.get(alias)
            if entry is None:
                models[alias] = None
                continue
            model = self._load(alias, entry)
            if model is None:  # refused: keep what this alias served
                complete = False
                model = (current.live if alias == LIVE else current.shadow) if current else None
            models[alias] = model
        live = models[LIVE] or (current.live if current else None) or self._fallback()
        snapshot = Snapshot(live, models.get(SHADOW))
        now, before = _versions(snapshot), _versions(current)
        if now != before:
            logger.info("serving model versions", extra={"live": now[0], "shadow": now[1], "was": before})
        self._snapshot = snapshot
        # A refusal leaves the ETag unadopted: the next check fetches the alias
        # again, so a version that failed for a passing reason is retried.
        self._etag = etag if complete else None
        self._loaded = {k: m for k, m in self._loaded.items() if m is snapshot.live or m is snapshot.shadow}

    def _load(self, alias: str, entry: AliasEntry) -> Model | None:
        key = (entry.version, entry.sha256)
        if key in self._loaded:
            return self._loaded[key]
        try:
            fetched = self._reader.get(artifact_key(entry.version))
            if fetched is None:  # cannot happen without If-None-Match; a broken endpoint could
                raise ValueError("the artifact's GET answered 304")
            if digest(fetched.body) != entry.sha256:
                raise ValueError(f"sha256 {digest(fetched.body)[:12]} is not the published {entry.sha256[:12]}")
            model = loads(fetched.body)
            if model.version != entry.version:
                raise ValueError(f"the artifact calls itself {model.version}")
            model.check_probe(entry.probe)
        except Exception as exc:  # noqa: BLE001 - any failure to load a version refuses it
            self._refuse(f"{alias} version refused", entry.version, f"{type(exc).__name__}: {exc}")
            return None
        self._loaded[key] = model
        return model

    def _refuse(self, what: str, version: str | None, error: str) -> None:
        logger.error(what, extra={"model_version": version, "error": error, "serving": self._serving().live.version,
                                  "bucket": self._reader.bucket})
        from chalicelib import metrics  # only here: the happy path of a cold start does without Powertools Metrics

        metrics.emit(self._function, {metrics.MODEL_REFUSED: 1})


def _versions(snapshot: Snapshot | None) -> tuple[str | None, str | None]:
    """(live, shadow) versions, for the log."""
    if snapshot is None:
        return None, None
    return snapshot.live.version, snapshot.shadow.version if snapshot.shadow is not None else None

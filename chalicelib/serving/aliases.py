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

    def status(self) -> dict[str, object]:
        return {"registry": None, "serving": self._snapshot.live.version, "refused": None}


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
        # ... and the ETag their artifact had: each re-check asks S3 whether it still has it.
        self._artifact_etags: dict[tuple[str, str], str] = {}
        self._aliased: dict[str, str] = {}  # alias -> the version aliases.json names
        self._refused: dict[str, str | None] | None = None  # the latest refusal: version, reason, alias

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
        if fetched is None:  # 304: the aliases did not move; are the objects served still the published ones?
            self._reverify()
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
        self._artifact_etags = {k: e for k, e in self._artifact_etags.items() if k in self._loaded}
        self._aliased = {a: v for a, v in self._aliased.items() if aliases.get(a) is not None}

    def _load(self, alias: str, entry: AliasEntry) -> Model | None:
        key = (entry.version, entry.sha256)
        self._aliased[alias] = entry.version
        if key in self._loaded:
            self._accepted(alias)
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
            self._refuse(f"{alias} version refused", entry.version, f"{type(exc).__name__}: {exc}", alias)
            return None
        self._loaded[key] = model
        self._artifact_etags[key] = fetched.etag
        self._accepted(alias)
        return model

    def _accepted(self, alias: str) -> None:
        if self._refused is not None and self._refused.get("alias") in (alias, "registry unreadable"):
            self._refused = None

    def _reverify(self) -> None:
        """A conditional GET of each artifact served from the registry: 304 while S3
        holds the bytes that were verified. Other bytes under the version are refused
        (logged, counted, reported by /health) until they match again: the verified
        copy in memory keeps serving, and a cold start would serve the packaged model."""
        for (version, published), etag in list(self._artifact_etags.items()):
            alias = next((a for a, v in self._aliased.items() if v == version), LIVE)
            try:
                fetched = self._reader.get(artifact_key(version), if_none_match=etag)
            except KeyError:
                self._refuse(f"{alias} version refused", version, "its artifact is gone from the registry", alias)
                continue
            except RegistryError as exc:
                self._refuse("registry unreadable", None, str(exc))
                continue
            stored = None if fetched is None else digest(fetched.body)
            if stored is not None and stored != published:
                self._refuse(f"{alias} version refused", version, f"its stored artifact changed: sha256 "
                             f"{stored[:12]} is not the published {published[:12]}", alias)
                continue
            if fetched is not None:  # the verified bytes again, after a repair
                self._artifact_etags[(version, published)] = fetched.etag
            if self._refused is not None and self._refused.get("version") == version:
                self._refused = None

    def status(self) -> dict[str, object]:
        """What /health reports: the version each alias names, the version served, the latest refusal."""
        current = self._snapshot
        return {"registry": self._reader.bucket, "aliases": dict(self._aliased),
                "serving": current.live.version if current else None, "refused": self._refused,
                "check_seconds": self._check_seconds}

    def _refuse(self, what: str, version: str | None, error: str, alias: str | None = None) -> None:
        self._refused = {"version": version, "reason": error, "alias": alias or what}
        logger.error(what, extra={"model_version": version, "error": error, "serving": self._serving().live.version,
                                  "bucket": self._reader.bucket})
        from chalicelib import metrics  # only here: the happy path of a cold start does without Powertools Metrics

        metrics.emit(self._function, {metrics.MODEL_REFUSED: 1})


def _versions(snapshot: Snapshot | None) -> tuple[str | None, str | None]:
    """(live, shadow) versions, for the log."""
    if snapshot is None:
        return None, None
    return snapshot.live.version, snapshot.shadow.version if snapshot.shadow is not None else None

"""The model registry's write side, for the tooling only (ops/models.py, make run):
publish immutable versions, move aliases with compare-and-swap, keep the audit
trail, over a boto3 S3 client. The layout and the read side the functions use
are chalicelib/serving/registry.py.

Every write is conditional (S3 conditional writes, which LocalStack and moto
implement too): a version is written with `If-None-Match: *`, so it can never
be replaced; aliases.json with `If-Match: <the ETag read>`, so two promotes
that race cannot lose one another's change (the loser re-reads and retries).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from chalicelib.serving.registry import (
    ALIASES_KEY,
    DOC_FORMAT,
    LIVE,
    SHADOW,
    VERSIONS_PREFIX,
    AliasEntry,
    RegistryError,
    artifact_key,
    parse_aliases,
    sha256,
)

AUDIT_PREFIX = "audit/"
ALIAS_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Versions an alias remembers (newest first): what `rollback` goes back to.
HISTORY = 10


def metadata_key(version: str) -> str:
    return f"{VERSIONS_PREFIX}{version}/metadata.json"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Published(NamedTuple):
    version: str
    sha256: str
    created: bool  # False: this exact artifact was already published
    repaired: str | None = None  # the sha256 of the wrong bytes this publish replaced


class Change(NamedTuple):
    """An alias change: what it named before and after, and an alias the change cleared
    (promoting shadow's version to live clears shadow: one version is not scored twice)."""

    before: AliasEntry | None
    after: AliasEntry
    cleared: tuple[str, AliasEntry] | None = None


class Registry:
    """Publish versions, move aliases, list what is there (ops/models.py, make run).

    `mirror`: a directory that holds a copy of every object this registry writes
    (make run's state directory): LocalStack keeps nothing across a restart, and
    `restore` puts the copy back (docs/local-stack.md).
    """

    def __init__(self, s3: Any, bucket: str, mirror: Path | None = None) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.mirror = mirror

    # -- objects

    def _get(self, key: str) -> tuple[bytes, str] | None:
        try:
            obj = self.s3.get_object(Bucket=self.bucket, Key=key)
        except self.s3.exceptions.NoSuchKey:
            return None
        return obj["Body"].read(), str(obj["ETag"])

    def _put(self, key: str, body: bytes, *, if_match: str | None = None) -> bool:
        """Write `key` only if it does not exist (or still has ETag `if_match`); False if it does (or changed)."""
        condition = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", **condition)
        except self.s3.exceptions.ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise
        self._mirror(key, body)
        return True

    def _mirror(self, key: str, body: bytes) -> None:
        if self.mirror is None:
            return
        path = self.mirror / key
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(body)
        partial.replace(path)  # atomic: a restore never reads half a file

    def restore(self) -> int:
        """Put back every mirrored object the bucket lacks (a restarted LocalStack's
        bucket is empty); how many. An object already there is left as it is."""
        if self.mirror is None or not self.mirror.is_dir():
            return 0
        restored = 0
        for path in sorted(self.mirror.rglob("*")):
            if path.is_file() and not path.name.endswith(".partial"):
                key = path.relative_to(self.mirror).as_posix()
                try:
                    self.s3.put_object(Bucket=self.bucket, Key=key, Body=path.read_bytes(),
                                       ContentType="application/json", IfNoneMatch="*")
                    restored += 1
                except self.s3.exceptions.ClientError as err:
                    if err.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "ConditionalRequestConflict"):
                        raise
        return restored

    def ensure_bucket(self) -> bool:
        """Create the bucket (versioned: every aliases.json ever written is kept) unless it exists; True if created."""
        try:
            self.s3.head_bucket(Bucket=self.bucket)
            return False
        except self.s3.exceptions.ClientError:
            pass
        region = self.s3.meta.region_name
        extra = {} if region in (None, "us-east-1") else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        self.s3.create_bucket(Bucket=self.bucket, **extra)
        self.s3.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})
        return True

    # -- versions

    def publish_artifact(self, data: bytes, *, source: str, by: str, **extra: Any) -> tuple[Published, dict[str, Any]]:
        """Publish the bytes of a runtime artifact: it must load and score the probe
        ads, whose scores are recorded for the functions to check. (Published, metadata)."""
        from chalicelib.serving.model import PROBE_ADS, loads

        try:
            model = loads(data)
            probe = model.predict_proba(PROBE_ADS)
            model.check_probe()
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"not a runtime artifact this code can serve: {type(exc).__name__}: {exc}") from exc
        metadata = describe(json.loads(data), data, probe, source=source, by=by, **extra)
        return self.publish(data, metadata), metadata

    def publish(self, artifact: bytes, metadata: Mapping[str, Any]) -> Published:
        """Store a new immutable version. Publishing the same bytes again is a no-op;
        other bytes under an existing version are refused, unless the stored bytes
        no longer match the sha256 the version was published with and these do: then
        they are written back (a repair; `repaired` says so)."""
        version, digest = str(metadata["version"]), str(metadata["sha256"])
        if not VERSION_NAME.match(version):
            raise RegistryError(f"version {version!r}: use letters, digits, '.', '_' or '-' (at most 64)")
        if digest != sha256(artifact):
            raise RegistryError(f"metadata sha256 {digest} is not the artifact's {sha256(artifact)}")
        created = self._put(artifact_key(version), artifact)
        repaired = None
        if not created:
            stored = self._get(artifact_key(version))
            if stored is not None and sha256(stored[0]) != digest:
                published = self._get(metadata_key(version))
                recorded = str(json.loads(published[0])["sha256"]) if published else None
                if recorded != digest:
                    raise RegistryError(f"version {version} is already published with other content "
                                        f"(sha256 {sha256(stored[0])[:12]}, this one {digest[:12]}); versions are immutable")
                # The stored bytes were changed after publishing (a tamper, a bad copy):
                # these are the published ones. If-Match: only over what was read.
                if not self._put(artifact_key(version), artifact, if_match=stored[1]):
                    raise RegistryError(f"version {version}'s artifact changed during the repair; try again")
                repaired = sha256(stored[0])
        # The metadata last: a version is listed once both exist, and a crash in
        # between is finished by publishing again.
        self._put(metadata_key(version), (json.dumps(dict(metadata), indent=1, ensure_ascii=False) + "\n").encode())
        return Published(version, digest, created, repaired)

    def metadata(self, version: str) -> dict[str, Any]:
        found = self._get(metadata_key(version))
        if found is None:
            raise RegistryError(f"no version {version!r} in s3://{self.bucket} (make model-list shows them)")
        return dict(json.loads(found[0]))

    def artifact(self, version: str) -> bytes:
        found = self._get(artifact_key(version))
        if found is None:
            raise RegistryError(f"no version {version!r} in s3://{self.bucket}")
        return found[0]

    def verify(self, version: str) -> dict[str, Any]:
        """Check the stored artifact as a function will before serving it: its bytes
        match the published sha256, it loads as `version`, its probe ads score as
        published. Its metadata, or RegistryError with the reason."""
        from chalicelib.serving.model import loads

        meta = self.metadata(version)
        data = self.artifact(version)
        if sha256(data) != meta["sha256"]:
            raise RegistryError(f"version {version} refused: its stored bytes have sha256 {sha256(data)[:12]}, "
                                f"published as {str(meta['sha256'])[:12]} (the object was changed; "
                                "make model-publish with the original artifact repairs it)")
        try:
            model = loads(data)
            if model.version != version:
                raise ValueError(f"the artifact calls itself {model.version}")
            model.check_probe(meta["probe"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"version {version} refused: {type(exc).__name__}: {exc}") from exc
        return meta

    def versions(self) -> list[dict[str, Any]]:
        """Every published version's metadata, oldest first."""
        keys = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=VERSIONS_PREFIX):
            keys += [o["Key"] for o in page.get("Contents", []) if o["Key"].endswith("/metadata.json")]
        found = [self.metadata(k.removeprefix(VERSIONS_PREFIX).removesuffix("/metadata.json")) for k in keys]
        return sorted(found, key=lambda m: (str(m.get("published_at", "")), str(m["version"])))

    # -- aliases

    def aliases(self) -> tuple[dict[str, AliasEntry], str | None]:
        """The aliases and the ETag of aliases.json (None: no alias was ever set)."""
        found = self._get(ALIASES_KEY)
        return (parse_aliases(found[0]), found[1]) if found else ({}, None)

    def promote(self, alias: str, version: str, by: str, *, rollback: bool = False) -> tuple[AliasEntry | None, AliasEntry]:
        """promote_change's (before, after)."""
        change = self.promote_change(alias, version, by, rollback=rollback)
        return change.before, change.after

    def promote_change(self, alias: str, version: str, by: str, *, rollback: bool = False) -> Change:
        """Point `alias` at `version` (the version it named goes on its history),
        once the stored artifact verifies (`verify`). Promoting to live the version
        shadow names clears shadow in the same write.
        With rollback=True, `version` is ignored: the alias goes back to the newest
        version of its history, which leaves the history. Returns (before, after).

        Compare-and-swap on aliases.json's ETag: a concurrent change makes the
        write fail, and the change is worked out again from what is there now.
        """
        if not ALIAS_NAME.match(alias):
            raise RegistryError(f"alias {alias!r}: lower-case letters, digits and '-'")
        for _ in range(8):
            aliases, etag = self.aliases()
            before = aliases.get(alias)
            if rollback:
                if before is None or not before.history:
                    raise RegistryError(f"alias {alias!r} has no earlier version to roll back to")
                version, history = before.history[0], before.history[1:]
            else:
                history = tuple(v for v in ((before.version, *before.history) if before else ()) if v != version)
            if before is not None and before.version == version and not rollback:
                return Change(before, before)  # already there: no write, no audit record
            meta = self.verify(version)
            after = AliasEntry(version, str(meta["sha256"]), tuple(meta["probe"]), utc_now(), by, history[:HISTORY])
            changed = {**aliases, alias: after}
            shadow = aliases.get(SHADOW)
            cleared = (SHADOW, shadow) if alias == LIVE and shadow is not None and shadow.version == version else None
            if cleared:
                del changed[SHADOW]
            if self._put(ALIASES_KEY, render_aliases(changed), if_match=etag):
                self._audit(alias, before, after, "rollback" if rollback else "promote")
                if cleared:
                    self._audit(SHADOW, shadow, None, f"unset (now {LIVE})", by=by)
                return Change(before, after, cleared)
        raise RegistryError(f"{ALIASES_KEY} kept changing under this promote; try again")

    def unset(self, alias: str, by: str) -> AliasEntry | None:
        """Remove an alias (e.g. stop shadow scoring); returns what it named."""
        for _ in range(8):
            aliases, etag = self.aliases()
            before = aliases.pop(alias, None)
            if before is None:
                return None
            if self._put(ALIASES_KEY, render_aliases(aliases), if_match=etag):
                self._audit(alias, before, None, "unset", by=by)
                return before
        raise RegistryError(f"{ALIASES_KEY} kept changing under this change; try again")

    def _audit(self, alias: str, before: AliasEntry | None, after: AliasEntry | None, action: str,
               by: str | None = None) -> None:
        now = datetime.now(UTC)
        record = {"at": now.isoformat(timespec="seconds"), "alias": alias, "action": action,
                  "by": by or (after.promoted_by if after else None),
                  "from": before.version if before else None, "to": after.version if after else None}
        # Microseconds in the key: records list in the order they were written.
        key = f"{AUDIT_PREFIX}{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{alias}-{sha256(json.dumps(record).encode())[:8]}.json"
        self._put(key, (json.dumps(record) + "\n").encode())

    def audit(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest alias changes, newest first."""
        keys: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=AUDIT_PREFIX):
            keys += [o["Key"] for o in page.get("Contents", [])]
        records = []
        for key in sorted(keys, reverse=True)[:limit]:
            found = self._get(key)
            if found:
                records.append(dict(json.loads(found[0])))
        return records


def bootstrap(registry: Registry, packaged: bytes, by: str) -> tuple[AliasEntry | None, Published | None]:
    """make run: the bucket, and in an empty registry the packaged artifact as its
    first version, live. Returns (live alias, what was published or None)."""
    registry.ensure_bucket()
    registry.restore()  # what the state directory kept of the registry, before deciding it is empty
    aliases, _ = registry.aliases()
    if aliases or registry.versions():
        return aliases.get(LIVE), None
    published, _ = registry.publish_artifact(packaged, source="packaged (chalicelib/artifacts/model.json)", by=by)
    _, live = registry.promote(LIVE, published.version, by)
    return live, published


def publisher() -> str:
    """Who publishes or promotes (the tooling): user@host, unless MODEL_PUBLISHER says."""
    import getpass
    import socket

    return os.environ.get("MODEL_PUBLISHER") or f"{getpass.getuser()}@{socket.gethostname()}"


def describe(artifact: Mapping[str, Any], data: bytes, probe: Sequence[float], *, source: str, by: str,
             **extra: Any) -> dict[str, Any]:
    """A version's metadata.json, from its artifact and who publishes it."""
    training = artifact.get("training", {})
    metrics = artifact.get("metrics", {}).get("heldout", {})
    return {
        "version": artifact["version"],
        "sha256": sha256(data),
        "bytes": len(data),
        "format": artifact.get("format"),
        "threshold": artifact["threshold"],
        "review_threshold": artifact.get("review_threshold"),
        "threshold_selection": artifact.get("threshold_selection"),
        "metrics": {k: metrics.get(k) for k in ("precision", "recall", "f1", "roc_auc", "accuracy", "review_rate", "size")},
        "data_fingerprint": training.get("dataset_sha256"),
        "sklearn": artifact.get("library_versions", {}).get("sklearn"),
        "probe": list(probe),
        "source": source,
        "published_at": utc_now(),
        "published_by": by,
        **extra,
    }


def render_aliases(aliases: Mapping[str, AliasEntry]) -> bytes:
    doc = {"format": DOC_FORMAT, "aliases": {name: aliases[name].to_json() for name in sorted(aliases)}}
    return (json.dumps(doc, indent=1) + "\n").encode()


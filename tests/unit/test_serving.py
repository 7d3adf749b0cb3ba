"""Following the registry's aliases (chalicelib/serving/aliases.py): cold start, the re-check
window, atomic switches, and refusing a version that does not load or probe right."""

from __future__ import annotations

import json

import pytest

from chalicelib.serving.aliases import Followed, Pinned, Snapshot, as_models
from chalicelib.serving.model import DEFAULT_MODEL_PATH, PROBE_ADS, load_model, loads
from chalicelib.serving.registry import ALIASES_KEY, AliasEntry, Fetched, RegistryUnavailable, artifact_key
from chalicelib.serving.registry import sha256 as digest
from toolkit.registry import render_aliases

PACKAGED = DEFAULT_MODEL_PATH.read_bytes()


def version(name: str, **changes: object) -> bytes:
    return json.dumps(json.loads(PACKAGED) | {"version": name} | changes).encode()


class FakeS3:
    """An ObjectReader over a dict, counting GETs; ETags are the bodies' hashes."""

    bucket = "fake"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.gets: list[str] = []
        self.down = False

    def get(self, key: str, if_none_match: str | None = None) -> Fetched | None:
        self.gets.append(key)
        if self.down:
            raise RegistryUnavailable("connection refused")
        if key not in self.objects:
            raise KeyError(key)
        etag = digest(self.objects[key])
        return None if etag == if_none_match else Fetched(self.objects[key], etag)

    def publish(self, data: bytes) -> AliasEntry:
        model = loads(data)
        self.objects[artifact_key(model.version)] = data
        return AliasEntry(model.version, digest(data), tuple(model.predict_proba(PROBE_ADS)), "now", "test")

    def point(self, **aliases: AliasEntry) -> None:
        self.objects[ALIASES_KEY] = render_aliases(aliases)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def s3() -> FakeS3:
    return FakeS3()


@pytest.fixture()
def clock() -> Clock:
    return Clock()


def refused(capsys: pytest.CaptureFixture[str]) -> int:
    """The ModelRefused EMF documents printed since the last call (what the alarm counts)."""
    return sum(1 for line in capsys.readouterr().out.splitlines() if '"ModelRefused"' in line)


def follow(s3: FakeS3, clock: Clock, *, shadow: bool = True) -> Followed:
    return Followed(s3, load_model, function="score", check_seconds=60, shadow=shadow, clock=clock)  # type: ignore[arg-type]


def test_an_empty_registry_serves_the_packaged_model(s3: FakeS3, clock: Clock, capsys: pytest.CaptureFixture[str]) -> None:
    models = follow(s3, clock)
    assert models.snapshot() == Snapshot(load_model(), None)
    assert refused(capsys) == 0


def test_cold_start_loads_live_and_shadow_then_rechecks_once_per_window(s3: FakeS3, clock: Clock) -> None:
    a, b = s3.publish(version("lr-a")), s3.publish(version("lr-b", threshold=0.7))
    s3.point(live=a, shadow=b)
    models = follow(s3, clock)
    first = models.snapshot()
    assert (first.live.version, first.shadow and first.shadow.version) == ("lr-a", "lr-b")
    assert first.shadow is not None and first.shadow.threshold == 0.7
    assert s3.gets == [ALIASES_KEY, artifact_key("lr-a"), artifact_key("lr-b")]
    clock.now += 59
    assert models.snapshot() is first and len(s3.gets) == 3  # inside the window: no request at all
    clock.now += 1
    # 304s: the aliases did not move, and the artifacts served are still the bytes verified.
    assert models.snapshot() is first and s3.gets[3:] == [ALIASES_KEY, artifact_key("lr-a"), artifact_key("lr-b")]


def test_a_promote_is_followed_within_the_window_and_a_shadow_promoted_costs_no_fetch(s3: FakeS3, clock: Clock) -> None:
    a, b = s3.publish(version("lr-a")), s3.publish(version("lr-b"))
    s3.point(live=a, shadow=b)
    models = follow(s3, clock)
    models.snapshot()
    s3.point(live=b)  # the shadow goes live; no shadow any more
    assert models.snapshot().live.version == "lr-a"
    clock.now += 60
    now = models.snapshot()
    assert (now.live.version, now.shadow) == ("lr-b", None)
    assert s3.gets.count(artifact_key("lr-b")) == 1


def test_the_api_does_not_load_the_shadow(s3: FakeS3, clock: Clock) -> None:
    a, b = s3.publish(version("lr-a")), s3.publish(version("lr-b"))
    s3.point(live=a, shadow=b)
    assert follow(s3, clock, shadow=False).snapshot().shadow is None
    assert artifact_key("lr-b") not in s3.gets


@pytest.mark.parametrize("breakage", ["bytes changed", "does not load", "probe differs", "missing"])
def test_a_bad_version_is_refused_and_the_previous_keeps_serving(
    s3: FakeS3, clock: Clock, capsys: pytest.CaptureFixture[str], breakage: str
) -> None:
    a = s3.publish(version("lr-a"))
    s3.point(live=a)
    models = follow(s3, clock)
    assert models.snapshot().live.version == "lr-a"
    bad = s3.publish(version("lr-bad", threshold=0.9))
    if breakage == "bytes changed":
        s3.objects[artifact_key("lr-bad")] += b" "
    elif breakage == "does not load":
        s3.objects[artifact_key("lr-bad")] = version("lr-bad", format=2)
        bad = AliasEntry(bad.version, digest(s3.objects[artifact_key("lr-bad")]), bad.probe, "now", "t")
    elif breakage == "probe differs":
        bad = AliasEntry(bad.version, bad.sha256, (bad.probe[0] + 0.01, bad.probe[1]), "now", "t")
    else:
        del s3.objects[artifact_key("lr-bad")]
    s3.point(live=bad)
    capsys.readouterr()
    clock.now += 60
    assert models.snapshot().live.version == "lr-a"
    assert refused(capsys) == 1
    clock.now += 60  # refused versions are tried again at the next check (a passing failure may pass)
    assert models.snapshot().live.version == "lr-a"
    assert refused(capsys) == 1


def test_an_unreachable_registry_serves_the_packaged_model_then_catches_up(
    s3: FakeS3, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    s3.point(live=s3.publish(version("lr-a")))
    s3.down = True
    models = follow(s3, clock)
    assert models.snapshot().live is load_model()
    assert refused(capsys) == 1
    s3.down = False
    clock.now += 60
    assert models.snapshot().live.version == "lr-a"


def test_a_bare_model_is_pinned() -> None:
    model = load_model()
    pinned = as_models(model)
    assert isinstance(pinned, Pinned) and pinned.snapshot() == Snapshot(model)
    assert as_models(pinned) is pinned


def test_a_warm_function_notices_a_changed_object_within_the_window(
    s3: FakeS3, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    a = s3.publish(version("lr-a"))
    s3.point(live=a)
    models = follow(s3, clock)
    assert models.snapshot().live.version == "lr-a"
    assert models.status()["refused"] is None and models.status()["aliases"] == {"live": "lr-a"}
    original = s3.objects[artifact_key("lr-a")]
    s3.objects[artifact_key("lr-a")] = version("lr-a", threshold=0.99)  # changed under the warm function
    capsys.readouterr()
    clock.now += 30
    assert models.snapshot().live.version == "lr-a" and models.status()["refused"] is None  # not yet re-checked
    clock.now += 30
    assert models.snapshot().live.version == "lr-a"  # the verified copy in memory keeps serving
    assert refused(capsys) == 1
    status = models.status()
    assert status["refused"]["version"] == "lr-a" and "stored artifact changed" in status["refused"]["reason"]
    s3.objects[artifact_key("lr-a")] = original  # repaired (make model-publish with the original)
    clock.now += 60
    models.snapshot()
    assert models.status()["refused"] is None and refused(capsys) == 0


def test_the_status_names_a_refused_version_and_its_reason(s3: FakeS3, clock: Clock) -> None:
    a = s3.publish(version("lr-a"))
    s3.point(live=a)
    models = follow(s3, clock)
    models.snapshot()
    bad = s3.publish(version("lr-bad"))
    s3.objects[artifact_key("lr-bad")] += b" "
    s3.point(live=bad)
    clock.now += 60
    assert models.snapshot().live.version == "lr-a"
    status = models.status()
    assert status["aliases"] == {"live": "lr-bad"} and status["serving"] == "lr-a"
    assert status["refused"]["version"] == "lr-bad" and "sha256" in status["refused"]["reason"]
    assert Pinned(load_model()).status() == {"registry": None, "serving": load_model().version, "refused": None}

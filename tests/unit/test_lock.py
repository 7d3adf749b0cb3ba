"""requirements-dev.lock (what make venv installs) agrees with the pins of requirements*.txt:
a pin changed without `make lock` fails here, not on someone's fresh clone."""

from __future__ import annotations

import re

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from toolkit.names import ROOT

LOCK = ROOT / "requirements-dev.lock"


def _requirements(name: str) -> list[Requirement]:
    lines = (ROOT / name).read_text().splitlines()
    return [Requirement(line.split("#")[0].strip()) for line in lines if line.strip() and not line.startswith(("#", "-r"))]


def _locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", LOCK.read_text(), re.MULTILINE)
    return {canonicalize_name(name): version for name, version in pins}


def test_the_lock_holds_every_requirement_at_a_version_it_allows():
    locked = _locked()
    for file in ("requirements.txt", "requirements-dev.txt"):
        for req in _requirements(file):
            name = canonicalize_name(req.name)
            assert name in locked, f"{req} ({file}) is not in {LOCK.name}: run make lock"
            assert req.specifier.contains(locked[name], prereleases=True), \
                f"{LOCK.name} has {name}=={locked[name]}, {file} asks {req}: run make lock"


def test_the_lock_is_made_by_make_lock():
    assert "uv pip compile --universal --python-version 3.11 requirements-dev.txt -o requirements-dev.lock" in LOCK.read_text()
    assert "uv" in _locked()  # make venv bootstraps uv at the lock's version

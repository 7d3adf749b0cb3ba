"""References from the code to the documentation point to pages and headings that exist.

Every tracked text file but README.md, CHANGELOG.md, docs/ itself and this file is scanned for
`docs/<page>.md` and `docs/<page>.md#<anchor>` (and `docs/<page>.md, "<Heading>"`):
the page must exist, and the anchor (or heading) must be one of the page's headings,
slugged as mkdocs' default toc does. References into README sections (README, "X";
README's X) are refused: the README keeps only the two commands, the picture, the
layout and links, so a section named there is gone. The README as a whole may be
named. No mkdocs import: this reads the Markdown itself.
"""

from __future__ import annotations

import re
import subprocess
import unicodedata
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
NOT_SCANNED = ("README.md", "CHANGELOG.md", "tests/unit/test_doc_links.py")  # this file: its examples are bad on purpose

# docs/<path>.md, optionally #anchor, or followed by , "Heading" (a backslash before a quote
# when the reference sits in a JSON or Python string). Not part of a longer path (foo/docs/x.md).
DOC_REF = re.compile(
    r"(?<![\w/.-])docs/(?P<page>(?:[\w-]+/)*[\w-]+\.md)"
    r"(?:#(?P<anchor>[\w-]+)|,\s*\\?\"(?P<heading>[^\"\\\n]+)\\?\")?"
)
# README, "Section" / README "Section" / README's Section / README, Section.
README_SECTION = re.compile(r"\bREADME(?:'s\s+[A-Z\"]|,?\s*\\?\"[A-Z]|,\s+[A-Z])")

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
INLINE_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
TAG = re.compile(r"<[^>]+>")
COUNTED = re.compile(r"^(.*)_([0-9]+)$")


def slugify(text: str) -> str:
    """Python-Markdown's toc.slugify (mkdocs' default) on a heading's text as rendered."""
    text = INLINE_LINK.sub(r"\1", text)
    text = TAG.sub("", text).replace("`", "").replace("*", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _unique(slug: str, seen: set[str]) -> str:
    """toc's unique(): a repeated id gets _1, _2, ..."""
    while slug in seen or not slug:
        m = COUNTED.match(slug)
        slug = f"{m.group(1)}_{int(m.group(2)) + 1}" if m else f"{slug}_1"
    seen.add(slug)
    return slug


@cache
def anchors(page: Path) -> frozenset[str]:
    seen: set[str] = set()
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced and (m := HEADING.match(line)):
            _unique(slugify(m.group(2)), seen)
    return frozenset(seen)


def tracked_text_files() -> list[tuple[str, str]]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = []
    for name in out.decode().split("\0"):
        if not name or name in NOT_SCANNED or name.startswith("docs/"):
            continue
        path = ROOT / name
        if not path.is_file():  # deleted in the work tree, not yet committed
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        try:
            files.append((name, data.decode("utf-8")))
        except UnicodeDecodeError:
            continue
    return files


def problems_in(name: str, text: str) -> list[str]:
    found = []

    def where(pos: int) -> str:
        return f"{name}:{text.count(chr(10), 0, pos) + 1}"

    for m in DOC_REF.finditer(text):
        page = DOCS / m["page"]
        ref = m.group(0)
        if not page.is_file():
            found.append(f"{where(m.start())}: {ref}: no page docs/{m['page']}")
        elif m["anchor"] and m["anchor"] not in anchors(page):
            found.append(f"{where(m.start())}: {ref}: docs/{m['page']} has no heading with the anchor #{m['anchor']}")
        elif m["heading"] and slugify(m["heading"]) not in anchors(page):
            found.append(f"{where(m.start())}: {ref}: docs/{m['page']} has no heading {m['heading']!r}")
    for m in README_SECTION.finditer(text):
        line = text[text.rfind("\n", 0, m.start()) + 1 : text.find("\n", m.start())]
        found.append(f"{where(m.start())}: points into a README section, gone to docs/: {line.strip()[:120]}")
    return found


def test_slugify_matches_mkdocs_toc() -> None:
    assert slugify("Under overload: `make load PROFILE=overload`") == "under-overload-make-load-profileoverload"
    assert slugify("Coming from the older FastAPI/Kafka services") == "coming-from-the-older-fastapikafka-services"
    assert slugify("Deploy to LocalStack on this machine: `make deploy-localstack`") == (
        "deploy-to-localstack-on-this-machine-make-deploy-localstack")
    assert slugify("[Link](x.md) and **bold**") == "link-and-bold"
    seen: set[str] = set()
    assert [_unique(slugify("Notes"), seen) for _ in range(3)] == ["notes", "notes_1", "notes_2"]


def test_the_checker_finds_bad_references() -> None:
    text = "\n".join([
        "# see docs/no-such-page.md",
        "# see docs/architecture.md#no-such-anchor",
        '# see docs/deploy.md, "No such heading"',
        '# see (README, "Health")',
        "# the layers of README's Layout",
        '"Comment": "the registry (README \\"Model\\")"',
        "# fine: docs/architecture.md#health, docs/deploy.md, README.md, the README",
    ])
    found = problems_in("example.py", text)
    assert [p.split(":")[1] for p in found] == ["1", "2", "3", "4", "5", "6"], found


def test_references_into_the_docs_exist() -> None:
    found = [p for name, text in tracked_text_files() for p in problems_in(name, text)]
    assert not found, "references to missing pages, anchors or README sections:\n" + "\n".join(found)

"""The README and docs/: every relative link resolves, and the generated page's defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.config_reference import operator_value

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", flags=re.M)


def prose(text: str) -> str:
    """The text without code blocks and code spans, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchors(page: Path) -> set[str]:
    """GitHub's anchor for each heading: lower case, punctuation dropped, spaces as -."""
    slugs = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):  # no `# comment` lines
        text = heading.replace("`", "").lower()
        slugs.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return slugs


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not ours to check offline
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no such heading")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert broken_links(page) == []


def test_the_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    assert "docs/benchmarks.md" in readme and "docs/api.md" in readme


@pytest.mark.parametrize(
    ("value", "typed"),
    [
        (True, "true"),
        (False, "false"),
        (20.0, "20"),
        (0.05, "0.05"),
        (3e-3, "0.003"),
        (1 << 20, "1048576"),
        (("query", "value"), '["query","value"]'),
        (Path("livetune-data"), "livetune-data"),
        ("auto", "auto"),
    ],
)
def test_defaults_are_written_as_an_operator_types_them(value, typed):
    assert operator_value(value) == typed

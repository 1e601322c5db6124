"""The user's page and the docs: every relative link resolves (file and heading), and the README
stays a page a user reads in two minutes, with the install on its first screen."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "tests" / "comfy" / "README.md",
                *(ROOT / "benchmarks").glob("*.md"), *(ROOT / "docs").glob("*.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\)")  # [text](target "title")
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    targets = LINK.findall(text) + IMAGE.findall(text)
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # skip http:, mailto:, ...


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        path_part, _, anchor = target.partition("#")
        file = (page.parent / path_part).resolve() if path_part else page
        if not file.exists():
            broken.append(f"{target}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert broken == [], f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_readme_is_the_users_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines (at most ~200; depth goes to docs/)"
    first_screen = "\n".join(lines[:40])
    assert re.search(r"^## Install", first_screen, re.M), "the install section is not on the first screen"
    for page in ("docs/", "benchmarks/README.md", "CHANGELOG.md"):
        assert page in "\n".join(lines), f"README.md does not link {page}"


def test_the_link_checker_finds_a_broken_file_and_a_broken_heading(tmp_path):
    (tmp_path / "a.md").write_text("# Title One\n\n## Second `code` part\n\n## `__init__` exports\n\n"
                                   "[ok](#title-one) [ok2](a.md#second-code-part) [bad](missing.md) [bad2](#nope) "
                                   "[titled](b.md \"a title\")\n```\n[not a link](nowhere.md)\n```\n")
    page = tmp_path / "a.md"
    assert anchors(page) == {"title-one", "second-code-part", "__init__-exports"}
    assert relative_links(page) == ["#title-one", "a.md#second-code-part", "missing.md", "#nope", "b.md"]


def test_registry_metadata():
    """The Comfy Registry's fields: a node id without "ComfyUI" that is also the folder the
    harness installs the pack as, a version floor comfy-cli reads, no placeholder values."""
    import tomllib

    from harness.host import PACK_NAME

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    name = meta["project"]["name"]
    assert "comfyui" not in name.lower() and re.fullmatch(r"[a-z][a-z0-9]*([-_.][a-z0-9]+)*", name), name
    assert PACK_NAME == name, "harness.host.PACK_NAME must be the registry node id (the custom_nodes folder)"
    floor = meta["tool"]["comfy"]["requires-comfyui"]
    assert re.fullmatch(r">=\d+\.\d+\.\d+", floor), floor  # comfy-cli drops anything but [op]X.Y.Z
    assert (ROOT / meta["project"]["license"]["file"]).exists()
    urls = meta["project"].get("urls", {})
    assert all(v and "example" not in v and "<" not in v for v in urls.values()), urls
    assert meta["tool"]["comfy"].get("Icon", "x"), "an empty Icon is a placeholder: drop it"

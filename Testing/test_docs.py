"""Documentation links: every local file the README, the docs and the extension description point at exists."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_markdown_links_resolve():
    missing = []
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)", md.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (md.parent / target).exists():
                missing.append(f"{md.relative_to(ROOT)} -> {target}")
    assert not missing, missing


def test_extension_urls_point_at_files_in_the_repository():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    paths = re.findall(r"raw\.githubusercontent\.com/[^/]+/[^/]+/[^/]+/([^\"\s]+)", text)
    assert paths, "EXTENSION_ICONURL / EXTENSION_SCREENSHOTURLS are missing"
    for p in paths:
        assert (ROOT / p).is_file(), p

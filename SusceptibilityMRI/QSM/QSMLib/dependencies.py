"""Python dependencies of the extension: which requirements of Resources/requirements.txt are missing.

Slicer installs them at first use, after the user agrees (never at import or in ``setup()``): the module asks
:func:`missing_requirements`, and if any are missing and the user confirms, calls Slicer's installer
(``slicer.pydeps.pip_ensure`` / ``slicer.packaging.pip_ensure`` where present, else ``slicer.util.pip_install``).
"""
from __future__ import annotations

import os
import re
from importlib import metadata
from typing import List, Optional, Tuple

_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:>=\s*([0-9][0-9A-Za-z.]*))?\s*$")


def requirements_path() -> str:
    """Resources/requirements.txt of the extension: next to the module when installed, else at the repo root."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.path.join(os.path.dirname(here), "Resources", "requirements.txt"),
                  os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(here))), "Resources",
                               "requirements.txt")]
    for c in candidates:
        if os.path.isfile(c):
            return c
    return candidates[-1]


def read_requirements(path: str) -> List[Tuple[str, Optional[str]]]:
    """(distribution name, lower bound or None) for each ``name`` / ``name>=version`` line; comments skipped."""
    out = []
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            m = _REQ.match(line)
            if m is None:
                raise ValueError(f"{path}: cannot read requirement {line!r} (use 'name' or 'name>=version')")
            out.append((m.group(1), m.group(2)))
    return out


def version_tuple(version: str) -> Tuple[int, ...]:
    """Leading numeric release components of a version string ("1.26.4" → (1, 26, 4); "2.0rc1" → (2, 0))."""
    nums = []
    for part in version.split("."):
        m = re.match(r"\d+", part)
        if m is None:
            break
        nums.append(int(m.group(0)))
        if m.end() != len(part):
            break
    return tuple(nums)


def missing_requirements(path: Optional[str] = None) -> List[str]:
    """Requirement strings not satisfied by the running interpreter (absent, or older than the lower bound)."""
    missing = []
    for name, lower in read_requirements(path or requirements_path()):
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(f"{name}>={lower}" if lower else name)
            continue
        if lower and version_tuple(have) < version_tuple(lower):
            missing.append(f"{name}>={lower}")
    return missing


__all__ = ["missing_requirements", "read_requirements", "requirements_path", "version_tuple"]

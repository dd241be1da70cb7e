"""Python dependencies of the extension: which requirements of the module's requirements file are missing, and
their installation at first use after the user agrees (never at import or in ``setup()``).

The file is ``requirements.txt`` inside this package (installed with it as a resource, see its CMakeLists.txt), so
it sits next to this file in the source, build and install trees alike, and no other extension's
``Resources/requirements.txt`` collides with it.

:func:`ensure_requirements` installs what is missing: with ``slicer.packaging.pip_ensure`` (Slicer >= 5.12, which
asks the user itself) when no ``confirm`` callback is given, else after ``confirm(message)`` (default
``slicer.util.confirmOkCancelDisplay``) with ``slicer.util.pip_install``.
"""
from __future__ import annotations

import importlib
import logging
import os
import re
from importlib import metadata
from typing import Any, Callable, List, Optional, Tuple

_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:>=\s*([0-9][0-9A-Za-z.]*))?\s*$")


#: Name of the requirements file inside this package.
REQUIREMENTS_FILE = "requirements.txt"


def requirements_path() -> str:
    """This package's ``requirements.txt`` (source, build and install trees alike)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), REQUIREMENTS_FILE)


def read_requirements(path: str) -> List[Tuple[str, Optional[str]]]:
    """(distribution name, lower bound or None) for each ``name`` / ``name>=version`` line; comments skipped."""
    out = []
    if not os.path.isfile(path):
        raise FileNotFoundError(f"requirements file {path} is missing (it is a resource of SusceptibilityMRILib)")
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


def install_message(missing: List[str], requester: str = "SusceptibilityMRI") -> str:
    return (f"{requester} needs these Python packages, which will be downloaded and installed now:\n"
            + "\n".join(missing) + "\n\nInstall them?")


def slicer_packaging() -> Any:
    """``slicer.packaging`` (Slicer >= 5.12) when it offers ``pip_ensure``, else ``None``."""
    try:
        packaging = importlib.import_module("slicer.packaging")
    except ImportError:
        return None
    return packaging if hasattr(packaging, "pip_ensure") else None


_AUTO: Any = object()


def ensure_requirements(confirm: Optional[Callable[[str], bool]] = None, path: Optional[str] = None,
                        requester: str = "SusceptibilityMRI", packaging: Any = _AUTO, util: Any = None) -> bool:
    """Install the missing requirements of ``path`` after the user agrees; True when all are satisfied afterwards.

    ``confirm(message)`` given: it decides, then ``util.pip_install(missing)`` installs. Not given: on Slicer >=
    5.12 ``packaging.pip_ensure(load_requirements(path), requester=…)`` checks, asks and installs; before,
    ``util.confirmOkCancelDisplay`` asks. ``packaging`` (default: :func:`slicer_packaging`) and ``util`` (default
    ``slicer.util``) are arguments so that tests can pass stand-ins. Nothing is installed without a yes; a no gives
    False (``pip_ensure`` raises ``RuntimeError`` when the user declines; that is not an error to show).
    """
    path = path or requirements_path()
    missing = missing_requirements(path)
    if not missing:
        return True
    if util is None:
        import slicer.util as util
    pkg = slicer_packaging() if packaging is _AUTO else packaging
    if confirm is None and pkg is not None:
        try:
            pkg.pip_ensure(pkg.load_requirements(path), requester=requester)
        except RuntimeError as exc:  # Slicer >= 5.12 raises when the user declines; a failed pip raises otherwise
            logging.info(f"{requester}: Python packages not installed ({exc})")
            return False
    else:
        ask = confirm if confirm is not None else util.confirmOkCancelDisplay
        if not ask(install_message(missing, requester)):
            return False
        util.pip_install(missing)
    importlib.invalidate_caches()
    return not missing_requirements(path)


__all__ = ["REQUIREMENTS_FILE", "ensure_requirements", "install_message", "missing_requirements",
           "read_requirements", "requirements_path", "slicer_packaging", "version_tuple"]

"""Helpers of the QSM Slicer module that need no Qt: the MRML adapter, the parameter-form specs generated from the
QSMLogic declarations, the background-worker protocol and the dependency check (all testable on slicer-core).

Importing this package makes the pure library ``QSMLogic`` importable: installed, it sits next to the scripted
modules; run from a source checkout (Additional module paths), the repository root is added to ``sys.path``.
"""
from __future__ import annotations

import importlib.util
import os
import sys


def repository_root() -> str:
    """The source checkout's root (three levels above this package: QSMLib → QSM → SusceptibilityMRI → root)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.dirname(os.path.dirname(os.path.dirname(here)))


def ensure_library_importable() -> None:
    """Add the repository root to ``sys.path`` when ``QSMLogic`` cannot be imported as installed."""
    if importlib.util.find_spec("QSMLogic") is not None:
        return
    root = repository_root()
    if os.path.isfile(os.path.join(root, "QSMLogic", "__init__.py")) and root not in sys.path:
        sys.path.insert(0, root)


ensure_library_importable()

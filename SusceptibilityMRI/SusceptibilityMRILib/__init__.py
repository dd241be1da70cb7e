"""Slicer-side code shared by the extension's scripted modules (QSM, SWI, …): the MRML adapter, the parameter-form
specs generated from the QSMLogic declarations, node-level runs and the background worker process, the
parameter-node binding, the dependency check and the self-tests' fixture need no Qt and are tested with pytest on
slicer-core; ``widgets`` holds the few Qt helpers and the widget behaviour the modules share.

Installed, this package sits in ``qt-scripted-modules/`` next to the scripted modules and ``QSMLogic``; in a source
checkout it is ``SusceptibilityMRI/SusceptibilityMRILib/``, beside the module folders. Importing it makes the pure
library ``QSMLogic`` importable: from a source checkout (Additional module paths) the repository root is added to
``sys.path``.
"""
from __future__ import annotations

import importlib.util
import os
import sys


def repository_root() -> str:
    """The source checkout's root (two levels above this package: SusceptibilityMRILib → SusceptibilityMRI → root)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.dirname(os.path.dirname(here))


def ensure_library_importable() -> None:
    """Add the repository root to ``sys.path`` when ``QSMLogic`` cannot be imported as installed."""
    if importlib.util.find_spec("QSMLogic") is not None:
        return
    root = repository_root()
    if os.path.isfile(os.path.join(root, "QSMLogic", "__init__.py")) and root not in sys.path:
        sys.path.insert(0, root)


ensure_library_importable()

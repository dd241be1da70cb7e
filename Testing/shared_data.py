"""Where the shared test data live: ``<repo>/../shared/data`` (CI clones the repository with ``shared/`` beside it).

``SUSCEPTIBILITY_MRI_SHARED`` overrides the location of ``shared/`` when it is elsewhere.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SUSCEPTIBILITY_MRI_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"
#: ROMEO.jl's small real multi-echo GRE sample (51×51×41×3, no ground truth); see its README.md.
REAL_GRE_SMALL = str(DATA / "real-gre-small")

"""QSMLogic: the pure-Python susceptibility-MRI processing library behind the SusceptibilityMRI Slicer extension.

Every stage is a function on numpy arrays plus explicit physical parameters (voxel size in mm, B0 direction in
the array's axes, echo times in s, B0 in T). No Slicer or Qt imports live here. Conventions: docs/conventions.md.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .constants import GAMMA_BAR_HZ_PER_T, hz_to_ppm, ppm_to_hz  # noqa: E402
from .errors import QSMCancelled, QSMInputError  # noqa: E402
from .gre import GREData  # noqa: E402

__all__ = ["GAMMA_BAR_HZ_PER_T", "hz_to_ppm", "ppm_to_hz", "QSMCancelled", "QSMInputError", "GREData", "__version__"]

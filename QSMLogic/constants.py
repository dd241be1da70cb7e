"""Physical constants shared by every stage (see docs/conventions.md)."""
from __future__ import annotations

from typing import Tuple

#: Reduced gyromagnetic ratio of the proton, γ/2π, in Hz per tesla (CODATA 2018: 42.577 478 92 MHz/T).
GAMMA_BAR_HZ_PER_T: float = 42.57747892e6


def hz_to_ppm(field_hz, b0_tesla: float):
    """Convert a frequency offset Δf (Hz) to a relative field δ in ppm: δ = Δf / (γ̄·B0) · 1e6."""
    return field_hz / (GAMMA_BAR_HZ_PER_T * b0_tesla) * 1e6


def ppm_to_hz(field_ppm, b0_tesla: float):
    """Convert a relative field δ in ppm to a frequency offset Δf in Hz."""
    return field_ppm * 1e-6 * GAMMA_BAR_HZ_PER_T * b0_tesla


#: Rules that convert stored phase values to radians, understood by :func:`QSMLogic.io.phase_to_radians` (plus
#: "auto"). Kept here, with no dependency, so that the Slicer modules can offer them before the packages that
#: ``QSMLogic.io`` needs are installed.
PHASE_RULES: Tuple[str, ...] = ("radians", "dicom_uint12", "dicom_int12", "degrees", "milliradians", "range")

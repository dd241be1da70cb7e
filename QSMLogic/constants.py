"""Physical constants shared by every stage (see DESIGN.md §1)."""
from __future__ import annotations

#: Reduced gyromagnetic ratio of the proton, γ/2π, in Hz per tesla (CODATA 2018: 42.577 478 92 MHz/T).
GAMMA_BAR_HZ_PER_T: float = 42.57747892e6


def hz_to_ppm(field_hz, b0_tesla: float):
    """Convert a frequency offset Δf (Hz) to a relative field δ in ppm: δ = Δf / (γ̄·B0) · 1e6."""
    return field_hz / (GAMMA_BAR_HZ_PER_T * b0_tesla) * 1e6


def ppm_to_hz(field_ppm, b0_tesla: float):
    """Convert a relative field δ in ppm to a frequency offset Δf in Hz."""
    return field_ppm * 1e-6 * GAMMA_BAR_HZ_PER_T * b0_tesla

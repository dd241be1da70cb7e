"""Conversion of stored phase values to radians with an explicit, checked rule (docs/conventions.md).

Scanners and converters store phase in many ways: radians, DICOM 12-bit integers (0..4095 or −4096..4095),
degrees, milliradians (Philips after RescaleSlope/Intercept), or arbitrary units that still wrap (e.g. floats
spanning ±0.00367). :func:`phase_to_radians` applies one named rule, checks that the data fit it, and says what it
did. With ``rule="auto"`` it chooses a rule only on checked evidence:

* a fixed rule fits when every value lies inside the rule's 2π-equivalent interval and the values fill at least
  :data:`MIN_FILL_FRACTION` of it (wrapped phase of a real image — noise outside the head included — covers the whole
  circle); the DICOM integer rules also need integer values;
* otherwise ``"range"`` is chosen when the values fill their own span like wrapped phase does: a histogram over
  min..max with no empty bin and no bin below :data:`MIN_BIN_RATIO` of the mean;
* float data inside [−π, π] that fill at least half of it are taken as radians, with that caveat in the description;
* anything else raises :class:`QSMInputError` giving the data range and the rules to choose from.

The rule and the evidence are returned so the caller records them (``GREData.metadata["phase_scaling"]``).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from ..constants import PHASE_RULES
from ..errors import QSMInputError

#: Fixed rules: (lowest, highest) stored value of the 2π-equivalent interval, integer-valued data required.
_FIXED_RULES: Dict[str, Tuple[float, float, bool]] = {
    "radians": (-np.pi, np.pi, False),
    "milliradians": (-1000 * np.pi, 1000 * np.pi, False),
    "degrees": (-180.0, 180.0, False),
    "dicom_uint12": (0.0, 4095.0, True),
    "dicom_int12": (-4096.0, 4095.0, True),
}
#: Fraction of a rule's interval the data must span for "auto" to pick that rule.
MIN_FILL_FRACTION = 0.9
#: Histogram bins and least bin count relative to the mean for data to "fill their span like wrapped phase".
HISTOGRAM_BINS = 64
MIN_BIN_RATIO = 0.2
#: Relative slack on interval bounds (float rounding of rescaled values).
_BOUND_TOL = 1e-4
#: Values examined for the histogram evidence (a regular subsample of larger arrays).
_MAX_SAMPLES = 2_000_000


def _within(lo: float, hi: float, a: float, b: float) -> bool:
    tol = _BOUND_TOL * (b - a) + 1e-6
    return lo >= a - tol and hi <= b + tol


def _convert_fixed(x: np.ndarray, rule: str) -> np.ndarray:
    if rule == "radians":
        return x.astype(np.float32)
    if rule == "milliradians":
        return (x * 1e-3).astype(np.float32)
    if rule == "degrees":
        return (x * (np.pi / 180.0)).astype(np.float32)
    if rule == "dicom_uint12":
        return (x * (2 * np.pi / 4096.0) - np.pi).astype(np.float32)
    return (x * (np.pi / 4096.0)).astype(np.float32)  # dicom_int12


def _fill_evidence(sample: np.ndarray, lo: float, hi: float) -> Tuple[bool, str]:
    """Whether ``sample`` fills [lo, hi] like wrapped phase (flat histogram), with a description of the test."""
    if hi <= lo:
        return False, "all values are equal"
    counts, _ = np.histogram(sample, bins=HISTOGRAM_BINS, range=(lo, hi))
    mean = counts.mean()
    n_empty = int(np.count_nonzero(counts == 0))
    ratio = float(counts.min() / mean) if mean > 0 else 0.0
    ok = n_empty == 0 and ratio >= MIN_BIN_RATIO
    text = (f"{HISTOGRAM_BINS}-bin histogram over min..max has {n_empty} empty bins and least/mean bin count "
            f"{ratio:.2f} ({'fills' if ok else 'does not fill'} its span like wrapped phase; needs ≥ {MIN_BIN_RATIO})")
    return ok, text


def phase_to_radians(
    raw: np.ndarray,
    rule: str = "auto",
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
    valid_mask: Optional[np.ndarray] = None,
    name: str = "phase",
) -> Tuple[np.ndarray, str, str]:
    """Convert stored phase values to radians in [−π, π] with an explicit, checked rule.

    Parameters
    ----------
    raw
        Stored phase values (any real dtype, any shape).
    rule
        ``"auto"`` or one of :data:`PHASE_RULES`: ``"radians"`` (already within [−π, π]), ``"dicom_uint12"``
        (0..4095 → [−π, π)), ``"dicom_int12"`` (−4096..4095 → [−π, π)), ``"degrees"`` ([−180, 180]),
        ``"milliradians"`` ([−1000π, 1000π]), ``"range"`` (the data's own min..max → [−π, π]).
    rescale_slope, rescale_intercept
        DICOM RescaleSlope/RescaleIntercept, applied first: ``value = raw · slope + intercept``.
    valid_mask
        Voxels to use (``True`` = valid); other voxels (e.g. NaN) are ignored by the checks and set to 0. Without
        it any NaN/Inf is an error naming the count.
    name
        What the data are called in messages (e.g. the file name).

    Returns
    -------
    (phase_rad, rule, description)
        float32 radians of ``raw``'s shape, the rule applied, and a sentence giving the rule and the evidence.
    """
    if rule != "auto" and rule not in PHASE_RULES:
        raise QSMInputError(f"unknown phase rule {rule!r}; choose 'auto' or one of {list(PHASE_RULES)}")
    x = np.asarray(raw)
    if np.iscomplexobj(x) or not np.issubdtype(x.dtype, np.number):
        raise QSMInputError(f"{name}: phase must be real numbers, got dtype {x.dtype}")
    is_int_dtype = np.issubdtype(x.dtype, np.integer)
    slope, intercept = float(rescale_slope), float(rescale_intercept)
    if not np.isfinite(slope) or slope == 0 or not np.isfinite(intercept):
        raise QSMInputError(f"{name}: invalid rescale slope/intercept ({rescale_slope!r}, {rescale_intercept!r})")
    rescaled = slope != 1.0 or intercept != 0.0
    x = x.astype(np.float64) * slope + intercept if rescaled else x.astype(np.float32, copy=False)
    if valid_mask is None:
        valid = np.isfinite(x)
        n_bad = int(x.size - np.count_nonzero(valid))
        if n_bad:
            raise QSMInputError(
                f"{name}: phase contains {n_bad} NaN/Inf voxel(s); pass nan_policy='mask' to set them to 0 and "
                "record a validity mask in metadata['valid_mask']"
            )
        values = x.ravel()
    else:
        valid = np.asarray(valid_mask, dtype=bool) & np.isfinite(x)
        if valid.shape != x.shape:
            raise QSMInputError(f"{name}: valid_mask shape {valid.shape} differs from phase shape {x.shape}")
        values = x[valid]
    if values.size == 0:
        raise QSMInputError(f"{name}: phase has no valid values")
    lo, hi = float(values.min()), float(values.max())
    integer = (is_int_dtype and not rescaled) or bool(np.all(values == np.round(values)))
    prefix = f"rescaled by slope {slope:g} and intercept {intercept:g}; " if rescaled else ""
    data_text = f"values {'are integers' if integer else 'are non-integer'} in [{lo:.6g}, {hi:.6g}]"

    if rule == "auto":
        rule, evidence = _choose_rule(values, lo, hi, integer, name, data_text)
    else:
        evidence = f"rule {rule!r} given explicitly; {data_text}"
        _check_explicit(rule, lo, hi, integer, name, data_text)

    if rule == "range":
        span = hi - lo
        out = ((x - lo) * (2 * np.pi / span) - np.pi).astype(np.float32)
        how = f"mapped min..max [{lo:.6g}, {hi:.6g}] linearly to [-π, π]"
    else:
        out = _convert_fixed(x, rule)
        a, b, _ = _FIXED_RULES[rule]
        how = f"mapped the {rule} interval [{a:.6g}, {b:.6g}] to [-π, π]"
    if valid_mask is not None:
        out[~valid] = 0.0
    return out, rule, f"{prefix}{evidence}; {how}"


def _check_explicit(rule: str, lo: float, hi: float, integer: bool, name: str, data_text: str) -> None:
    if rule == "range":
        if hi <= lo:
            raise QSMInputError(f"{name}: rule 'range' needs varying values, but all values equal {lo:.6g}")
        return
    a, b, need_int = _FIXED_RULES[rule]
    if not _within(lo, hi, a, b):
        raise QSMInputError(
            f"{name}: phase rule {rule!r} expects values in [{a:.6g}, {b:.6g}], but the {data_text}; "
            "choose another phase rule ('auto' reports its evidence)"
        )
    if need_int and not integer:
        raise QSMInputError(f"{name}: phase rule {rule!r} expects integer values, but the {data_text}")


def _choose_rule(values: np.ndarray, lo: float, hi: float, integer: bool, name: str,
                 data_text: str) -> Tuple[str, str]:
    span = hi - lo
    for rule, (a, b, need_int) in _FIXED_RULES.items():
        if need_int and not integer:
            continue
        if _within(lo, hi, a, b) and span >= MIN_FILL_FRACTION * (b - a):
            return rule, (f"auto: {data_text}, inside the {rule} interval [{a:.6g}, {b:.6g}] and filling "
                          f"{span / (b - a):.0%} of it (≥ {MIN_FILL_FRACTION:.0%})")
    step = max(1, values.size // _MAX_SAMPLES)
    fills, fill_text = _fill_evidence(values[::step], lo, hi)
    symmetric = abs(hi + lo) <= 0.05 * span if span > 0 else False
    if fills:
        return "range", (f"auto: {data_text} (span {span:.6g}, {'symmetric' if symmetric else 'not symmetric'} "
                         f"about 0) match no fixed rule's interval, and the {fill_text}")
    if not integer and _within(lo, hi, -np.pi, np.pi) and span >= np.pi:
        return "radians", (f"auto: {data_text}, inside [-π, π] and spanning {span / (2 * np.pi):.0%} of 2π "
                           f"(not the full circle: the {fill_text}); taken as radians — pass phase_rule to override")
    raise QSMInputError(
        f"{name}: cannot tell how the phase is scaled: {data_text} (span {span:.6g}); no rule fits: the fixed "
        f"rules need the values to fill ≥ {MIN_FILL_FRACTION:.0%} of their interval (radians [-π, π], "
        "milliradians [-3141.6, 3141.6], degrees [-180, 180], dicom_uint12 [0, 4095] integers, dicom_int12 "
        f"[-4096, 4095] integers), and the {fill_text}. If this is wrapped phase, choose the rule explicitly, "
        "e.g. phase_rule='range' to map min..max to [-π, π]"
    )

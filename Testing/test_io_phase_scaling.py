"""Phase-scaling rules: each rule on synthetic data, auto's choice and evidence, and the real ROMEO sample."""
from __future__ import annotations

import os

import numpy as np
import pytest

from QSMLogic.errors import QSMInputError
from QSMLogic.io import phase_to_radians
from shared_data import REAL_GRE_SMALL

REAL = REAL_GRE_SMALL
RNG = np.random.default_rng(1)
TRUE = RNG.uniform(-np.pi, np.pi, size=(20, 18, 10)).astype(np.float64)


def _wrap(x):
    return np.angle(np.exp(1j * x))


@pytest.mark.parametrize(
    "rule, stored, step",
    [
        ("radians", TRUE.astype(np.float32), 1e-6),
        ("degrees", np.rad2deg(TRUE), 1e-5),
        ("milliradians", TRUE * 1000.0, 1e-5),
        ("dicom_uint12", np.round((TRUE + np.pi) / (2 * np.pi) * 4096) % 4096, 2 * np.pi / 4096),
        ("dicom_int12", np.clip(np.round(TRUE / np.pi * 4096), -4096, 4095).astype(np.int16), 2 * np.pi / 4096),
        ("range", (TRUE + np.pi) * 0.37 - 0.2, 1e-5),
    ],
)
def test_each_rule_explicit_and_auto(rule, stored, step):
    for given in (rule, "auto"):
        out, applied, text = phase_to_radians(stored, given)
        assert applied == rule, text
        assert out.dtype == np.float32 and out.shape == TRUE.shape
        assert out.min() >= -np.pi - 1e-3 and out.max() <= np.pi + 1e-3
        err = np.abs(_wrap(out.astype(np.float64) - TRUE))
        # range maps min..max (not the true ±π) so allow the sampled extremes' gap
        bound = step if rule != "range" else 2 * np.pi * 0.002
        assert err.max() <= bound + 1e-5, (rule, given, err.max())
        assert ("auto:" in text) == (given == "auto")


def test_dicom_rescale_slope_intercept_applied_first():
    stored = np.round((TRUE + np.pi) / (2 * np.pi) * 4096) % 4096  # Siemens 0..4095 with slope 2, intercept -4096
    out, rule, text = phase_to_radians(stored, "auto", rescale_slope=2.0, rescale_intercept=-4096.0)
    assert rule == "dicom_int12"
    assert "slope 2" in text and "intercept -4096" in text
    assert np.abs(_wrap(out - TRUE)).max() < 2 * np.pi / 4096 + 1e-5
    # Philips: integers to milliradians
    out, rule, _ = phase_to_radians(stored, rescale_slope=2 * np.pi * 1000 / 4096, rescale_intercept=-np.pi * 1000)
    assert rule == "milliradians"
    assert np.abs(_wrap(out - TRUE)).max() < 2 * np.pi / 4096 + 1e-5


def test_auto_refuses_unscalable_data_and_says_how_to_choose():
    peaked = RNG.normal(0.0, 50.0, size=(30, 30, 10))  # e.g. an unwrapped field: not wrapped phase
    with pytest.raises(QSMInputError, match=r"cannot tell how the phase is scaled.*\[-?\d.*phase_rule='range'"):
        phase_to_radians(peaked)
    small = RNG.normal(0.0, 0.1, size=(30, 30, 10))  # inside [-π, π] but only a sliver, not filling it
    with pytest.raises(QSMInputError, match="cannot tell"):
        phase_to_radians(small)
    half = RNG.normal(0.0, 0.8, size=(30, 30, 10)).clip(-2.5, 2.5)  # radians not filling the circle: with a caveat
    out, rule, text = phase_to_radians(half)
    assert rule == "radians" and "not the full circle" in text
    np.testing.assert_allclose(out, half, atol=1e-6)


def test_explicit_rule_checks_the_data():
    with pytest.raises(QSMInputError, match=r"rule 'radians' expects values in \[-3.14159, 3.14159\]"):
        phase_to_radians(np.rad2deg(TRUE), "radians")
    with pytest.raises(QSMInputError, match="expects integer values"):
        phase_to_radians(TRUE + np.pi, "dicom_uint12")
    with pytest.raises(QSMInputError, match="dicom_uint12.*expects values in"):
        phase_to_radians(np.full((3, 3, 3), 5000.0), "dicom_uint12")
    with pytest.raises(QSMInputError, match="all values equal"):
        phase_to_radians(np.ones((3, 3, 3)), "range")
    with pytest.raises(QSMInputError, match="unknown phase rule 'gradians'"):
        phase_to_radians(TRUE, "gradians")
    with pytest.raises(QSMInputError, match="invalid rescale slope"):
        phase_to_radians(TRUE, rescale_slope=0.0)
    with pytest.raises(QSMInputError, match="must be real"):
        phase_to_radians(np.exp(1j * TRUE))


def test_nan_counted_or_masked():
    x = TRUE.copy()
    x[0, 0, :3] = np.nan
    x[1, 1, 1] = np.inf
    with pytest.raises(QSMInputError, match="4 NaN/Inf voxel"):
        phase_to_radians(x)
    out, rule, _ = phase_to_radians(x, valid_mask=np.isfinite(x))
    assert rule == "radians"
    assert np.all(out[~np.isfinite(x)] == 0) and np.all(np.isfinite(out))


@pytest.mark.skipif(not os.path.isdir(REAL), reason=f"real sample folder {REAL} is absent")
def test_real_sample_is_rescaled_by_range():
    import nibabel as nib

    raw = np.asanyarray(nib.load(os.path.join(REAL, "Phase.nii.gz")).dataobj)
    assert 0.003 < np.abs(raw).max() < 0.004  # stored as ≈ ±0.00367, not radians
    out, rule, text = phase_to_radians(raw)
    assert rule == "range", text
    assert "fills its span like wrapped phase" in text
    assert abs(out.min() + np.pi) < 1e-5 and abs(out.max() - np.pi) < 1e-5
    # 2π-periodic: along x the phase jumps only by whole turns: every jump larger than π is close to 2π
    d = np.diff(out.astype(np.float64), axis=0)
    jumps = np.abs(d[np.abs(d) > np.pi])
    assert jumps.size > 100
    assert np.median(2 * np.pi - jumps) < 0.6

"""Reference stage: offsets removed and recorded exactly, CSF from labels or a mask, bad inputs named."""
from __future__ import annotations

import numpy as np
import pytest

from QSMLogic.errors import QSMInputError
from QSMLogic.params import run_method, stage
from QSMLogic.reference import reference_csf, reference_none, reference_whole_brain


@pytest.fixture()
def chi():
    rng = np.random.default_rng(0)
    x = (0.05 * rng.standard_normal((20, 20, 16))).astype(np.float32)
    mask = np.zeros(x.shape, bool)
    mask[3:17, 3:17, 2:14] = True
    labels = np.zeros(x.shape, np.int16)
    labels[mask] = 7
    labels[8:12, 8:12, 6:10] = 5
    x[labels == 5] = 0.3  # CSF sits 0.3 ppm above; referencing to it must bring it to 0
    x[~mask] = 5.0  # garbage outside the mask must not count
    return x, mask, labels


def test_whole_brain(chi):
    x, m, _ = chi
    r = reference_whole_brain(x, m)
    assert r.reference == "whole_brain"
    assert r.offset_ppm == pytest.approx(float(x[m].mean()), abs=1e-7)
    assert abs(float(r.chi_ppm[m].mean())) < 1e-6
    assert np.all(r.chi_ppm[~m] == 0) and r.chi_ppm.dtype == np.float32


def test_csf_from_labels_and_mask(chi):
    x, m, lab = chi
    r = run_method("reference", "csf", {"chi_ppm": x, "mask": m, "labels": lab})
    assert r.offset_ppm == pytest.approx(0.3, abs=1e-6)
    assert np.allclose(r.chi_ppm[lab == 5], 0.0, atol=1e-6)
    assert r.reference.startswith("csf") and "5" in r.reference
    r2 = reference_csf(x, m, csf_mask=lab == 5)
    assert r2.offset_ppm == pytest.approx(0.3, abs=1e-6)
    np.testing.assert_allclose(r.chi_ppm, r2.chi_ppm)
    # labels outside the mask never count
    lab2 = lab.copy()
    lab2[0, 0, 0] = 5
    assert reference_csf(x, m, labels=lab2).offset_ppm == pytest.approx(0.3, abs=1e-6)


def test_none_keeps_values(chi):
    x, m, _ = chi
    r = reference_none(x, m)
    assert r.offset_ppm == 0.0 and r.reference == "none"
    np.testing.assert_array_equal(r.chi_ppm[m], x[m])


def test_registered_and_bad_inputs(chi):
    x, m, lab = chi
    assert set(stage("reference").method_keys) >= {"whole_brain", "csf", "none"}
    with pytest.raises(QSMInputError, match="labels .* or a csf_mask"):
        reference_csf(x, m)
    with pytest.raises(QSMInputError, match="CSF region has 0 voxels"):
        reference_csf(x, m, labels=lab, csf_labels="4")
    with pytest.raises(QSMInputError, match="comma-separated"):
        reference_csf(x, m, labels=lab, csf_labels="ventricles")
    with pytest.raises(QSMInputError, match="empty"):
        reference_whole_brain(x, np.zeros_like(m))
    with pytest.raises(QSMInputError, match="shape"):
        reference_whole_brain(x, m[:-1])
    bad = x.copy()
    bad[5, 5, 5] = np.nan
    with pytest.raises(QSMInputError, match="NaN"):
        reference_whole_brain(bad, m)

"""Metrics with known answers: identical maps, scaled maps, pure cone errors, moments of known regions."""
from __future__ import annotations

import numpy as np
import pytest

from QSMLogic import metrics
from QSMLogic.dipole import dipole_kernel
from QSMLogic.errors import QSMInputError

VOX = (2.0, 2.0, 2.0)
B0 = (0.0, 0.0, 1.0)


@pytest.fixture(scope="module")
def maps():
    rng = np.random.default_rng(0)
    shape = (32, 32, 24)
    z, y, x = np.meshgrid(*[np.arange(n) - n / 2 for n in shape], indexing="ij")
    mask = (x / 14) ** 2 + (y / 14) ** 2 + (z / 10) ** 2 < 1
    truth = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.int16)
    labels[mask] = 7
    truth[mask] = -0.02
    blob = ((x - 4) ** 2 + y**2 + z**2) < 16
    truth[blob] = 0.15
    labels[blob] = 9
    truth += (0.01 * rng.standard_normal(shape)).astype(np.float32) * mask
    return truth, mask, labels


def test_identical_maps(maps):
    t, m, lab = maps
    assert metrics.nrmse(t, t, m) == 0.0
    assert metrics.hfen(t, t, m) == 0.0
    assert metrics.ssim(t, t, m) == pytest.approx(1.0, abs=1e-12)
    assert metrics.streaking(t, t, m, VOX, B0) == 0.0
    assert metrics.label_errors(t, t, lab, mask=m) == {7: 0.0, 9: 0.0}


def test_scaled_map_known_nrmse_and_hfen(maps):
    t, m, _ = maps
    # x = 0.8 t: ‖x − t‖/‖t‖ = 0.2 exactly, and the LoG filter is linear so HFEN is 20 % too
    assert metrics.nrmse(0.8 * t, t, m) == pytest.approx(20.0, rel=1e-6)
    assert metrics.hfen(0.8 * t, t, m) == pytest.approx(20.0, rel=1e-6)
    assert metrics.nrmse(1.5 * t, t, m) == pytest.approx(50.0, rel=1e-6)
    s1, s2 = metrics.ssim(0.9 * t, t, m), metrics.ssim(0.5 * t, t, m)
    assert 0.0 < s2 < s1 < 1.0


def test_hfen_ignores_constant_offset_but_nrmse_does_not(maps):
    t, m, _ = maps
    # a constant error c in the mask: nRMSE = 100·c·sqrt(N)/‖t‖ exactly; the LoG sees it only near the mask edge
    off = t + np.float32(0.01) * m
    expected = 100 * 0.01 * np.sqrt(m.sum()) / np.linalg.norm(t[m].astype(np.float64))
    assert metrics.nrmse(off, t, m) == pytest.approx(expected, rel=1e-5)
    assert metrics.hfen(off, t, m) < 0.5 * metrics.nrmse(off, t, m)


def test_centred_nrmse_ignores_the_reference_but_not_the_scale(maps):
    t, m, _ = maps
    tc = t[m].astype(np.float64) - t[m].mean()
    assert metrics.centred_nrmse(t + np.float32(0.3), t, m) == pytest.approx(0.0, abs=1e-4)
    # x = 0.8 t + c: the centred error is 0.2·‖t − mean‖ over ‖t − mean‖
    assert metrics.centred_nrmse(0.8 * t + np.float32(0.05), t, m) == pytest.approx(20.0, rel=1e-4)
    assert np.linalg.norm(tc) < np.linalg.norm(t[m])  # the centred norm differs from the plain one here
    with pytest.raises(QSMInputError, match="mask is empty"):
        metrics.centred_nrmse(t, t, np.zeros_like(m))


def test_label_and_deep_gray_errors(maps):
    t, m, lab = maps
    x = t.copy()
    x[lab == 9] += 0.03
    errs = metrics.label_errors(x, t, lab, mask=m)
    assert errs[9] == pytest.approx(0.03, abs=1e-6) and errs[7] == pytest.approx(0.0, abs=1e-9)
    names = {7: "WM", 9: "putamen"}
    assert metrics.deep_gray_labels(names) == (9,)
    assert metrics.deep_gray_error(x, t, lab, names, m) == pytest.approx(0.03, abs=1e-6)


def test_calcification_moment_of_known_region():
    shape = (30, 30, 30)
    chi = np.zeros(shape, np.float32)
    calc = np.zeros(shape, bool)
    calc[14:16, 14:16, 14:16] = True
    chi[calc] = -0.5
    vox = (1.0, 1.0, 2.0)
    # 8 voxels × 2 mm³ × −0.5 ppm = −8 ppm·mm³, whatever the dilation (χ = 0 around it)
    assert metrics.calcification_moment(chi, calc, vox, dilation_mm=4.0) == pytest.approx(-8.0)
    blurred = chi.copy()
    blurred[12:18, 12:18, 13:17] = -8.0 / (6 * 6 * 4 * 2.0)  # same moment spread over a larger box
    assert metrics.calcification_moment_error(blurred, chi, calc, vox, dilation_mm=4.0) == pytest.approx(0, abs=1e-3)
    # half the (negative) moment: (−4 − (−8)) / 8 = +50 %
    assert metrics.calcification_moment_error(0.5 * chi, chi, calc, vox) == pytest.approx(50.0)
    noisy = chi + np.float32(0.01) * np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    assert metrics.calcification_streaking(noisy, chi, calc, vox) == pytest.approx(0.01, rel=0.1)
    # the moment is the excess over the surrounding tissue: a constant offset (another reference) or a uniform
    # tissue of −0.03 ppm around the focus does not change it; the plain sum (shell_mm = 0) does
    shifted = chi + np.float32(0.02)
    tissue = np.where(calc, chi, np.float32(-0.03))
    for x, excess in ((shifted, -8.0), (tissue, 8 * 2.0 * (-0.5 + 0.03))):
        assert metrics.calcification_moment(x, calc, vox) == pytest.approx(excess, rel=1e-5)
    roi_vol = metrics.dilate_mm(calc, 4.0, vox).sum() * 2.0
    assert metrics.calcification_moment(shifted, calc, vox, shell_mm=0.0) == pytest.approx(-8.0 + 0.02 * roi_vol)


def test_dilate_mm_matches_full_volume_dilation():
    from scipy import ndimage

    reg = np.zeros((40, 36, 30), bool)
    reg[2:5, 30:34, 10:12] = True  # touches the volume's edges after dilation
    reg[20, 18, 15] = True
    for vox, r in (((1.0, 1.0, 1.0), 4.0), ((1.0, 1.0, 2.0), 4.5), ((0.7, 1.0, 1.3), 3.0)):
        full = ndimage.binary_dilation(reg, structure=metrics._ball(r, vox))
        assert np.array_equal(metrics.dilate_mm(reg, r, vox), full)


def test_all_metrics_with_calcification(maps):
    t, m, lab = maps
    lab = lab.copy()
    t = t.copy()
    calc = np.zeros(t.shape, bool)
    calc[14:16, 10:12, 8:10] = True  # inside the mask, away from the blob
    t[calc] = -0.5
    lab[calc] = 19
    names = {7: "WM", 9: "putamen", 19: "calcification"}
    same = metrics.all_metrics(t, t, m, VOX, B0, labels=lab, label_names=names)
    assert same["calc_moment"] < 0 and same["calc_moment_err_pct"] == 0.0 and same["calc_streak_ppm"] == 0.0
    half = t.copy()
    half[calc] = 0.5 * t[calc]
    out = metrics.all_metrics(half, t, m, VOX, B0, labels=lab, label_names=names)
    expected = 100 * (metrics.calcification_moment(half, calc, VOX, mask=m) -
                      metrics.calcification_moment(t, calc, VOX, mask=m)) / abs(same["calc_moment"])
    assert out["calc_moment_err_pct"] == pytest.approx(expected)
    assert 30.0 < out["calc_moment_err_pct"] < 70.0  # half the focus's excess, blurred by the tissue noise
    assert set(out) == {"nrmse_pct", "hfen_pct", "ssim", "streak_pct", "deep_gray_err_ppm", "calc_moment",
                        "calc_moment_err_pct", "calc_streak_ppm"}
    assert isinstance(out["streak_pct"], float)


def test_streaking_sees_cone_errors_only(maps):
    t, m, _ = maps
    shape = t.shape
    d = dipole_kernel(shape, VOX, B0, real=True)
    rng = np.random.default_rng(3)
    noise = np.fft.rfftn(rng.standard_normal(shape))
    cone_err = np.fft.irfftn(noise * (np.abs(d) < 0.05), s=shape, axes=(0, 1, 2))
    off_cone = np.fft.irfftn(noise * (np.abs(d) > 0.2), s=shape, axes=(0, 1, 2))
    cone_err *= 0.02 / cone_err.std()
    off_cone *= 0.02 / off_cone.std()
    # without a mask the energy split is exact: cone error counts fully, off-cone error not at all
    full = np.ones(shape, bool)
    s_cone = metrics.streaking(t + cone_err, t, full, VOX, B0)
    assert s_cone == pytest.approx(metrics.nrmse(t + cone_err, t, full), rel=1e-3)
    assert metrics.streaking(t + off_cone, t, full, VOX, B0) < 1e-3 * s_cone


def test_all_metrics_and_bad_inputs(maps):
    t, m, lab = maps
    out = metrics.all_metrics(0.9 * t, t, m, VOX, B0, labels=lab, label_names={9: "caudate"})
    assert out["nrmse_pct"] == pytest.approx(10.0, rel=1e-6)
    assert set(out) == {"nrmse_pct", "hfen_pct", "ssim", "streak_pct", "deep_gray_err_ppm"}
    with pytest.raises(QSMInputError, match="shape"):
        metrics.nrmse(t[:-1], t, m)
    with pytest.raises(QSMInputError, match="empty"):
        metrics.nrmse(t, t, np.zeros_like(m))
    with pytest.raises(QSMInputError, match="zero"):
        metrics.nrmse(t, np.zeros_like(t), m)
    with pytest.raises(QSMInputError, match="deep grey"):
        metrics.deep_gray_error(t, t, lab, {7: "WM"}, m)

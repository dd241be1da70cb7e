"""Multi-echo field mapping and R2* on the head phantom: fitted field within its predicted (Cramér–Rao) noise,
predicted noise matching the empirical error, R2* within 5 % per tissue class, and clear errors for bad input."""
from __future__ import annotations

import numpy as np
import pytest

from QSMLogic import echo, params
from QSMLogic.errors import QSMInputError
from QSMLogic.phantom import make_head_model, simulate_acquisition

TE_S = (0.004, 0.008, 0.012, 0.016, 0.020)


@pytest.fixture(scope="module")
def model():
    return make_head_model(shape=(96, 96, 64), voxel_size_mm=(2.0, 2.0, 2.0), seed=0)


@pytest.fixture(scope="module")
def acq100(model):
    return simulate_acquisition(model, te_s=TE_S, b0_tesla=3.0, n_coils=0, snr=100.0, seed=0)


@pytest.fixture(scope="module")
def acq50(model):
    return simulate_acquisition(model, te_s=TE_S, b0_tesla=3.0, n_coils=0, snr=50.0, seed=1)


def _unwrapped(acq) -> np.ndarray:
    """The noisy phase made spatially unwrapped with the truth's help (what a perfect unwrapper returns)."""
    t = acq.true_phase_rad
    return t + np.angle(np.exp(1j * (acq.gre.phase_rad - t)))


def _check_noise_model(acq, fm, alias_hz=None):
    """Field error vs predicted SD: σ estimate within 10 %, z-score SD within 20 % of 1, RMSE ≤ 1.3 × predicted."""
    m = acq.brain_mask
    err = (fm.field_hz - acq.field_hz)[m]
    if alias_hz is not None:
        err = (err + alias_hz / 2) % alias_hz - alias_hz / 2
    sd = fm.noise_sd_hz[m]
    assert np.all(sd > 0)
    assert abs(fm.noise_sd / acq.noise_sd - 1) < 0.1
    assert abs(np.std(err / sd) - 1) < 0.2
    rmse, pred = float(np.sqrt(np.mean(err**2))), float(np.sqrt(np.mean(sd**2)))
    assert rmse <= 1.3 * pred, (rmse, pred)
    assert np.mean(fm.reliable[m]) > 0.9 and not np.any(fm.reliable[~m])
    return rmse, pred


def test_weighted_linear_with_intercept(acq100):
    g = acq100.gre
    fm = echo.fit_weighted_linear(_unwrapped(acq100), g.magnitude, acq100.brain_mask, g.te_s, g.b0_tesla)
    _check_noise_model(acq100, fm)
    m = acq100.brain_mask
    assert np.allclose(fm.field_ppm[m], fm.field_hz[m] / (42.57747892 * 3.0), rtol=1e-5, atol=1e-7)
    phase0_err = np.angle(np.exp(1j * (fm.phase0_rad - acq100.phase0_rad)))[m]
    assert np.sqrt(np.mean(phase0_err**2)) < 0.05
    w = fm.weight()
    assert abs(w[fm.reliable].mean() - 1) < 1e-5 and np.all(w[~fm.reliable] == 0)


def test_weighted_linear_without_intercept_is_tighter(acq100):
    g = acq100.gre
    ph = _unwrapped(acq100) - acq100.phase0_rad[..., None]  # offset-free phase, as after ASPIRE
    with_i = echo.fit_weighted_linear(ph, g.magnitude, acq100.brain_mask, g.te_s, 3.0)
    without = echo.fit_weighted_linear(ph, g.magnitude, acq100.brain_mask, g.te_s, 3.0, intercept=False)
    rmse, pred = _check_noise_model(acq100, without)
    m = acq100.brain_mask
    assert pred < 0.7 * float(np.sqrt(np.mean(with_i.noise_sd_hz[m] ** 2)))
    assert np.all(without.phase0_rad == 0)


def test_known_noise_sd_and_echo_offsets(acq100):
    """Given σ it is used as is; a whole-echo 2π offset (echo unwrapped on its own) does not bias the fit."""
    g = acq100.gre
    ph = _unwrapped(acq100)
    ph[..., 2] += 2 * np.pi
    ph[..., 4] -= 4 * np.pi
    fm = echo.fit_weighted_linear(ph, g.magnitude, acq100.brain_mask, g.te_s, 3.0, noise_sd=acq100.noise_sd)
    assert fm.noise_sd == pytest.approx(acq100.noise_sd)
    _check_noise_model(acq100, fm)


def test_temporal_unwrapping_and_complex_fit_on_wrapped_phase(acq100):
    """Wrapped input: both are exact within the noise modulo the 1/ΔTE ambiguity, and exact where |Δf| < 100 Hz."""
    g = acq100.gre
    alias = 1.0 / (g.te_s[1] - g.te_s[0])
    m = acq100.brain_mask
    small = m & (np.abs(acq100.field_hz) < 100.0)
    for fm in (
        echo.fit_weighted_linear(g.phase_rad, g.magnitude, m, g.te_s, 3.0, temporal_unwrapping=True),
        echo.fit_nonlinear_complex(g.phase_rad, g.magnitude, m, g.te_s, 3.0),
    ):
        _check_noise_model(acq100, fm, alias_hz=alias)
        err = (fm.field_hz - acq100.field_hz)[small]
        assert np.sqrt(np.mean(err**2)) <= 1.3 * np.sqrt(np.mean(fm.noise_sd_hz[small] ** 2)), fm.method


def test_unwrap_echoes_exact_without_noise():
    te = np.array(TE_S)
    f = np.linspace(-120.0, 120.0, 50).reshape(5, 10, 1, 1)  # |Δf·ΔTE| < 1/2
    phi0 = np.linspace(-3.0, 3.0, 10).reshape(1, 10, 1, 1)
    true = phi0 + 2 * np.pi * f * te
    unw = echo.unwrap_echoes(np.angle(np.exp(1j * true)), te)
    d = unw - true
    assert np.allclose(d, d[..., :1], atol=1e-4)  # every echo moved by the first echo's 2πk
    assert np.allclose(d[..., 0] / (2 * np.pi), np.round(d[..., 0] / (2 * np.pi)), atol=1e-5)


def test_echo_average_and_combination(acq100):
    g = acq100.gre
    ph = _unwrapped(acq100) - acq100.phase0_rad[..., None]
    m = acq100.brain_mask
    for weighting in echo.ECHO_WEIGHTINGS:
        fm = echo.fit_echo_average(ph, g.magnitude, m, g.te_s, 3.0, weighting=weighting)
        _check_noise_model(acq100, fm)
        f = echo.combine_phase_echoes(ph, g.magnitude, g.te_s, m, weighting=weighting)
        assert np.allclose(f, fm.field_hz, atol=1e-4)
    # the ML weighting equals the no-intercept least-squares fit
    lin = echo.fit_weighted_linear(ph, g.magnitude, m, g.te_s, 3.0, intercept=False)
    ml = echo.fit_echo_average(ph, g.magnitude, m, g.te_s, 3.0)
    assert np.allclose(lin.field_hz, ml.field_hz, atol=1e-3)
    assert np.allclose(lin.noise_sd_hz, ml.noise_sd_hz, rtol=1e-4)


def test_field_mapping_registry(acq100):
    st = params.stage("field_mapping")
    assert {"weighted_linear", "nonlinear_complex", "echo_average"} <= set(st.method_keys)
    g = acq100.gre
    inputs = {"phase": g.phase_rad, "magnitude": g.magnitude, "mask": acq100.brain_mask, "te_s": g.te_s,
              "b0_tesla": g.b0_tesla}
    fm = params.run_method("field_mapping", "nonlinear_complex", inputs, {"max_iterations": 5})
    assert isinstance(fm, echo.FieldMap) and fm.method == "nonlinear_complex"
    fm = params.run_method("field_mapping", "weighted_linear", inputs, {"temporal_unwrapping": True})
    assert fm.field_hz.shape == acq100.brain_mask.shape and fm.field_hz.dtype == np.float32


# ---------------------------------------------------------------------------------------------------------------
# R2*
# ---------------------------------------------------------------------------------------------------------------
TISSUES = ("GM", "WM", "caudate", "putamen", "globus pallidus externa (GPe)", "thalamus")


@pytest.mark.parametrize("method", ("arlo", "loglinear"))
def test_r2star_per_tissue(acq50, method):
    g = acq50.gre
    r2 = params.run_method("r2star", method, {"magnitude": g.magnitude, "te_s": g.te_s,
                                               "mask": acq50.brain_mask})
    assert r2.dtype == np.float32 and np.all(r2[~acq50.brain_mask] == 0)
    names = acq50.model.label_names
    for name in TISSUES:
        label = next(k for k, v in names.items() if v == name)
        sel = (acq50.labels == label) & acq50.brain_mask
        rel = np.median(r2[sel] / acq50.r2star_hz[sel] - 1)
        assert abs(rel) < 0.05, (method, name, rel)


def test_arlo_needs_three_equally_spaced_echoes(acq50):
    g = acq50.gre
    with pytest.raises(QSMInputError, match="at least 3 echoes"):
        echo.r2star_arlo(g.magnitude[..., :2], g.te_s[:2], acq50.brain_mask)
    with pytest.raises(QSMInputError, match="equally spaced"):
        echo.r2star_arlo(g.magnitude[..., [0, 1, 3]], np.array(g.te_s)[[0, 1, 3]], acq50.brain_mask)
    r2 = echo.r2star_loglinear(g.magnitude[..., [0, 1, 3]], np.array(g.te_s)[[0, 1, 3]], acq50.brain_mask)
    wm = (acq50.labels == 7) & acq50.brain_mask
    assert abs(np.median(r2[wm] / acq50.r2star_hz[wm] - 1)) < 0.05


def test_t2star_from_r2star():
    t2 = echo.t2star_ms_from_r2star(np.array([20.0, 0.0, -5.0, np.inf, 0.5, np.nan]), max_t2star_ms=1000.0)
    assert t2[0] == pytest.approx(50.0)
    assert t2[1] == 1000.0 and t2[2] == 1000.0 and t2[3] == 0.0 and t2[4] == 1000.0 and np.isnan(t2[5])
    assert t2.dtype == np.float32


# ---------------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------------
def test_bad_inputs(acq100):
    g = acq100.gre
    m = acq100.brain_mask
    with pytest.raises(QSMInputError, match="magnitude"):
        echo.fit_weighted_linear(g.phase_rad, None, m, g.te_s, 3.0)
    with pytest.raises(QSMInputError, match="magnitude"):
        echo.r2star_arlo(None, g.te_s, m)
    with pytest.raises(QSMInputError, match="mask is empty"):
        echo.fit_nonlinear_complex(g.phase_rad, g.magnitude, np.zeros_like(m), g.te_s, 3.0)
    with pytest.raises(QSMInputError, match="mask shape"):
        echo.fit_weighted_linear(g.phase_rad, g.magnitude, m[:-1], g.te_s, 3.0)
    with pytest.raises(QSMInputError, match="does not match phase shape"):
        echo.fit_weighted_linear(g.phase_rad, g.magnitude[..., :4], m, g.te_s, 3.0)
    with pytest.raises(QSMInputError, match="echo times"):
        echo.fit_weighted_linear(g.phase_rad, g.magnitude, m, g.te_s[:4], 3.0)
    with pytest.raises(QSMInputError, match="milliseconds"):
        echo.r2star_loglinear(g.magnitude, [4, 8, 12, 16, 20], m)
    with pytest.raises(QSMInputError, match="b0_tesla"):
        echo.fit_weighted_linear(g.phase_rad, g.magnitude, m, g.te_s, -3.0)
    with pytest.raises(QSMInputError, match="at least 2 echoes"):
        echo.fit_nonlinear_complex(g.phase_rad[..., :1], g.magnitude[..., :1], m, g.te_s[:1], 3.0)
    bad = g.phase_rad.copy()
    bad[m.nonzero()[0][0], m.nonzero()[1][0], m.nonzero()[2][0], 1] = np.nan
    with pytest.raises(QSMInputError, match="NaN"):
        echo.fit_weighted_linear(bad, g.magnitude, m, g.te_s, 3.0)
    with pytest.raises(QSMInputError, match="weighting"):
        echo.fit_echo_average(g.phase_rad, g.magnitude, m, g.te_s, 3.0, weighting="uniform")
    with pytest.raises(QSMInputError, match="complex"):
        echo.fit_weighted_linear(g.phase_rad.astype(np.complex64), g.magnitude, m, g.te_s, 3.0)

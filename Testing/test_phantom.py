"""The head phantom: anatomy, tissue values, fields, signal model, noise, coils, determinism, bad input."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy import stats

from QSMLogic.constants import ppm_to_hz
from QSMLogic.dipole import forward_field
from QSMLogic.errors import QSMInputError
from QSMLogic.phantom import TISSUES, label_of, make_head_model, simulate_acquisition
from QSMLogic.phantom.tissues import BY_NAME

SHAPE, VOXEL = (64, 72, 56), (3.0, 3.0, 3.0)
TE = (0.004, 0.008, 0.012, 0.016, 0.020)


@pytest.fixture(scope="module")
def model():
    return make_head_model(SHAPE, VOXEL, seed=0)


@pytest.fixture(scope="module")
def clean(model):
    return simulate_acquisition(model, te_s=TE, snr=None, seed=0)


@pytest.fixture(scope="module")
def model2mm():
    return make_head_model((80, 96, 80), (2.0, 2.0, 2.0), seed=0)


REQUIRED = ("background/air", "scalp", "skull", "sinus air", "CSF", "ventricles", "GM", "WM", "caudate", "putamen",
            "globus pallidus externa (GPe)", "globus pallidus interna (GPi)", "thalamus", "substantia nigra",
            "red nucleus", "subthalamic nucleus", "dentate nucleus", "veins", "calcification", "hemorrhage")


def test_labels_all_named_and_present(model2mm):
    m = model2mm
    assert set(REQUIRED) <= set(m.label_names.values())
    present = set(np.unique(m.labels).tolist())
    assert present <= set(m.label_names)
    assert {label_of(n) for n in REQUIRED} <= present
    assert m.labels.dtype == np.int16 and m.chi_ppm.dtype == np.float32 and m.brain_mask.dtype == bool
    assert m.shape == (80, 96, 80) and m.voxel_size_mm == (2.0, 2.0, 2.0)
    assert np.allclose(np.diag(m.affine)[:3], 2.0)


def test_affine_centred_on_head(model2mm):
    m = model2mm
    centre_idx = np.argwhere(m.brain_mask).mean(axis=0)
    centre_world = m.affine[:3, :3] @ centre_idx + m.affine[:3, 3]
    grid_centre = m.affine[:3, :3] @ ((np.array(m.shape) - 1) / 2) + m.affine[:3, 3]
    assert np.linalg.norm(centre_world - grid_centre) < 10.0
    # RAS: the frontal sinus is anterior (+y) of the brain centre, the cerebellum's dentate posterior and inferior
    dent = np.argwhere(m.labels == label_of("dentate nucleus")).mean(axis=0)
    assert dent[1] < centre_idx[1] and dent[2] < centre_idx[2]


def test_tissue_values_as_declared(model2mm):
    m = model2mm
    for t in TISSUES:
        sel = m.labels == t.label
        core = ndi.binary_erosion(sel, np.ones((3, 3, 3), bool)) if t.label != label_of("background/air") else sel
        if np.count_nonzero(core) < 3:
            # small structures (veins, STN, ...): their most central voxels carry the full value
            vals = m.chi_ppm[sel]
            extreme = vals.max() if t.chi_ppm >= np.median(m.chi_ppm[m.brain_mask]) else vals.min()
            assert extreme == pytest.approx(t.chi_ppm, abs=0.35 * abs(t.chi_ppm) + 0.01), t.name
            continue
        assert np.median(m.chi_ppm[core]) == pytest.approx(t.chi_ppm, abs=1e-3), t.name
        assert np.median(m.r2star_hz[core]) == pytest.approx(t.r2star_hz, rel=0.01, abs=0.5), t.name
        assert np.median(m.proton_density[core]) == pytest.approx(t.proton_density, abs=0.01), t.name
    assert BY_NAME["veins"].chi_ppm > 0.3 and BY_NAME["calcification"].chi_ppm < -0.1
    assert BY_NAME["background/air"].chi_ppm == pytest.approx(9.41, abs=0.05)


def test_brain_mask_volume_and_content(model2mm):
    m = model2mm
    vol_l = np.count_nonzero(m.brain_mask) * np.prod(m.voxel_size_mm) / 1e6
    assert 1.1 < vol_l < 1.7
    brain_labels = {t.label for t in TISSUES if t.in_brain}
    assert set(np.unique(m.labels[m.brain_mask]).tolist()) <= brain_labels
    assert not np.any(np.isin(m.labels[~m.brain_mask], list(brain_labels)))
    # the brain is enclosed: skull surrounds it (no brain voxel touches outside air)
    air = m.labels == label_of("background/air")
    assert not np.any(ndi.binary_dilation(m.brain_mask, iterations=2) & air)


def test_fields_decompose_and_match_forward_model(model, clean):
    a, m = clean, model
    chi_air = BY_NAME["background/air"].chi_ppm
    assert np.allclose(a.total_field_ppm, a.background_field_ppm + a.local_field_ppm, atol=1e-5)
    local = forward_field(np.where(m.brain_mask, m.chi_ppm, 0).astype(np.float32), VOXEL, (0, 0, 1))
    # background: everything outside the brain, with the brain replaced by reference tissue (χ = 0 vs water)
    bg = forward_field(np.where(m.brain_mask, -chi_air, m.chi_ppm - chi_air).astype(np.float32), VOXEL, (0, 0, 1))
    assert np.abs(a.local_field_ppm - local).max() < 1e-4
    assert np.abs(a.background_field_ppm - bg).max() < 1e-3
    assert np.allclose(a.field_hz, ppm_to_hz(a.total_field_ppm, 3.0), rtol=1e-5, atol=1e-3)


def test_background_field_dominates_near_sinuses(clean):
    a = clean
    b = a.brain_mask
    near_air = ndi.binary_dilation(a.labels == label_of("sinus air"), iterations=4) & b
    assert np.count_nonzero(near_air) > 10
    bg_near = np.abs(a.background_field_ppm[near_air]).max()
    assert bg_near > 1.0  # ppm scale near air/tissue interfaces
    assert bg_near > 5 * np.percentile(np.abs(a.local_field_ppm[b]), 99)
    assert np.percentile(np.abs(a.local_field_ppm[b]), 99) < 0.3  # local fields are a few 0.01 ppm


def test_signal_model_without_noise(model, clean):
    a = clean
    te = np.asarray(TE)
    assert a.gre.phase_rad.shape == SHAPE + (5,) and a.coil_sensitivities is None and a.noise_sd == 0.0
    expected = a.phase0_rad[..., None] + 2 * np.pi * a.field_hz[..., None] * te
    assert np.abs(a.true_phase_rad - expected).max() < 1e-3
    head = model.proton_density > 0.05
    dphi = np.angle(np.exp(1j * (a.gre.phase_rad - a.true_phase_rad)))[head]
    assert np.abs(dphi).max() < 1e-3
    mag = model.proton_density[..., None] * np.exp(-model.r2star_hz[..., None] * te)
    assert np.abs(a.gre.magnitude - mag).max() < 1e-5
    # veins are paramagnetic: positive field and phase growth inside the superior sagittal sinus
    vein = (a.labels == label_of("veins")) & (a.chi_ppm > 0.3)
    assert np.median(a.local_field_ppm[vein]) > 0.0 or np.mean(a.local_field_ppm[vein] > 0) > 0.4
    # phase offset is smooth: small neighbour differences
    assert np.abs(np.diff(a.phase0_rad, axis=0)).max() < 0.2


def test_noise_sd_matches_snr(model, clean):
    snr = 40.0
    a = simulate_acquisition(model, te_s=TE, snr=snr, seed=3)
    b = model.brain_mask
    ref = np.mean(clean.gre.magnitude[..., 0][b])
    assert a.noise_sd == pytest.approx(ref / snr, rel=1e-4)
    noisy = a.gre.complex_signal()
    diff = noisy - clean.gre.complex_signal() * np.exp(1j * (a.phase0_rad - clean.phase0_rad))[..., None]
    assert np.std(diff.real) == pytest.approx(a.noise_sd, rel=0.02)
    assert np.std(diff.imag) == pytest.approx(a.noise_sd, rel=0.02)
    measured_snr = np.mean(a.gre.magnitude[..., 0][b]) / np.std(diff.real)
    assert measured_snr == pytest.approx(snr, rel=0.03)


def test_deterministic_from_seed(model):
    a1 = simulate_acquisition(model, te_s=TE[:2], seed=7)
    a2 = simulate_acquisition(model, te_s=TE[:2], seed=7)
    a3 = simulate_acquisition(model, te_s=TE[:2], seed=8)
    assert np.array_equal(a1.gre.phase_rad, a2.gre.phase_rad) and np.array_equal(a1.gre.magnitude, a2.gre.magnitude)
    assert not np.array_equal(a1.gre.phase_rad, a3.gre.phase_rad)
    m1, m2 = make_head_model(SHAPE, VOXEL, seed=5), make_head_model(SHAPE, VOXEL, seed=5)
    m3 = make_head_model(SHAPE, VOXEL, seed=6)
    assert np.array_equal(m1.chi_ppm, m2.chi_ppm) and np.array_equal(m1.labels, m2.labels)
    assert not np.array_equal(m1.chi_ppm, m3.chi_ppm)  # the haemorrhage's shape depends on the seed


@pytest.mark.parametrize("n_coils", [8, 16])
def test_multicoil_sensitivities_and_combined_truth(model, n_coils):
    te = TE[:2]
    a = simulate_acquisition(model, te_s=te, snr=None, n_coils=n_coils, seed=2)
    c = a.coil_sensitivities
    assert a.gre.phase_rad.shape == SHAPE + (2, n_coils) and c.shape == SHAPE + (n_coils,) and c.dtype == np.complex64
    b = a.brain_mask
    ss = np.sum(np.abs(c) ** 2, axis=-1)
    # Σ|C|² is smooth over the brain: small relative change between neighbours, moderate range
    for k in range(3):
        lo = np.minimum(np.delete(ss, -1, axis=k), np.delete(ss, 0, axis=k))
        inner = np.delete(b, -1, axis=k) & np.delete(b, 0, axis=k)
        assert (np.abs(np.diff(ss, axis=k)) / lo)[inner].max() < 0.3  # per 3 mm step
    assert ss[b].max() / ss[b].min() < 50
    # combined truth: Σ conj(C)·S / sqrt(Σ|C|²) = ρ·sqrt(Σ|C|²)·exp(−R2*·TE)·exp(i·true_phase)
    sig = a.gre.complex_signal()
    comb = np.einsum("xyzc,xyzec->xyze", np.conj(c), sig) / np.sqrt(ss)[..., None]
    head = model.proton_density > 0.05
    dphi = np.angle(comb * np.exp(-1j * a.true_phase_rad))[head]
    assert np.abs(dphi).max() < 1e-3
    mag = model.proton_density[..., None] * np.sqrt(ss)[..., None] * np.exp(-a.r2star_hz[..., None] * np.asarray(te))
    assert np.allclose(np.abs(comb)[head], mag[head], rtol=1e-3, atol=1e-6)
    # per-coil phase offsets differ between coils and are smooth in space
    coil_phase0 = np.angle(c[b])
    assert np.mean(np.std(np.angle(np.exp(1j * (coil_phase0 - coil_phase0[:, :1]))), axis=1)) > 0.5
    assert np.abs(np.angle(c[1:] * np.conj(c[:-1]))).max() < 0.5


def test_oblique_b0_and_field_strength(model):
    tilt = np.deg2rad(15.0)
    bdir = (0.0, np.sin(tilt), np.cos(tilt))
    a = simulate_acquisition(model, te_s=TE[:1], b0_tesla=7.0, b0_direction=bdir, snr=None, phase_offset=False)
    assert np.allclose(a.gre.b0_direction, bdir)
    local = forward_field(np.where(model.brain_mask, model.chi_ppm, 0).astype(np.float32), VOXEL, bdir)
    assert np.abs(a.local_field_ppm - local).max() < 1e-4
    assert np.allclose(a.field_hz, ppm_to_hz(a.total_field_ppm, 7.0), rtol=1e-5, atol=1e-3)
    assert np.allclose(a.r2star_hz, model.r2star_hz * 7.0 / 3.0, rtol=1e-5)
    assert np.all(a.phase0_rad == 0)


def test_bad_inputs_are_named():
    with pytest.raises(QSMInputError, match="shape"):
        make_head_model((64, 64), (2.0, 2.0, 2.0))
    with pytest.raises(QSMInputError, match="voxel_size_mm"):
        make_head_model((32, 32, 32), (2.0, -1.0, 2.0))


def test_bad_acquisition_inputs_are_named(model):
    with pytest.raises(QSMInputError, match="milliseconds"):
        simulate_acquisition(model, te_s=(4.0, 8.0))
    with pytest.raises(QSMInputError, match="n_coils"):
        simulate_acquisition(model, n_coils=1)
    with pytest.raises(QSMInputError, match="snr"):
        simulate_acquisition(model, snr=-3)
    with pytest.raises(QSMInputError, match="b0_tesla"):
        simulate_acquisition(model, b0_tesla=0)
    with pytest.raises(QSMInputError, match="unit vector"):
        simulate_acquisition(model, b0_direction=(0, 0, 2))
    with pytest.raises(QSMInputError, match="HeadModel"):
        simulate_acquisition("head")


def test_noise_is_gaussian_and_independent_of_thread_count(model):
    import numba

    n_threads = numba.get_num_threads()
    a = simulate_acquisition(model, te_s=TE[:2], snr=20.0, n_coils=4, seed=11)
    numba.set_num_threads(1)
    try:
        b = simulate_acquisition(model, te_s=TE[:2], snr=20.0, n_coils=4, seed=11)
    finally:
        numba.set_num_threads(n_threads)
    assert np.array_equal(a.gre.phase_rad, b.gre.phase_rad) and np.array_equal(a.gre.magnitude, b.gre.magnitude)
    clean = simulate_acquisition(model, te_s=TE[:2], snr=None, n_coils=4, seed=11)
    noise = (a.gre.complex_signal() - clean.gre.complex_signal()).ravel() / a.noise_sd
    z = np.concatenate([noise.real, noise.imag]).astype(np.float64)
    assert abs(np.mean(z)) < 0.01 and abs(np.std(z) - 1) < 0.01
    for q in (0.5, 0.9, 0.99, 0.999):
        assert np.quantile(z, q) == pytest.approx(float(stats.norm.ppf(q)), abs=0.02)
    assert abs(np.corrcoef(noise.real, noise.imag)[0, 1]) < 0.01
    assert abs(np.corrcoef(noise.real[:-1], noise.real[1:])[0, 1]) < 0.01  # neighbouring channels / voxels

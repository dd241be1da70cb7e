"""SWI (QSMLogic.swi): the seed's phase-mask table, vein contrast on the phantom, edge artefacts, mIP geometry on
axial, sagittal and oblique acquisitions, pipeline outputs, real data.

Measured on the phantom (96×96×64, 2 mm, 3 T, TE 4/12/20 ms, SNR 100). CNR per vein segment (10 segments, 0°–90°
to B0) = (mean SWI in the tissue shell 2–6 mm around the segment − mean in the segment) / SWI noise SD, the noise
SD from two noise realisations (QSMLogic.bench.swi.vein_segment_cnr): homodyne 14.0–51.6 (bound 10), unwrapped
0.17–132 (veins ⟂ B0 0.2–4.6, bound −1 on the worst; along/oblique to B0 ≥ 77.5, bound 50), SWIM 130.9–139.5
(bound 100); calcification mask mean 0.996 (bound 0.95). Edge artefacts (brain within 4 mm of its edge, true
local phase ≤ 0): darkened voxels homodyne 36.8 %, unwrapped 10.6 %.
"""
from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
from scipy import ndimage, stats

from QSMLogic import swi as S
from QSMLogic.constants import GAMMA_BAR_HZ_PER_T
from QSMLogic.bench.swi import swi_noise_sd, vein_segment_cnr
from QSMLogic.errors import QSMInputError
from QSMLogic.geometry import affine_from_geometry, rotation_matrix
from QSMLogic.params import run_method, stage
from QSMLogic.pipeline import PipelineConfig, run_pipeline
from QSMLogic.phantom.tissues import label_of
from shared_data import REAL_GRE_SMALL

VOX = (2.0, 2.0, 2.0)
REAL = REAL_GRE_SMALL
VEIN, CALC = label_of("veins"), label_of("calcification")


def test_seed_phase_mask_table():
    """Seed convention (paramagnetic negative): phases 0, −π/4, −π/2, −π; internal convention negates them."""
    seed_phase = np.array([0.0, -0.25 * np.pi, -0.5 * np.pi, -np.pi])
    table = {1: [1, 0.75, 0.5, 0], 2: [1, 0.56, 0.25, 0], 3: [1, 0.42, 0.13, 0], 4: [1, 0.32, 0.06, 0]}
    f = S.phase_mask(-seed_phase)
    for n, want in table.items():
        np.testing.assert_allclose(f**n, want, atol=0.0051)  # the table's 2 decimals, half rounded up
    assert np.all(S.phase_mask(np.array([-0.5, -3.0])) == 1.0)  # diamagnetic side untouched


@pytest.fixture(scope="module")
def phantom():
    pytest.importorskip("QSMLogic.phantom")
    from QSMLogic.phantom import make_head_model, simulate_acquisition

    model = make_head_model(shape=(96, 96, 64), voxel_size_mm=VOX, seed=0)
    return [simulate_acquisition(model, te_s=(0.004, 0.012, 0.020), b0_tesla=3.0, snr=100.0, seed=s)
            for s in (0, 5)]


def _noise_sd(a, b, labels, mask):
    """SWI noise SD from two noise realisations: SD of (a − b)/√2 in white matter away from veins and lesions."""
    wm = (ndimage.binary_erosion((labels == label_of("WM")) & mask, iterations=2)
          & ~ndimage.binary_dilation(np.isin(labels, (VEIN, CALC, label_of("hemorrhage"))), iterations=4))
    return float(((a - b) / np.sqrt(2))[wm].std())


def _vein_cnr(a, b, labels, mask):
    """CNR per vein segment (bench definition, QSMLogic.bench.swi.vein_segment_cnr) with the measured noise SD."""
    return vein_segment_cnr(a, labels, mask, _noise_sd(a, b, labels, mask), VOX)


def _segment_angles(labels):
    """Angle (degrees) to B0 (array axis 2 here) of each vein segment's principal axis, in the CNR's order."""
    cc, n = ndimage.label(labels == VEIN)
    out = []
    for i in range(1, n + 1):
        pts = np.argwhere(cc == i) * np.asarray(VOX)
        if len(pts) < 5:
            continue
        u = np.linalg.svd(pts - pts.mean(0), full_matrices=False)[2][0]
        out.append(float(np.degrees(np.arccos(min(1.0, abs(u[2]))))))
    return np.array(out)


def _inputs(acq, **extra):
    return dict(magnitude=acq.gre.magnitude, phase=acq.gre.phase_rad, mask=acq.brain_mask, voxel_size_mm=VOX,
                te_s=acq.gre.te_s, b0_direction=acq.gre.b0_direction, affine=acq.gre.affine, **extra)


def test_homodyne_veins_dark_calcification_kept(phantom):
    a, b = phantom
    labels, m = a.labels, a.brain_mask
    ra = run_method("swi", "homodyne", _inputs(a), {"mip_slab_mm": 8.0})
    rb = run_method("swi", "homodyne", _inputs(b))
    cnr = _vein_cnr(ra.swi, rb.swi, labels, m)
    assert cnr.size >= 6, "the phantom's veins at several angles"
    assert cnr.min() > 10.0, f"vein CNR {np.round(cnr, 1)}"  # measured 14.0
    calc = labels == CALC
    assert ra.phase_mask[calc].mean() > 0.95  # diamagnetic calcification not darkened
    assert ra.info["te_s"] == pytest.approx(0.020)
    # mIP: along world superior (array axis 2 of this axial phantom), 4 slices, never brighter than the SWI
    assert ra.info["mip_axis"] == 2 and ra.info["mip_slices"] == 4 and ra.info["mip_axis_source"] == "affine (axial)"
    assert ra.mip.shape == ra.swi.shape and np.all(ra.mip <= ra.swi)
    # the default (no slab given) is a 16 mm mIP: 8 slices of 2 mm
    assert rb.mip is not None and rb.info["mip_slab_mm"] == S.DEFAULT_MIP_SLAB_MM == 16.0
    assert rb.info["mip_slices"] == 8


def test_bench_noise_estimate_matches_two_realisations(phantom):
    """The benchmark's single-image noise SD (second differences in WM) against the two-realisation SD: measured
    ratios 1.05 (homodyne), 1.17 (unwrapped: the local field's own structure adds a little), 1.00 (SWIM)."""
    a, b = phantom
    labels, m = a.labels, a.brain_mask
    chi = a.chi_ppm - a.chi_ppm[m].mean()
    for method, ea, eb in (("homodyne", {}, {}),
                           ("unwrapped", {"local_field_ppm": a.local_field_ppm, "b0_tesla": 3.0},
                            {"local_field_ppm": b.local_field_ppm, "b0_tesla": 3.0}),
                           ("swim", {"chi_ppm": chi}, {"chi_ppm": chi})):
        ra = run_method("swi", method, _inputs(a, **ea), {"mip_slab_mm": 0.0}).swi
        rb = run_method("swi", method, _inputs(b, **eb), {"mip_slab_mm": 0.0}).swi
        ratio = swi_noise_sd(ra, labels, m) / _noise_sd(ra, rb, labels, m)
        assert 0.9 < ratio < 1.25, (method, ratio)


def test_homodyne_phase_has_no_wraps_inside_brain(phantom):
    """TE 20 ms at 3 T: the high-passed phase has neighbour differences < π in the brain, away from the edge (4 mm)
    and from where the raw phase itself changes by more than π/2 per voxel within 8 mm (next to the sinuses, whose
    ~5 ppm field wraps many times) and from the vein walls."""
    a = phantom[0]
    m, labels = a.brain_mask, a.labels
    r = S.swi_homodyne(a.gre.magnitude, a.gre.phase_rad, VOX, mask=m, te_s=a.gre.te_s)
    tp = a.true_phase_rad[..., -1]
    grad = np.zeros(m.shape, np.float32)
    for ax in range(3):
        for s in (1, -1):
            grad = np.maximum(grad, np.abs(tp - np.roll(tp, s, ax)))
    region = (m & (ndimage.distance_transform_edt(m, sampling=VOX) > 4) & (ndimage.maximum_filter(grad, 9) < np.pi / 2)
              & ~ndimage.binary_dilation(labels == VEIN, iterations=2))
    assert region.sum() > 0.25 * m.sum()
    hp = r.filtered_phase
    worst = max(float(np.abs(hp - np.roll(hp, -1, ax))[region & np.roll(region, -1, ax)].max()) for ax in range(3))
    assert worst < np.pi / 2


def test_unwrapped_and_swim_variants(phantom):
    """Worst vein segment (CNR per segment, shell 2–6 mm, noise SD from two realisations): unwrapped 0.17 — the
    small segments ⟂ B0 have a negative inside phase (−Δχ/6) that the paramagnetic mask leaves alone while their
    positive outer lobes darken the surrounding shell, so they end up about as bright as their surroundings
    (0.2–4.6; the phantom has no intravoxel-dephasing blooming that darkens such veins in real magnitude images);
    the veins along / at 45° to B0 reach 132 / 77.5. SWIM 130.9–139.5 for every segment: χ needs no orientation."""
    a, b = phantom
    labels, m = a.labels, a.brain_mask
    ua = run_method("swi", "unwrapped", _inputs(a, local_field_ppm=a.local_field_ppm, b0_tesla=3.0))
    ub = run_method("swi", "unwrapped", _inputs(b, local_field_ppm=b.local_field_ppm, b0_tesla=3.0))
    assert ua.info["effective_te_s"] == pytest.approx(0.020)
    cnr_u = _vein_cnr(ua.swi, ub.swi, labels, m)
    angles = _segment_angles(labels)
    assert cnr_u.size == angles.size >= 6
    assert cnr_u.min() > -1.0, f"worst vein segment: {np.round(cnr_u, 1)}"  # measured 0.17 (⟂ B0)
    assert np.median(cnr_u[angles > 80]) > 1.0  # measured 4.6: the veins ⟂ B0 still darker, by the T2* magnitude
    assert cnr_u[angles < 60].min() > 50, f"veins along / oblique to B0: {np.round(cnr_u, 1)}"  # measured 77.5
    chi = a.chi_ppm - a.chi_ppm[m].mean()
    sa = run_method("swi", "swim", _inputs(a, chi_ppm=chi))
    sb = run_method("swi", "swim", _inputs(b, chi_ppm=chi))
    cnr_s = _vein_cnr(sa.swi, sb.swi, labels, m)
    # χ does not depend on orientation: every vein is dark, also those ⟂ B0 that the phase mask misses
    assert cnr_s.min() > 100 and cnr_s[angles > 80].min() > 10 * np.median(cnr_u[angles > 80])
    assert sa.phase_mask[labels == CALC].min() == 1.0
    assert sa.filtered_phase is None
    with pytest.raises(QSMInputError, match="b0_tesla"):
        S.swi_unwrapped(a.gre.magnitude, a.local_field_ppm, VOX, te_s=a.gre.te_s)


@pytest.fixture(scope="module")
def pipeline_runs(phantom):
    """run_pipeline (TKD inversion for speed) on the phantom with the default homodyne SWI and with the unwrapped
    variant, which then takes the chain's own background-removed (PDF) local field."""
    a = phantom[0]
    base = PipelineConfig.default().set("inversion", "tkd")
    return {"homodyne": run_pipeline(a.gre, base, labels=a.labels),
            "unwrapped": run_pipeline(a.gre, copy.deepcopy(base).set("swi", "unwrapped"), labels=a.labels)}


def test_pipeline_swi_outputs(phantom, pipeline_runs):
    """The filtered phase and the phase mask reach run_pipeline's outputs with units and provenance; the default
    SWI settings give a 16 mm mIP."""
    a = phantom[0]
    gre = a.gre
    res = pipeline_runs["homodyne"]
    out = res.outputs
    for name in ("swi", "swi_phase_rad", "swi_phase_mask", "mip"):
        assert out[name].shape == gre.shape and out[name].dtype == np.float32, name
    units = res.provenance["units"]
    assert units["swi_phase_rad"] == "rad" and units["swi_phase_mask"].startswith("1")
    rec = next(r for r in res.provenance["stages"] if r["stage"] == "swi")
    assert rec["method"] == "homodyne" and rec["params"]["mip_slab_mm"] == 16.0
    assert rec["result"]["mip_slices"] == 8 and rec["result"]["mip_axis"] == 2
    assert json.loads(res.provenance_json())["stages"][-1]["result"]["filter_window_samples"] == [48, 48, 0]
    m = out["field_mask"].astype(bool)
    # the same numbers as the SWI stage run directly on the input (last echo, the pipeline's mask)
    direct = S.swi_homodyne(gre.magnitude, gre.phase_rad, VOX, mask=m, te_s=gre.te_s)
    dphi = np.angle(np.exp(1j * (out["swi_phase_rad"] - direct.filtered_phase)))
    assert np.abs(dphi[m]).max() < 1e-3  # float32 round trip through the complex signal
    # the mask is f(phase) inside the mask and 1 (no darkening) outside it; the phase is kept everywhere
    np.testing.assert_allclose(out["swi_phase_mask"][m], S.phase_mask(out["swi_phase_rad"])[m], atol=1e-6)
    assert np.all(out["swi_phase_mask"][~m] == 1.0) and np.abs(out["swi_phase_rad"][~m]).max() > 1.0
    np.testing.assert_allclose(out["swi"][m], gre.magnitude[..., -1][m] * out["swi_phase_mask"][m] ** 4,
                               rtol=1e-4, atol=1e-6)
    assert np.abs(out["swi_phase_rad"]).max() <= np.pi + 1e-5
    f = out["swi_phase_mask"]
    assert f.min() >= 0 and f.max() == 1.0 and np.all(f[out["swi_phase_rad"] <= 0] == 1.0)
    assert np.all(out["mip"] <= out["swi"])
    # unwrapped variant: the phase is the chain's local field at the last echo, φ = 2π·γ̄·B0·TE·δ
    ru = pipeline_runs["unwrapped"].outputs
    want = 2 * np.pi * GAMMA_BAR_HZ_PER_T * 3.0 * 0.020 * 1e-6 * ru["local_field_ppm"]
    np.testing.assert_allclose(ru["swi_phase_rad"][m], want[m], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ru["swi_phase_mask"][m], S.phase_mask(ru["swi_phase_rad"])[m], atol=1e-6)
    # SWIM has no phase: only the (χ-based) mask is output
    sw = run_pipeline(gre, PipelineConfig.default().set("inversion", "tkd").set("swi", "swim"), labels=a.labels)
    assert "swi_phase_rad" not in sw.outputs and sw.outputs["swi_phase_mask"].shape == gre.shape
    # every SWI method declares the same 16 mm default slab
    for key in ("homodyne", "unwrapped", "swim"):
        assert stage("swi").method(key).defaults()["mip_slab_mm"] == 16.0


def test_unwrapped_swi_has_fewer_edge_artefacts(phantom, pipeline_runs):
    """Spurious darkening next to the brain's edge (skull, sinuses): brain voxels of the QSM mask within 4 mm of
    the brain-mask edge, at least 2 voxels from veins and lesions, whose true local phase at TE 20 ms is not
    paramagnetic (≤ 0, so an ideal mask is 1), counted as darkened where f⁴ < 0.9. Measured with the chain's PDF
    local field: homodyne (4 mm filter) 36.8 % of 9499 voxels darkened, mean darkening 1 − f⁴ = 23.7 %; unwrapped
    10.6 % and 3.6 %. Within 8 mm of air (sinuses, outside): homodyne 44.0 % / 33.6 %, unwrapped 15.2 % / 4.3 %."""
    a = phantom[0]
    labels = a.labels
    qm = pipeline_runs["unwrapped"].outputs["qsm_mask"].astype(bool)
    true_phase = 2 * np.pi * GAMMA_BAR_HZ_PER_T * 3.0 * 0.020 * 1e-6 * a.local_field_ppm
    sources = ndimage.binary_dilation(np.isin(labels, (VEIN, CALC, label_of("hemorrhage"))), iterations=2)
    edge = ndimage.distance_transform_edt(a.brain_mask, sampling=VOX) <= 4.0
    air = np.isin(labels, (label_of("background/air"), label_of("sinus air")))
    near_air = ndimage.distance_transform_edt(~air, sampling=VOX) <= 8.0
    for near, n_min, bounds in ((edge, 5000, (0.25, 0.15, 0.15, 0.06)), (near_air, 500, (0.3, 0.25, 0.2, 0.08))):
        region = qm & near & (true_phase <= 0) & ~sources
        assert region.sum() > n_min
        f4 = {k: r.outputs["swi_phase_mask"][region] ** 4 for k, r in pipeline_runs.items()}
        frac = {k: float((v < 0.9).mean()) for k, v in f4.items()}
        dark = {k: float((1 - v).mean()) for k, v in f4.items()}
        assert frac["homodyne"] > bounds[0] and dark["homodyne"] > bounds[1], (frac, dark)
        assert frac["unwrapped"] < bounds[2] and dark["unwrapped"] < bounds[3], (frac, dark)
        assert frac["unwrapped"] < 0.5 * frac["homodyne"] and dark["unwrapped"] < 0.25 * dark["homodyne"]


def test_combine_magnitude():
    m = np.stack([np.full((2, 2, 2), v, np.float32) for v in (3.0, 4.0)], -1)
    np.testing.assert_allclose(S.combine_magnitude(m, None, "rss"), 5.0)
    w = np.array([3 * 0.01, 4 * 0.02])
    np.testing.assert_allclose(S.combine_magnitude(m, (0.01, 0.02), "snr_weighted"),
                               (w @ [3, 4]) / np.linalg.norm(w), rtol=1e-5)


def _oblique_affine(vox, perm):
    r = rotation_matrix((1.0, 0.3, 0.0), 20.0)[:, perm]
    return affine_from_geometry(vox, r)


def _reorient(vol, perm, flip_all=True):
    """The same voxels with spatial axes permuted (new axis a = old axis perm[a]) and every axis reversed."""
    v = np.transpose(vol, tuple(perm) + tuple(range(3, np.ndim(vol))))
    return np.ascontiguousarray(np.flip(v, axis=(0, 1, 2)) if flip_all else v)


def _reoriented_affine(affine, perm, new_shape):
    """Affine of :func:`_reorient`'s output: new index n ↦ old index o, o[perm[a]] = N_a − 1 − n[a]."""
    m = np.zeros((4, 4))
    m[3, 3] = 1.0
    for a, o in enumerate(perm):
        m[o, a] = -1.0
        m[o, 3] = new_shape[a] - 1
    return affine @ m


@pytest.fixture(scope="module")
def aniso():
    """Axial phantom with anisotropic voxels (3 × 2 × 1.6 mm: R–L, A–P, S–I) and its sagittal reorientation
    (array axes A→P, S→I, R→L: voxels 2 × 1.6 × 3 mm), the same head in both."""
    pytest.importorskip("QSMLogic.phantom")
    from QSMLogic.gre import GREData
    from QSMLogic.phantom import make_head_model, simulate_acquisition

    model = make_head_model(shape=(64, 96, 80), voxel_size_mm=(3.0, 2.0, 1.6), seed=0)
    acq = simulate_acquisition(model, te_s=(0.004, 0.012, 0.020), b0_tesla=3.0, snr=100.0, seed=0)
    perm = (1, 2, 0)
    shp = tuple(acq.gre.shape[p] for p in perm)
    sag_aff = _reoriented_affine(acq.gre.affine, perm, shp)
    sag = GREData(phase_rad=_reorient(acq.gre.phase_rad, perm), magnitude=_reorient(acq.gre.magnitude, perm),
                  te_s=acq.gre.te_s, b0_tesla=3.0, affine=sag_aff)
    return acq, sag, perm


def test_mip_follows_world_axes_on_sagittal_acquisition(aniso):
    """The real stage on an axial and a sagittal acquisition of the same head: for each world direction the mIPs
    are the same voxels (reoriented), the slab counts come from the voxel size along the chosen axis."""
    acq, sag, perm = aniso
    np.testing.assert_allclose(sag.voxel_size_mm, (2.0, 1.6, 3.0))
    np.testing.assert_allclose(np.abs(sag.b0_direction), (0, 1, 0), atol=1e-12)  # superior is array axis 1
    m = acq.brain_mask
    ax_in = dict(magnitude=acq.gre.magnitude, local_field_ppm=acq.local_field_ppm, mask=m, b0_tesla=3.0,
                 voxel_size_mm=acq.gre.voxel_size_mm, te_s=acq.gre.te_s, b0_direction=acq.gre.b0_direction,
                 affine=acq.gre.affine)
    sag_in = dict(magnitude=sag.magnitude, local_field_ppm=_reorient(acq.local_field_ppm, perm),
                  mask=_reorient(m, perm), b0_tesla=3.0, voxel_size_mm=sag.voxel_size_mm, te_s=sag.te_s,
                  b0_direction=sag.b0_direction, affine=sag.affine)
    # direction: (axis in the axial array, axis in the sagittal array, slices, actual slab mm) for a 16 mm slab
    want = {"axial": (2, 1, 10, 16.0), "coronal": (1, 0, 8, 16.0), "sagittal": (0, 2, 5, 15.0)}
    for direction, (ax_a, ax_s, n, mm) in want.items():
        ra = run_method("swi", "unwrapped", ax_in, {"mip_direction": direction})
        rs = run_method("swi", "unwrapped", sag_in, {"mip_direction": direction})
        assert (ra.info["mip_axis"], rs.info["mip_axis"]) == (ax_a, ax_s), direction
        assert ra.info["mip_slices"] == rs.info["mip_slices"] == n
        assert rs.info["mip_slab_mm_actual"] == pytest.approx(mm) and rs.info["mip_axis_angle_deg"] == 0.0
        assert rs.mip.shape == sag.shape and rs.swi.shape == sag.shape
        np.testing.assert_array_equal(rs.swi, _reorient(ra.swi, perm))
        np.testing.assert_array_equal(rs.mip, _reorient(ra.mip, perm))  # same world slab, whatever the array order
    # the former rule (array axis closest to the given B0 vector) would pick a wrong axis when B0 is given in
    # another frame; the affine decides
    r = run_method("swi", "unwrapped", dict(sag_in, b0_direction=(0.0, 0.0, 1.0)), {})
    assert r.info["mip_axis"] == 1


def test_pipeline_mip_geometry_on_sagittal_acquisition(aniso):
    """run_pipeline on the sagittal acquisition: every output, the mIP included, has the input's shape and the
    result carries the input's affine; the mIP is the 16 mm sliding minimum along the superior axis (array axis 1,
    1.6 mm voxels: 10 slices) of the pipeline's own SWI, and the provenance says so."""
    _, sag, _ = aniso
    res = run_pipeline(sag, PipelineConfig.default().set("inversion", "tkd"))
    np.testing.assert_array_equal(res.affine, sag.affine)
    for name in ("swi", "mip", "swi_phase_rad", "swi_phase_mask"):
        assert res.outputs[name].shape == sag.shape, name
    rec = next(r for r in res.provenance["stages"] if r["stage"] == "swi")["result"]
    assert (rec["mip_axis"], rec["mip_slices"], rec["mip_axis_source"]) == (1, 10, "affine (axial)")
    assert rec["mip_slab_mm_actual"] == pytest.approx(16.0)
    # axis 1 runs S→I, so the even slab's extra slice (toward inferior) is after each slice in array order
    assert rec["mip_extra_slice_before"] is False
    np.testing.assert_array_equal(res.outputs["mip"], S.minimum_intensity_projection(
        res.outputs["swi"], 16.0, 1, sag.voxel_size_mm, extra_slice_before=False))


def test_mip_axis_on_oblique_acquisition():
    """Oblique, permuted acquisition (rotated 20° about (1, 0.3, 0); voxels 1 × 2 × 0.5 mm): one dark voxel in a
    uniform SWIM image becomes a streak of exactly the slab's slices along the array axis nearest each world
    axis — superior = array axis 0, left–right = 1, anterior–posterior = 2."""
    vox = (1.0, 2.0, 0.5)
    aff = _oblique_affine(vox, [2, 0, 1])
    shape = (20, 24, 40)
    mag = np.ones(shape, np.float32)
    chi = np.zeros(shape, np.float32)
    p = (10, 12, 20)
    chi[p] = 1.0
    # direction → (axis, slices for 8 mm, angle to the world axis in degrees)
    want = {"axial": (0, 8, 20.0), "sagittal": (1, 4, 5.72), "coronal": (2, 16, 19.15)}
    for direction, (ax, n, angle) in want.items():
        r = S.swim(mag, chi, vox, te_s=(0.02,), b0_direction=(0.0, 0.0, 1.0), affine=aff, mip_slab_mm=8.0,
                   mip_direction=direction)
        assert (r.info["mip_axis"], r.info["mip_slices"]) == (ax, n), direction
        assert r.info["mip_axis_angle_deg"] == pytest.approx(angle, abs=0.01)
        assert r.mip.shape == shape
        streak = []  # the dark voxel reaches n // 2 slices toward world +, (n − 1) // 2 toward − (all axes run +)
        for t in range(-((n - 1) // 2), n // 2 + 1):
            q = list(p)
            q[ax] += t
            streak.append(tuple(q))
        assert sorted(map(tuple, np.argwhere(r.mip == 0))) == sorted(streak), direction
        assert r.info["mip_slices"] * vox[ax] == pytest.approx(8.0)
    assert S.axis_closest_to(aff) == 0 and S.axis_closest_to(aff, (1.0, 0.0, 0.0)) == 1


def test_mip_geometry_checks():
    vol = np.random.default_rng(0).random((20, 24, 30)).astype(np.float32)
    vox = (0.8, 1.2, 3.0)
    assert S.slab_slices(6.0, vox, 1) == 5  # round(6 / 1.2)
    mip = S.minimum_intensity_projection(vol, 6.0, 1, vox)
    assert mip.shape == vol.shape
    np.testing.assert_array_equal(mip[:, 10, :], vol[:, 8:13, :].min(axis=1))  # slab of 5 centred on slice 10
    np.testing.assert_array_equal(mip[:, 0, :], vol[:, 0:3, :].min(axis=1))  # clipped at the end
    assert S.slab_slices(6.0, vox, 2) == 2 and S.slab_slices(1.0, vox, 2) == 1
    with pytest.raises(QSMInputError, match="slab"):
        S.minimum_intensity_projection(vol, 0.0, 0, vox)
    with pytest.raises(QSMInputError, match="axis"):
        S.slab_slices(5.0, vox, 3)
    sag = affine_from_geometry(vox, np.array([[0, 0, -1], [-1, 0, 0], [0, -1, 0]], float))
    mag, chi = np.ones(vol.shape, np.float32), np.zeros(vol.shape, np.float32)
    # a header that disagrees with the data's voxel size is refused, not silently used
    with pytest.raises(QSMInputError, match="disagrees"):
        S.swim(mag, chi, (1.0, 1.0, 1.0), affine=sag)
    # no affine: an axial mIP follows B0, coronal / sagittal need the affine; mip_axis forces an array axis
    r = S.swim(mag, chi, vox, b0_direction=(0.0, 1.0, 0.0))
    assert r.info["mip_axis"] == 1 and r.info["mip_axis_source"].startswith("b0_direction")
    assert S.swim(mag, chi, vox).info["mip_axis_source"].startswith("assumed array axis 2")
    with pytest.raises(QSMInputError, match="affine"):
        S.swim(mag, chi, vox, mip_direction="coronal")
    assert S.swim(mag, chi, vox, affine=sag, mip_axis=0).info["mip_axis"] == 0
    assert S.swim(mag, chi, vox, affine=sag, mip_slab_mm=0.0).mip is None
    with pytest.raises(QSMInputError, match="direction"):
        S.swim(mag, chi, vox, affine=sag, mip_direction="oblique")


def test_bad_inputs():
    mag = np.ones((8, 8, 8), np.float32)
    with pytest.raises(QSMInputError, match="radians"):
        S.swi_homodyne(mag, np.full((8, 8, 8), 5.0, np.float32), VOX)
    with pytest.raises(QSMInputError, match="shape"):
        S.swi_homodyne(mag, np.zeros((8, 8, 7), np.float32), VOX)
    bad = mag.copy()
    bad[1, 1, 1] = np.nan
    with pytest.raises(QSMInputError, match="NaN"):
        S.swi_homodyne(bad, np.zeros_like(mag), VOX)
    with pytest.raises(QSMInputError, match="empty"):
        S.swi_homodyne(mag, np.zeros_like(mag), VOX, mask=np.zeros((8, 8, 8), bool))
    with pytest.raises(QSMInputError, match="chi_max_ppm"):
        S.swim(mag, np.zeros_like(mag), VOX, chi_threshold_ppm=0.5, chi_max_ppm=0.1)
    with pytest.raises(QSMInputError, match="negative"):
        S.swi_homodyne(-mag, np.zeros_like(mag), VOX)


@pytest.mark.skipif(not os.path.exists(os.path.join(REAL, "Phase.nii.gz")), reason="real sample absent")
def test_real_gre_veins_dark():
    """Real 51×51×41×3 GRE crop. Its phase is stored as ±0.00367, rescaled by range to ±π. The phase sign is
    decided from the data: paramagnetic veins give the high-passed phase a positive skew (the internal phase of a
    vein along B0, Δχ/3, is twice that of a vein across it, −Δχ/6), so the sign is the one with positive skew."""
    nib = pytest.importorskip("nibabel")
    mi = nib.load(os.path.join(REAL, "Mag.nii.gz"))
    mag = np.asarray(mi.get_fdata(), np.float32)
    raw = np.asarray(nib.load(os.path.join(REAL, "Phase.nii.gz")).get_fdata(), np.float32)
    phase = ((raw - raw.min()) / (raw.max() - raw.min()) * 2 * np.pi - np.pi).astype(np.float32)
    vox = tuple(float(v) for v in mi.header.get_zooms()[:3])
    hp = S.swi_homodyne(mag, phase, vox).filtered_phase
    sign = 1.0 if stats.skew(hp.ravel()) > 0 else -1.0
    assert sign == 1.0  # this sample is stored paramagnetic-positive
    r = S.swi_homodyne(mag, sign * phase, vox, mip_slab_mm=6.0, affine=mi.affine)
    dark = r.swi < np.percentile(r.swi, 1)
    hp = r.filtered_phase
    assert np.median(hp[dark]) > 3 * hp.std()  # the darkest SWI voxels are strongly paramagnetic
    # independent of the mask: they are also high-R2* (vein) voxels, far above the 10 % base rate
    r2 = np.log(np.maximum(mag[..., 0], 1e-6) / np.maximum(mag[..., -1], 1e-6))
    assert (r2[dark] > np.percentile(r2, 90)).mean() > 0.2  # measured 0.26
    assert r.info["mip_axis"] == 2 and r.info["mip_slices"] == 6 and r.info["mip_axis_source"] == "affine (axial)"
    assert np.percentile(r.mip, 5) < 0.8 * np.percentile(r.swi, 5)

"""Susceptibility source separation (χ-separation): phantom ground truth, both methods, bad input."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from QSMLogic.errors import QSMInputError
from QSMLogic.params import load_all, run_method, stage
from QSMLogic.phantom import TISSUES, label_of, make_head_model, simulate_acquisition
from QSMLogic.reference import reference_csf
from QSMLogic.separation import (
    DR_3T_HZ_PER_PPM, chi_separation_joint, chi_separation_r2prime, chi_separation_r2star_only, r2_from_t2,
    relaxometric_constant_hz_per_ppm, resample_to_grid, separate_sources,
)

SHAPE, VOXEL = (80, 96, 64), (2.0, 2.0, 2.0)  # the grid of test_pipeline.py (the anatomy cache is shared)
NUCLEI = ("caudate", "putamen", "globus pallidus externa (GPe)", "globus pallidus interna (GPi)", "thalamus",
          "substantia nigra", "red nucleus", "subthalamic nucleus", "dentate nucleus", "nucleus accumbens")


@pytest.fixture(scope="module")
def model():
    return make_head_model(SHAPE, VOXEL, seed=0)


@pytest.fixture(scope="module")
def inputs(model):
    """Net χ (FANSI on the true local field, CSF-referenced) and R2* (ARLO on the noisy magnitude, SNR 100)."""
    acq = simulate_acquisition(model, te_s=(0.004, 0.008, 0.012, 0.016, 0.020), b0_tesla=3.0, snr=100.0, seed=0)
    g, m = acq.gre, acq.brain_mask
    load_all()
    common = {"voxel_size_mm": g.voxel_size_mm, "b0_direction": g.b0_direction, "b0_tesla": 3.0, "te_s": g.te_s}
    chi = run_method("inversion", "fansi_nltv",
                     {"local_field_ppm": acq.local_field_ppm, "mask": m, "weight": m.astype(np.float32),
                      "magnitude": g.magnitude[..., 0], **common})
    chi = reference_csf(chi, m, labels=model.labels).chi_ppm
    r2s = run_method("r2star", "arlo", {"magnitude": g.magnitude, "mask": m, **common})
    return chi, r2s, m


def _errors(sep, model, names):
    out = {}
    for n in names:
        sel = (model.labels == label_of(n)) & sep.mask
        out[n] = (float(sep.chi_para_ppm[sel].mean() - model.chi_para_ppm[sel].mean()),
                  float(sep.chi_dia_ppm[sel].mean() - model.chi_dia_ppm[sel].mean()))
    return out


def test_phantom_sources_add_up_to_chi_and_follow_the_model(model):
    m = model.brain_mask
    assert model.chi_para_ppm.dtype == np.float32 and model.r2_hz.shape == model.shape
    assert np.max(np.abs(model.chi_para_ppm - model.chi_dia_ppm - model.chi_ppm)) < 1e-6
    assert model.chi_para_ppm[m].min() >= 0 and model.chi_dia_ppm[m].min() > -1e-6
    for t in TISSUES:
        core = ndi.binary_erosion(model.labels == t.label, np.ones((3, 3, 3), bool))
        if not t.in_brain or np.count_nonzero(core) < 3:
            continue
        assert np.median(model.chi_para_ppm[core]) == pytest.approx(t.chi_para_ppm, abs=1e-3), t.name
        assert np.median(model.chi_dia_ppm[core]) == pytest.approx(t.chi_dia_ppm, abs=1e-3), t.name
        assert np.median(model.r2_hz[core]) == pytest.approx(t.r2_or_r2star_hz, rel=0.01, abs=0.1), t.name
        if t.sub_voxel_sources:  # R2' = Dr·(χ⁺ + |χ⁻|) where the static-dephasing model holds
            r2p = model.r2star_hz[core] - model.r2_hz[core]
            model_r2p = DR_3T_HZ_PER_PPM * (model.chi_para_ppm[core] + model.chi_dia_ppm[core])
            assert np.median(np.abs(r2p - model_r2p)) < 0.05, t.name
    calc = next(t for t in TISSUES if t.name == "calcification")
    assert calc.chi_para_ppm == 0.0 and calc.chi_dia_ppm == pytest.approx(0.5)
    wm = next(t for t in TISSUES if t.name == "WM")
    assert wm.chi_dia_ppm > 0.03 and wm.chi_para_ppm < wm.chi_dia_ppm  # myelin-dominated


def test_r2prime_separation_recovers_nuclei_white_matter_and_calcification(model, inputs):
    chi, r2s, m = inputs
    chi_in, r2s_in = chi.copy(), r2s.copy()
    sep = chi_separation_r2prime(chi, r2s, model.r2_hz, b0_tesla=3.0, mask=m)
    assert np.array_equal(chi, chi_in) and np.array_equal(r2s, r2s_in)
    err = _errors(sep, model, NUCLEI + ("WM", "GM"))
    for n, (ep, ed) in err.items():
        print(f"{n:32s} χ⁺ error {ep:+.4f}  |χ⁻| error {ed:+.4f} ppm")
    # measured: |error| ≤ 0.0066 ppm in every nucleus (2 mm, SNR 100)
    assert max(max(abs(ep), abs(ed)) for n, (ep, ed) in err.items() if n in NUCLEI) < 0.02
    wm = (model.labels == label_of("WM")) & sep.mask
    assert sep.chi_dia_ppm[wm].mean() > 0.03 and abs(err["WM"][1]) < 0.006  # WM myelin, truth 0.035 (PV)
    assert sep.chi_dia_ppm[wm].mean() > 2 * sep.chi_para_ppm[wm].mean()
    calc = (model.labels == label_of("calcification")) & sep.mask
    assert calc.sum() >= 10
    assert sep.chi_para_ppm[calc].mean() < 0.01 and sep.chi_dia_ppm[calc].mean() > 0.35  # truth 0.002 / 0.40
    # the sources give back the input χ except where a sign had to be clipped
    same = sep.mask & (sep.chi_para_ppm > 0) & (sep.chi_dia_ppm > 0)
    assert np.max(np.abs(sep.chi_sum_ppm[same] - chi[same])) < 1e-5
    info = sep.info
    assert info["dr_hz_per_ppm"] == pytest.approx(137.0) and info["method"] == "r2prime"
    assert info["voxels"] == int(sep.mask.sum()) and 0 < info["sign_clipped"] < 0.1 * info["voxels"]
    assert sep.chi_para_ppm[~sep.mask].max() == 0 and sep.chi_dia_ppm.min() >= 0


def test_r2star_only_variant_bounds(model, inputs):
    chi, r2s, m = inputs
    sep = chi_separation_r2star_only(chi, r2s, b0_tesla=3.0, mask=m)
    err = _errors(sep, model, NUCLEI + ("WM", "GM"))
    for n, (ep, ed) in err.items():
        print(f"R2*-only {n:32s} χ⁺ error {ep:+.4f}  |χ⁻| error {ed:+.4f} ppm")
    # reported bound (docs/notes.md): ≤ 0.018 ppm in the nuclei, ≤ 0.012 in GM/WM on this phantom, whose R2 spans
    # 10.5–17.5 Hz around the assumed 13 Hz; each Hz of R2 error costs 1/(2·Dr) = 0.0036 ppm
    assert max(max(abs(ep), abs(ed)) for n, (ep, ed) in err.items() if n in NUCLEI) < 0.025
    assert max(abs(v) for v in err["WM"] + err["GM"]) < 0.015
    assert "uniform" in sep.info["r2_source"] and "0.0036 ppm per Hz" in sep.info["assumption"]
    assert sep.info["r2star_below_assumed_r2"] > 0  # CSF (R2* 2 Hz) gets R2' = 0 and is counted


def test_joint_inversion_of_field_and_r2prime(model, inputs):
    """Shin's form: the local field and R2' in one TV-regularised inversion; absolute, no χ reference needed."""
    _, r2s, m = inputs
    acq = simulate_acquisition(model, te_s=(0.004, 0.008), b0_tesla=3.0, snr=None, seed=0)  # its true local field
    sep = chi_separation_joint(acq.local_field_ppm, r2s, model.r2_hz, 3.0, VOXEL, acq.gre.b0_direction, mask=m,
                               max_iter=40)
    err = _errors(sep, model, NUCLEI + ("WM",))
    for n, (ep, ed) in err.items():
        print(f"joint {n:32s} χ⁺ error {ep:+.4f}  |χ⁻| error {ed:+.4f} ppm")
    # measured (40 iterations): ≤ 0.012 ppm in the nuclei, 0.0005 in WM; 84 iterations to tol: ≤ 0.0087
    assert max(max(abs(ep), abs(ed)) for n, (ep, ed) in err.items() if n in NUCLEI) < 0.02
    assert abs(err["WM"][1]) < 0.004
    vent = (model.labels == label_of("ventricles")) & sep.mask
    # the zero without a reference: ventricles (no sources) near 0 in both parts
    assert sep.chi_para_ppm[vent].mean() < 0.01 and sep.chi_dia_ppm[vent].mean() < 0.01
    calc = (model.labels == label_of("calcification")) & sep.mask  # measured χ⁺ 0.014, |χ⁻| 0.39 ppm
    assert sep.chi_para_ppm[calc].mean() < 0.03 and sep.chi_dia_ppm[calc].mean() > 10 * sep.chi_para_ppm[calc].mean()
    assert sep.chi_dia_ppm[calc].mean() > 0.35
    assert sep.info["iterations"] == 40 and sep.info["method"] == "joint"


def test_closed_form_and_sign_constraints():
    chi = np.array([0.10, -0.05, 0.30, -0.20, 0.0], np.float32).reshape(5, 1, 1)
    r2p = np.array([0.20, 0.15, 0.10, 0.10, 0.0], np.float32).reshape(5, 1, 1) * 137.0
    sep = separate_sources(chi, r2p, 137.0)
    para, dia = sep.chi_para_ppm.ravel(), sep.chi_dia_ppm.ravel()
    assert para[:2] == pytest.approx([0.15, 0.05], abs=1e-6) and dia[:2] == pytest.approx([0.05, 0.10], abs=1e-6)
    # |χ| > R2'/Dr: the nearest admissible pair, one part at zero
    assert (para[2], dia[2]) == pytest.approx((0.20, 0.0), abs=1e-6)
    assert (para[3], dia[3]) == pytest.approx((0.0, 0.15), abs=1e-6)
    assert sep.info["sign_clipped"] == 2 and sep.info["sign_clipped_paramagnetic_side"] == 1


def test_relaxometric_constant_scales_with_field_and_is_declared():
    assert relaxometric_constant_hz_per_ppm(3.0) == pytest.approx(137.0)
    assert relaxometric_constant_hz_per_ppm(7.0) == pytest.approx(137.0 * 7 / 3)
    for key in ("r2prime", "r2star_only"):
        spec = stage("source_separation").method(key)
        assert spec.param("dr_3t_hz_per_ppm").default == 137.0 and "Shin" in spec.reference
    with pytest.raises(QSMInputError, match="b0_tesla"):
        relaxometric_constant_hz_per_ppm(0.0)


def test_bad_inputs_are_named_and_impossible_voxels_counted(model):
    rng = np.random.default_rng(1)
    shape = (12, 10, 8)
    chi = rng.normal(0.0, 0.05, shape).astype(np.float32)
    r2s = np.full(shape, 30.0, np.float32)
    r2 = np.full(shape, 15.0, np.float32)
    # an R2 map on another grid without geometry
    with pytest.raises(QSMInputError, match="shape .* without the geometry"):
        resample_to_grid(np.zeros((6, 5, 4), np.float32), None, shape, np.eye(4))
    with pytest.raises(QSMInputError, match="r2_hz has shape"):
        chi_separation_r2prime(chi, r2s, r2[:6], 3.0)
    # R2 > R2* voxels leave the mask and are counted; a small excess (noise) gives R2' = 0
    r2_bad = r2.copy()
    r2_bad[0] = 40.0
    r2_bad[1] = 30.5
    sep = chi_separation_r2prime(chi, r2s, r2_bad, 3.0)
    assert sep.info["r2_above_r2star_masked"] == 10 * 8 and not sep.mask[0].any()
    assert sep.info["r2prime_clipped_to_zero"] == 10 * 8 and sep.r2prime_hz[1].max() == 0
    assert sep.info["voxels"] == 12 * 10 * 8 - 10 * 8
    # a T2 map in ms given as R2: refused with the likely cause
    with pytest.raises(QSMInputError, match="T2 rather than R2"):
        chi_separation_r2prime(chi, r2s, np.full(shape, 80.0, np.float32), 3.0)
    assert r2_from_t2(np.array([80.0, 0.0]), "ms")[0] == pytest.approx(12.5) and np.isnan(r2_from_t2([0.0])[0])
    # no R2* (no magnitude echoes) and no R2 map
    with pytest.raises(QSMInputError, match="multi-echo magnitude"):
        chi_separation_r2prime(chi, None, r2, 3.0)
    with pytest.raises(QSMInputError, match="multi-echo magnitude"):
        chi_separation_r2star_only(chi, None, 3.0)
    with pytest.raises(QSMInputError, match="needs an R2 map"):
        chi_separation_r2prime(chi, r2s, None, 3.0)
    # NaN outside an R2 map's coverage leaves the mask, counted
    r2_nan = r2.copy()
    r2_nan[-1] = np.nan
    assert chi_separation_r2prime(chi, r2s, r2_nan, 3.0).info["nonfinite_masked"] == 10 * 8
    r2_zero = r2.copy()
    r2_zero[:, 0] = 0.0  # zero-filled outside the R2 map's own mask
    sep = chi_separation_r2prime(chi, r2s, r2_zero, 3.0)
    assert sep.info["r2_not_positive_masked"] == 12 * 8 and not sep.mask[:, 0].any()
    with pytest.raises(QSMInputError, match="mask is empty"):
        chi_separation_r2prime(chi, r2s, r2, 3.0, mask=np.zeros(shape, bool))


def test_r2_map_with_its_geometry_is_resampled(model):
    # the phantom's R2 on a 4 mm grid (its own origin), brought onto the 2 mm grid through the two affines
    coarse = make_head_model((40, 48, 32), (4.0, 4.0, 4.0), seed=0)
    back = resample_to_grid(coarse.r2_hz, coarse.affine, model.shape, model.affine, name="R2 map")
    assert back.shape == model.shape and back.dtype == np.float32
    core = ndi.binary_erosion(model.labels == label_of("WM"), np.ones((5, 5, 5), bool)) & np.isfinite(back)
    assert np.median(np.abs(back[core] - model.r2_hz[core])) < 0.3
    # outside the map's field of view: NaN, so those voxels leave the separation mask
    shifted = coarse.affine.copy()
    shifted[0, 3] += 60.0
    part = resample_to_grid(coarse.r2_hz, shifted, model.shape, model.affine)
    assert np.isnan(part[:10]).all() and np.isfinite(part[-10:, 4:-4, 4:-4]).all()


def test_pipeline_refuses_before_computing():
    from QSMLogic.gre import GREData
    from QSMLogic.pipeline import PipelineConfig, run_pipeline

    def gre(n_echoes, magnitude=True):
        rng = np.random.default_rng(0)
        shape = (16, 16, 12, n_echoes)
        return GREData(phase_rad=rng.uniform(-3, 3, shape).astype(np.float32),
                       magnitude=np.ones(shape, np.float32) if magnitude else None,
                       te_s=tuple(0.004 * (k + 1) for k in range(n_echoes)), b0_tesla=3.0, affine=np.eye(4))

    assert not PipelineConfig.default().stages["source_separation"]["enabled"]
    cfg = PipelineConfig.default().set("source_separation", "r2prime")
    assert cfg.stages["source_separation"]["enabled"]  # choosing the method switches the stage on
    with pytest.raises(QSMInputError, match="needs an R2 map"):
        run_pipeline(gre(3), cfg)
    with pytest.raises(QSMInputError, match=r"R2 map has shape \(10, 10, 8\)"):
        run_pipeline(gre(3), cfg, r2_hz=np.zeros((10, 10, 8), np.float32))
    r2star_only = PipelineConfig.from_dict({"source_separation": {"method": "r2star_only"}})
    with pytest.raises(QSMInputError, match="2 echoes with their magnitude images; the data have no magnitude"):
        run_pipeline(gre(3, magnitude=False), r2star_only, mask=np.ones((16, 16, 12), bool))
    with pytest.raises(QSMInputError, match="the data have 1 echo"):
        run_pipeline(gre(1), r2star_only)
    joint_sstv = PipelineConfig.default().set("source_separation", "joint").set("inversion", "sstv")
    with pytest.raises(QSMInputError, match="joint method needs an R2 map"):
        run_pipeline(gre(3), joint_sstv)
    with pytest.raises(QSMInputError, match="single-step inversion does not produce"):
        run_pipeline(gre(3), joint_sstv, r2_hz=np.full((16, 16, 12), 10.0, np.float32))
    off = PipelineConfig.from_dict({"source_separation": {"method": "r2star_only"}, "r2star": {"enabled": False}})
    with pytest.raises(QSMInputError, match="needs the r2star stage"):
        run_pipeline(gre(3), off)


def test_command_line_writes_sources_with_provenance(tmp_path):
    """simulate → files (with the true χ⁺, |χ⁻| and R2) → run from files with --r2 on its own coarser grid."""
    import json

    import nibabel as nib

    from QSMLogic.cli import main

    small = ["--shape", "64", "72", "48", "--voxel-size", "2.5", "2.5", "2.5"]
    sim = tmp_path / "sim"
    assert main(["simulate", *small, "--out", str(sim)]) == 0
    truth = {k: np.asarray(nib.load(sim / f"truth_{k}.nii.gz").dataobj)
             for k in ("chi_para_ppm", "chi_dia_ppm", "r2_hz", "labels")}
    labels = truth["labels"].astype(int)
    # the R2 map as a T2 map in ms on a 5 mm grid with its own affine: read, converted and resampled
    r2_img = nib.load(sim / "truth_r2_hz.nii.gz")
    t2_ms = 1000.0 / np.maximum(truth["r2_hz"][::2, ::2, ::2], 1e-3)
    t2_file = tmp_path / "t2.nii.gz"
    nib.save(nib.Nifti1Image(t2_ms.astype(np.float32), r2_img.affine @ np.diag([2.0, 2.0, 2.0, 1.0])), t2_file)
    out = tmp_path / "run"
    assert main(["run", "--magnitude", str(sim / "phantom_mag.nii.gz"), "--phase", str(sim / "phantom_phase.nii.gz"),
                 "--disable", "swi", "--source-separation", "r2prime", "--t2", str(t2_file), "--t2-unit", "ms",
                 "--out", str(out)]) == 0
    para = nib.load(out / "chi_para_ppm.nii.gz")
    np.testing.assert_allclose(para.affine, r2_img.affine)
    para_a = np.asarray(para.dataobj)
    dia = np.asarray(nib.load(out / "chi_dia_ppm.nii.gz").dataobj)
    chi = np.asarray(nib.load(out / "chi_ppm.nii.gz").dataobj)
    sep_mask = np.asarray(nib.load(out / "separation_mask.nii.gz").dataobj) > 0
    side = json.loads((out / "chi_dia_ppm.json").read_text())
    assert side["stage"] == "source_separation" and side["method"] == "r2prime"
    assert side["reference_region"] == "whole_brain" and "|χ⁻|" in side["units"]
    assert str(t2_file) in side["input_files"]
    rec = next(r for r in side["pipeline"]["stages"] if r["stage"] == "source_separation")
    assert rec["params"]["dr_3t_hz_per_ppm"] == 137.0
    for key in ("r2_above_r2star_masked", "sign_clipped", "nonfinite_masked", "chi_sum_vs_input_rms_ppm"):
        assert key in rec["result"]
    assert rec["result"]["chi_reference"] == "whole_brain"
    # iron-dominated pallidum, myelin-dominated white matter, close to the truth files despite the 5 mm T2 map and
    # the whole-brain reference
    gp = (labels == label_of("globus pallidus externa (GPe)")) & sep_mask
    wm = ndi.binary_erosion(labels == label_of("WM"), iterations=2) & sep_mask
    assert para_a[gp].mean() > 0.1 and abs(para_a[gp].mean() - truth["chi_para_ppm"][gp].mean()) < 0.03
    assert abs(dia[wm].mean() - truth["chi_dia_ppm"][wm].mean()) < 0.01 and dia[wm].mean() > 2 * para_a[wm].mean()
    same = sep_mask & (para_a > 0) & (dia > 0)
    assert np.max(np.abs(para_a[same] - dia[same] - chi[same])) < 1e-5


def test_independent_forward_model_qsm_forward(model):
    """qsm-forward (test extra) simulates the field with its own dipole kernel and the magnitude with its own
    χ-separation decay, exp(−TE·(R2 + Dr·|χ⁺| + Dr·|χ⁻|)), from the phantom's χ⁺, χ⁻, R2 and proton density; our R2*
    fit, inversion and separation must recover the sources from it."""
    import qsm_forward  # the test extra (pyproject.toml)

    te = (0.004, 0.008, 0.012, 0.016, 0.020)
    m = model.brain_mask
    chi_brain = np.where(m, model.chi_ppm, 0.0)
    field = qsm_forward.generate_field(chi_brain, mask=m, voxel_size=list(VOXEL), B0_dir=[0, 0, 1])
    rng = np.random.default_rng(3)
    mags = []
    for t in te:
        s = qsm_forward.generate_signal(field, B0=3.0, TR=1.0, TE=t, flip_angle=90, M0=model.proton_density,
                                        R1=1.0, R2=model.r2_hz, dr_pos=DR_3T_HZ_PER_PPM, dr_neg=DR_3T_HZ_PER_PPM,
                                        chi_pos=model.chi_para_ppm, chi_neg=-model.chi_dia_ppm)
        noise = rng.normal(0.0, 0.006, s.shape) + 1j * rng.normal(0.0, 0.006, s.shape)  # SNR ≈ 90 in GM
        mags.append(np.abs(s + noise))
    mag = np.stack(mags, axis=-1).astype(np.float32)
    load_all()
    common = {"voxel_size_mm": VOXEL, "b0_direction": (0.0, 0.0, 1.0), "b0_tesla": 3.0, "te_s": te}
    r2s = run_method("r2star", "arlo", {"magnitude": mag, "mask": m, **common})
    # qsm-forward's R2* equals the phantom's declared R2* where the static-dephasing model holds
    wm = ndi.binary_erosion(model.labels == label_of("WM"), iterations=2)
    assert np.median(r2s[wm]) == pytest.approx(20.0, abs=0.3)
    chi = run_method("inversion", "fansi_nltv",
                     {"local_field_ppm": field.astype(np.float32), "mask": m, "weight": m.astype(np.float32),
                      "magnitude": mag[..., 0], **common})
    chi = reference_csf(chi, m, labels=model.labels).chi_ppm
    sep = chi_separation_r2prime(chi, r2s, model.r2_hz, b0_tesla=3.0, mask=m)
    err = _errors(sep, model, NUCLEI + ("WM",))
    for n, (ep, ed) in err.items():
        print(f"qsm-forward {n:32s} χ⁺ error {ep:+.4f}  |χ⁻| error {ed:+.4f} ppm")
    assert max(max(abs(ep), abs(ed)) for n, (ep, ed) in err.items() if n in NUCLEI) < 0.02
    assert abs(err["WM"][1]) < 0.006


def test_resampling_marks_every_voxel_touching_outside_the_map_as_nan():
    """A target voxel that takes even a small interpolation weight from beyond the map's last voxel is outside its
    coverage (NaN), never a blend with a placeholder value."""
    from QSMLogic.separation import resample_to_grid

    vol = np.full((10, 10, 10), 12.0, dtype=np.float32)
    target = np.eye(4)
    target[0, 3] = 0.05  # shifted by 5 % of a voxel along axis 0: the last target slice reaches 9.05
    out = resample_to_grid(vol, np.eye(4), (10, 10, 10), target)
    assert np.isnan(out[9]).all()
    assert np.allclose(out[:9], 12.0)

"""The whole pipeline on the phantom: accuracy against ground truth, provenance, cancel, worker and CLI."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from QSMLogic.errors import QSMCancelled, QSMInputError
from QSMLogic.metrics import nrmse
from QSMLogic.phantom import make_head_model, simulate_acquisition
from QSMLogic.pipeline import PipelineConfig, run_pipeline

SHAPE = (80, 96, 64)
VOXEL_MM = (2.0, 2.0, 2.0)


@pytest.fixture(scope="module")
def acq():
    model = make_head_model(shape=SHAPE, voxel_size_mm=VOXEL_MM, seed=0)
    return simulate_acquisition(model, te_s=(0.004, 0.008, 0.012, 0.016, 0.020), b0_tesla=3.0, snr=100.0, seed=0)


@pytest.fixture(scope="module")
def result(acq):
    return run_pipeline(acq.gre, PipelineConfig.default(), labels=acq.labels)


def test_default_chain_recovers_susceptibility(acq, result):
    m = result.outputs["qsm_mask"].astype(bool)
    assert m.sum() > 0.6 * acq.brain_mask.sum(), "the QSM mask lost too much of the brain"
    truth = acq.chi_ppm - acq.chi_ppm[m].mean()
    est = result.outputs["chi_ppm"]
    err = nrmse(est - est[m].mean(), truth, m)
    print(f"full chain from wrapped phase: nRMSE {err:.1f} %")
    assert err < 55.0
    # the field map is right to well within a wrap everywhere in the brain
    d = result.outputs["total_field_ppm"] - acq.total_field_ppm
    d -= np.median(d[m])
    assert np.percentile(np.abs(d[m]), 99) < 0.05


def test_outputs_geometry_and_provenance(acq, result):
    for name, arr in result.outputs.items():
        assert arr.shape == acq.gre.shape, name
    np.testing.assert_array_equal(result.affine, acq.gre.affine)
    p = json.loads(result.provenance_json())
    assert [s["stage"] for s in p["stages"]][:4] == ["mask", "unwrap", "field_mapping", "r2star"]
    assert p["susceptibility_reference"]["reference"]
    assert all(s["seconds"] >= 0 and "params" in s for s in p["stages"])
    assert p["input"]["te_s"] == pytest.approx([0.004, 0.008, 0.012, 0.016, 0.020])


def test_input_not_modified(acq):
    before = acq.gre.phase_rad.copy()
    run_pipeline(acq.gre, PipelineConfig.default().set("inversion", "tkd"), labels=acq.labels)
    np.testing.assert_array_equal(acq.gre.phase_rad, before)


def test_cancel_and_progress(acq):
    seen = []

    def progress(f, label):
        seen.append((f, label))

    with pytest.raises(QSMCancelled):
        run_pipeline(acq.gre, PipelineConfig.default(), progress=progress, cancel=lambda: len(seen) >= 4)
    assert 0 < len(seen) and all(0.0 <= f <= 1.0 for f, _ in seen)


def test_bad_config_is_named():
    with pytest.raises(QSMInputError, match="no method 'nope'"):
        PipelineConfig.from_dict({"stages": {"inversion": {"method": "nope"}}})
    with pytest.raises(QSMInputError, match="unknown stage"):
        PipelineConfig.from_dict({"stages": {"nonsense": {}}})


def test_worker_process(acq, tmp_path):
    g = acq.gre
    np.savez(tmp_path / "in.npz", phase_rad=g.phase_rad, magnitude=g.magnitude, te_s=g.te_s, b0_tesla=g.b0_tesla,
             affine=g.affine, b0_direction=np.asarray(g.b0_direction))
    cfg = PipelineConfig.default().set("inversion", "tkd").to_dict()
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = subprocess.run([sys.executable, "-m", "QSMLogic.worker", str(tmp_path / "in.npz"),
                          str(tmp_path / "cfg.json"), str(tmp_path / "out")], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("PROGRESS")]
    assert len(lines) >= 8 and lines[-1].startswith("PROGRESS 1.0000")
    with np.load(tmp_path / "out" / "outputs.npz") as z:
        assert z["chi_ppm"].shape == g.shape
    stages = json.loads((tmp_path / "out" / "provenance.json").read_text())["stages"]
    assert [s["method"] for s in stages if s["stage"] == "inversion"] == ["tkd"]
    # bad input: exit code 2 and the reason on stderr
    np.savez(tmp_path / "bad.npz", phase_rad=g.phase_rad, magnitude=g.magnitude, te_s=g.te_s * 1000,
             b0_tesla=g.b0_tesla, affine=g.affine, b0_direction=np.asarray(g.b0_direction))
    bad = subprocess.run([sys.executable, "-m", "QSMLogic.worker", str(tmp_path / "bad.npz"),
                          str(tmp_path / "cfg.json"), str(tmp_path / "out2")], capture_output=True, text=True)
    assert bad.returncode == 2 and "milliseconds" in bad.stderr


REAL = "/work/shared/data/real-gre-small"


@pytest.mark.skipif(not __import__("os").path.isdir(REAL), reason="real sample not available")
def test_real_data_chain_detects_scaling_and_unwraps():
    """Real 3 T data no one here made: the reader detects the ±0.0037 phase scaling by its stated rule ("range"),
    the default chain runs end to end, and inside the field mask no neighbour pair of the unwrapped phase differs by
    π or more at any echo in tissue (voxels at ≥ 40 % of the echo's median magnitude; the excluded ones are veins
    dark at the late echoes — measured: 7 pairs above π at echo 3, all with magnitude 15–35 % of the median)."""
    from QSMLogic.io import load_gre

    gre = load_gre(magnitude=f"{REAL}/Mag.nii.gz", phase=f"{REAL}/Phase.nii.gz", te_s=(0.004, 0.008, 0.012),
                   b0_tesla=3.0)
    assert gre.metadata["phase_scaling"]["rule"] == "range"
    assert np.abs(gre.phase_rad).max() <= np.pi + 1e-5 and np.ptp(gre.phase_rad) > 6.0
    res = run_pipeline(gre, PipelineConfig.default())
    fm = res.outputs["field_mask"].astype(bool)
    assert fm.sum() > 0.85 * fm.size  # the crop is inside the head
    u = res.details["unwrap"].unwrapped
    wrapped_jumps = 0
    for n in range(3):
        mag = gre.magnitude[..., n]
        tissue = fm & (mag >= 0.4 * np.median(mag[fm]))
        for ax in range(3):
            lo, hi = [slice(None)] * 3, [slice(None)] * 3
            lo[ax], hi[ax] = slice(0, -1), slice(1, None)
            both = tissue[tuple(lo)] & tissue[tuple(hi)]
            assert np.abs(np.diff(u[..., n], axis=ax))[both].max() < np.pi, (n, ax)
            wrapped_jumps += int((np.abs(np.diff(gre.phase_rad[..., n], axis=ax))[both] > np.pi).sum())
    assert wrapped_jumps > 1000  # the input really was wrapped
    assert np.isfinite(res.outputs["chi_ppm"]).all()


def test_nan_voxels_leave_the_mask(acq):
    """A reader's validity mask (nan_policy="mask") removes those voxels from every stage's mask."""
    from QSMLogic.gre import GREData

    g = acq.gre
    ph = g.phase_rad.copy()
    valid = np.ones(ph.shape, bool)
    valid[30:34, 40:44, 30:32, 2] = False  # one echo's values lost inside the brain
    ph[~valid] = 0.0
    bad = GREData(phase_rad=ph, magnitude=g.magnitude, te_s=g.te_s, b0_tesla=g.b0_tesla, affine=g.affine,
                  b0_direction=g.b0_direction, metadata={"valid_mask": valid})
    res = run_pipeline(bad, PipelineConfig.default().set("inversion", "tkd"))
    lost = ~valid.all(axis=-1)
    assert not res.outputs["mask"][lost].any() and not res.outputs["qsm_mask"][lost].any()
    assert res.provenance["input"]["invalid_voxels_removed"] == int((acq.brain_mask & lost).sum()) > 0
    json.loads(res.provenance_json())  # the validity mask array is not dumped into the provenance


def test_two_echoes_r2star_uses_the_two_point_fit(acq):
    from QSMLogic.gre import GREData

    g = acq.gre
    two = GREData(phase_rad=g.phase_rad[..., :2], magnitude=g.magnitude[..., :2], te_s=g.te_s[:2],
                  b0_tesla=g.b0_tesla, affine=g.affine, b0_direction=g.b0_direction)
    cfg = PipelineConfig.default().set("inversion", "tkd")
    res = run_pipeline(two, cfg)
    assert [s["method"] for s in res.provenance["stages"] if s["stage"] == "r2star"] == ["loglinear"]
    assert cfg.stages["r2star"]["method"] == "arlo"  # the caller's configuration is not changed
    m = res.outputs["qsm_mask"].astype(bool) & (acq.labels == 7)  # white matter
    assert abs(np.median(res.outputs["r2star_hz"][m]) / np.median(acq.r2star_hz[m]) - 1) < 0.1


def test_failed_echo_is_left_out_of_the_field_fit(acq, result):
    """Echo 4 replaced by noise-like phase at full magnitude (a corrupted echo): the unwrapping flags it, the field
    fit uses the other four echoes, and the total field is as accurate as from all five clean echoes (99th
    percentile error measured 0.0034 ppm against 0.0031 ppm clean; 0.11 ppm when the bad echo stays in the fit)."""
    from QSMLogic.gre import GREData

    g = acq.gre
    ph = g.phase_rad.copy()
    ph[..., 3] = np.random.default_rng(1).uniform(-np.pi, np.pi, g.shape).astype(np.float32)
    bad = GREData(phase_rad=ph, magnitude=g.magnitude, te_s=g.te_s, b0_tesla=g.b0_tesla, affine=g.affine,
                  b0_direction=g.b0_direction)
    res = run_pipeline(bad, PipelineConfig.default().set("inversion", "tkd").set("swi", "homodyne"))
    assert res.details["unwrap"].echo_ok == (True, True, True, False, True)
    assert res.provenance["input"]["field_mapping_echoes"] == [1, 2, 3, 5]
    m = result.outputs["field_mask"].astype(bool) & res.outputs["field_mask"].astype(bool)

    def err(r):
        d = r.outputs["total_field_ppm"] - acq.total_field_ppm
        return float(np.percentile(np.abs(d[m] - np.median(d[m])), 99))

    assert err(res) < 1.5 * err(result)


def test_edge_shell_out_of_the_data_term_helps_data_heavy_inversions(acq):
    """MEDI on the chain's own local field: leaving the brain-edge shell (where background removal errs most) out of
    the data term cuts its χ nRMSE (measured on this 2 mm phantom: 81 % → 45 %); the weight there is 0 and the
    shell depth is in the provenance."""
    cfg = PipelineConfig.default().set("inversion", "medi")
    cfg.stages["swi"]["enabled"] = False

    def chi_err(res):
        m = res.outputs["qsm_mask"].astype(bool)
        est = res.outputs["chi_ppm"]
        return nrmse(est - est[m].mean(), acq.chi_ppm - acq.chi_ppm[m].mean(), m)

    full = run_pipeline(acq.gre, cfg, data_edge_mm=0.0)
    shell = run_pipeline(acq.gre, cfg)
    print(f"MEDI in the chain: nRMSE {chi_err(full):.1f} % with the edge shell in the data term, "
          f"{chi_err(shell):.1f} % without")
    assert chi_err(shell) < 0.7 * chi_err(full)
    assert shell.provenance["inversion_data_edge_mm"] == 4.5
    w = shell.details["inversion_weight"]
    m = shell.outputs["qsm_mask"].astype(bool)
    from scipy import ndimage as ndi

    edge = m & (ndi.distance_transform_edt(np.pad(m, 1), sampling=VOXEL_MM)[1:-1, 1:-1, 1:-1] <= 4.5)
    assert not w[edge].any() and (w[m & ~edge] > 0).mean() > 0.99

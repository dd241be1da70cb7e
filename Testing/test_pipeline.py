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

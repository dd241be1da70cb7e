"""Stage selection in the pipeline: SWI alone (no B0 needed), a truncated QSM chain, and clear errors when an
enabled stage needs a disabled one or the unknown B0."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from QSMLogic.errors import QSMInputError
from QSMLogic.gre import GREData
from QSMLogic.params import run_method
from QSMLogic.phantom import make_head_model, simulate_acquisition
from QSMLogic.pipeline import PipelineConfig, run_pipeline

TE_S = (0.004, 0.010, 0.016)


@pytest.fixture(scope="module")
def acq():
    model = make_head_model(shape=(48, 48, 32), voxel_size_mm=(2.5, 2.5, 2.5), seed=1)
    return simulate_acquisition(model, te_s=TE_S, b0_tesla=3.0, n_coils=4, snr=80.0, seed=1)


@pytest.fixture(scope="module")
def combined(acq):
    """The phantom's coil-combined signal (the ideal combination: the noiseless-sensitivity-weighted sum)."""
    s = acq.gre.complex_signal()
    c = acq.coil_sensitivities
    comb = (s * np.conj(c)[:, :, :, None, :]).sum(axis=-1)
    return GREData.from_complex(comb, te_s=TE_S, b0_tesla=None, affine=acq.gre.affine)


def test_swi_only_without_b0_matches_the_swi_method(combined):
    gre = combined
    assert gre.b0_tesla is None
    fractions = []
    res = run_pipeline(gre, PipelineConfig.swi_only(mip_slab_mm=10.0), progress=lambda f, s: fractions.append(f))
    assert set(res.outputs) == {"magnitude", "swi", "swi_phase_rad", "swi_phase_mask", "mip"}
    assert [s["stage"] for s in res.provenance["stages"]] == ["swi"]
    assert res.provenance["input"]["b0_tesla"] is None
    assert res.provenance["stages"][0]["params"]["mip_slab_mm"] == 10.0
    assert fractions[-1] == 1.0 and all(b >= a for a, b in zip(fractions, fractions[1:]))
    direct = run_method("swi", "homodyne", {"magnitude": gre.magnitude, "phase": gre.phase_rad,
                                            "voxel_size_mm": gre.voxel_size_mm, "affine": gre.affine,
                                            "b0_direction": gre.b0_direction, "te_s": gre.te_s},
                        {"mip_slab_mm": 10.0})
    # the pipeline goes through complex64 and back: phase and magnitude agree to float32 rounding
    np.testing.assert_allclose(res.outputs["swi"], direct.swi, rtol=1e-4, atol=1e-4 * float(direct.swi.max()))
    np.testing.assert_allclose(res.outputs["mip"], direct.mip, rtol=1e-4, atol=1e-4 * float(direct.mip.max()))


def test_swi_only_with_coils_and_mask(acq):
    gre = dataclasses.replace(acq.gre, b0_tesla=None)  # a new GREData: the phantom's is left alone
    assert gre.n_coils == 4 and acq.gre.b0_tesla == 3.0
    res = run_pipeline(gre, PipelineConfig.swi_only(brain_mask=True))
    assert [s["stage"] for s in res.provenance["stages"]] == ["coil_combination", "mask", "swi"]
    m = res.outputs["mask"].astype(bool)
    brain = acq.brain_mask.astype(bool)
    assert (m & brain).sum() > 0.9 * brain.sum() and (m & ~brain).sum() < 0.1 * brain.sum()
    # outside the mask SWI is the magnitude itself; inside, the veins darken it
    outside = ~m
    np.testing.assert_allclose(res.outputs["swi_phase_mask"][outside], 1.0)
    assert (res.outputs["swi_phase_mask"][m] < 0.9).mean() > 0.001


def test_stage_needing_unknown_b0_is_named(combined):
    with pytest.raises(QSMInputError, match=r"b0_tesla is None.*swi_only"):
        run_pipeline(combined, PipelineConfig.default())
    cfg = PipelineConfig.swi_only()
    cfg.stages["mask"]["enabled"] = True
    cfg.stages["unwrap"]["enabled"] = True
    cfg.stages["field_mapping"]["enabled"] = True
    with pytest.raises(QSMInputError, match="field_mapping"):
        run_pipeline(combined, cfg)


def test_disabled_prerequisite_is_named(acq, combined):
    with pytest.raises(QSMInputError, match="'swim' needs the reference stage"):
        PipelineConfig.swi_only("swim")
    cfg = PipelineConfig.default()
    cfg.stages["unwrap"]["enabled"] = False
    with pytest.raises(QSMInputError, match=r"field_mapping stage \(weighted_linear\) needs the unwrap stage"):
        run_pipeline(acq.gre, cfg)
    cfg = PipelineConfig.default()
    cfg.stages["reference"]["enabled"] = False
    with pytest.raises(QSMInputError, match="reference stage cannot be disabled"):
        run_pipeline(acq.gre, cfg)
    cfg = PipelineConfig.swi_only()
    cfg.stages["unwrap"]["enabled"] = True
    with pytest.raises(QSMInputError, match="unwrap stage needs a brain mask"):
        run_pipeline(combined, cfg)


def test_chain_up_to_the_local_field(combined, acq):
    """Background removal without inversion: the local field and its mask, no susceptibility."""
    gre = dataclasses.replace(combined, b0_tesla=3.0)
    cfg = PipelineConfig.default().set("background", "vsharp")
    for key in ("inversion", "reference", "swi", "r2star"):
        cfg.stages[key]["enabled"] = False
    res = run_pipeline(gre, cfg)
    assert [s["stage"] for s in res.provenance["stages"]] == ["mask", "unwrap", "field_mapping", "background"]
    assert "chi_ppm" not in res.outputs and res.provenance["susceptibility_reference"] is None
    m = res.outputs["qsm_mask"].astype(bool)
    assert m.sum() > 0.3 * acq.brain_mask.sum()
    truth = acq.local_field_ppm[m] - acq.local_field_ppm[m].mean()
    est = res.outputs["local_field_ppm"][m] - res.outputs["local_field_ppm"][m].mean()
    err = np.linalg.norm(est - truth) / np.linalg.norm(truth)
    print(f"V-SHARP local field from the pipeline: nRMSE {100 * err:.1f} %")
    assert err < 0.6

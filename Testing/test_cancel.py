"""Cancellation inside the iterative methods: a ``cancel()`` that turns True stops the solve at that check, with
QSMCancelled naming the method, both when a method is called directly and through the pipeline."""
from __future__ import annotations

import numpy as np
import pytest

from QSMLogic.errors import QSMCancelled
from QSMLogic.params import load_all, run_method
from QSMLogic.phantom import make_head_model, simulate_acquisition
from QSMLogic.pipeline import PipelineConfig, run_pipeline

#: The iterative methods of each stage (the direct ones, SHARP, V-SHARP, TKD, TSVD, have no loop to stop).
ITERATIVE = {
    "background": ("resharp", "ismv", "pdf", "lbv", "harperella"),
    "inversion": ("cgls", "lsqr", "ilsqr", "medi", "medi0", "fansi_tv", "fansi_nltv", "star_qsm", "hdqsm", "tgv",
                  "sstv", "tfi"),
}


class CancelAfter:
    """A cancel callback that returns True from its ``n``-th call on, counting its calls."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls >= self.n


@pytest.fixture(scope="module")
def acq():
    model = make_head_model(shape=(48, 48, 32), voxel_size_mm=(3.0, 3.0, 3.0), seed=2)
    return simulate_acquisition(model, te_s=(0.005, 0.015), b0_tesla=3.0, snr=200.0, seed=2)


def test_every_iterative_method_is_listed():
    specs = load_all()
    assert set(ITERATIVE["background"]) | {"sharp", "vsharp"} == set(specs["background"].method_keys)
    assert set(ITERATIVE["inversion"]) | {"tkd", "tkd_corrected", "tsvd"} == set(specs["inversion"].method_keys)


@pytest.mark.parametrize("stage_key, method", [(s, m) for s, ms in ITERATIVE.items() for m in ms])
def test_cancel_stops_the_solver_loop(acq, stage_key, method):
    m = acq.brain_mask.astype(bool)
    gre = acq.gre
    inputs = {"field_ppm": acq.total_field_ppm, "total_field_ppm": acq.total_field_ppm,
              "local_field_ppm": np.where(m, acq.local_field_ppm, 0).astype(np.float32), "mask": m,
              "voxel_size_mm": gre.voxel_size_mm, "b0_direction": gre.b0_direction, "b0_tesla": gre.b0_tesla,
              "te_s": gre.te_s, "phase_rad": np.angle(gre.complex_signal()), "labels": acq.labels,
              "magnitude": np.abs(gre.complex_signal())[..., 0]}
    # 3: two iterations run, the third check stops the solve (the methods check before every iteration)
    cancel = CancelAfter(3)
    with pytest.raises(QSMCancelled, match="cancelled"):
        run_method(stage_key, method, dict(inputs, cancel=cancel))
    assert cancel.calls == 3, f"{method} went on calling cancel() after it returned True"


def test_pipeline_cancels_inside_the_inversion(acq):
    """The pipeline passes its cancel callback into the methods: cancelled inside the inversion's loop."""
    in_inversion = []
    cancel = CancelAfter(3)

    def progress(fraction: float, label: str) -> None:
        if label.startswith("Dipole inversion") and not in_inversion:
            in_inversion.append(fraction)
            cancel.calls = 0  # count from the inversion's start: its first iteration's check is the next call

    def counting() -> bool:
        return bool(in_inversion) and cancel()

    cfg = PipelineConfig.default().set("background", "vsharp")
    cfg.stages["swi"]["enabled"] = False
    cfg.stages["r2star"]["enabled"] = False
    with pytest.raises(QSMCancelled, match="TFI cancelled"):
        run_pipeline(acq.gre, cfg, progress=progress, cancel=counting)
    assert cancel.calls == 3

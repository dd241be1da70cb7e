"""Benchmark of the whole default pipeline (wrapped phase → QSM, R2*, SWI) on the phantom.

The row scores the pipeline's own susceptibility map (its default inversion and reference) with the same metrics
as the inversion benchmark (:func:`QSMLogic.metrics.all_metrics`, map and truth referenced to their mean in the
pipeline's QSM mask); the inversion benchmark's setting (b) gives every inversion method on the same chain.
"""
from __future__ import annotations

from typing import List

from ..metrics import all_metrics
from ..phantom import LABEL_NAMES
from ..pipeline import PipelineConfig, run_pipeline
from ..reference import reference_whole_brain
from .common import BenchContext, BenchRow, measure
from .inversion import short


def run(ctx: BenchContext) -> List[BenchRow]:
    acq = ctx.acquisition
    cfg = PipelineConfig.default()
    res, dt, mem = measure(run_pipeline, acq.gre, cfg, labels=acq.labels)
    m = res.outputs["qsm_mask"].astype(bool)
    truth = reference_whole_brain(acq.chi_ppm, m).chi_ppm
    est = reference_whole_brain(res.outputs["chi_ppm"], m).chi_ppm
    scores = all_metrics(est, truth, m, acq.model.voxel_size_mm, acq.gre.b0_direction, labels=acq.labels,
                         label_names=LABEL_NAMES)
    stages = ", ".join(f"{r['stage']} {r['seconds']:.1f}s" for r in res.provenance["stages"])
    return [BenchRow("pipeline", "default chain", dt, mem, short(scores), stages)]

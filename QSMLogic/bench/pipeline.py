"""Benchmark of the whole default pipeline (wrapped phase → QSM, R2*, SWI) on the phantom."""
from __future__ import annotations

from typing import List


from ..metrics import nrmse
from ..pipeline import PipelineConfig, run_pipeline
from .common import BenchContext, BenchRow, measure


def run(ctx: BenchContext) -> List[BenchRow]:
    acq = ctx.acquisition
    cfg = PipelineConfig.default()
    res, dt, mem = measure(run_pipeline, acq.gre, cfg, labels=acq.labels)
    m = res.outputs["qsm_mask"].astype(bool)
    truth = acq.chi_ppm - acq.chi_ppm[m].mean()
    est = res.outputs["chi_ppm"] - res.outputs["chi_ppm"][m].mean()
    stages = ", ".join(f"{r['stage']} {r['seconds']:.1f}s" for r in res.provenance["stages"])
    return [BenchRow("pipeline", "default chain", dt, mem, {"nrmse_%": float(nrmse(est, truth, m))}, stages)]

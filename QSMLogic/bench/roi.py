"""Benchmark of the deep-grey-nuclei measures: CIT168 registration (rigid, affine, B-spline) onto the phantom's χ map
plus the per-region measurement, timed together, with Dice against the phantom's own nuclei.

The phantom's world is MNI space scaled by 0.92 (:data:`QSMLogic.phantom.HEAD_SCALE`), so the registration has a
real scaling to recover. ``dice_*`` compares the registered atlas (both sides) with the phantom's label;
``mean_err_max`` is the largest |atlas-region mean − true-label mean| of χ over those nuclei (ppm, same map).
``registration_cpu_s`` is the process CPU time of the registration: with its single SimpleITK thread it is the wall
time the registration needs on an otherwise idle core, whatever else the machine runs.
"""
from __future__ import annotations

import time
from typing import List

import numpy as np

from ..phantom import label_of
from ..roi.atlas import load_cit168
from ..roi.measures import measure_regions
from ..roi.regions import atlas_regions
from .common import BenchContext, BenchRow, measure

#: Phantom structure → CIT168 structures.
NUCLEI = {
    "putamen": ("Putamen",), "caudate": ("Caudate",), "red nucleus": ("Red Nucleus",),
    "subthalamic nucleus": ("Subthalamic Nucleus",),
    "substantia nigra": ("Substantia Nigra pars compacta", "Substantia Nigra pars reticulata"),
}
SHORT = {"putamen": "put", "caudate": "cau", "red nucleus": "RN", "subthalamic nucleus": "STN",
         "substantia nigra": "SN"}


def run(ctx: BenchContext) -> List[BenchRow]:
    model = ctx.acquisition.model
    chi = model.chi_ppm
    mask = model.brain_mask
    atlas = load_cit168()
    vox = model.voxel_size_mm

    def job():
        t0, c0 = time.perf_counter(), time.process_time()
        regs = atlas_regions(np.where(mask, chi, 0.0), model.affine, atlas, "qsm", subject_mask=mask)
        t_reg, c_reg = time.perf_counter() - t0, time.process_time() - c0
        rows = measure_regions(chi, regs.labels, regs.regions, vox, mask=mask, source=regs.source,
                               expected_volume_mm3=regs.expected_volume_mm3)
        return regs, rows, t_reg, c_reg

    (regs, rows, t_reg, c_reg), dt, mem = measure(job)
    metrics = {"registration_s": t_reg, "registration_cpu_s": c_reg, "measure_s": dt - t_reg}
    errs = []
    for name, structures in NUCLEI.items():
        keys = [k for k, r in atlas.regions.items() if r.structure in structures]
        a = np.isin(regs.labels, keys)
        t = model.labels == label_of(name)
        metrics[f"dice_{SHORT[name]}"] = 2.0 * np.count_nonzero(a & t) / max(1, a.sum() + t.sum())
        errs.append(abs(float(chi[a & mask].mean() - chi[t & mask].mean())))
    metrics["mean_err_max"] = max(errs)
    return [BenchRow("roi", "cit168_bspline", dt, mem, metrics,
                     f"{len(rows)} regions, 1 SimpleITK thread, {model.shape} at {tuple(vox)} mm")]

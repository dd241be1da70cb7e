"""Benchmark of SWI (homodyne, unwrapped-field and SWIM variants) with a sliding 16 mm mIP on the phantom.

Metrics per variant:

* ``cnr_min`` / ``cnr_median``: vein contrast-to-noise ratio over the phantom's vein segments (connected parts of
  the ``veins`` label of at least 5 voxels), ``CNR = (mean SWI in the tissue shell around the segment − mean SWI in
  the segment) / noise SD`` (:func:`vein_segment_cnr`); the shell is the brain-tissue voxels (GM, WM, deep nuclei)
  2–6 mm from the segment; the noise SD (``noise_sd``) is estimated from the SWI itself in white matter
  (:func:`swi_noise_sd`; 0–17 % above the two-realisation SD, checked in Testing/test_swi.py). ``cnr_min`` is the
  worst vein segment: veins across B0, whose inside phase is negative (−Δχ/6) while their outer lobes are
  positive, are the hard case for the phase-based masks.
* ``vein_contrast``: ``1 − mean(SWI in veins)/mean(SWI in brain tissue)``.
* ``calc_mask``: the mean phase mask in the diamagnetic calcification (should stay near 1 for a paramagnetic-only
  mask).
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
from scipy import ndimage

from .. import swi
from ..phantom.tissues import label_of
from .common import BenchContext, BenchRow, measure

VEIN_LABEL = label_of("veins")
CALCIFICATION_LABEL = label_of("calcification")
#: Brain tissue around the veins the CNR compares with: GM, WM and the deep grey nuclei (labels GM … accumbens).
TISSUE_LABELS = tuple(range(label_of("GM"), label_of("nucleus accumbens") + 1))
#: Distance range (mm) from a vein segment of the tissue shell it is compared with.
SHELL_MM = (2.0, 6.0)


def vein_segment_cnr(image: np.ndarray, labels: np.ndarray, mask: np.ndarray, noise_sd: float,
                     voxel_size_mm: Sequence[float], vein_label: int = VEIN_LABEL,
                     tissue_labels: Sequence[int] = TISSUE_LABELS, shell_mm: Sequence[float] = SHELL_MM,
                     min_voxels: int = 5) -> np.ndarray:
    """CNR of each vein segment in ``image``: ``(mean(shell) − mean(segment)) / noise_sd``.

    Segments are the connected (6-neighbour) parts of ``labels == vein_label`` with at least ``min_voxels``
    voxels; the shell is the voxels of ``tissue_labels`` inside ``mask`` whose distance to the segment is more than
    ``shell_mm[0]`` and at most ``shell_mm[1]`` (in mm, so the figure does not depend on the voxel size; the gap
    skips partial-volume voxels). Works on a bounding box per segment, so it is cheap on a full-size volume.
    Returns one CNR per segment (label order).
    """
    img = np.asarray(image)
    vox = np.asarray(voxel_size_mm, dtype=np.float64)
    cc, n = ndimage.label(labels == vein_label)
    tissue = np.isin(labels, np.asarray(tissue_labels)) & np.asarray(mask, dtype=bool)
    lo, hi = float(shell_mm[0]), float(shell_mm[1])
    pad = [int(np.ceil(hi / v)) + 1 for v in vox]
    out = []
    for i, sl in enumerate(ndimage.find_objects(cc), start=1):
        if sl is None:
            continue
        box = tuple(slice(max(0, s.start - p), min(dim, s.stop + p)) for s, p, dim in zip(sl, pad, img.shape))
        seg = cc[box] == i
        if seg.sum() < min_voxels:
            continue
        d = ndimage.distance_transform_edt(~seg, sampling=vox)
        shell = (d > lo) & (d <= hi) & tissue[box]
        if not shell.any():
            continue
        sub = img[box]
        out.append(float((sub[shell].mean() - sub[seg].mean()) / noise_sd))
    return np.asarray(out)


def swi_noise_sd(image: np.ndarray, labels: np.ndarray, mask: np.ndarray, margin_voxels: int = 2) -> float:
    """Noise SD of an SWI volume estimated from the image itself: the robust SD (1.4826·MAD) of the second
    differences ``(2·x_i − x_{i−1} − x_{i+1})/√6`` along each axis, inside white matter eroded by
    ``margin_voxels`` and kept 2·``margin_voxels`` voxels from veins and lesions (where the SWI is nearly constant,
    so the differences are noise), the median over the three axes. Used where no second noise realisation exists;
    the tests check it against the SD of the difference of two realisations."""
    img = np.asarray(image, dtype=np.float64)
    lesions = np.isin(labels, (VEIN_LABEL, CALCIFICATION_LABEL, label_of("hemorrhage")))
    wm = (ndimage.binary_erosion((labels == label_of("WM")) & np.asarray(mask, dtype=bool), iterations=margin_voxels)
          & ~ndimage.binary_dilation(lesions, iterations=2 * margin_voxels))
    est = []
    for ax in range(3):
        both = wm & np.roll(wm, 1, ax) & np.roll(wm, -1, ax)
        d2 = (2 * img - np.roll(img, 1, ax) - np.roll(img, -1, ax))[both] / np.sqrt(6.0)
        est.append(1.4826 * float(np.median(np.abs(d2 - np.median(d2)))))
    return float(np.median(est))


def run(ctx: BenchContext) -> List[BenchRow]:
    acq = ctx.acquisition
    gre = acq.gre
    vox = acq.model.voxel_size_mm
    m = acq.brain_mask
    labels = acq.labels
    veins = labels == VEIN_LABEL
    tissue = m & np.isin(labels, TISSUE_LABELS)
    chi = acq.chi_ppm - acq.chi_ppm[m].mean()
    common = dict(magnitude=gre.magnitude, mask=m, voxel_size_mm=vox, te_s=gre.te_s, b0_direction=gre.b0_direction,
                  affine=gre.affine, mip_slab_mm=16.0)
    runs = [
        ("homodyne+mIP", swi.swi_homodyne, dict(common, phase=gre.phase_rad)),
        ("unwrapped+mIP", swi.swi_unwrapped, dict(common, local_field_ppm=acq.local_field_ppm, b0_tesla=gre.b0_tesla)),
        ("swim+mIP", swi.swim, dict(common, chi_ppm=chi)),
    ]
    rows: List[BenchRow] = []
    for name, fn, kw in runs:
        res, dt, mem = measure(fn, **kw)
        sd = swi_noise_sd(res.swi, labels, m)
        cnr = vein_segment_cnr(res.swi, labels, m, sd, vox)
        metrics = {
            "cnr_min": float(cnr.min()),
            "cnr_median": float(np.median(cnr)),
            "vein_contrast": float(1 - res.swi[veins].mean() / res.swi[tissue].mean()),
            "calc_mask": float(res.phase_mask[labels == CALCIFICATION_LABEL].mean()),
            "noise_sd": sd,
        }
        rows.append(BenchRow("swi", name, dt, mem, metrics,
                             f"mIP {res.info['mip_slices']} slices along axis {res.info['mip_axis']}, "
                             f"{cnr.size} vein segments"))
    return rows

"""Which way does the input phase turn? Deciding ``phase_sign`` from evidence, and saying what the evidence was.

Vendors and converters differ in whether phase grows as +2π·Δf·TE or −2π·Δf·TE (Haacke et al., AJNR 2009, on the
handedness of SWI phase; Deistung, Schweser & Reichenbach, NMR Biomed 2017, review). A wrong sign negates the whole
susceptibility map. Two kinds of evidence are used:

* the vendor named in the input (DICOM ``Manufacturer``, BIDS sidecar ``Manufacturer``): a prior only, and only for
  vendors listed in :data:`VENDOR_PHASE_SIGN`;
* the data: veins hold deoxyhaemoglobin and are paramagnetic (χ ≈ +0.3–0.5 ppm against tissue; Weisskoff & Kiihne,
  MRM 1992; Fan et al., MRM 2014) whatever their orientation, so in a correct QSM map the voxels that are dark and
  tubular in the late-echo magnitude (as in SWI) have a higher χ than the tissue right around them. The volume is
  cut into blocks of :data:`BLOCK_MM`; each block with vein voxels gives one vein-minus-surroundings contrast, and a
  two-sided sign test over the blocks (binomial, p < :data:`SIGN_TEST_P`) decides. Unlike the local field, whose sign
  inside a vein changes with its angle to B0, χ needs no orientation model.

The decision is "keep", "flip" or "inconclusive" (too few blocks, or no significant majority): inconclusive keeps
the prior and says so. The flip is exact: every stage from unwrapping to referencing is odd in the phase, so the
pipeline rerun with the other sign gives −χ (the SWI phase mask, which is one-sided, changes as it must).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

#: Phase sign of vendors whose stored phase is known to follow the project's convention (+2π·Δf·TE; veins
#: positive in QSM without a flip). Others get no prior: the data decide.
VENDOR_PHASE_SIGN: Dict[str, int] = {"siemens": 1}
#: A voxel is "dark" when its late-echo magnitude is below this fraction of the local (Gaussian, σ = DARK_SIGMA_MM)
#: mean.
DARK_RATIO = 0.75
DARK_SIGMA_MM = 3.0
#: A dark component counts as a vein when it is elongated: the ratio of its two largest principal extents (mm)
#: reaches TUBULAR_RATIO, and it has at least MIN_VEIN_VOXELS voxels.
TUBULAR_RATIO = 2.5
MIN_VEIN_VOXELS = 8
#: Block edge (mm) for independent contrast samples, and the shell (mm) around veins that serves as their background.
BLOCK_MM = 8.0
SHELL_MM = (0.8, 2.5)
#: Fewest blocks with veins for a decision, and the sign test's significance level.
MIN_BLOCKS = 6
SIGN_TEST_P = 0.01


def vendor_prior(manufacturer: Optional[str]) -> Tuple[Optional[int], str]:
    """(sign or None, sentence) for the manufacturer named in the input."""
    if not manufacturer:
        return None, "the input names no manufacturer"
    key = str(manufacturer).strip().lower()
    for vendor, sign in VENDOR_PHASE_SIGN.items():
        if vendor in key:
            return sign, f"manufacturer {manufacturer!r}: phase follows the +2π·Δf·TE convention (sign {sign:+d})"
    return None, f"manufacturer {manufacturer!r}: no known fixed phase convention, left to the data"


def vein_mask(magnitude_late: np.ndarray, mask: np.ndarray, voxel_size_mm: Sequence[float]) -> np.ndarray:
    """Voxels inside ``mask`` that are dark (relative to their neighbourhood) and belong to an elongated component of
    the late-echo magnitude ``magnitude_late`` (3D)."""
    from scipy import ndimage as ndi

    vox = np.asarray(voxel_size_mm, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    a = np.where(m, np.asarray(magnitude_late, dtype=np.float32), np.float32(0))
    sigma = DARK_SIGMA_MM / vox
    num = ndi.gaussian_filter(a, sigma)
    den = ndi.gaussian_filter(m.astype(np.float32), sigma)
    local = num / np.maximum(den, 1e-6)
    dark = m & (a < DARK_RATIO * local)
    lab, n = ndi.label(dark)
    if n == 0:
        return dark
    out = np.zeros_like(dark)
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        comp = lab[sl] == i
        if comp.sum() < MIN_VEIN_VOXELS:
            continue
        pts = np.argwhere(comp) * vox
        ev = np.sort(np.linalg.eigvalsh(np.cov(pts.T)))[::-1]
        if ev[1] <= 0 or np.sqrt(ev[0] / max(ev[1], 1e-12)) >= TUBULAR_RATIO:
            out[sl] |= comp
    return out


def vein_evidence(chi_ppm: np.ndarray, veins: np.ndarray, mask: np.ndarray, voxel_size_mm: Sequence[float]
                  ) -> Dict[str, Any]:
    """Blockwise vein-minus-surroundings χ contrasts and the sign test on them.

    Returns a dict: ``n_vein_voxels``, ``n_blocks``, ``n_positive``, ``median_contrast_ppm``, ``mean_vein_ppm``,
    ``p_value`` (two-sided binomial sign test) and ``verdict``: "paramagnetic" (veins above their surroundings,
    significant), "diamagnetic" (below, significant) or "inconclusive".
    """
    from scipy.stats import binomtest

    from ._distance import distance_mm

    chi = np.asarray(chi_ppm, dtype=np.float64)
    v = np.asarray(veins, dtype=bool) & np.asarray(mask, dtype=bool)
    vox = np.asarray(voxel_size_mm, dtype=np.float64)
    out: Dict[str, Any] = {"n_vein_voxels": int(v.sum())}
    if not v.any():
        out.update(n_blocks=0, n_positive=0, median_contrast_ppm=None, mean_vein_ppm=None, p_value=1.0,
                   verdict="inconclusive")
        return out
    d = distance_mm(~v, vox)
    shell = np.asarray(mask, dtype=bool) & (d > SHELL_MM[0]) & (d <= SHELL_MM[1])
    step = np.maximum(1, np.round(BLOCK_MM / vox).astype(int))
    idx = np.indices(v.shape)
    block = np.ravel_multi_index(tuple(idx[a] // step[a] for a in range(3)),
                                 tuple(-(-v.shape[a] // step[a]) for a in range(3)))
    nb = int(block.max()) + 1
    sum_v = np.bincount(block[v], weights=chi[v], minlength=nb)
    cnt_v = np.bincount(block[v], minlength=nb)
    sum_s = np.bincount(block[shell], weights=chi[shell], minlength=nb)
    cnt_s = np.bincount(block[shell], minlength=nb)
    ok = (cnt_v >= 3) & (cnt_s >= 3)
    contrast = sum_v[ok] / cnt_v[ok] - sum_s[ok] / cnt_s[ok]
    n, k = int(contrast.size), int(np.count_nonzero(contrast > 0))
    p = float(binomtest(k, n, 0.5).pvalue) if n else 1.0
    verdict = "inconclusive"
    if n >= MIN_BLOCKS and p < SIGN_TEST_P:
        verdict = "paramagnetic" if k > n / 2 else "diamagnetic"
    out.update(n_blocks=n, n_positive=k, median_contrast_ppm=float(np.median(contrast)) if n else None,
               mean_vein_ppm=float(chi[v].mean()), p_value=p, verdict=verdict)
    return out

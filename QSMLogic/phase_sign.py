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

The verdict is "paramagnetic" (keep the sign), "diamagnetic" (flip it) or "inconclusive" (fewer than
:data:`MIN_BLOCKS` blocks, or no significant majority: the prior is kept and the report says so). A flip reruns the
whole pipeline with the other sign: every stage from unwrapping to referencing is odd in the phase, so χ changes
sign, while the one-sided SWI phase mask changes as it must (negating χ alone would leave SWI wrong).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import QSMInputError

#: Phase sign of vendors whose stored phase is known to follow the project's convention (+2π·Δf·TE; veins
#: positive in QSM without a flip). Others get no prior: the data decide.
VENDOR_PHASE_SIGN: Dict[str, int] = {"siemens": 1}
#: A voxel is "dark" when its late-echo magnitude is below this fraction of the local (Gaussian, σ = DARK_SIGMA_MM)
#: mean.
DARK_RATIO = 0.75
DARK_SIGMA_MM = 3.0
#: Vein candidates lie deeper than this (mm, and at least two voxels) inside the mask.
EDGE_MM = 3.0
#: A dark component counts as a vein when it is elongated: the ratio of its two largest principal extents (mm)
#: reaches TUBULAR_RATIO, and it has at least MIN_VEIN_VOXELS voxels.
TUBULAR_RATIO = 2.5
MIN_VEIN_VOXELS = 8
#: Block edge (mm, at least MIN_BLOCK_VOXELS voxels) for independent contrast samples, and the shell (mm; at least one
#: voxel off the vein and 1.5 voxels deep) around veins that serves as their background.
BLOCK_MM = 8.0
MIN_BLOCK_VOXELS = 4
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


def _local_mean(a: np.ndarray, m: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    from scipy import ndimage as ndi

    num = ndi.gaussian_filter(np.where(m, a, np.float32(0)), sigma)
    return num / np.maximum(ndi.gaussian_filter(m.astype(np.float32), sigma), 1e-6)


def vein_mask(magnitude_late: np.ndarray, mask: np.ndarray, voxel_size_mm: Sequence[float],
              magnitude_first: Optional[np.ndarray] = None) -> np.ndarray:
    """Voxels inside ``mask`` that are dark in the late-echo magnitude (below :data:`DARK_RATIO` of their
    neighbourhood) and belong to an elongated component. With ``magnitude_first`` (first echo), they must also
    lose more signal from the first to the last echo than their neighbourhood (a higher R2*, as deoxygenated blood
    has), which leaves out structures that are dark for another reason (low proton density)."""
    from scipy import ndimage as ndi

    vox = np.asarray(voxel_size_mm, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    a = np.where(m, np.asarray(magnitude_late, dtype=np.float32), np.float32(0))
    sigma = DARK_SIGMA_MM / vox
    # the mask's outer layers are partial-volumed with skull or air (dark for that reason): left out
    from ._distance import depth_mm

    inside = depth_mm(m, vox) > max(EDGE_MM, 2 * float(vox.max()))
    dark = m & inside & (a < DARK_RATIO * _local_mean(a, m, sigma))
    if magnitude_first is not None:
        first = np.asarray(magnitude_first, dtype=np.float32)
        decay = np.where(m & (first > 0), a / np.maximum(first, np.float32(1e-30)), np.float32(0))
        dark &= decay < _local_mean(decay, m, sigma)
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
    # the shell starts past the veins' partial-volume neighbours and is at least 1.5 voxels deep
    inner = max(SHELL_MM[0], float(vox.max()) * 1.01)
    outer = max(SHELL_MM[1], inner + 1.5 * float(vox.max()))
    shell = np.asarray(mask, dtype=bool) & (d > inner) & (d <= outer)
    step = np.maximum(MIN_BLOCK_VOXELS, np.round(BLOCK_MM / vox).astype(int))
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


def evidence_from_result(res: Any, gre: Any) -> Dict[str, Any]:
    """:func:`vein_evidence` on a pipeline result: χ, the QSM mask, the late-echo magnitude of ``gre`` (the combined
    magnitude for multi-coil data) and its voxel size."""
    first = None
    if gre.magnitude is not None and gre.is_combined:
        late = np.asarray(gre.magnitude[..., -1], dtype=np.float32)
        if gre.n_echoes >= 2:
            first = np.asarray(gre.magnitude[..., 0], dtype=np.float32)
    else:
        late = np.asarray(res.outputs["magnitude"], dtype=np.float32)
    mask = np.asarray(res.outputs["qsm_mask"], dtype=bool)
    veins = vein_mask(late, mask, gre.voxel_size_mm, first)
    return vein_evidence(res.outputs["chi_ppm"], veins, mask, gre.voxel_size_mm)


def with_phase_sign(gre: Any, sign: int) -> Any:
    """A copy of ``gre`` whose phase follows ``sign`` relative to the stored input (no copy when it already does)."""
    from .gre import GREData

    if sign == gre.phase_sign:
        return gre
    raw = np.negative(gre.phase_rad) if gre.phase_sign == -1 else gre.phase_rad
    meta = dict(gre.metadata)
    meta["phase_sign"] = int(sign)
    return GREData(phase_rad=raw, magnitude=gre.magnitude, te_s=gre.te_s, b0_tesla=gre.b0_tesla, affine=gre.affine,
                   phase_sign=sign, b0_direction=gre.b0_direction, metadata=meta)


def run_with_phase_sign(gre: Any, config: Any = None, sign: str = "auto", log: Optional[Any] = None,
                        **pipeline_kwargs: Any) -> Any:
    """Run the pipeline and decide the phase sign from evidence; returns the :class:`PipelineResult` whose
    provenance holds ``phase_sign`` = {chosen, mode, vendor, evidence, decision}.

    ``sign``: "auto" (default) starts from the vendor prior (else ``gre.phase_sign``), checks the veins in the χ
    map and reruns with the other sign when they come out significantly diamagnetic; "1"/"-1" (or ±1) use that
    sign and only report the evidence (with a warning in ``decision`` when it contradicts). ``gre.phase_sign`` is
    taken as the sign the caller read the phase with.
    """
    from .pipeline import run_pipeline

    say = log or (lambda s: None)
    manufacturer = gre.metadata.get("manufacturer") if isinstance(gre.metadata, dict) else None
    prior, vendor_text = vendor_prior(manufacturer)
    if str(sign) == "auto":
        start = prior if prior is not None else gre.phase_sign
    else:
        start = int(sign)
        if start not in (1, -1):
            raise ValueError(f"sign must be 'auto', 1 or -1, got {sign!r}")
    g = with_phase_sign(gre, start)
    res = run_pipeline(g, config, **pipeline_kwargs)
    if "chi_ppm" not in res.outputs:
        res.provenance["phase_sign"] = {"chosen": start, "mode": str(sign), "vendor": vendor_text,
                                        "decision": "no QSM map: the sign was not checked"}
        return res
    ev = evidence_from_result(res, g)
    summary = (f"veins (dark, tubular in the late-echo magnitude; {ev['n_vein_voxels']} voxels) exceed their "
               f"surroundings in {ev['n_positive']} of {ev['n_blocks']} blocks of {BLOCK_MM:g} mm "
               f"(sign test p = {ev['p_value']:.2g})")
    record: Dict[str, Any] = {"mode": str(sign), "vendor": vendor_text, "evidence": ev}
    chosen = start
    if ev["verdict"] == "paramagnetic":
        decision = f"sign {start:+d} confirmed: {summary}"
    elif ev["verdict"] == "inconclusive":
        decision = f"sign {start:+d} kept, the data are inconclusive: {summary}"
    elif str(sign) != "auto":
        decision = (f"WARNING: with the sign {start:+d} you gave, the veins come out diamagnetic: {summary}; "
                    f"--phase-sign {-start:+d} is probably right")
    else:
        chosen = -start
        say(f"phase sign {start:+d} makes the veins diamagnetic ({summary}); rerunning with {chosen:+d}")
        res = run_pipeline(with_phase_sign(gre, chosen), config, **pipeline_kwargs)
        ev2 = evidence_from_result(res, with_phase_sign(gre, chosen))
        record["evidence_before_flip"] = ev
        record["evidence"] = ev2
        decision = (f"sign {chosen:+d} chosen: with {start:+d} the veins came out diamagnetic ({summary}); with "
                    f"{chosen:+d} they exceed their surroundings in {ev2['n_positive']} of {ev2['n_blocks']} blocks")
    record.update(chosen=chosen, decision=decision)
    res.provenance["phase_sign"] = record
    res.provenance["input"]["phase_sign"] = chosen
    return res


def run_checking_phase_sign(gre: Any, config: Any = None, log: Optional[Any] = None, **pipeline_kwargs: Any) -> Any:
    """The pipeline with the sign ``gre`` was read with, and the vein evidence checked and reported: the decision
    goes to ``log`` and the provenance (a WARNING naming the other sign when the veins come out diamagnetic), the
    phase is never flipped. Slicer and the background worker use this when the user chose the sign (+1 or −1).
    """
    say = log or (lambda s: None)
    res = run_with_phase_sign(gre, config, sign=str(int(gre.phase_sign)), log=log, **pipeline_kwargs)
    say(f"phase sign: {res.provenance['phase_sign']['decision']}")
    return res


#: Phase-sign choices the Slicer QSM module offers (the command line's ``--phase-sign`` takes "auto", "1", "-1").
PHASE_SIGN_CHOICES: Tuple[str, ...] = ("auto", "+1", "-1")


def parse_phase_sign(choice: Union[str, int]) -> Optional[int]:
    """``None`` for "auto", else the sign +1 or −1 (from 1, -1, "1", "+1", "-1" or "−1" with a Unicode minus)."""
    text = str(choice).strip().replace("\u2212", "-")
    if text == "auto":
        return None
    if text in ("1", "+1", "-1"):
        return int(text)
    raise QSMInputError(f"phase sign must be 'auto', +1 or -1, got {choice!r}")


def run_with_phase_sign_choice(gre: Any, config: Any = None, auto: bool = True, log: Optional[Any] = None,
                               **pipeline_kwargs: Any) -> Any:
    """What Slicer and the background worker run: with ``auto`` the command line's decision
    (:func:`run_with_phase_sign` with "auto": vendor prior, else ``gre.phase_sign``; vein test; flip and rerun when
    the veins come out diamagnetic), its decision logged; otherwise :func:`run_checking_phase_sign` (the sign
    ``gre`` was read with, checked and reported, never flipped)."""
    if not auto:
        return run_checking_phase_sign(gre, config, log=log, **pipeline_kwargs)
    res = run_with_phase_sign(gre, config, sign="auto", log=log, **pipeline_kwargs)
    (log or (lambda s: None))(f"phase sign: {res.provenance['phase_sign']['decision']}")
    return res

"""Spatial phase unwrapping (stage ``unwrap``): ROMEO region growing, best-path, Laplacian.

Every method takes phase ``(x, y, z[, echo])`` in radians (wrapped into [−π, π]) and returns an
:class:`UnwrapResult`: the unwrapped phase ``(x, y, z, echo)`` float32, a voxel quality map in [0, 1], the voxels
it could not trust and per-echo flags and notes. Hard data never raise: noisy late echoes, an echo of pure noise
(flagged as failed), separate regions (each unwrapped from its own seed), NaN voxels (excluded and flagged). Bad
inputs (phase not in radians, shapes that disagree, an empty mask) raise :class:`QSMInputError`.

Methods
-------
- ``romeo``: quality-guided region growing (Dymerska et al., MRM 85 (2021) 2294–2308): edge weights from phase
  coherence, phase-gradient coherence with a second echo, magnitude coherence and magnitude weight, quantised into
  bins; a bucket priority queue grows from the best voxel and adds 2π·k to each new voxel to match its neighbour.
- ``best_path``: reliability-sorted edges merged by union–find with 2π offsets (Abdul-Rahman et al., Appl Opt 46
  (2007) 6623–6635).
- ``laplacian``: Schofield & Zhu, Opt Lett 28 (2003) 1194–1196: ``∇²φ = cos φ ∇² sin φ − sin φ ∇² cos φ`` solved
  by a DCT (Neumann) Poisson solver on the physical voxel grid. Caveat: the result is *not* the wrapped phase plus
  multiples of 2π; it differs from the true phase by a harmonic function (plus the sine approximation's error where
  neighbour differences are large), so it suits background-field removal pipelines that discard harmonic fields,
  not echo fitting that needs exact phase.

Multi-echo (``romeo`` and ``best_path``): ``mode="template"`` unwraps a template echo spatially and the others
temporally (below); ``mode="individual"`` unwraps each echo spatially and then aligns each echo's global 2π
constant with the temporal prediction. Temporal prediction: the spatially unwrapped template ``Φt`` and phase
evolution ``ΔΦ`` (the spatially unwrapped wrapped difference between the template and a partner echo ``p``) give
``Φn ≈ Φt + ΔΦ·(TEn − TEt)/(TEp − TEt)``, i.e. TE scaling of the phase evolution, which unlike plain
``Φt·TEn/TEt`` is not thrown off by the transceiver phase offset. Each echo then takes the 2π multiple that brings
its wrapped phase nearest to the prediction; with three or more echoes a per-voxel magnitude-weighted linear fit
over TE corrects any remaining single-echo 2π error. Spatial results fix each region's arbitrary 2π constant so
that its mean phase lies in (−π, π] (brain fields are shimmed near zero mean); with equally spaced echoes any
remaining global ambiguity is a constant multiple of 2π per echo.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.fft as sfft

from . import _unwrap_kernels as K
from .dipole import FFT_WORKERS
from .errors import QSMInputError
from .geometry import check_voxel_size
from .gre import PHASE_RANGE_TOLERANCE_RAD, check_echo_times
from .params import MethodSpec, Param, register_method

TWO_PI = 2.0 * np.pi
#: Number of weight bins of the ROMEO priority queue (≤ 255; bin 255 marks a missing edge).
N_BINS = 255


@dataclass
class UnwrapResult:
    """Output of the unwrap stage.

    ``unwrapped``: (x, y, z, echo) float32 radians; outside the mask the wrapped input is returned unchanged.
    ``quality``: (x, y, z) float32 in [0, 1], the mean ROMEO edge weight of each voxel at the template echo
    (0 outside the mask). ``unreliable``: (x, y, z) bool, mask voxels whose result is not to be trusted (quality
    below the threshold, inconsistent across echoes, NaN input). ``echo_ok``/``echo_quality``: per echo, whether
    it held usable phase and its mean neighbour phase coherence (≈ 0.5 for pure noise, → 1 for smooth phase).
    ``notes``: human-readable remarks (failed echoes, regions, caveats). ``info``: numbers for provenance.
    """

    unwrapped: np.ndarray
    quality: np.ndarray
    unreliable: np.ndarray
    echo_ok: Tuple[bool, ...]
    echo_quality: Tuple[float, ...]
    notes: List[str] = field(default_factory=list)
    method: str = ""
    info: Dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------------
# Input checks


def _prepare(
    phase: np.ndarray,
    magnitude: Optional[np.ndarray],
    mask: Optional[np.ndarray],
    te_s: Optional[Sequence[float]],
    notes: List[str],
) -> Tuple[np.ndarray, Optional[np.ndarray], np.ndarray, Optional[np.ndarray]]:
    """Validate and normalise inputs: (phase (x,y,z,e) float32, magnitude or None, mask bool, te or None)."""
    ph = np.asarray(phase)
    if np.iscomplexobj(ph):
        raise QSMInputError("phase is complex: give the phase angle in radians (np.angle of the signal)")
    if ph.ndim == 3:
        ph = ph[..., None]
    if ph.ndim != 4:
        raise QSMInputError(f"phase must have shape (x, y, z[, echo]), got shape {ph.shape}")
    if min(ph.shape) < 1:
        raise QSMInputError(f"phase has an empty axis: shape {ph.shape}")
    ph = np.asarray(ph, dtype=np.float32)  # no copy: inputs are only read unless NaN/Inf must be zeroed
    bad = ~np.isfinite(ph)
    if magnitude is not None:
        mag = np.asarray(magnitude)
        if mag.ndim == 3:
            mag = mag[..., None]
        if mag.shape != ph.shape:
            raise QSMInputError(f"magnitude shape {mag.shape} does not match phase shape {ph.shape}")
        mag = np.asarray(mag, dtype=np.float32)
        bad |= ~np.isfinite(mag)
    else:
        mag = None
    if mask is None:
        m = np.ones(ph.shape[:3], dtype=bool)
    else:
        m = np.asarray(mask)
        if m.shape != ph.shape[:3]:
            raise QSMInputError(f"mask shape {m.shape} does not match the phase's spatial shape {ph.shape[:3]}")
        m = m.astype(bool)
        if not m.any():
            raise QSMInputError("the mask is empty: nothing to unwrap")
    n_bad = int(np.count_nonzero(bad.any(axis=3) & m))
    if bad.any():
        ph = np.array(ph, order="C")
        ph[bad] = 0.0
        if mag is not None:
            mag = np.array(mag, order="C")
            mag[bad] = 0.0
        if n_bad:
            m = m & ~bad.any(axis=3)
            notes.append(f"{n_bad} mask voxel(s) with NaN/Inf input were excluded and flagged unreliable")
            if not m.any():
                raise QSMInputError("every mask voxel has NaN/Inf phase or magnitude")
    lim = np.pi + PHASE_RANGE_TOLERANCE_RAD
    lo, hi = float(ph.min()), float(ph.max())
    if lo < -lim or hi > lim:
        raise QSMInputError(
            f"phase spans [{lo:.4g}, {hi:.4g}], outside [-π, π]: it is not wrapped radians (convert it first)"
        )
    if mag is not None and float(mag.min()) < 0:
        raise QSMInputError("magnitude has negative values: is it a phase image?")
    te = None
    if te_s is not None:
        te = check_echo_times(te_s, ph.shape[3])
    elif ph.shape[3] > 1:
        raise QSMInputError(f"{ph.shape[3]} echoes need their echo times te_s (seconds)")
    return ph, mag, m, te


# --------------------------------------------------------------------------------------------------------------
# Shared pieces


@dataclass
class _Grid:
    """The mask voxels in compact form: flat grid index of each (``idx``), inverse map (``lut``, −1 outside)."""

    mask: np.ndarray
    idx: np.ndarray
    lut: np.ndarray
    dims: np.ndarray

    @classmethod
    def of(cls, mask: np.ndarray) -> _Grid:
        idx = np.flatnonzero(mask)
        lut = np.full(mask.size, -1, dtype=np.int32)
        lut[idx] = np.arange(idx.size, dtype=np.int32)
        return cls(mask, idx, lut, np.array(mask.shape, dtype=np.int64))

    def full(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Scatter compact ``values`` onto the grid (``fill`` outside the mask)."""
        out = np.full(self.mask.size, fill, dtype=values.dtype)
        out[self.idx] = values
        return out.reshape(self.mask.shape)


def _mag_reference(mag_c: Optional[np.ndarray]) -> float:
    """Magnitude at which the ROMEO magnitude weight saturates: the median magnitude in the mask."""
    return float(np.median(mag_c)) if mag_c is not None and mag_c.size else 0.0


def _bins(grid: _Grid, phase_c: np.ndarray, mag_c: Optional[np.ndarray], phase2_c: Optional[np.ndarray],
          te_ratio: float, linearity: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Quantised ROMEO edge weights ``(n, 3)`` uint8 of the mask voxels (bin 0 best, 255 no edge): those that
    order the growth (with phase linearity) and those of the quality map (without)."""
    p2 = phase2_c if phase2_c is not None else phase_c
    mg = mag_c if mag_c is not None else phase_c
    return K.romeo_edge_bins(grid.idx, grid.lut, grid.dims, phase_c, p2, float(te_ratio), mg, _mag_reference(mag_c),
                             N_BINS, phase2_c is not None, mag_c is not None, linearity)


def romeo_quality(
    phase_e: np.ndarray,
    mask: Optional[np.ndarray] = None,
    magnitude_e: Optional[np.ndarray] = None,
    phase2_e: Optional[np.ndarray] = None,
    te_ratio: float = 1.0,
) -> np.ndarray:
    """ROMEO voxel quality in [0, 1]: the mean weight of each voxel's edges (Dymerska et al., MRM 2021).

    ``phase2_e`` is a second echo for the phase-gradient coherence and ``te_ratio`` = TE(this echo)/TE(second).
    """
    grid = _Grid.of(np.ones(phase_e.shape, bool) if mask is None else np.asarray(mask, bool))

    def c(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
        return None if a is None else np.ascontiguousarray(a, dtype=np.float32).ravel()[grid.idx]

    qbins = _bins(grid, c(phase_e), c(magnitude_e), c(phase2_e), te_ratio, linearity=False)[1]
    return grid.full(K.voxel_quality(qbins, grid.idx, grid.lut, grid.dims, N_BINS))


def _center_regions(u: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Shift each region of compact ``u`` by 2π·k so that its mean phase lies in (−π, π] (in place)."""
    if region.size:
        K.center_regions(u, region, int(region.max()))
    return u


def _romeo_spatial(
    grid: _Grid, phase_c: np.ndarray, mag_c: Optional[np.ndarray], phase2_c: Optional[np.ndarray], te_ratio: float,
) -> Tuple[np.ndarray, int, np.ndarray]:
    """ROMEO-unwrap one echo's mask voxels: (compact unwrapped, number of regions, compact voxel quality)."""
    bins, qbins = _bins(grid, phase_c, mag_c, phase2_c, te_ratio)
    q = K.voxel_quality(qbins, grid.idx, grid.lut, grid.dims, N_BINS)
    u = phase_c.copy()
    region = K.grow_regions(u, bins, K.neighbours(grid.idx, grid.lut, grid.dims), q, N_BINS)
    return _center_regions(u, region), int(region.max()), q


def _best_path_spatial(
    grid: _Grid, phase_c: np.ndarray, mag_c: Optional[np.ndarray], phase2_c: Optional[np.ndarray], te_ratio: float,
) -> Tuple[np.ndarray, int, Optional[np.ndarray]]:
    """Best-path-unwrap one echo's mask voxels: (compact unwrapped, number of groups, None). Its reliability
    is always the second-difference one; ``mag_c``, ``phase2_c`` and ``te_ratio`` are accepted for
    the common signature of the spatial unwrappers."""
    ph = grid.full(phase_c)
    mask = grid.mask
    rel = K.second_difference_reliability(ph, mask)
    ids, val = K.best_path_edges(rel, mask)
    order = ids[np.argsort(-val, kind="stable")]
    k, root = K.best_path_merge(ph.ravel(), order, _strides(ph.shape), mask.ravel())
    u = phase_c + np.float32(TWO_PI) * k[grid.idx].astype(np.float32)
    _, region = np.unique(root[grid.idx], return_inverse=True)
    region = region.ravel().astype(np.int32) + 1
    return _center_regions(u, region), int(region.max()), None


def _strides(shape: Tuple[int, ...]) -> np.ndarray:
    return np.array([shape[1] * shape[2], shape[2], 1], dtype=np.int64)


def _echo_qualities(ph: np.ndarray, mask: np.ndarray, te: Optional[np.ndarray] = None) -> np.ndarray:
    """Per echo, the mean neighbour phase coherence ``1 − |wrap(Δφ)|/π`` (pure noise: 0.5).

    With echo times, it is taken only over the neighbour pairs where the echo's phase is expected to vary gently:
    where the most coherent echo r steps by less than π/2 · TE_r/TE_n (echo r itself keeps its plain score). A
    steep but valid late echo (at 7 T, 2.5 mm, TE 40 ms, oblique B0: 32 % of neighbour pairs alias, plain score
    0.58) then still scores high (0.77), while a noise echo scores 0.5 on any set of pairs.
    """
    eq = np.array([K.mean_phase_coherence(ph[..., n], mask) for n in range(ph.shape[3])])
    if te is None or ph.shape[3] < 2:
        return eq
    r = int(np.argmax(eq))
    limits = 0.5 * np.pi * np.minimum(1.0, te[r] / np.asarray(te, dtype=np.float64))
    sums, counts = K.gentle_phase_coherence(np.ascontiguousarray(ph, dtype=np.float32),
                                            np.ascontiguousarray(mask, dtype=np.bool_), r, limits)
    out = np.where(counts > 0, sums / np.maximum(counts, 1), eq)
    out[r] = eq[r]  # the pairs were chosen by echo r's own steps: its score over them would be biased upwards
    return out


def _choose_template(template_echo: int, eq: np.ndarray, ok: np.ndarray, notes: List[str]) -> int:
    n_e = eq.size
    if not 1 <= template_echo <= n_e:
        raise QSMInputError(f"template_echo={template_echo} but the data have {n_e} echo(es) (1-based)")
    t = template_echo - 1
    if not ok[t] and ok.any():
        best = int(np.argmax(eq))
        notes.append(f"template echo {t + 1} failed the quality check; echo {best + 1} is the template instead")
        t = best
    return t


def _partner(t: int, ok: np.ndarray) -> int:
    """The echo nearest the template (later one first) that passed the check, else simply the nearest."""
    n_e = ok.size
    cands = sorted((i for i in range(n_e) if i != t), key=lambda i: (abs(i - t), i < t))
    good = [i for i in cands if ok[i]]
    return (good or cands)[0]


SpatialFn = Callable[..., Tuple[np.ndarray, int, Optional[np.ndarray]]]


def _multi_echo(
    spatial: SpatialFn, method: str, phase: np.ndarray, magnitude: Optional[np.ndarray], mask: Optional[np.ndarray],
    te_s: Optional[Sequence[float]], mode: str, template_echo: int, quality_threshold: float,
    min_echo_quality: float, correct_residual: bool,
) -> UnwrapResult:
    notes: List[str] = []
    ph, mag, m, te = _prepare(phase, magnitude, mask, te_s, notes)
    if mode not in ("template", "individual"):
        raise QSMInputError(f"mode must be 'template' or 'individual', got {mode!r}")
    n_e = ph.shape[3]
    eq = _echo_qualities(ph, m, te)
    ok = eq >= min_echo_quality
    for n in np.flatnonzero(~ok):
        te_txt = f" (TE {1e3 * te[n]:.1f} ms)" if te is not None else ""
        notes.append(f"echo {n + 1}{te_txt} failed: mean neighbour phase coherence {eq[n]:.2f} < "
                     f"{min_echo_quality:.2f} (noise-like phase); its result is not to be trusted")
    t = _choose_template(template_echo, eq, ok, notes)
    p = _partner(t, ok) if n_e > 1 else t
    grid = _Grid.of(m)
    pc = ph[m]  # (n, echo), mask voxels in C order like grid.idx
    mc = mag[m] if mag is not None else None

    def spatial_echo(n: int, partner: Optional[int]):
        p2 = pc[:, partner] if partner is not None and partner != n else None
        ratio = float(te[n] / te[partner]) if p2 is not None else 1.0
        return spatial(grid, pc[:, n].copy(), mc[:, n].copy() if mc is not None else None,
                       p2.copy() if p2 is not None else None, ratio)

    outc = pc.copy()
    info: Dict[str, Any] = {"template_echo": t + 1, "mode": mode if n_e > 1 else "single echo"}
    u_t, n_reg, q = spatial_echo(t, p if n_e > 1 else None)
    outc[:, t] = u_t
    info["regions"] = n_reg
    if n_reg > 1:
        notes.append(f"the mask holds {n_reg} separately unwrapped regions/groups; each has its own 2π constant")
    if q is None:
        q = K.voxel_quality(_bins(grid, pc[:, t].copy(), mc[:, t].copy() if mc is not None else None,
                                  pc[:, p].copy() if p != t else None, float(te[t] / te[p]) if p != t else 1.0,
                                  linearity=False)[1],
                            grid.idx, grid.lut, grid.dims, N_BINS)
    unreliable_c = q < quality_threshold
    if n_e > 1:
        info["partner_echo"] = p + 1
        scale = (te - te[t]) / (te[p] - te[t])
        if mode == "template":
            d = pc[:, p] - pc[:, t]
            d -= np.float32(TWO_PI) * np.round(d / np.float32(TWO_PI))
            dmag = np.sqrt(mc[:, t] * mc[:, p]) if mc is not None else None
            u_d = spatial(grid, d, dmag, None, 1.0)[0]
            K.temporal_unwrap(outc, pc, u_t, u_d, scale.astype(np.float64), t)
            if correct_residual and int(ok.sum()) >= 3:
                wts = np.square(mc) if mc is not None else np.ones_like(pc)
                worst = K.fit_correction(outc, pc, wts, te, ok, t, 2)
                inconsistent = worst > np.pi / 2
                info["inconsistent_voxels"] = int(inconsistent.sum())
                unreliable_c |= inconsistent
        else:
            u_p = spatial_echo(p, t)[0]
            u_p -= np.float32(TWO_PI * np.round(np.mean(u_p - u_t, dtype=np.float64) / TWO_PI))
            sel = ~unreliable_c if (~unreliable_c).any() else np.ones_like(unreliable_c)
            for n in range(n_e):
                if n == t:
                    continue
                u_n = u_p if n == p else spatial_echo(n, p)[0]
                pred = u_t + (u_p - u_t) * np.float32(scale[n])
                k = np.round(np.median((pred - u_n)[sel]) / TWO_PI)
                outc[:, n] = u_n + np.float32(TWO_PI * k)
    out = np.array(ph, order="C")
    out[m] = outc
    unreliable = grid.full(unreliable_c, False)
    if not ok.any():
        unreliable = m.copy()
    if mask is not None:
        unreliable |= np.asarray(mask, bool) & ~m
    info["unreliable_fraction"] = float(unreliable.sum() / max(grid.idx.size, 1))
    return UnwrapResult(
        unwrapped=out, quality=grid.full(q.astype(np.float32, copy=False)), unreliable=unreliable,
        echo_ok=tuple(bool(v) for v in ok), echo_quality=tuple(float(v) for v in eq), notes=notes, method=method,
        info=info,
    )


# --------------------------------------------------------------------------------------------------------------
# Public methods

#: Default ROMEO quality below which a voxel is flagged unreliable (library functions and the stage alike; the
#: pipeline drops those voxels from the mask before background removal).
QUALITY_THRESHOLD = 0.5


def unwrap_romeo(
    phase: np.ndarray,
    magnitude: Optional[np.ndarray] = None,
    mask: Optional[np.ndarray] = None,
    te_s: Optional[Sequence[float]] = None,
    mode: str = "template",
    template_echo: int = 1,
    quality_threshold: float = QUALITY_THRESHOLD,
    min_echo_quality: float = 0.65,
    correct_residual: bool = True,
) -> UnwrapResult:
    """ROMEO quality-guided region growing (Dymerska et al., MRM 85 (2021) 2294–2308).

    Edge weight = phase coherence × phase-gradient coherence with a second echo (when there is one) × magnitude
    coherence × magnitude weight (when magnitude is given), quantised into 255 bins; growth from the best voxel of
    each region by a bucket priority queue (numba). ``mode`` "template": spatial unwrapping of echo
    ``template_echo`` (1-based), temporal unwrapping of the others (module docstring), then, if
    ``correct_residual``, a per-voxel fit over TE fixes residual 2π errors; "individual": every echo spatially,
    then aligned. ``quality_threshold``: voxels whose quality is below it are flagged unreliable.
    ``min_echo_quality``: an echo whose mean neighbour phase coherence is below it is flagged as failed.
    """
    return _multi_echo(_romeo_spatial, "romeo", phase, magnitude, mask, te_s, mode, template_echo,
                       quality_threshold, min_echo_quality, correct_residual)


def unwrap_best_path(
    phase: np.ndarray,
    magnitude: Optional[np.ndarray] = None,
    mask: Optional[np.ndarray] = None,
    te_s: Optional[Sequence[float]] = None,
    mode: str = "template",
    template_echo: int = 1,
    quality_threshold: float = QUALITY_THRESHOLD,
    min_echo_quality: float = 0.65,
    correct_residual: bool = True,
) -> UnwrapResult:
    """Best-path unwrapping (Abdul-Rahman et al., Appl Opt 46 (2007) 6623–6635), 3D, numba.

    Reliability of a voxel = 1/sqrt(sum of squared wrapped second differences over its 13 neighbourhood
    directions); an edge's reliability = the sum of its voxels'; edges are processed most reliable first and the
    two voxel groups they join are merged by union–find, the smaller shifted by 2π·k. The magnitude enters only the
    quality map. Multi-echo handling and flags as :func:`unwrap_romeo`.
    """
    return _multi_echo(_best_path_spatial, "best_path", phase, magnitude, mask, te_s, mode, template_echo,
                       quality_threshold, min_echo_quality, correct_residual)


def laplacian_unwrap_3d(phase_e: np.ndarray, voxel_size_mm: Sequence[float],
                        mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Laplacian unwrapping of one 3D phase (Schofield & Zhu, Opt Lett 2003) on the physical voxel grid.

    The source ``cos φ ∇² sin φ − sin φ ∇² cos φ`` (zero outside ``mask``) is inverted with the DCT-II, which
    diagonalises the 7-point Laplacian with mirrored (Neumann) borders: eigenvalues ``Σ_d (2 cos(π k_d/N_d) −
    2)/h_d²``. The free constant is set so that the result agrees on average with the wrapped phase in the mask.
    Result = true phase + a harmonic function inside the mask (not a 2π multiple of the wrapped input).
    """
    h = check_voxel_size(voxel_size_mm)
    ph = np.ascontiguousarray(phase_e, dtype=np.float32)
    m = np.ones(ph.shape, bool) if mask is None else np.ascontiguousarray(mask, dtype=np.bool_)
    src = K.sine_laplacian(ph, m, (1.0 / h**2).astype(np.float64))
    spec = sfft.dctn(src, type=2, norm="ortho", workers=FFT_WORKERS)
    lam = np.zeros(ph.shape, np.float64)
    for ax, (n, hd) in enumerate(zip(ph.shape, h)):
        sh = [1, 1, 1]
        sh[ax] = n
        lam = lam + ((2.0 * np.cos(np.pi * np.arange(n) / n) - 2.0) / hd**2).reshape(sh)
    lam.flat[0] = 1.0
    spec /= lam.astype(np.float32)
    spec.flat[0] = 0.0
    u = sfft.idctn(spec, type=2, norm="ortho", workers=FFT_WORKERS).astype(np.float32)
    c = np.angle(np.sum(np.exp(1j * (ph[m] - u[m]).astype(np.float64))))
    return u + np.float32(c)


def unwrap_laplacian(
    phase: np.ndarray,
    voxel_size_mm: Sequence[float],
    magnitude: Optional[np.ndarray] = None,
    mask: Optional[np.ndarray] = None,
    te_s: Optional[Sequence[float]] = None,
    quality_threshold: float = QUALITY_THRESHOLD,
    min_echo_quality: float = 0.65,
) -> UnwrapResult:
    """Laplacian unwrapping of every echo (Schofield & Zhu, Opt Lett 28 (2003) 1194–1196); see
    :func:`laplacian_unwrap_3d` and the caveat in the module docstring (harmonic background, no exact 2π)."""
    notes: List[str] = []
    ph, mag, m, te = _prepare(phase, magnitude, mask, te_s, notes)
    n_e = ph.shape[3]
    eq = _echo_qualities(ph, m, te)
    ok = eq >= min_echo_quality
    for n in np.flatnonzero(~ok):
        notes.append(f"echo {n + 1} failed: mean neighbour phase coherence {eq[n]:.2f} < {min_echo_quality:.2f}")
    out = ph.copy()
    for n in range(n_e):
        out[..., n] = np.where(m, laplacian_unwrap_3d(ph[..., n], voxel_size_mm, m), ph[..., n])
    t = int(np.argmax(eq)) if not ok[0] else 0
    p = _partner(t, ok) if n_e > 1 else t
    q = romeo_quality(ph[..., t], m, mag[..., t] if mag is not None else None, ph[..., p] if p != t else None,
                      float(te[t] / te[p]) if p != t else 1.0)
    unreliable = m & (q < quality_threshold)
    if mask is not None:
        unreliable |= np.asarray(mask, bool) & ~m
    notes.append("Laplacian unwrapping: the result differs from the true phase by a harmonic function inside the "
                 "mask and is not the wrapped phase plus 2π multiples; use it before background field removal")
    return UnwrapResult(
        unwrapped=out, quality=np.where(m, q, 0).astype(np.float32), unreliable=unreliable,
        echo_ok=tuple(bool(v) for v in ok), echo_quality=tuple(float(v) for v in eq), notes=notes,
        method="laplacian", info={"quality_echo": t + 1},
    )


_COMMON = (
    Param("quality_threshold", float, QUALITY_THRESHOLD, "voxels with ROMEO quality below this are flagged unreliable",
          minimum=0.0, maximum=1.0),
    Param("min_echo_quality", float, 0.65,
          "an echo whose mean neighbour phase coherence is below this is flagged as failed (noise gives 0.5)",
          minimum=0.0, maximum=1.0),
)
_MULTI = (
    Param("mode", str, "template", "multi-echo: spatial template echo + temporal unwrapping, or every echo "
          "spatially", choices=("template", "individual")),
    Param("template_echo", int, 1, "echo unwrapped spatially in template mode (1-based)", minimum=1, maximum=64),
    Param("correct_residual", bool, True, "template mode: fix residual per-voxel 2π errors by a fit over TE"),
)

register_method("unwrap", MethodSpec(
    key="romeo", label="ROMEO (quality-guided region growing)",
    reference="Dymerska et al., Magn Reson Med 2021",
    params=_MULTI + _COMMON, func=unwrap_romeo,
    help="Fast, robust multi-echo unwrapping; the default."))
register_method("unwrap", MethodSpec(
    key="best_path", label="Best-path (reliability-sorted merging)",
    reference="Abdul-Rahman et al., Appl Opt 2007",
    params=_MULTI + _COMMON, func=unwrap_best_path,
    help="Path-following unwrapping with second-difference reliability."))
register_method("unwrap", MethodSpec(
    key="laplacian", label="Laplacian (Schofield & Zhu)",
    reference="Schofield & Zhu, Opt Lett 2003",
    params=_COMMON, func=unwrap_laplacian,
    help="Exact up to a harmonic background; not 2π-consistent with the data."))

__all__ = ["UnwrapResult", "unwrap_romeo", "unwrap_best_path", "unwrap_laplacian", "laplacian_unwrap_3d",
           "romeo_quality"]

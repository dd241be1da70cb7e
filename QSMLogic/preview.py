"""PNG previews a clinician can read: axial / coronal / sagittal slices of each map in patient orientation.

Each panel carries its orientation letters (R/L, A/P, S/I at the edges), the slice position in world millimetres
(the affine's RAS coordinates) and a colour bar; the figure's title names the input, the method and the date. Panels
are shown in the neurological convention (patient's right on the viewer's right, stated by the letters), at their
physical aspect ratio. The slices cross at a chosen voxel (the deep-grey nuclei when known, else the mask's centre
of mass); a minimum-intensity projection is shown only in the plane it was projected onto (its other sections are
meaningless smears along the projection).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

#: Views: name → (canonical axis held fixed, horizontal axis, vertical axis).
VIEWS = {"axial": (2, 0, 1), "coronal": (1, 0, 2), "sagittal": (0, 1, 2)}
#: Letters at the low / high end of each RAS axis.
LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))
#: The view whose slices are perpendicular to each world axis (for a projection along that axis).
VIEW_OF_AXIS = {0: "sagittal", 1: "coronal", 2: "axial"}


def _ras_order(affine: np.ndarray) -> Optional[Tuple[list, list]]:
    """(array axis of each RAS axis, flip per RAS axis), or None for a degenerate oblique affine."""
    r = np.asarray(affine, dtype=np.float64)[:3, :3]
    order = [int(np.argmax(np.abs(r[i, :]))) for i in range(3)]
    if len(set(order)) != 3:
        return None
    return order, [bool(r[w, order[w]] < 0) for w in range(3)]


def to_ras_canonical(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Permute/flip the array axes so that axis 0 → R, 1 → A, 2 → S (closest orientation, no resampling)."""
    ro = _ras_order(affine)
    if ro is None:  # degenerate oblique case: fall back to the array order
        return volume
    order, flips = ro
    out = np.transpose(volume, order)
    for world_ax, flip in enumerate(flips):
        if flip:
            out = np.flip(out, axis=world_ax)
    return out


def canonical_index(index: Sequence[float], shape: Sequence[int], affine: np.ndarray) -> Tuple[int, int, int]:
    """An array index (original axes) as the index of the same voxel in :func:`to_ras_canonical`'s array."""
    ro = _ras_order(affine)
    if ro is None:
        return tuple(int(round(i)) for i in index[:3])  # type: ignore[return-value]
    order, flips = ro
    out = []
    for w in range(3):
        a = order[w]
        i = int(round(float(index[a])))
        out.append(int(shape[a]) - 1 - i if flips[w] else i)
    return tuple(out)  # type: ignore[return-value]


def _world_mm(canon_idx: Sequence[int], shape: Sequence[int], affine: np.ndarray, axis: int) -> float:
    """World (RAS) coordinate along ``axis`` of the canonical voxel ``canon_idx``."""
    ro = _ras_order(affine)
    idx = np.zeros(4)
    idx[3] = 1.0
    if ro is None:
        idx[:3] = canon_idx
    else:
        order, flips = ro
        for w in range(3):
            a = order[w]
            idx[a] = (int(shape[a]) - 1 - canon_idx[w]) if flips[w] else canon_idx[w]
    return float((np.asarray(affine, dtype=np.float64) @ idx)[axis])


def percentile_window(volume: np.ndarray, mask: Optional[np.ndarray] = None, low: float = 1.0, high: float = 99.0,
                      symmetric: bool = False) -> Tuple[float, float]:
    """Display window from the data's percentiles (inside ``mask`` when given); ``symmetric``: ±max(|lo|, |hi|)."""
    v = np.asarray(volume, dtype=np.float64)
    vals = v[np.asarray(mask, dtype=bool)] if mask is not None and np.any(mask) else v.ravel()
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = (float(x) for x in np.percentile(vals, [low, high]))
    if symmetric:
        m = max(abs(lo), abs(hi)) or 1.0
        return -m, m
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


MapEntry = Union[Tuple[np.ndarray, Tuple[float, float]], Tuple[np.ndarray, Tuple[float, float], Sequence[str]]]


def save_preview(
    maps: Dict[str, MapEntry],
    affine: np.ndarray,
    path: Union[str, Path],
    title: str = "",
    slice_frac: Sequence[float] = (0.5, 0.5, 0.5),
    voxel_size_mm: Optional[Sequence[float]] = None,
    center_index: Optional[Sequence[float]] = None,
    panel_inches: float = 3.0,
) -> Path:
    """Save a grid of axial / coronal / sagittal slices, one row per map.

    ``maps[name] = (volume, (vmin, vmax))``, or ``(volume, (vmin, vmax), views)`` to show only some views (e.g. a
    mIP in its projection plane). The slices cross at ``center_index`` (array index in the volume's own axes),
    else at ``slice_frac`` of each canonical axis. ``path``'s format follows its suffix (.png).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(maps)
    vs = np.asarray(voxel_size_mm if voxel_size_mm is not None else np.linalg.norm(affine[:3, :3], axis=0))
    ro = _ras_order(affine)
    vs_ras = vs[ro[0]] if ro is not None else vs
    fig, axes = plt.subplots(n, 3, figsize=(3 * panel_inches + 1.2, n * panel_inches + 0.6), squeeze=False,
                             layout="constrained")
    for row, (name, entry) in enumerate(maps.items()):
        vol, (vmin, vmax) = entry[0], entry[1]
        views = tuple(entry[2]) if len(entry) > 2 else tuple(VIEWS)
        v = to_ras_canonical(np.asarray(vol, dtype=np.float32), affine)
        if center_index is not None:
            c = canonical_index(center_index, np.asarray(vol).shape, affine)
        else:
            c = tuple(int(f * (s - 1)) for f, s in zip(slice_frac, v.shape))
        c = tuple(min(max(0, ci), s - 1) for ci, s in zip(c, v.shape))
        im = None
        for col, (vname, (fixed, hor, ver)) in enumerate(VIEWS.items()):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(vname)
            if col == 0:
                ax.set_ylabel(name, fontsize=11)
            if vname not in views:
                ax.set_frame_on(False)
                ax.text(0.5, 0.5, f"{name}:\nshown in its\nprojection plane", ha="center", va="center",
                        transform=ax.transAxes, fontsize=9, color="0.4")
                continue
            img = np.take(v, c[fixed], axis=fixed)  # remaining axes keep their order (hor < ver)
            im = ax.imshow(img.T, cmap="gray", vmin=vmin, vmax=vmax, origin="lower",
                           aspect=vs_ras[ver] / vs_ras[hor], interpolation="nearest")
            style = dict(color="yellow", fontsize=10, fontweight="bold", transform=ax.transAxes)
            ax.text(0.02, 0.5, LETTERS[hor][0], ha="left", va="center", **style)
            ax.text(0.98, 0.5, LETTERS[hor][1], ha="right", va="center", **style)
            ax.text(0.5, 0.02, LETTERS[ver][0], ha="center", va="bottom", **style)
            ax.text(0.5, 0.98, LETTERS[ver][1], ha="center", va="top", **style)
            pos = _world_mm(c, np.asarray(vol).shape, affine, fixed)
            ax.set_xlabel(f"{'RAS'[fixed].lower()} = {pos:.1f} mm", fontsize=9)
        if im is not None:
            fig.colorbar(im, ax=axes[row, :].tolist(), shrink=0.85, pad=0.01)
    if title:
        fig.suptitle(title, fontsize=12)
    p = Path(path)
    fig.savefig(p, dpi=100, format=p.suffix.lstrip(".") or "png")
    plt.close(fig)
    return p

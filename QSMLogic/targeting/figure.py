"""Planning views as a PNG: axial, coronal and sagittal planes through a target and the probe's-eye plane.

Each view resamples the volumes on a world (RAS) plane, so volumes on different grids (the anatomy, and the GRE
space after fusion: pass ``moving_to_fixed @ gre_affine``) line up. The anatomy is grey, the QSM a coloured
overlay (values below the threshold transparent), nuclei and vessels are outlined, the trajectory is drawn (solid
within 2 mm of the plane, dashed elsewhere, projected) and the target marked. Orientation as Slicer shows the
views: the patient's right on the image's left (axial, coronal), anterior on the right (sagittal).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage as ndi

from ..errors import QSMInputError
from ..geometry import check_affine
from .acpc import as_point

Volume = Tuple[np.ndarray, np.ndarray]   # (array, index → RAS affine)


def reslice(volume: np.ndarray, affine: np.ndarray, centre_ras_mm: Sequence[float], u: Sequence[float],
            v: Sequence[float], half_size_mm: float = 40.0, step_mm: float = 0.5, order: int = 1) -> np.ndarray:
    """Values of ``volume`` on the plane ``centre + a·u + b·v`` (|a|, |b| ≤ half_size_mm, step ``step_mm``);
    rows follow −v (top = +v), columns +u; outside the volume: NaN."""
    aff = check_affine(affine)
    c = as_point(centre_ras_mm, "centre")
    uu = np.asarray(u, float) / np.linalg.norm(u)
    vv = np.asarray(v, float) / np.linalg.norm(v)
    s = np.arange(-half_size_mm, half_size_mm + 1e-9, step_mm)
    a, b = np.meshgrid(s, s[::-1])
    pts = c + a[..., None] * uu + b[..., None] * vv
    ijk = np.linalg.solve(aff[:3, :3], (pts - aff[:3, 3]).reshape(-1, 3).T)
    data = np.asarray(volume, np.float32)
    out = ndi.map_coordinates(data, ijk, order=order, mode="constant", cval=np.nan).reshape(a.shape)
    inside = np.all((ijk > -0.5) & (ijk < np.asarray(data.shape)[:, None] - 0.5), axis=0).reshape(a.shape)
    out[~inside] = np.nan
    return out


def _views(target: np.ndarray, entry: Optional[np.ndarray]) -> Dict[str, Tuple[np.ndarray, np.ndarray, str, str]]:
    """View name → (u, v, u-axis label, v-axis label) of the orthogonal planes and the probe's-eye plane."""
    views = {"axial": (np.array([-1.0, 0, 0]), np.array([0, 1.0, 0]), "R ← → L", "A"),
             "coronal": (np.array([-1.0, 0, 0]), np.array([0, 0, 1.0]), "R ← → L", "S"),
             "sagittal": (np.array([0, 1.0, 0]), np.array([0, 0, 1.0]), "P ← → A", "S")}
    if entry is not None:
        d = (entry - target) / np.linalg.norm(entry - target)
        helper = np.array([0, 1.0, 0]) if abs(d[1]) < 0.9 else np.array([1.0, 0, 0])
        u = np.cross(helper, d)
        u /= np.linalg.norm(u)
        views["probe's eye"] = (u, np.cross(d, u), "", "")
    return views


def planning_figure(
    path: Union[str, Path],
    target_ras_mm: Sequence[float],
    qsm: Volume,
    anatomy: Optional[Volume] = None,
    labels: Optional[Volume] = None,
    nuclei: Optional[Mapping[str, Sequence[int]]] = None,
    vessels: Optional[Volume] = None,
    entry_ras_mm: Optional[Sequence[float]] = None,
    title: str = "",
    qsm_threshold_ppm: float = 0.05,
    qsm_range_ppm: Tuple[float, float] = (-0.15, 0.25),
    half_size_mm: float = 40.0,
) -> Path:
    """Write the planning views around one target (and its trajectory) as a PNG; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = as_point(target_ras_mm, "target")
    e = None if entry_ras_mm is None else as_point(entry_ras_mm, "entry")
    if e is not None and np.linalg.norm(e - t) < 1.0:
        raise QSMInputError("entry and target coincide")
    if labels is not None and not nuclei:
        raise QSMInputError("labels given without the nuclei to outline (name → label values)")
    views = _views(t, e)
    fig, axes = plt.subplots(1, len(views), figsize=(4.2 * len(views), 4.6), dpi=100)
    ext = (-half_size_mm, half_size_mm, -half_size_mm, half_size_mm)
    colours = ("tab:orange", "tab:cyan", "tab:green", "tab:pink", "tab:olive")
    for ax, (name, (u, v, ulab, vlab)) in zip(np.atleast_1d(axes), views.items()):
        back = anatomy if anatomy is not None else qsm
        img = reslice(back[0], back[1], t, u, v, half_size_mm)
        finite = img[np.isfinite(img)]
        lo, hi = (np.percentile(finite, (1, 99)) if finite.size else (0.0, 1.0))
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, extent=ext)
        chi = reslice(qsm[0], qsm[1], t, u, v, half_size_mm)
        over = np.ma.masked_where(~(chi >= qsm_threshold_ppm), chi)
        ax.imshow(over, cmap="inferno", vmin=qsm_range_ppm[0], vmax=qsm_range_ppm[1], alpha=0.6, extent=ext)
        s = np.arange(-half_size_mm, half_size_mm + 1e-9, 0.5)
        for k, (nucleus, values) in enumerate((nuclei or {}).items()):
            m = reslice(np.isin(labels[0], np.atleast_1d(values)).astype(np.float32), labels[1], t, u, v,
                        half_size_mm, order=0)
            if np.nansum(m) > 0:
                ax.contour(s, s[::-1], np.nan_to_num(m), levels=[0.5], colors=colours[k % len(colours)],
                           linewidths=1.0)
                ax.plot([], [], color=colours[k % len(colours)], label=nucleus)
        if vessels is not None:
            m = reslice(np.asarray(vessels[0], np.float32), vessels[1], t, u, v, half_size_mm, order=0)
            if np.nansum(m) > 0:
                ax.contour(s, s[::-1], np.nan_to_num(m), levels=[0.5], colors="deepskyblue", linewidths=0.8)
                ax.plot([], [], color="deepskyblue", label="vessels")
        if e is not None and name != "probe's eye":
            normal = np.cross(u, v)
            pts = t + np.linspace(0, 1, 200)[:, None] * (e - t)
            a, b = (pts - t) @ u, (pts - t) @ v
            near = np.abs((pts - t) @ normal) <= 2.0
            ax.plot(a, b, "--", color="lime", linewidth=0.8)
            ax.plot(np.where(near, a, np.nan), np.where(near, b, np.nan), "-", color="lime", linewidth=1.6)
        ax.plot([0], [0], "+", color="lime", markersize=14, markeredgewidth=2)
        ax.set_xlim(ext[0], ext[1])
        ax.set_ylim(ext[2], ext[3])
        ax.set_title(name)
        ax.set_xlabel(f"{ulab} (mm from target)" if ulab else "mm from target, across the trajectory")
        ax.set_ylabel(f"{vlab} (mm)" if vlab else "mm")
    np.atleast_1d(axes)[0].legend(loc="lower left", fontsize=7, framealpha=0.6)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out

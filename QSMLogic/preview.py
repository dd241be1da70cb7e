"""PNG previews of result maps: orthogonal mid-slices shown in radiological-neutral RAS orientation."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np


def to_ras_canonical(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Permute/flip the array axes so that axis 0 → R, 1 → A, 2 → S (closest orientation, no resampling)."""
    r = affine[:3, :3]
    order = [int(np.argmax(np.abs(r[i, :]))) for i in range(3)]
    if len(set(order)) != 3:  # degenerate oblique case: fall back to the array order
        return volume
    out = np.transpose(volume, order)
    for world_ax, arr_ax in enumerate(order):
        if r[world_ax, arr_ax] < 0:
            out = np.flip(out, axis=world_ax)
    return out


def save_preview(
    maps: Dict[str, Tuple[np.ndarray, Tuple[float, float]]],
    affine: np.ndarray,
    path: Union[str, Path],
    title: str = "",
    slice_frac: Sequence[float] = (0.5, 0.5, 0.5),
    voxel_size_mm: Optional[Sequence[float]] = None,
) -> Path:
    """Save a grid of axial/coronal/sagittal mid-slices, one row per map: ``maps[name] = (volume, (vmin, vmax))``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(maps)
    fig, axes = plt.subplots(n, 3, figsize=(9, 3 * n), squeeze=False)
    vs = np.asarray(voxel_size_mm if voxel_size_mm is not None else np.linalg.norm(affine[:3, :3], axis=0))
    r = affine[:3, :3]
    order = [int(np.argmax(np.abs(r[i, :]))) for i in range(3)]
    vs_ras = vs[order] if len(set(order)) == 3 else vs
    for row, (name, (vol, (vmin, vmax))) in enumerate(maps.items()):
        v = to_ras_canonical(np.asarray(vol, dtype=np.float32), affine)
        i, j, k = (int(f * (s - 1)) for f, s in zip(slice_frac, v.shape))
        views = [
            (v[:, :, k].T, vs_ras[1] / vs_ras[0], "axial"),
            (v[:, j, :].T, vs_ras[2] / vs_ras[0], "coronal"),
            (v[i, :, :].T, vs_ras[2] / vs_ras[1], "sagittal"),
        ]
        for col, (img, aspect, vname) in enumerate(views):
            ax = axes[row, col]
            im = ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, origin="lower", aspect=aspect,
                           interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name)
            if row == 0:
                ax.set_title(vname)
        fig.colorbar(im, ax=axes[row, :].tolist(), shrink=0.8)
    if title:
        fig.suptitle(title)
    p = Path(path)
    fig.savefig(p, dpi=80)
    plt.close(fig)
    return p

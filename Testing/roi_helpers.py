"""Test helpers for the ROI tests: a phantom head moved by a known rotation, scaling and smooth displacement."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
from scipy import ndimage as ndi

from QSMLogic.geometry import rotation_matrix
from QSMLogic.phantom import HeadModel


@dataclass
class DeformedHead:
    model: HeadModel          # the deformed head on its own grid (same shape/affine as the source)
    source_ras: np.ndarray    # (x, y, z, 3): RAS point of the source head each voxel shows


def deform_head(model: HeadModel, rotation_deg: float = 8.0, scale: Tuple[float, float, float] = (1.06, 0.95, 1.03),
                displacement_mm: float = 3.0, smooth_mm: float = 20.0, seed: int = 3) -> DeformedHead:
    """The head seen through x_src = c + S·R·(x − c) + u(x): rotation about an oblique axis, anisotropic scaling and
    a smooth random displacement u (Gaussian-filtered noise, peak ≈ ``displacement_mm``)."""
    rng = np.random.default_rng(seed)
    aff = model.affine
    shape = model.shape
    idx = np.indices(shape, dtype=np.float64).reshape(3, -1)
    ras = aff[:3, :3] @ idx + aff[:3, 3:4]
    centre = aff[:3, :3] @ ((np.array(shape) - 1) / 2.0) + aff[:3, 3]
    rot = rotation_matrix((0.3, 0.5, 0.8), rotation_deg)
    lin = np.diag(scale) @ rot
    src = centre[:, None] + lin @ (ras - centre[:, None])
    vox = np.asarray(model.voxel_size_mm)
    for a in range(3):
        u = ndi.gaussian_filter(rng.standard_normal(shape), smooth_mm / vox)
        u *= displacement_mm / np.abs(u).max()
        src[a] += u.reshape(-1)
    inv = np.linalg.inv(aff)
    ijk = inv[:3, :3] @ src + inv[:3, 3:4]

    def warp(vol, order):
        return ndi.map_coordinates(vol, ijk, order=order, mode="nearest").reshape(shape)

    labels = warp(model.labels, 0).astype(model.labels.dtype)
    out = HeadModel(
        chi_ppm=warp(model.chi_ppm, 1).astype(np.float32), labels=labels, label_names=dict(model.label_names),
        brain_mask=warp(model.brain_mask.astype(np.float32), 1) >= 0.5,
        r2star_hz=warp(model.r2star_hz, 1).astype(np.float32),
        proton_density=warp(model.proton_density, 1).astype(np.float32), affine=aff.copy(),
        voxel_size_mm=model.voxel_size_mm, shape=model.shape)
    return DeformedHead(out, src.T.reshape(shape + (3,)))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    return 2.0 * float((a & b).sum()) / max(1, int(a.sum() + b.sum()))

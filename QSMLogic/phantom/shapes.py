"""Soft-edged geometric inclusions painted onto a voxel grid (ellipsoids, tubes along polylines).

Each shape gives a partial-volume fraction in [0, 1] computed from an approximate signed distance to its surface
(fraction = clip(0.5 − distance/voxel, 0, 1)), evaluated only inside the shape's bounding box. Properties are
blended as ``p ← (1 − f)·p + f·p_shape`` and the label is set where ``f ≥ 0.5``, so small structures (veins,
a calcification) keep their total susceptibility at coarse resolutions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from .tissues import Tissue


@dataclass
class Grid:
    """An axis-aligned voxel grid: the world (RAS mm) coordinate of index ``i`` on axis ``a`` is ``o[a] + i·v[a]``."""

    shape: Tuple[int, int, int]
    voxel_size_mm: Tuple[float, float, float]
    origin_mm: Tuple[float, float, float]

    @property
    def edge_mm(self) -> float:
        """Length over which a surface is smeared (geometric mean voxel size)."""
        return float(np.prod(self.voxel_size_mm) ** (1.0 / 3.0))

    def box(self, lo_mm: Sequence[float], hi_mm: Sequence[float]) -> Optional[Tuple[tuple, list]]:
        """Index slices covering the world box [lo, hi] (plus one voxel margin) and the coordinate vectors there."""
        sl, coords = [], []
        for a in range(3):
            v, o, n = self.voxel_size_mm[a], self.origin_mm[a], self.shape[a]
            i0 = max(int(np.floor((lo_mm[a] - o) / v)) - 1, 0)
            i1 = min(int(np.ceil((hi_mm[a] - o) / v)) + 2, n)
            if i1 <= i0:
                return None
            sl.append(slice(i0, i1))
            c = (o + v * np.arange(i0, i1)).astype(np.float32)
            sh = [1, 1, 1]
            sh[a] = c.size
            coords.append(c.reshape(sh))
        return tuple(sl), coords


class Canvas:
    """χ, its paramagnetic part χ⁺, R2*, R2, proton density and label volumes being painted."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.chi_ppm = np.zeros(grid.shape, np.float32)
        self.chi_para_ppm = np.zeros(grid.shape, np.float32)
        self.r2star_hz = np.zeros(grid.shape, np.float32)
        self.r2_hz = np.zeros(grid.shape, np.float32)
        self.proton_density = np.zeros(grid.shape, np.float32)
        self.labels = np.zeros(grid.shape, np.int16)

    def paint(self, sl: tuple, frac: np.ndarray, tissue: Tissue, within: Optional[np.ndarray] = None) -> None:
        """Blend ``tissue`` into the box ``sl`` with partial-volume fraction ``frac`` (limited to ``within``)."""
        f = frac if within is None else frac * within[sl]
        if not np.any(f > 0):
            return
        for arr, val in ((self.chi_ppm, tissue.chi_ppm), (self.chi_para_ppm, tissue.chi_para_ppm),
                         (self.r2star_hz, tissue.r2star_hz), (self.r2_hz, tissue.r2_or_r2star_hz),
                         (self.proton_density, tissue.proton_density)):
            sub = arr[sl]
            sub += f * (np.float32(val) - sub)
        lab = self.labels[sl]
        lab[f >= 0.5] = tissue.label


def ellipsoid_fraction(grid: Grid, center_mm: Sequence[float], semi_axes_mm: Sequence[float],
                       rotation: Optional[np.ndarray] = None) -> Optional[Tuple[tuple, np.ndarray]]:
    """Partial-volume fraction of an ellipsoid (semi-axes along the rotated axes ``rotation`` columns)."""
    c = np.asarray(center_mm, np.float64)
    ax = np.asarray(semi_axes_mm, np.float64)
    r = np.eye(3) if rotation is None else np.asarray(rotation, np.float64)
    ext = np.abs(r) @ ax + 2 * grid.edge_mm
    got = grid.box(c - ext, c + ext)
    if got is None:
        return None
    sl, (x, y, z) = got
    d = (x - c[0], y - c[1], z - c[2])
    q = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), np.float32)
    for k in range(3):
        u = d[0] * np.float32(r[0, k]) + d[1] * np.float32(r[1, k]) + d[2] * np.float32(r[2, k])
        q += (u / np.float32(ax[k])) ** 2
    dist = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)
    sq = np.sqrt(q)
    with np.errstate(divide="ignore", invalid="ignore"):
        signed = np.where(sq > 0, dist * (1.0 - 1.0 / sq), -np.float32(ax.min()))
    frac = np.clip(0.5 - signed / np.float32(grid.edge_mm), 0.0, 1.0).astype(np.float32)
    return sl, frac


def tube_fraction(grid: Grid, points_mm: Sequence[Sequence[float]], radius_mm: float
                  ) -> Optional[Tuple[tuple, np.ndarray]]:
    """Partial-volume fraction of a tube of ``radius_mm`` around the polyline through ``points_mm``."""
    p = np.asarray(points_mm, np.float64)
    lo = p.min(axis=0) - radius_mm - 2 * grid.edge_mm
    hi = p.max(axis=0) + radius_mm + 2 * grid.edge_mm
    got = grid.box(lo, hi)
    if got is None:
        return None
    sl, (x, y, z) = got
    best = None
    for a, b in zip(p[:-1], p[1:]):
        ab = b - a
        ll = float(ab @ ab)
        dx, dy, dz = x - np.float32(a[0]), y - np.float32(a[1]), z - np.float32(a[2])
        t = np.clip((dx * np.float32(ab[0]) + dy * np.float32(ab[1]) + dz * np.float32(ab[2])) / np.float32(ll),
                    0.0, 1.0)
        d2 = (dx - t * np.float32(ab[0])) ** 2 + (dy - t * np.float32(ab[1])) ** 2 + (dz - t * np.float32(ab[2])) ** 2
        best = d2 if best is None else np.minimum(best, d2)
    signed = np.sqrt(best) - np.float32(radius_mm)
    frac = np.clip(0.5 - signed / np.float32(grid.edge_mm), 0.0, 1.0).astype(np.float32)
    return sl, frac

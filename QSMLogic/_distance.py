"""Private helper: exact Euclidean distance transform on an anisotropic grid, in parallel (numba).

``distance_mm(mask, voxel_size_mm)`` equals ``scipy.ndimage.distance_transform_edt(mask, sampling=voxel_size_mm)``
(the distance from each True voxel to the nearest False voxel; 0 on False voxels), computed by the separable
lower-envelope algorithm of Felzenszwalb & Huttenlocher (Theory of Computing 8 (2012) 415–428): one pass of the
1D squared-distance transform per axis, each over independent lines, so every core works (SciPy's transform is
single-threaded and dominated the brain-mask morphology: docs/benchmarks.md).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numba import njit, prange

from .geometry import check_voxel_size

_INF = np.inf


@njit(cache=True, inline="always")
def _envelope(f, n, s, d, v, z):  # pragma: no cover - compiled
    """d[q] = min_p (s·(q − p))² + f[p] over the finite f[p] (inf when there is none)."""
    k = -1
    for q in range(n):
        fq = f[q]
        if fq == _INF:
            continue
        sq = 0.0
        while k >= 0:
            p = v[k]
            sq = ((fq + (s * q) ** 2) - (f[p] + (s * p) ** 2)) / (2.0 * s * (q - p))
            if sq <= z[k]:
                k -= 1
            else:
                break
        k += 1
        v[k] = q
        z[k] = -_INF if k == 0 else sq
        z[k + 1] = _INF
    if k < 0:
        for q in range(n):
            d[q] = _INF
        return
    k = 0
    for q in range(n):
        x = s * q
        while z[k + 1] < x:
            k += 1
        p = v[k]
        d[q] = (s * (q - p)) ** 2 + f[p]


@njit(cache=True, parallel=True)
def _squared_distance(mask, s0, s1, s2):  # pragma: no cover - compiled
    """The three 1D passes, each written out with the loop order that keeps its memory access near-sequential (a
    generic pass over strided views is markedly slower: docs/benchmarks.md)."""
    nx, ny, nz = mask.shape
    g = np.empty((nx, ny, nz), np.float64)
    # axis 2
    for i in prange(nx):
        f = np.empty(nz)
        d = np.empty(nz)
        v = np.empty(nz, np.int64)
        z = np.empty(nz + 1)
        for j in range(ny):
            for k in range(nz):
                f[k] = _INF if mask[i, j, k] else 0.0
            _envelope(f, nz, s2, d, v, z)
            for k in range(nz):
                g[i, j, k] = d[k]
    # axis 1
    for i in prange(nx):
        f = np.empty(ny)
        d = np.empty(ny)
        v = np.empty(ny, np.int64)
        z = np.empty(ny + 1)
        for k in range(nz):
            for j in range(ny):
                f[j] = g[i, j, k]
            _envelope(f, ny, s1, d, v, z)
            for j in range(ny):
                g[i, j, k] = d[j]
    # axis 0
    for j in prange(ny):
        f = np.empty(nx)
        d = np.empty(nx)
        v = np.empty(nx, np.int64)
        z = np.empty(nx + 1)
        for k in range(nz):
            for i in range(nx):
                f[i] = g[i, j, k]
            _envelope(f, nx, s0, d, v, z)
            for i in range(nx):
                g[i, j, k] = d[i]
    return g


def distance_mm(mask: np.ndarray, voxel_size_mm: Sequence[float]) -> np.ndarray:
    """Euclidean distance (mm, float64) from each True voxel of a 3D mask to the nearest False voxel (0 on False
    voxels; a mask with no False voxel gives inf everywhere, where SciPy's transform is undefined)."""
    m = np.ascontiguousarray(mask, dtype=np.bool_)
    if m.ndim != 3:
        raise ValueError(f"distance_mm takes a 3D mask, got shape {m.shape}")
    s = check_voxel_size(voxel_size_mm)
    g = _squared_distance(m, float(s[0]), float(s[1]), float(s[2]))
    return np.sqrt(g, out=g)


def depth_mm(mask: np.ndarray, voxel_size_mm: Sequence[float]) -> np.ndarray:
    """Depth (mm, float64) of each voxel of a 3D mask below its surface: :func:`distance_mm` with everything outside
    the array counted as outside the mask (so a mask touching a face is shallow there)."""
    return distance_mm(np.pad(np.asarray(mask, dtype=np.bool_), 1), voxel_size_mm)[1:-1, 1:-1, 1:-1]

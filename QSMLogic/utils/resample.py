"""Integer-factor grid changes for coarse-to-fine solvers: block means down, linear interpolation back up.

A coarse voxel is the mean of a block of ``factors`` fine voxels (the volume is zero padded to a multiple of the
factors); coarse voxel centres sit at the block centres, so :func:`upsample_linear` interpolates at
``(i + 0.5) / f − 0.5`` coarse indices and the two functions invert each other on smooth maps.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from scipy import ndimage


def block_mean(a: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Mean over blocks of ``factors`` voxels per axis (float32), after zero padding each axis to a multiple."""
    f = [int(x) for x in factors]
    pad = [(0, (-n) % k) for n, k in zip(a.shape, f)]
    x = np.pad(np.asarray(a, dtype=np.float32), pad)
    s = [n // k for n, k in zip(x.shape, f)]
    return x.reshape(s[0], f[0], s[1], f[1], s[2], f[2]).mean(axis=(1, 3, 5), dtype=np.float32)


def upsample_linear(a: np.ndarray, factors: Sequence[int], shape: Tuple[int, ...]) -> np.ndarray:
    """The coarse map ``a`` (from :func:`block_mean` with ``factors``) linearly interpolated onto the fine grid of
    ``shape`` (float32; edge values continued outward)."""
    up = ndimage.zoom(np.asarray(a, dtype=np.float32), [int(k) for k in factors], order=1, mode="nearest",
                      grid_mode=True)
    return up[tuple(slice(0, n) for n in shape)].astype(np.float32, copy=False)


__all__ = ["block_mean", "upsample_linear"]

"""The work grid of the FFT-based methods: a mask's bounding box plus a margin, enlarged to a fast FFT size.

FFTs are periodic: the margin keeps the field on one side of the head from wrapping onto the other, and the crop
makes a 256×256×160 volume cost what the brain needs rather than the whole field of view. The extra voxels that
round the size up to ``scipy.fft.next_fast_len(real=True)`` are split evenly around the box; where the grid runs
past the volume it is zero padded (outside the field of view counts as outside the mask).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import scipy.fft as sfft


class FFTCrop:
    """The bounding box of ``mask`` plus ``margin_vox`` voxels on each side (per axis), enlarged to a fast real-FFT
    size unless ``fft_size`` is False; :meth:`take` cuts an array of the volume to it and :meth:`put` puts a
    work-grid array back."""

    def __init__(self, mask: np.ndarray, margin_vox: Sequence[int], fft_size: bool = True) -> None:
        self.full_shape = tuple(mask.shape)
        nz = np.nonzero(mask)
        lo = [int(a.min()) - int(m) for a, m in zip(nz, margin_vox)]
        hi = [int(a.max()) + 1 + int(m) for a, m in zip(nz, margin_vox)]
        shape = []
        for i in range(3):
            n = hi[i] - lo[i]
            n2 = sfft.next_fast_len(n, real=True) if fft_size else n
            lo[i] -= (n2 - n) // 2
            shape.append(n2)
        self.lo = lo
        self.shape = tuple(shape)
        # overlap of work grid and volume, in volume (src) and work-grid (dst) coordinates
        self.src = tuple(slice(max(lo_, 0), min(lo_ + n, full)) for lo_, n, full in zip(lo, shape, self.full_shape))
        self.dst = tuple(slice(s.start - lo_, s.stop - lo_) for s, lo_ in zip(self.src, lo))

    def take(self, a: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """``a`` (volume shape) on the work grid, zero where the grid lies outside the volume."""
        out = np.zeros(self.shape, dtype=dtype)
        out[self.dst] = np.asarray(a)[self.src]
        return out

    def put(self, a: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """A work-grid array back in the volume (zero outside the work grid)."""
        out = np.zeros(self.full_shape, dtype=dtype)
        out[self.src] = a[self.dst]
        return out


__all__ = ["FFTCrop"]

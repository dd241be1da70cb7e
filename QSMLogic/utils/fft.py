"""Real 3D FFTs on all cores (:data:`QSMLogic.dipole.FFT_WORKERS`) and periodic convolution by a kernel spectrum."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.fft as sfft

from ..dipole import FFT_WORKERS


def rfft(x: np.ndarray) -> np.ndarray:
    """Real-to-complex 3D FFT (half spectrum)."""
    return sfft.rfftn(x, workers=FFT_WORKERS)


def irfft(spec: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`rfft` for a real array of ``shape``, as float32."""
    return sfft.irfftn(spec, s=tuple(shape), workers=FFT_WORKERS).astype(np.float32, copy=False)


def convolve(x: np.ndarray, kernel_rfft: np.ndarray) -> np.ndarray:
    """Periodic convolution of the real array ``x`` by a real, symmetric kernel given on the rfft grid."""
    spec = rfft(x)
    spec *= kernel_rfft
    return irfft(spec, x.shape)


__all__ = ["rfft", "irfft", "convolve"]

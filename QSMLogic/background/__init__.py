"""Background field removal: separate the field of the tissue's own susceptibility from the background field.

Stage ``background`` (inputs ``field_ppm, mask, voxel_size_mm, b0_direction, weight``; HARPERELLA also takes
``phase_rad, te_s, b0_tesla``). Every method returns a :class:`BackgroundResult`. Review of the methods: Schweser et
al., NMR Biomed 2017.

Methods
-------
``sharp``      SHARP, Schweser et al., NeuroImage 2011: spherical-mean-value (SMV) high-pass, then truncated (TSVD)
               deconvolution of the SMV operator.
``vsharp``     V-SHARP, Li et al., NeuroImage 2011; Wu et al., MRM 2012: SMV radii from a maximum down to about one
               voxel, the largest radius that fits at each voxel, deconvolved with the largest kernel.
``resharp``    RESHARP, Sun & Wilman, MRM 2014: Tikhonov-regularised SMV deconvolution solved by conjugate gradients.
``pdf``        PDF, Liu et al., NMR Biomed 2011: dipole sources outside the mask fitted to the field inside it,
               noise weighted, by CG on the normal equations with an FFT dipole operator on a padded grid.
``lbv``        LBV, Zhou et al., NMR Biomed 2014: the background is the solution of Laplace's equation inside the
               mask with the field as Dirichlet boundary (solved by SSOR-preconditioned CG on the physical grid).
``ismv``       iSMV, Wen et al., MRM 2014: iterated SMV with the field held on the boundary shell; the fixed point of
               the iteration is found with CG on the same (symmetric) system.
``harperella`` HARPERELLA, Li et al., NMR Biomed 2015: unwrapping and background removal in one step from the
               Laplacian of the *wrapped* phase (input ``phase_rad`` + ``te_s`` + ``b0_tesla``).

The methods are grouped by family, as the inversion methods are: :mod:`.smv` (SHARP, V-SHARP, RESHARP, iSMV),
:mod:`.dipole_fields` (PDF) and :mod:`.laplacian` (LBV, HARPERELLA, on the masked Poisson solver of
:mod:`._poisson`), with the result type, erosion and metrics in :mod:`.common` and the numerics shared with the
inversion (input checks, work grid, SMV kernel, CG) in :mod:`QSMLogic.utils`. Importing the package registers every
method with the stage.

Conventions and choices
-----------------------
- Fields in ppm, float32 in and out; the local field is zero outside the returned (eroded) mask.
- SMV kernels are discrete spheres on the physical voxel grid (voxel centres within ``radius_mm``, so anisotropic
  voxels give the right ellipsoid in index space), normalised to unit sum, applied by ``rfftn`` in k-space. The
  mask erosion that belongs to a kernel is exact: a voxel is kept when every voxel of its sphere lies in the mask,
  i.e. when its Euclidean distance to the nearest voxel outside the mask exceeds the radius.
- All methods use only the field inside the mask, so they work on the mask's bounding box plus a margin. A mask
  that touches the volume faces is accepted: the volume is zero padded (outside the field of view counts as
  outside the mask) and ``info["mask_touches_faces"]`` lists the faces, since the field there is less reliable.
- Bad input raises :class:`QSMInputError`: empty mask, NaN/Inf in the field inside the mask (NaN outside the mask
  is ignored), shape mismatch, kernel radius below the largest voxel size.
"""
from __future__ import annotations

from ..utils.kernels import smv_kernel_spectrum
from . import smv, dipole_fields, laplacian  # noqa: F401  (methods register on import, in this order)
from .common import BackgroundResult, edge_loss_mm, local_field_nrmse
from .laplacian import LAPLACE_BOUNDARY_MM, harperella, lbv
from .dipole_fields import pdf
from .smv import ismv, resharp, sharp, vsharp

__all__ = ["BackgroundResult", "sharp", "vsharp", "resharp", "pdf", "lbv", "ismv", "harperella",
           "smv_kernel_spectrum", "local_field_nrmse", "edge_loss_mm", "LAPLACE_BOUNDARY_MM"]

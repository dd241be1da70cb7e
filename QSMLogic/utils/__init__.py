"""Numerical machinery shared by the background-removal and dipole-inversion methods (one copy of each):

- :mod:`.checks`  input checks of masks, fields and data weights, with errors that name the problem;
- :mod:`.grid`    the work grid: a mask's bounding box plus a margin, enlarged to a fast FFT size;
- :mod:`.fft`     real 3D FFTs and periodic convolution by a kernel given as its spectrum;
- :mod:`.kernels` the spherical mean value (SMV) kernel and truncated kernel inverses;
- :mod:`.solvers` conjugate gradients (optionally preconditioned) and LSQR, both cancellable.
"""

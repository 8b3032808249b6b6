"""The CPU backend's compiled code: FFTW (pyFFTW and its C interface), numba kernels and
the fused per-position pipelines."""

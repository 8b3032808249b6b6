"""The GPU backend's compiled code: the CUDA kernels of ``kernels/`` loaded through CuPy."""

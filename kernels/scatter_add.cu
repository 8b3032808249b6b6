// Scatter-add of M0 x M1 windows into a 2-D array, with atomics (windows may overlap).
//
//     target[rows[j] + r, cols[j] + c] += values[j, r, c]    for every window j
//
// One thread per (window, pixel): grid.x covers the pixels of one window, grid.y the windows
// (grid-stride over windows, so any count fits in gridDim.y <= 65535). `ld` is the row stride
// of `target` in elements (its width when C-contiguous); `values` is C-contiguous (B, M0, M1).
// Bounds are checked on the host (ptychompi/kernels.py), not here.
//
// extern "C" entry points (one per dtype, looked up by name from Python):
//   scatter_add_float32, scatter_add_float64, scatter_add_complex64, scatter_add_complex128
// No includes: compiled by NVRTC (CuPy RawModule) at run time and by nvcc --ptx in CI.

__device__ __forceinline__ void atomic_add(float* p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(double* p, double v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add(float2* p, float2 v) {
    atomicAdd(&p->x, v.x);
    atomicAdd(&p->y, v.y);
}
__device__ __forceinline__ void atomic_add(double2* p, double2 v) {
    atomicAdd(&p->x, v.x);
    atomicAdd(&p->y, v.y);
}

template <typename T>
__device__ __forceinline__ void scatter_add_impl(T* __restrict__ target,
                                                 const T* __restrict__ values,
                                                 const long long* __restrict__ rows,
                                                 const long long* __restrict__ cols,
                                                 long long n_windows, int m0, int m1,
                                                 long long ld) {
    const long long pixels = (long long)m0 * (long long)m1;
    const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= pixels) return;
    const long long r = p / m1;
    const long long c = p - r * m1;
    for (long long j = blockIdx.y; j < n_windows; j += gridDim.y) {
        atomic_add(target + (rows[j] + r) * ld + (cols[j] + c), values[j * pixels + p]);
    }
}

#define PTYCHOMPI_SCATTER_ADD(NAME, T)                                                     \
    extern "C" __global__ void NAME(T* target, const T* values, const long long* rows,    \
                                    const long long* cols, long long n_windows, int m0,   \
                                    int m1, long long ld) {                               \
        scatter_add_impl<T>(target, values, rows, cols, n_windows, m0, m1, ld);           \
    }

PTYCHOMPI_SCATTER_ADD(scatter_add_float32, float)
PTYCHOMPI_SCATTER_ADD(scatter_add_float64, double)
PTYCHOMPI_SCATTER_ADD(scatter_add_complex64, float2)
PTYCHOMPI_SCATTER_ADD(scatter_add_complex128, double2)

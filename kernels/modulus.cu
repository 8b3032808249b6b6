// Fused modulus projection of a batch of far-field waves, with the Fourier error.
//
// wave: C-contiguous (B, K, M, M) complex, projected in place; amplitude: C-contiguous
// (B, M, M) real, negative (-1) = invalid pixel. Per (b, pixel), as physics.modulus_project:
//     model = sqrt(sum_k |wave[b, k]|^2)
//     valid (A >= 0): wave[b, k] *= A / (model + 1e-9) for every k;  err += (model - A)^2
//     invalid:        wave unchanged, nothing added to err
// One thread per (b, pixel) (grid-stride); each block reduces its threads' errors in shared
// memory (double) and adds the block's sum to *err with one atomicAdd (double).
// Launch with exactly MODULUS_BLOCK threads per block.
//
// extern "C" entry points: modulus_project_complex64, modulus_project_complex128
// No includes: compiled by NVRTC (CuPy RawModule) at run time and by nvcc --ptx in CI.

#define MODULUS_BLOCK 256

__device__ __forceinline__ float real_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double real_sqrt(double x) { return sqrt(x); }

template <typename R, typename C>
__device__ __forceinline__ void modulus_project_impl(C* __restrict__ wave,
                                                     const R* __restrict__ amplitude,
                                                     long long n, long long frame_pixels,
                                                     int modes, double* __restrict__ err) {
    __shared__ double partial[MODULUS_BLOCK];
    double local = 0.0;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const long long b = i / frame_pixels;
        const long long p = i - b * frame_pixels;
        C* w = wave + b * (long long)modes * frame_pixels + p;
        R power = R(0);
        for (int k = 0; k < modes; ++k) {
            const C v = w[k * frame_pixels];
            power += v.x * v.x + v.y * v.y;
        }
        const R model = real_sqrt(power);
        const R a = amplitude[i];
        if (a >= R(0)) {
            const R d = model - a;
            local += (double)d * (double)d;
            const R factor = a / (model + R(1e-9));
            for (int k = 0; k < modes; ++k) {
                C v = w[k * frame_pixels];
                v.x *= factor;
                v.y *= factor;
                w[k * frame_pixels] = v;
            }
        }
    }
    partial[threadIdx.x] = local;
    __syncthreads();
    for (unsigned int s = MODULUS_BLOCK / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) atomicAdd(err, partial[0]);
}

#define PTYCHOMPI_MODULUS_PROJECT(NAME, R, C)                                              \
    extern "C" __global__ void __launch_bounds__(MODULUS_BLOCK)                           \
        NAME(C* wave, const R* amplitude, long long n, long long frame_pixels, int modes, \
             double* err) {                                                               \
        modulus_project_impl<R, C>(wave, amplitude, n, frame_pixels, modes, err);         \
    }

PTYCHOMPI_MODULUS_PROJECT(modulus_project_complex64, float, float2)
PTYCHOMPI_MODULUS_PROJECT(modulus_project_complex128, double, double2)

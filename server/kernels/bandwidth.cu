// copy_kernel: dst = src, 16 bytes per thread per iteration in a grid-stride loop; the
// bandwidth test's alternative to the driver's device-to-device copy. `words` counts uint4s.

extern "C" __global__ void copy_kernel(const uint4* __restrict__ src,
                                       uint4* __restrict__ dst,
                                       unsigned long long words)
{
    const unsigned long long start = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = start; i < words; i += stride) {
        dst[i] = src[i];
    }
}

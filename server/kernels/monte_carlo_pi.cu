// monte_carlo_pi: counts the samples in [first, first + count) that fall inside the quarter
// disc, with the counter-based generator of the host (SplitMix64's finaliser applied to
// seed and index), so the count is the host's to the last sample.
//
// Sample i takes X and Y, the top 30 bits of hash64(seed, 2i) and hash64(seed, 2i + 1), and
// hits when (2X + 1)² + (2Y + 1)² ≤ 2^62. Each thread counts a grid-stride share, the block
// adds its threads' counts with warp shuffles, and one atomic per block adds to the total.

#define GOLDEN_GAMMA 0x9E3779B97F4A7C15ull
#define BITS 30

__device__ __forceinline__ unsigned long long mix64(unsigned long long z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

extern "C" __global__ void monte_carlo_pi(unsigned long long seed,
                                          unsigned long long first,
                                          unsigned long long count,
                                          unsigned long long* __restrict__ hits)
{
    const unsigned long long key = mix64(seed);
    const unsigned long long radius_squared = 1ull << (2 * BITS + 2);
    const unsigned long long start = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    unsigned long long inside = 0;
    for (unsigned long long s = start; s < count; s += stride) {
        const unsigned long long i = first + s;
        const unsigned long long x = mix64(key + (2 * i + 1) * GOLDEN_GAMMA) >> (64 - BITS);
        const unsigned long long y = mix64(key + (2 * i + 2) * GOLDEN_GAMMA) >> (64 - BITS);
        const unsigned long long u = 2 * x + 1;
        const unsigned long long v = 2 * y + 1;
        inside += (u * u + v * v <= radius_squared) ? 1ull : 0ull;
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
        inside += __shfl_down_sync(0xffffffffu, inside, offset);
    }
    __shared__ unsigned long long warp_counts[32];
    const unsigned lane = threadIdx.x & 31u;
    const unsigned warp = threadIdx.x >> 5;
    if (lane == 0) {
        warp_counts[warp] = inside;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned long long total = 0;
        for (unsigned w = 0; w < (blockDim.x >> 5); ++w) {
            total += warp_counts[w];
        }
        atomicAdd(hits, total);
    }
}

// reduce_sum: the sum of n floats as a tree, in two launches and without atomics.
//
// reduce_partial: every thread sums its share of float4s in four independent accumulators
// (four loads in flight per iteration), the four are added, then each warp adds its 32
// values with shuffles and the block adds its warps' sums the same way; one partial sum per
// block. reduce_final: one block sums the partial sums in the same manner.
//
// Blocks must have a multiple of 32 threads, at most 1024.

__device__ __forceinline__ float warp_sum(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_down_sync(0xffffffffu, v, offset);
    }
    return v;
}

// The sum of v over the block, valid in thread 0.
__device__ __forceinline__ float block_sum(float v)
{
    __shared__ float warp_sums[32];
    const unsigned lane = threadIdx.x & 31u;
    const unsigned warp = threadIdx.x >> 5;
    v = warp_sum(v);
    if (lane == 0) {
        warp_sums[warp] = v;
    }
    __syncthreads();
    if (warp == 0) {
        v = lane < (blockDim.x >> 5) ? warp_sums[lane] : 0.0f;
        v = warp_sum(v);
    }
    return v;
}

extern "C" __global__ void reduce_partial(const float* __restrict__ x,
                                          unsigned long long n,
                                          float* __restrict__ partial)
{
    const unsigned long long start = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    const unsigned long long n4 = n / 4;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    unsigned long long i = start;
    // Four float4 loads in flight per thread.
    for (; i + 3 * stride < n4; i += 4 * stride) {
        const float4 a = x4[i];
        const float4 b = x4[i + stride];
        const float4 c = x4[i + 2 * stride];
        const float4 d = x4[i + 3 * stride];
        s0 += a.x; s1 += a.y; s2 += a.z; s3 += a.w;
        s0 += b.x; s1 += b.y; s2 += b.z; s3 += b.w;
        s0 += c.x; s1 += c.y; s2 += c.z; s3 += c.w;
        s0 += d.x; s1 += d.y; s2 += d.z; s3 += d.w;
    }
    for (; i < n4; i += stride) {
        const float4 a = x4[i];
        s0 += a.x; s1 += a.y; s2 += a.z; s3 += a.w;
    }
    for (unsigned long long j = 4 * n4 + start; j < n; j += stride) {
        s0 += x[j];
    }
    const float s = block_sum((s0 + s1) + (s2 + s3));
    if (threadIdx.x == 0) {
        partial[blockIdx.x] = s;
    }
}

extern "C" __global__ void reduce_final(const float* __restrict__ partial,
                                        unsigned int count,
                                        float* __restrict__ out)
{
    float s = 0.0f;
    for (unsigned int i = threadIdx.x; i < count; i += blockDim.x) {
        s += partial[i];
    }
    s = block_sum(s);
    if (threadIdx.x == 0) {
        out[0] = s;
    }
}

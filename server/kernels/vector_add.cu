// vector_add: c = a + b over n floats.
//
// Each thread handles float4s in a grid-stride loop (16-byte loads and stores), then the
// last n % 4 elements one by one. The grid is sized by the host: one thread per float4, up
// to the grid limit, so the loop normally runs once per thread.

extern "C" __global__ void vector_add(const float* __restrict__ a,
                                      const float* __restrict__ b,
                                      float* __restrict__ c,
                                      unsigned long long n)
{
    const unsigned long long start = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    const unsigned long long n4 = n / 4;
    const float4* a4 = reinterpret_cast<const float4*>(a);
    const float4* b4 = reinterpret_cast<const float4*>(b);
    float4* c4 = reinterpret_cast<float4*>(c);
    for (unsigned long long i = start; i < n4; i += stride) {
        const float4 x = a4[i];
        const float4 y = b4[i];
        c4[i] = make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
    }
    for (unsigned long long i = 4 * n4 + start; i < n; i += stride) {
        c[i] = a[i] + b[i];
    }
}

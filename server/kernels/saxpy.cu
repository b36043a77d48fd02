// saxpy: y = a * x + y over n floats, in place.
//
// float4 loads and stores in a grid-stride loop, then the last n % 4 elements one by one.

extern "C" __global__ void saxpy(float a,
                                 const float* __restrict__ x,
                                 float* __restrict__ y,
                                 unsigned long long n)
{
    const unsigned long long start = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    const unsigned long long n4 = n / 4;
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float4* y4 = reinterpret_cast<float4*>(y);
    for (unsigned long long i = start; i < n4; i += stride) {
        const float4 u = x4[i];
        float4 v = y4[i];
        v.x = a * u.x + v.x;
        v.y = a * u.y + v.y;
        v.z = a * u.z + v.z;
        v.w = a * u.w + v.w;
        y4[i] = v;
    }
    for (unsigned long long i = 4 * n4 + start; i < n; i += stride) {
        y[i] = a * x[i] + y[i];
    }
}

// Each block adds up its blockDim.x elements of `in` in shared memory, halving the number
// of active threads at each step, and writes its partial sum to out[blockIdx.x].
//
// blockDim.x must be a power of two, and the launch must give the block
// blockDim.x * sizeof(float) bytes of dynamic shared memory.
extern "C" __global__ void block_sum(const float *in, float *out, unsigned int n)
{
    extern __shared__ float partial[];
    unsigned int tid = threadIdx.x;
    unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;

    // Threads past the end add nothing, so every thread can take part in every step.
    partial[tid] = (i < n) ? in[i] : 0.0f;
    __syncthreads();

    for (unsigned int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (tid < stride) {
            partial[tid] += partial[tid + stride];
        }
        __syncthreads();
    }

    if (tid == 0) {
        out[blockIdx.x] = partial[0];
    }
}

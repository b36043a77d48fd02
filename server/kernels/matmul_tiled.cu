// matmul_tiled: C = A·B, row-major, A m×k, B k×n, C m×n: the shared-memory tiling of the
// CUDA programming guide. Each block computes a TILE×TILE tile of C; each thread one entry,
// walking k one tile at a time through shared memory. Blocks are TILE×TILE threads.

#define TILE 32

extern "C" __global__ void matmul_tiled(const float* __restrict__ a,
                                        const float* __restrict__ b,
                                        float* __restrict__ c,
                                        int m, int n, int k)
{
    __shared__ float as[TILE][TILE];
    __shared__ float bs[TILE][TILE + 1];
    const int row = blockIdx.y * TILE + threadIdx.y;
    const int col = blockIdx.x * TILE + threadIdx.x;
    float sum = 0.0f;
    for (int t = 0; t < k; t += TILE) {
        const int ak = t + threadIdx.x;
        const int bk = t + threadIdx.y;
        as[threadIdx.y][threadIdx.x] = (row < m && ak < k) ? a[(size_t)row * k + ak] : 0.0f;
        bs[threadIdx.y][threadIdx.x] = (bk < k && col < n) ? b[(size_t)bk * n + col] : 0.0f;
        __syncthreads();
#pragma unroll
        for (int l = 0; l < TILE; ++l) {
            sum += as[threadIdx.y][l] * bs[l][threadIdx.x];
        }
        __syncthreads();
    }
    if (row < m && col < n) {
        c[(size_t)row * n + col] = sum;
    }
}

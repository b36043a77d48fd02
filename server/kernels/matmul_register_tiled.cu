// matmul_register_tiled: C = A·B, row-major, A m×k, B k×n, C m×n, in single precision. The
// step after matmul_tiled.cu on the ladder naive → tiled → register-tiled → cuBLAS.
//
// What it teaches. The tiled kernel gives each thread one entry of C, so every fused
// multiply-add needs two floats read from shared memory: shared-memory bandwidth, not
// arithmetic, bounds it. Here each thread keeps a TM×TN = 8×8 block of C in registers. At each
// step l along k it reads TM values of A's column and TN values of B's row into registers and
// does their outer product, TM·TN = 64 multiply-adds for 16 shared-memory reads instead of
// 128. A block of 256 threads computes a BM×BN = 128×128 tile of C, walking k BK = 8 at a
// time; the tiles of A and B come from global memory as float4 (16-byte) loads, one of each
// per thread per step, and A's tile is stored transposed so that a thread's TM values of a
// column sit next to each other and are read as two float4s too.
//
// What it does not do, and cuBLAS does: load the next tiles while computing on these (double
// buffering), tile per warp, avoid the bank conflicts of the transposed store, pick the tile
// for the GPU, use tensor cores. Expect a fraction of cuBLAS, not parity: the GPU check
// (gpu-check/check.py) measures which fraction.
//
// Sizes that are not multiples of the tile: a load outside A or B reads zero, a store outside
// C is skipped. A float4 access needs a 16-byte-aligned address: A is read in float4s only when
// k is a multiple of 4, B and C only when n is (cuMemAlloc returns 256-byte-aligned buffers, and
// every column offset used is a multiple of 4); otherwise the same tiles move element by element.
//
// Launch: 1-D blocks of THREADS = 256 threads, grid (ceil(n / BN), ceil(m / BM)), 8 KiB of
// static shared memory. server/src/kernels/matmul.rs holds the same numbers, and a unit test
// there reads these #defines to keep the two equal.

#define BM 128
#define BN 128
#define BK 8
#define TM 8
#define TN 8
#define THREADS 256

#if (BM / TM) * (BN / TN) != THREADS || BM * BK != 4 * THREADS || BK * BN != 4 * THREADS
#error "each thread must own one TM x TN block of C and load one float4 of each tile"
#endif

extern "C" __global__ void __launch_bounds__(THREADS) matmul_register_tiled(
    const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ c,
    int m, int n, int k)
{
    // as[l][i] = A[row0 + i][t + l] (transposed), bs[l][j] = B[t + l][col0 + j].
    __shared__ __align__(16) float as[BK][BM];
    __shared__ __align__(16) float bs[BK][BN];

    const int tid = threadIdx.x;
    const int row0 = blockIdx.y * BM;
    const int col0 = blockIdx.x * BN;
    // This thread's block of C: rows row0 + ty·TM + i, columns col0 + tx·TN + j.
    const int tx = tid % (BN / TN);
    const int ty = tid / (BN / TN);
    // The float4 this thread loads of each tile: of A, row a_row and columns a_col .. a_col + 3
    // of the BK-wide slice; of B, row b_row and columns b_col .. b_col + 3 of the BN-wide one.
    const int a_row = tid / (BK / 4);
    const int a_col = (tid % (BK / 4)) * 4;
    const int b_row = tid / (BN / 4);
    const int b_col = (tid % (BN / 4)) * 4;
    // Uniform over the grid, so no warp diverges on them.
    const bool a_vec = (k % 4) == 0;
    const bool bc_vec = (n % 4) == 0;

    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i) {
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            acc[i][j] = 0.0f;
        }
    }

    for (int t = 0; t < k; t += BK) {
        {
            const int row = row0 + a_row;
            const int col = t + a_col;
            float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            if (row < m) {
                const float* p = a + (size_t)row * k + col;
                if (a_vec && col < k) {
                    // k and col are multiples of 4, so col < k means col + 3 < k.
                    const float4 q = *reinterpret_cast<const float4*>(p);
                    v[0] = q.x;
                    v[1] = q.y;
                    v[2] = q.z;
                    v[3] = q.w;
                } else {
#pragma unroll
                    for (int q = 0; q < 4; ++q) {
                        if (col + q < k) {
                            v[q] = p[q];
                        }
                    }
                }
            }
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                as[a_col + q][a_row] = v[q];
            }
        }
        {
            const int row = t + b_row;
            const int col = col0 + b_col;
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (row < k) {
                const float* p = b + (size_t)row * n + col;
                if (bc_vec && col < n) {
                    v = *reinterpret_cast<const float4*>(p);
                } else {
                    if (col < n) v.x = p[0];
                    if (col + 1 < n) v.y = p[1];
                    if (col + 2 < n) v.z = p[2];
                    if (col + 3 < n) v.w = p[3];
                }
            }
            *reinterpret_cast<float4*>(&bs[b_row][b_col]) = v;
        }
        __syncthreads();

#pragma unroll
        for (int l = 0; l < BK; ++l) {
            float ra[TM];
            float rb[TN];
#pragma unroll
            for (int i = 0; i < TM; i += 4) {
                const float4 q = *reinterpret_cast<const float4*>(&as[l][ty * TM + i]);
                ra[i] = q.x;
                ra[i + 1] = q.y;
                ra[i + 2] = q.z;
                ra[i + 3] = q.w;
            }
#pragma unroll
            for (int j = 0; j < TN; j += 4) {
                const float4 q = *reinterpret_cast<const float4*>(&bs[l][tx * TN + j]);
                rb[j] = q.x;
                rb[j + 1] = q.y;
                rb[j + 2] = q.z;
                rb[j + 3] = q.w;
            }
#pragma unroll
            for (int i = 0; i < TM; ++i) {
#pragma unroll
                for (int j = 0; j < TN; ++j) {
                    acc[i][j] = fmaf(ra[i], rb[j], acc[i][j]);
                }
            }
        }
        __syncthreads();
    }

    const int col = col0 + tx * TN;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int row = row0 + ty * TM + i;
        if (row < m) {
            float* p = c + (size_t)row * n + col;
#pragma unroll
            for (int j = 0; j < TN; j += 4) {
                if (bc_vec && col + j < n) {
                    // n and col + j are multiples of 4, so all four columns are inside C.
                    *reinterpret_cast<float4*>(p + j) =
                        make_float4(acc[i][j], acc[i][j + 1], acc[i][j + 2], acc[i][j + 3]);
                } else {
#pragma unroll
                    for (int q = 0; q < 4; ++q) {
                        if (col + j + q < n) {
                            p[j + q] = acc[i][j + q];
                        }
                    }
                }
            }
        }
    }
}

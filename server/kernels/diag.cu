// The diagnostics' GPU kernels: the memory test's patterns, the bandwidth test's copy and
// triad, and the comparison of GEMM results bit for bit. Every kernel loops over its
// buffer with a grid-stride loop, so any grid covers any size.

typedef unsigned long long u64;

// A counter-based random word (splitmix64's finaliser of seed + index).
__device__ __forceinline__ u64 diag_hash(u64 seed, u64 i) {
    u64 z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// kind 0: walking ones (bit i mod 64), 1: walking zeros, 2: the constant `base`,
// 3: the random word of `seed`.
__device__ __forceinline__ u64 diag_pattern(int kind, u64 base, u64 seed, u64 i) {
    switch (kind) {
    case 0: return 1ull << (i & 63);
    case 1: return ~(1ull << (i & 63));
    case 2: return base;
    default: return diag_hash(seed, i);
    }
}

// Records a failing word: the count always, the word itself while there is room.
__device__ __forceinline__ void diag_record(u64 i, u64 expected, u64 read, u64* count,
                                            u64* errors, unsigned int max_errors) {
    u64 slot = atomicAdd(count, 1ull);
    if (slot < max_errors) {
        errors[3 * slot] = i;
        errors[3 * slot + 1] = expected;
        errors[3 * slot + 2] = read;
    }
}

extern "C" __global__ void diag_fill(u64* buf, u64 n, int kind, u64 base, u64 seed) {
    u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        buf[i] = diag_pattern(kind, base, seed, i);
    }
}

// Checks every word against the pattern; `flip` (an index, or ~0 for none) flips bit 13 of
// that word as read: the injected fault.
extern "C" __global__ void diag_check(const u64* buf, u64 n, int kind, u64 base, u64 seed,
                                      u64 flip, u64* count, u64* errors,
                                      unsigned int max_errors) {
    u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        u64 read = ((volatile const u64*)buf)[i];
        if (i == flip) read ^= 1ull << 13;
        u64 expected = diag_pattern(kind, base, seed, i);
        if (read != expected) diag_record(i, expected, read, count, errors, max_errors);
    }
}

// A moving-inversion pass: each word must hold `expect` and then gets `write`, ascending or
// (descending != 0) descending.
extern "C" __global__ void diag_invert(u64* buf, u64 n, u64 expect, u64 write, int descending,
                                       u64* count, u64* errors, unsigned int max_errors) {
    u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 j = (u64)blockIdx.x * blockDim.x + threadIdx.x; j < n; j += stride) {
        u64 i = descending ? n - 1 - j : j;
        u64 read = ((volatile u64*)buf)[i];
        if (read != expect) diag_record(i, expect, read, count, errors, max_errors);
        buf[i] = write;
    }
}

// The sum and the xor of every word: the random pattern's checksum.
extern "C" __global__ void diag_checksum(const u64* buf, u64 n, u64* sum_xor) {
    u64 stride = (u64)gridDim.x * blockDim.x;
    u64 sum = 0, x = 0;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        u64 w = buf[i];
        sum += w;
        x ^= w;
    }
    atomicAdd(&sum_xor[0], sum);
    atomicXor(&sum_xor[1], x);
}

// The expected checksum of the random pattern, computed from the pattern itself.
extern "C" __global__ void diag_checksum_expected(u64 n, u64 seed, u64* sum_xor) {
    u64 stride = (u64)gridDim.x * blockDim.x;
    u64 sum = 0, x = 0;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        u64 w = diag_hash(seed, i);
        sum += w;
        x ^= w;
    }
    atomicAdd(&sum_xor[0], sum);
    atomicXor(&sum_xor[1], x);
}

// STREAM's copy: c = a.
extern "C" __global__ void diag_copy(const double* a, double* c, u64 n) {
    u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) c[i] = a[i];
}

// STREAM's triad: a = b + s·c.
extern "C" __global__ void diag_triad(double* a, const double* b, const double* c, double s,
                                      u64 n) {
    u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        a[i] = b[i] + s * c[i];
}

// Counts the 32-bit words of `b` whose bits differ from `a`'s.
extern "C" __global__ void diag_compare(const unsigned int* a, const unsigned int* b, u64 n,
                                        u64* differing) {
    u64 stride = (u64)gridDim.x * blockDim.x;
    u64 local = 0;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        local += a[i] != b[i];
    if (local) atomicAdd(differing, local);
}

// The fault: flips the lowest bit of one 32-bit word.
extern "C" __global__ void diag_flip(unsigned int* c, u64 index) {
    if (blockIdx.x == 0 && threadIdx.x == 0) c[index] ^= 1u;
}

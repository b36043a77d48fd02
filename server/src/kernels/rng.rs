//! A counter-based, stateless random number generator for the kernels' inputs.
//!
//! Every value is a pure function of `(seed, index)`, so any device can draw element `i` on
//! its own, in any order and on any number of threads, and a CUDA kernel written from the
//! definitions below produces bit for bit the same inputs as the CPU. The definitions are
//! the contract; all arithmetic is on unsigned 64-bit integers, wrapping modulo 2⁶⁴:
//!
//! ```text
//! mix64(z):  z ^= z >> 30;  z *= 0xBF58476D1CE4E5B9;
//!            z ^= z >> 27;  z *= 0x94D049BB133111EB;
//!            z ^= z >> 31;  return z
//! hash64(seed, index)  = mix64(mix64(seed) + (index + 1) * 0x9E3779B97F4A7C15)
//! uniform_f32(seed, i) = (float)(hash64(seed, i) >> 40) * 0x1p-24f     // in [0, 1)
//! uniform_f64(seed, i) = (double)(hash64(seed, i) >> 11) * 0x1p-53     // in [0, 1)
//! element i of stream s in [lo, hi):
//!     u = uniform_f32(hash64(seed, s), i);  return lo + (hi - lo) * u
//! ```
//!
//! `mix64` is the finaliser of SplitMix64 (Steele, Lea and Flood, 2014), and `hash64(0, i)`
//! is the `i`-th output of SplitMix64 started from state 0. Mixing the seed first keeps the
//! sequences of neighbouring seeds unrelated. The integer-to-float conversions are exact.
//! In CUDA, write the last line as `__fadd_rn(lo, __fmul_rn(hi - lo, u))` (or compile with
//! `-fmad=false`): nvcc would otherwise fuse it into one FMA and round differently.

use std::collections::BTreeSet;

use rayon::prelude::*;

/// The golden-ratio increment of SplitMix64, `⌊2⁶⁴ / φ⌋` made odd.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Elements per rayon task when filling buffers.
const FILL_CHUNK: usize = 1 << 16;

/// The SplitMix64 finaliser: a bijection of `u64` whose every output bit depends on every
/// input bit.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The 64 random bits at `index` of the sequence `seed`.
#[inline]
pub fn hash64(seed: u64, index: u64) -> u64 {
    mix64(mix64(seed).wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA)))
}

/// A float in `[0, 1)` from the top 24 bits of `bits`, on a grid of step 2⁻²⁴.
#[inline]
pub fn unit_f32(bits: u64) -> f32 {
    (bits >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// A double in `[0, 1)` from the top 53 bits of `bits`, on a grid of step 2⁻⁵³.
#[inline]
pub fn unit_f64(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A float in `[0, 1)` at `index` of the sequence `seed`.
#[inline]
pub fn uniform_f32(seed: u64, index: u64) -> f32 {
    unit_f32(hash64(seed, index))
}

/// A double in `[0, 1)` at `index` of the sequence `seed`.
#[inline]
pub fn uniform_f64(seed: u64, index: u64) -> f64 {
    unit_f64(hash64(seed, index))
}

/// The seed of stream `stream` of `seed`: kernels give each input buffer its own stream.
#[inline]
pub fn stream_seed(seed: u64, stream: u64) -> u64 {
    hash64(seed, stream)
}

/// What [`fill_uniform_f32`] writes at `out[index]`: a float in `[lo, hi)`, or `hi` itself
/// only when the scaling rounds up to it.
#[inline]
pub fn uniform_f32_at(seed: u64, stream: u64, index: u64, lo: f32, hi: f32) -> f32 {
    scale(uniform_f32(stream_seed(seed, stream), index), lo, hi)
}

#[inline]
fn scale(u: f32, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * u
}

/// Fills `out` with stream `stream` of `seed`, uniform in `[lo, hi)`, on every core.
pub fn fill_uniform_f32(seed: u64, stream: u64, out: &mut [f32], lo: f32, hi: f32) {
    let key = stream_seed(seed, stream);
    out.par_chunks_mut(FILL_CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let first = (c * FILL_CHUNK) as u64;
            for (i, x) in (first..).zip(chunk.iter_mut()) {
                *x = scale(uniform_f32(key, i), lo, hi);
            }
        });
}

/// Fills `out` with the raw bits of stream `stream` of `seed`, on every core:
/// `out[i] = hash64(stream_seed(seed, stream), i)`.
pub fn fill_u64(seed: u64, stream: u64, out: &mut [u64]) {
    let key = stream_seed(seed, stream);
    out.par_chunks_mut(FILL_CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let first = (c * FILL_CHUNK) as u64;
            for (i, x) in (first..).zip(chunk.iter_mut()) {
                *x = hash64(key, i);
            }
        });
}

/// Up to `count` distinct indices of `0..len`, sorted: all of them when `len <= count`,
/// otherwise the indices in `always` followed by ones drawn from `seed`. The checks use it to
/// pick the same sample of a large output on every run.
pub fn sample_indices(seed: u64, len: usize, count: usize, always: &[usize]) -> Vec<usize> {
    if len <= count {
        return (0..len).collect();
    }
    let mut picked: BTreeSet<usize> = always
        .iter()
        .copied()
        .filter(|&i| i < len)
        .take(count)
        .collect();
    // `len > count`, so a free index is always left and the draws end.
    let mut draw = 0;
    while picked.len() < count {
        picked.insert((hash64(seed, draw) % len as u64) as usize);
        draw += 1;
    }
    picked.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_zero_is_the_splitmix64_sequence() {
        // The published first outputs of SplitMix64 from state 0: a GPU port that gets these
        // right has the same mixing constants and order of operations.
        let expected = [
            0xE220_A839_7B1D_CDAF,
            0x6E78_9E6A_A1B9_65F4,
            0x06C4_5D18_8009_454F,
        ];
        for (i, want) in expected.into_iter().enumerate() {
            assert_eq!(hash64(0, i as u64), want, "index {i}");
        }
    }

    #[test]
    fn values_depend_on_seed_and_index_only() {
        assert_eq!(hash64(7, 1000), hash64(7, 1000));
        assert_ne!(hash64(7, 1000), hash64(8, 1000));
        assert_ne!(hash64(7, 1000), hash64(7, 1001));
        assert_eq!(uniform_f32(3, 9), uniform_f32(3, 9));
        assert_ne!(stream_seed(3, 0), stream_seed(3, 1));
    }

    #[test]
    fn unit_conversions_stay_below_one() {
        assert_eq!(unit_f32(0), 0.0);
        assert_eq!(unit_f64(0), 0.0);
        assert!(unit_f32(u64::MAX) < 1.0);
        assert!(unit_f64(u64::MAX) < 1.0);
        assert_eq!(unit_f32(u64::MAX), 1.0 - f32::EPSILON / 2.0);
    }

    #[test]
    fn uniform_values_are_in_range_with_the_expected_mean() {
        let n = 100_000;
        let (mut sum32, mut sum64) = (0.0f64, 0.0f64);
        for i in 0..n {
            let (a, b) = (uniform_f32(42, i), uniform_f64(42, i));
            assert!((0.0..1.0).contains(&a) && (0.0..1.0).contains(&b));
            sum32 += a as f64;
            sum64 += b;
        }
        // Five standard errors of the mean of U(0, 1): sqrt(1/12/n).
        let bound = 5.0 * (1.0 / 12.0 / n as f64).sqrt();
        assert!(
            (sum32 / n as f64 - 0.5).abs() < bound,
            "mean {}",
            sum32 / n as f64
        );
        assert!(
            (sum64 / n as f64 - 0.5).abs() < bound,
            "mean {}",
            sum64 / n as f64
        );
    }

    #[test]
    fn parallel_fill_matches_the_scalar_definition() {
        // Longer than one fill chunk, so several threads write it.
        let n = 3 * FILL_CHUNK + 17;
        let mut out = vec![0.0f32; n];
        fill_uniform_f32(5, 2, &mut out, -1.0, 1.0);
        for (i, &x) in out.iter().enumerate() {
            assert_eq!(x, uniform_f32_at(5, 2, i as u64, -1.0, 1.0), "index {i}");
            assert!((-1.0..1.0).contains(&x));
        }
        let mut bits = vec![0u64; n];
        fill_u64(5, 2, &mut bits);
        assert!(bits
            .iter()
            .enumerate()
            .all(|(i, &b)| b == hash64(stream_seed(5, 2), i as u64)));
        // Another stream of the same seed is a different sequence.
        let mut other = vec![0.0f32; 16];
        fill_uniform_f32(5, 3, &mut other, -1.0, 1.0);
        assert_ne!(other[..], out[..16]);
    }

    #[test]
    fn samples_are_distinct_sorted_and_keep_the_required_indices() {
        assert_eq!(sample_indices(1, 5, 10, &[0, 4]), vec![0, 1, 2, 3, 4]);
        let s = sample_indices(1, 1000, 100, &[0, 999]);
        assert_eq!(s.len(), 100);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!((s[0], s[99]), (0, 999));
        assert_eq!(s, sample_indices(1, 1000, 100, &[0, 999]));
        assert_eq!(sample_indices(1, 11, 10, &[]).len(), 10);
    }
}

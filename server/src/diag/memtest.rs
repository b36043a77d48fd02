//! The memory test's patterns, on the host (the CPU device), and the evidence of a run,
//! which the GPU's kernels (`server/kernels/diag.cu`) share.
//!
//! Three patterns, each written over the whole buffer and read back:
//! - *walking ones*: word `i` holds the single bit `i mod 64`, then its complement (walking
//!   zeros), so every data line is driven alone both ways;
//! - *moving inversions* (memtest86's): the buffer is filled with a pattern; an ascending pass
//!   checks each word and writes its inverse, a descending pass checks the inverse and writes
//!   the pattern back, a last pass checks it; with `0x5555…` and with all zeros;
//! - *random*: a counter-based random value per word, read back through a checksum (the sum
//!   and xor of every word); a checksum that differs is then located word by word.
//!
//! A failing word is reported by its byte offset in the buffer, the bits that differ, what
//! was read and what was written.

use gpulab_shared::diag::{Evidence, Verdict};
use rayon::prelude::*;

use super::evidence;
use crate::kernels::rng;

/// Failing words kept per pattern for the evidence.
pub const KEPT_ERRORS: usize = 8;
/// The bit the [`Fault::MemoryBitFlip`](gpulab_shared::diag::Fault::MemoryBitFlip) fault
/// flips in one readback.
pub const FLIPPED_BIT: u32 = 13;
/// The seed of the random pattern.
pub const RANDOM_SEED: u64 = 0x0064_6961_676d_656d;

/// Words per parallel task: 1 MiB.
const CHUNK: usize = (1 << 20) / 8;

/// One failing word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemError {
    /// Bytes from the start of the buffer.
    pub offset: u64,
    pub expected: u64,
    pub read: u64,
}

/// One pattern's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternResult {
    pub name: &'static str,
    /// Words that read back wrong.
    pub errors: u64,
    /// The first [`KEPT_ERRORS`] of them.
    pub first: Vec<MemError>,
}

/// The pattern names, in the order they run.
pub const PATTERNS: [&str; 3] = ["walking ones", "moving inversions", "random (checksum)"];

/// The index of the word whose readback the fault flips: inside the buffer, not at an edge.
pub fn flipped_word(words: usize) -> usize {
    (words / 2 + 3).min(words.saturating_sub(1))
}

/// Runs the three patterns over `words`. `flip` flips [`FLIPPED_BIT`] of one word's first
/// readback (the fault). `progress` gets the share done after each pass.
pub fn run_host(
    words: &mut [u64],
    flip: bool,
    progress: &mut dyn FnMut(f64),
) -> Vec<PatternResult> {
    let flip_at = flip.then(|| flipped_word(words.len()));
    let passes = 2.0 + 2.0 * 4.0 + 2.0;
    let mut done = 0.0;
    let mut step = |progress: &mut dyn FnMut(f64)| {
        done += 1.0;
        progress(done / passes);
    };

    // Walking ones, then walking zeros.
    let mut walking = Errors::default();
    for invert in [false, true] {
        let pattern = move |i: usize| {
            let bit = 1u64 << (i % 64);
            if invert {
                !bit
            } else {
                bit
            }
        };
        fill(words, pattern);
        walking.add(verify(words, pattern, if invert { None } else { flip_at }));
        step(progress);
    }

    // Moving inversions.
    let mut inversions = Errors::default();
    for base in [0x5555_5555_5555_5555u64, 0] {
        fill(words, move |_| base);
        step(progress);
        inversions.add(sweep(words, base, !base, false));
        step(progress);
        inversions.add(sweep(words, !base, base, true));
        step(progress);
        inversions.add(verify(words, move |_| base, None));
        step(progress);
    }

    // A random pattern, read back through a checksum.
    let value = |i: usize| rng::hash64(RANDOM_SEED, i as u64);
    fill(words, value);
    let expected = checksum(words.len(), &|i| value(i));
    let read = checksum(words.len(), &|i| words[i]);
    step(progress);
    let random = if read == expected {
        Errors::default()
    } else {
        verify(words, value, None)
    };
    step(progress);

    vec![
        walking.into_result(PATTERNS[0]),
        inversions.into_result(PATTERNS[1]),
        random.into_result(PATTERNS[2]),
    ]
}

/// The sum and xor of `len` words given by `word`.
fn checksum(len: usize, word: &(dyn Fn(usize) -> u64 + Sync)) -> (u64, u64) {
    (0..len)
        .into_par_iter()
        .with_min_len(CHUNK)
        .map(|i| {
            let w = word(i);
            (w, w)
        })
        .reduce(
            || (0, 0),
            |(s1, x1), (s2, x2)| (s1.wrapping_add(s2), x1 ^ x2),
        )
}

fn fill(words: &mut [u64], pattern: impl Fn(usize) -> u64 + Sync) {
    words
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            for (j, w) in chunk.iter_mut().enumerate() {
                // Volatile: the compiler may not drop a write it thinks is overwritten.
                // SAFETY: `w` is a valid, aligned, exclusive reference to a u64.
                unsafe { std::ptr::write_volatile(w, pattern(c * CHUNK + j)) };
            }
        });
}

/// Checks every word against `pattern`; `flip_at` flips one bit of one word as read.
fn verify(words: &[u64], pattern: impl Fn(usize) -> u64 + Sync, flip_at: Option<usize>) -> Errors {
    words
        .par_chunks(CHUNK)
        .enumerate()
        .map(|(c, chunk)| {
            let mut errors = Errors::default();
            for (j, w) in chunk.iter().enumerate() {
                let i = c * CHUNK + j;
                // SAFETY: `w` is a valid, aligned reference to a u64.
                let mut read = unsafe { std::ptr::read_volatile(w) };
                if flip_at == Some(i) {
                    read ^= 1 << FLIPPED_BIT;
                }
                let expected = pattern(i);
                if read != expected {
                    errors.push(i, expected, read);
                }
            }
            errors
        })
        .reduce(Errors::default, |mut a, b| {
            a.add(b);
            a
        })
}

/// A moving-inversion pass: each word must hold `expect` and then gets `write`, block by
/// block in parallel, ascending (or descending) inside each block.
fn sweep(words: &mut [u64], expect: u64, write: u64, descending: bool) -> Errors {
    words
        .par_chunks_mut(CHUNK)
        .enumerate()
        .map(|(c, chunk)| {
            let mut errors = Errors::default();
            let len = chunk.len();
            for k in 0..len {
                let j = if descending { len - 1 - k } else { k };
                let w = &mut chunk[j];
                // SAFETY: `w` is a valid, aligned, exclusive reference to a u64.
                let read = unsafe { std::ptr::read_volatile(w) };
                if read != expect {
                    errors.push(c * CHUNK + j, expect, read);
                }
                // SAFETY: as above.
                unsafe { std::ptr::write_volatile(w, write) };
            }
            errors
        })
        .reduce(Errors::default, |mut a, b| {
            a.add(b);
            a
        })
}

#[derive(Debug, Default)]
struct Errors {
    count: u64,
    first: Vec<MemError>,
}

impl Errors {
    fn push(&mut self, word: usize, expected: u64, read: u64) {
        self.count += 1;
        if self.first.len() < KEPT_ERRORS {
            self.first.push(MemError {
                offset: word as u64 * 8,
                expected,
                read,
            });
        }
    }

    fn add(&mut self, other: Errors) {
        self.count += other.count;
        self.first.extend(other.first);
        self.first.sort_by_key(|e| e.offset);
        self.first.truncate(KEPT_ERRORS);
    }

    fn into_result(self, name: &'static str) -> PatternResult {
        PatternResult {
            name,
            errors: self.count,
            first: self.first,
        }
    }
}

/// The bits that differ in a failing word, as `bit 13` or `bits 0, 7`.
pub fn differing_bits(error: &MemError) -> String {
    let diff = error.expected ^ error.read;
    let bits: Vec<String> = (0..64)
        .filter(|b| diff >> b & 1 == 1)
        .map(|b| b.to_string())
        .collect();
    match bits.len() {
        1 => format!("bit {}", bits[0]),
        _ => format!("bits {}", bits.join(", ")),
    }
}

/// The evidence of a memory test: the bytes covered, then per pattern the failing words
/// (none expected) and the first failing addresses with their bits.
pub fn evidence(bytes: u64, size_rule: &str, results: &[PatternResult]) -> Vec<Evidence> {
    let mut out = vec![Evidence {
        name: "bytes tested".into(),
        measured: Some(bytes as f64),
        measured_text: None,
        unit: Some("B".into()),
        expected: None,
        expected_text: Some(size_rule.to_owned()),
        bound: None,
        source: Some("the memory test's size rule".into()),
        verdict: Verdict::Pass,
    }];
    for result in results {
        out.push(evidence::at_most(
            &format!("{}: failing words", result.name),
            result.errors as f64,
            "words",
            0.0,
            "memory returns what was written: any failing word fails",
            Verdict::Fail,
        ));
        for error in &result.first {
            out.push(evidence::text(
                &format!("{}: error at offset {:#x}", result.name, error.offset),
                format!(
                    "{} differ: read {:#018x}",
                    differing_bits(error),
                    error.read
                ),
                format!("{:#018x}", error.expected),
                "the pattern written",
                Verdict::Fail,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_memory_passes_every_pattern() {
        let mut words = vec![0u64; 3 * CHUNK + 17];
        let mut seen = Vec::new();
        let results = run_host(&mut words, false, &mut |p| seen.push(p));
        assert_eq!(results.len(), 3);
        assert!(results.iter().all(|r| r.errors == 0), "{results:?}");
        assert_eq!(seen.last(), Some(&1.0));
    }

    #[test]
    fn a_flipped_bit_is_found_with_its_address_and_bit() {
        let mut words = vec![0u64; 2 * CHUNK + 5];
        let results = run_host(&mut words, true, &mut |_| {});
        let walking = &results[0];
        assert_eq!(walking.errors, 1, "{results:?}");
        let error = walking.first[0];
        assert_eq!(error.offset, flipped_word(words.len()) as u64 * 8);
        assert_eq!(differing_bits(&error), format!("bit {FLIPPED_BIT}"));
        assert_eq!(results[1].errors + results[2].errors, 0);
        let evidence = evidence(16, "test", &results);
        assert!(evidence
            .iter()
            .any(|e| e.verdict == Verdict::Fail && e.name.contains("offset")));
    }

    #[test]
    fn the_flipped_word_is_inside_any_buffer() {
        for words in 1..64 {
            assert!(flipped_word(words) < words, "{words}");
        }
        let mut two = [0u64; 2];
        assert_eq!(run_host(&mut two, true, &mut |_| {})[0].errors, 1);
    }

    #[test]
    fn the_checksum_locates_a_corrupted_random_word() {
        let mut words = vec![0u64; 1000];
        let value = |i: usize| rng::hash64(RANDOM_SEED, i as u64);
        fill(&mut words, value);
        words[321] ^= 0b101;
        let clean = checksum(words.len(), &|i| value(i));
        let read = checksum(words.len(), &|i| words[i]);
        assert_ne!(clean, read);
        let errors = verify(&words, value, None);
        assert_eq!(errors.count, 1);
        assert_eq!(errors.first[0].offset, 321 * 8);
        assert_eq!(differing_bits(&errors.first[0]), "bits 0, 2");
    }
}

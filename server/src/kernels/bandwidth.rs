//! `bandwidth`: a memory-to-memory copy of `size_mib` MiB, the plain measure of memory bandwidth.

use gpulab_shared::{DeviceKind, KernelSpec, Verification};
use rayon::prelude::*;
use serde_json::json;

use super::params::spec;
use super::{rng, CpuRun, Kernel, ResolvedParams, RunReport, Work};

/// Words per rayon task: 1 MiB, long enough for the hardware prefetchers to get going.
const CHUNK: usize = (1 << 20) / WORD;

/// Bytes per word of the buffers.
const WORD: usize = std::mem::size_of::<u64>();

/// The random stream the source is filled from.
const STREAM_SRC: u64 = 0;

/// Buffer-to-buffer copy.
pub struct Bandwidth;

impl Kernel for Bandwidth {
    fn spec(&self) -> KernelSpec {
        KernelSpec {
            name: "bandwidth".into(),
            description: "Copies a buffer of random bytes into another one of the same size: \
                          the memory bandwidth a plain copy reaches."
                .into(),
            devices: vec![DeviceKind::Cpu],
            params: vec![
                spec::integer(
                    "size_mib",
                    256,
                    1,
                    16384,
                    Some("MiB"),
                    "Size of the buffer copied.",
                ),
                spec::seed(),
            ],
            throughput_formula: "2 × size bytes (read + written) / median time (GB/s)".into(),
        }
    }

    fn memory_bytes(&self, params: &ResolvedParams) -> u64 {
        2 * (params.u64("size_mib") << 20)
    }

    fn prepare_cpu(&self, params: &ResolvedParams) -> Result<Box<dyn CpuRun>, String> {
        let words = params.u64("size_mib") as usize * (1 << 20) / WORD;
        let mut src = vec![0u64; words];
        rng::fill_u64(params.u64("seed"), STREAM_SRC, &mut src);
        Ok(Box::new(BandwidthRun {
            src,
            dst: vec![0; words],
        }))
    }
}

struct BandwidthRun {
    src: Vec<u64>,
    dst: Vec<u64>,
}

impl CpuRun for BandwidthRun {
    fn run(&mut self) {
        self.dst
            .par_chunks_mut(CHUNK)
            .zip(self.src.par_chunks(CHUNK))
            .for_each(|(dst, src)| dst.copy_from_slice(src));
    }

    fn finish(self: Box<Self>) -> RunReport {
        let bytes = self.src.len() * WORD;
        RunReport {
            // Each byte is read once and written once, as CUDA's bandwidthTest counts a
            // device-to-device copy.
            work: Work::Bytes(2.0 * bytes as f64),
            verification: verify(&self.src, &self.dst),
            output: json!({ "size_bytes": bytes }),
            artifact: None,
        }
    }
}

/// Compares the whole destination with the source, word by word.
fn verify(src: &[u64], dst: &[u64]) -> Verification {
    let differing =
        src.iter().zip(dst).filter(|(s, d)| s != d).count() + src.len().abs_diff(dst.len());
    let words = src.len().max(dst.len()).max(1);
    Verification {
        passed: differing == 0,
        max_abs_error: differing as f64,
        max_rel_error: differing as f64 / words as f64,
        tolerance: 0.0,
        method: "The whole destination compared with the source, 8 bytes at a time; the error \
                 is the number (absolute) and fraction (relative) of words that differ, and a \
                 copy must be exact."
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::harness;

    #[test]
    fn a_copy_passes_and_counts_both_directions() {
        let params = serde_json::from_value(json!({ "size_mib": 2, "seed": 3 })).unwrap();
        let params = ResolvedParams::resolve(&Bandwidth.spec().params, Some(&params)).unwrap();
        assert_eq!(Bandwidth.memory_bytes(&params), 4 << 20);
        let outcome = harness::time_cpu_run(Bandwidth.prepare_cpu(&params).unwrap(), 2, |_, _| {});
        let v = &outcome.result.verification;
        assert!(v.passed && v.max_abs_error == 0.0, "{v:?}");
        assert_eq!(outcome.result.output["size_bytes"], 2 << 20);
        let t = &outcome.result.throughput;
        let expected = 2.0 * (2 << 20) as f64 / (outcome.result.timing.median_ms / 1e3) / 1e9;
        assert!((t.value - expected).abs() <= 1e-9 * expected, "{t:?}");
    }

    #[test]
    fn one_wrong_word_is_caught() {
        let mut src = vec![0u64; 1000];
        rng::fill_u64(1, STREAM_SRC, &mut src);
        let mut dst = src.clone();
        assert!(verify(&src, &dst).passed);
        dst[999] ^= 1 << 63;
        let v = verify(&src, &dst);
        assert!(!v.passed);
        assert_eq!((v.max_abs_error, v.max_rel_error), (1.0, 0.001));
        assert!(!verify(&src, &src[..999]).passed);
    }
}

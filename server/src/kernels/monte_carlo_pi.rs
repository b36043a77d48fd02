//! `monte_carlo_pi`: estimates π from the fraction of random points of the unit square that
//! fall inside the quarter disc.
//!
//! Sample `i` takes `X` and `Y`, the top [`BITS`] bits of `hash64(seed, 2i)` and
//! `hash64(seed, 2i + 1)` (see [`rng`]), as the point `((X + ½)/2^BITS, (Y + ½)/2^BITS)`, the
//! centre of a cell of a fine grid, and tests `x² + y² ≤ 1` in integers as
//! `(2X + 1)² + (2Y + 1)² ≤ 2^(2·BITS + 2)`. No rounding is involved, so every device counts
//! the same hits, and the grid is too fine to bias the estimate at any sample count allowed.

use std::f64::consts::PI;

use gpulab_shared::{DeviceKind, KernelSpec, Verification};
use rayon::prelude::*;
use serde_json::json;

use super::gpu::{self, BLOCK};
use super::params::{spec, FromParams, ParamError};
use super::{
    cuda_source, rng, CpuRun, CudaSource, GpuRun, Kernel, PreparedGpu, ResolvedParams, RunReport,
    Work,
};
use crate::cuda::{DriverContext, Gpu, GpuError, Options};
use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

/// Bits per coordinate: the largest for which `(2X + 1)² + (2Y + 1)²` fits in a `u64`.
const BITS: u32 = 30;

/// Samples per rayon task.
const CHUNK: u64 = 1 << 16;

/// How many standard deviations of the estimator the estimate may be off.
const SIGMAS: f64 = 5.0;

/// The CUDA source of the GPU path, with the entry points it launches.
const CUDA: &[CudaSource] = &[cuda_source!("monte_carlo_pi.cu", ["monte_carlo_pi"])];

/// Monte Carlo estimate of π.
pub struct MonteCarloPi;

/// The parameters of a `monte_carlo_pi` job.
pub struct MonteCarloPiParams {
    samples: u64,
    seed: u64,
}

impl FromParams for MonteCarloPiParams {
    fn from_params(params: &ResolvedParams) -> Result<Self, ParamError> {
        Ok(MonteCarloPiParams {
            samples: params.integer("samples")?,
            seed: params.integer("seed")?,
        })
    }
}

impl Kernel for MonteCarloPi {
    type Params = MonteCarloPiParams;

    fn spec(&self) -> KernelSpec {
        KernelSpec {
            name: "monte_carlo_pi".into(),
            description: "Estimates π as 4 × the fraction of random points of the unit square \
                          inside the quarter disc: a compute-bound test of random-number \
                          generation and integer arithmetic."
                .into(),
            devices: vec![DeviceKind::Cpu, DeviceKind::Cuda],
            params: vec![
                spec::integer(
                    "samples",
                    1 << 26,
                    1,
                    1 << 40,
                    Some("samples"),
                    "Number of random points.",
                ),
                spec::seed(),
            ],
            throughput_formula: "samples / median time (Gsamples/s)".into(),
        }
    }

    fn cuda_sources(&self) -> &'static [CudaSource] {
        CUDA
    }

    fn memory_bytes(&self, _params: &MonteCarloPiParams) -> u64 {
        // Nothing but a counter per task.
        0
    }

    fn prepare_cpu(&self, params: &MonteCarloPiParams) -> Result<Box<dyn CpuRun>, String> {
        Ok(Box::new(MonteCarloPiRun {
            seed: params.seed,
            samples: params.samples,
            hits: 0,
        }))
    }

    fn prepare_cuda(
        &self,
        params: &MonteCarloPiParams,
        gpu: &mut Gpu,
    ) -> Result<PreparedGpu, GpuError> {
        let (module, report) = gpu.module(CUDA[0].file, CUDA[0].source, &Options::default())?;
        let samples = params.samples;
        // Many samples per thread amortise the block's reduction and its one atomic.
        let blocks = samples
            .div_ceil(BLOCK as u64)
            .clamp(1, 4 * gpu::resident_blocks(gpu) as u64) as u32;
        let run = MonteCarloPiGpu {
            function: Gpu::function(&module, "monte_carlo_pi")?,
            seed: params.seed,
            samples,
            blocks,
            hits: gpu::zeros(gpu, 1)?,
        };
        Ok(PreparedGpu::new(run, vec![report]))
    }

    fn roofline_note(&self) -> &'static str {
        "none: the work is random-number generation in registers, with no memory traffic"
    }
}

/// Samples the host counts again, one by one, to compare with the GPU's count of them.
const EXACT_PREFIX: u64 = 1 << 24;

struct MonteCarloPiGpu {
    function: CudaFunction,
    seed: u64,
    samples: u64,
    blocks: u32,
    hits: CudaSlice<u64>,
}

impl MonteCarloPiGpu {
    /// Queues the count of samples `[first, first + count)` into `hits`, zeroed first.
    fn count(&mut self, gpu: &Gpu, first: u64, count: u64) -> Result<(), GpuError> {
        gpu.stream
            .memset_zeros(&mut self.hits)
            .during("clearing the counter")?;
        let mut launch = gpu.stream.launch_builder(&self.function);
        launch
            .arg(&self.seed)
            .arg(&first)
            .arg(&count)
            .arg(&mut self.hits);
        let cfg = LaunchConfig {
            grid_dim: (self.blocks, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: monte_carlo_pi(unsigned long long ×3, unsigned long long*) adds to the one
        // counter `hits` holds, and its blocks are a multiple of 32 threads, at most 1024.
        unsafe { launch.launch(cfg) }.during("launching monte_carlo_pi")?;
        Ok(())
    }
}

impl GpuRun for MonteCarloPiGpu {
    fn step(&mut self, gpu: &Gpu) -> Result<(), GpuError> {
        self.count(gpu, 0, self.samples)
    }

    fn finish(mut self: Box<Self>, gpu: &mut Gpu) -> Result<RunReport, GpuError> {
        let hits = gpu::download(gpu, &self.hits)?[0];
        // The first samples again, on both sides: the counts must be equal.
        let prefix = self.samples.min(EXACT_PREFIX);
        self.count(gpu, 0, prefix)?;
        let gpu_prefix = gpu::download(gpu, &self.hits)?[0];
        let seed = self.seed;
        let host_prefix: u64 = (0..prefix.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| count_hits(seed, c * CHUNK..prefix.min((c + 1) * CHUNK)))
            .sum();
        let estimate = estimate(hits, self.samples);
        let mut verification = verify(estimate, self.samples);
        verification.passed &= gpu_prefix == host_prefix;
        verification.method = format!(
            "{} Also, the first {prefix} samples were counted again on the GPU and on the \
             host with the same counter-based generator: {gpu_prefix} and {host_prefix} hits, \
             which must be equal.",
            verification.method
        );
        Ok(RunReport {
            work: Work::Samples(self.samples as f64),
            verification,
            output: json!({
                "estimate": estimate,
                "hits": hits,
                "samples": self.samples,
                "std_error": std_error(self.samples),
                "exact_prefix": { "samples": prefix, "gpu_hits": gpu_prefix, "host_hits": host_prefix },
            }),
            artifact: None,
        })
    }
}

struct MonteCarloPiRun {
    seed: u64,
    samples: u64,
    hits: u64,
}

impl CpuRun for MonteCarloPiRun {
    fn run(&mut self) {
        let (seed, samples) = (self.seed, self.samples);
        self.hits = (0..samples.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| count_hits(seed, c * CHUNK..samples.min((c + 1) * CHUNK)))
            .sum();
    }

    fn finish(self: Box<Self>) -> RunReport {
        let estimate = estimate(self.hits, self.samples);
        RunReport {
            work: Work::Samples(self.samples as f64),
            verification: verify(estimate, self.samples),
            output: json!({
                "estimate": estimate,
                "hits": self.hits,
                "samples": self.samples,
                "std_error": std_error(self.samples),
            }),
            artifact: None,
        }
    }
}

/// The samples of `range` that fall inside the quarter disc.
fn count_hits(seed: u64, range: std::ops::Range<u64>) -> u64 {
    const RADIUS_SQUARED: u64 = 1 << (2 * BITS + 2);
    range
        .map(|i| {
            let x = rng::hash64(seed, 2 * i) >> (64 - BITS);
            let y = rng::hash64(seed, 2 * i + 1) >> (64 - BITS);
            let (x, y) = (2 * x + 1, 2 * y + 1);
            u64::from(x * x + y * y <= RADIUS_SQUARED)
        })
        .sum()
}

fn estimate(hits: u64, samples: u64) -> f64 {
    4.0 * hits as f64 / samples as f64
}

/// The standard deviation of the estimate: 4·sqrt(p(1 − p)/n) with p = π/4, the chance that
/// one sample hits.
fn std_error(samples: u64) -> f64 {
    let p = PI / 4.0;
    4.0 * (p * (1.0 - p) / samples as f64).sqrt()
}

/// Compares the estimate with π; a correct count misses by more than five standard
/// deviations for fewer than one seed in a million.
fn verify(estimate: f64, samples: u64) -> Verification {
    // NaN and ∞ become f64::MAX: JSON has no number for them, and they must fail the check.
    let abs = (estimate - PI).abs().min(f64::MAX);
    let tolerance = SIGMAS * std_error(samples) / PI;
    Verification {
        passed: abs / PI <= tolerance,
        max_abs_error: abs,
        max_rel_error: abs / PI,
        tolerance,
        method: "The estimate compared with π, error relative to π; the tolerance is 5 standard \
                 deviations of the estimator, 5·4·sqrt(p(1 − p)/n)/π with p = π/4, so a \
                 correct count fails for fewer than one seed in a million."
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::harness;

    fn run(params: serde_json::Value) -> harness::Outcome {
        let params = serde_json::from_value(params).unwrap();
        let params = ResolvedParams::resolve(&MonteCarloPi.spec().params, Some(&params)).unwrap();
        let params = MonteCarloPiParams::from_params(&params).unwrap();
        harness::time_cpu_run(MonteCarloPi.prepare_cpu(&params).unwrap(), 2, |_, _| {})
    }

    #[test]
    fn the_estimate_is_within_its_error_of_pi() {
        let samples = 3 * CHUNK + 11;
        let outcome = run(json!({ "samples": samples, "seed": 8 }));
        let v = &outcome.result.verification;
        assert!(v.passed, "{v:?}");
        let out = &outcome.result.output;
        assert_eq!(out["samples"], samples);
        let estimate = out["estimate"].as_f64().unwrap();
        assert_eq!(
            estimate,
            4.0 * out["hits"].as_f64().unwrap() / samples as f64
        );
        assert!((estimate - PI).abs() <= 5.0 * out["std_error"].as_f64().unwrap());
        assert_eq!(outcome.result.throughput.unit, "Gsamples/s");
    }

    #[test]
    fn the_count_does_not_depend_on_the_split() {
        let whole = count_hits(3, 0..10_000);
        assert_eq!(whole, count_hits(3, 0..1234) + count_hits(3, 1234..10_000));
        assert_ne!(whole, count_hits(4, 0..10_000));
    }

    #[test]
    fn the_grid_is_unbiased() {
        // Counting the cell centres of a whole grid inside the quarter disc gives π/4 of the
        // square to within the grid's resolution: the half cell offset leaves no bias.
        let cells = |bits: u32| -> u64 {
            let n = 1u64 << bits;
            let r2 = 1u64 << (2 * bits + 2);
            (0..n)
                .map(|x| {
                    (0..n)
                        .filter(|y| (2 * x + 1).pow(2) + (2 * y + 1).pow(2) <= r2)
                        .count() as u64
                })
                .sum()
        };
        let fraction = cells(8) as f64 / (1u64 << 16) as f64;
        assert!((4.0 * fraction - PI).abs() < 1e-3, "{fraction}");
        // The largest coordinates do not overflow.
        let max = 2 * ((1u64 << BITS) - 1) + 1;
        assert!(max
            .checked_mul(max)
            .and_then(|s| s.checked_add(s))
            .is_some());
    }

    #[test]
    fn a_wrong_count_is_caught() {
        let samples = 1 << 20;
        let good = estimate((PI / 4.0 * samples as f64).round() as u64, samples);
        assert!(verify(good, samples).passed);
        // Counting the points on the wrong side of the circle, or every point.
        assert!(!verify(4.0 - good, samples).passed);
        assert!(!verify(estimate(samples, samples), samples).passed);
        assert!(!verify(f64::NAN, samples).passed);
        // Off by six standard deviations.
        assert!(!verify(PI + 6.0 * std_error(samples), samples).passed);
    }
}

//! `saxpy`: the BLAS level-1 update `y = a·x + y` in place, over `n` single-precision floats.

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
use cudarc::driver::{CudaFunction, CudaSlice, PushKernelArg};

/// Elements per rayon task: large enough to amortise scheduling, small enough to balance.
const CHUNK: usize = 1 << 16;

/// The random streams `x` and the initial `y` are drawn from, in `[-1, 1)`.
const STREAM_X: u64 = 0;
const STREAM_Y: u64 = 1;

/// The CUDA source of the GPU path, with the entry points it launches.
const CUDA: &[CudaSource] = &[cuda_source!("saxpy.cu", ["saxpy"])];

/// Single-precision `a·x + y`.
pub struct Saxpy;

/// The parameters of a `saxpy` job.
pub struct SaxpyParams {
    n: usize,
    a: f32,
    seed: u64,
}

impl FromParams for SaxpyParams {
    fn from_params(params: &ResolvedParams) -> Result<Self, ParamError> {
        Ok(SaxpyParams {
            n: params.count("n")?,
            a: params.number("a")? as f32,
            seed: params.integer("seed")?,
        })
    }
}

impl Kernel for Saxpy {
    type Params = SaxpyParams;

    fn spec(&self) -> KernelSpec {
        KernelSpec {
            name: "saxpy".into(),
            description: "The BLAS update y = a·x + y over n single-precision floats, in place: \
                          a memory-bandwidth test that reads x and y and writes y."
                .into(),
            devices: vec![DeviceKind::Cpu, DeviceKind::Cuda],
            params: vec![
                spec::integer(
                    "n",
                    1 << 22,
                    1,
                    1 << 30,
                    Some("elements"),
                    "Length of x and y.",
                ),
                spec::number("a", 2.0, -1e3, 1e3, None, "The scalar a."),
                spec::seed(),
            ],
            throughput_formula: "3 × n × 4 bytes / median time (GB/s)".into(),
        }
    }

    fn cuda_sources(&self) -> &'static [CudaSource] {
        CUDA
    }

    fn memory_bytes(&self, params: &SaxpyParams) -> u64 {
        2 * params.n as u64 * 4
    }

    fn prepare_cpu(&self, params: &SaxpyParams) -> Result<Box<dyn CpuRun>, String> {
        let n = params.n;
        let seed = params.seed;
        let mut x = vec![0.0; n];
        let mut y = vec![0.0; n];
        rng::fill_uniform_f32(seed, STREAM_X, &mut x, -1.0, 1.0);
        rng::fill_uniform_f32(seed, STREAM_Y, &mut y, -1.0, 1.0);
        Ok(Box::new(SaxpyRun {
            seed,
            a: params.a,
            x,
            y,
            updates: 0,
        }))
    }

    fn prepare_cuda(&self, params: &SaxpyParams, gpu: &mut Gpu) -> Result<PreparedGpu, GpuError> {
        gpu.ensure_fits(self.memory_bytes(params), "saxpy")?;
        let (module, report) = gpu.module(CUDA[0].file, CUDA[0].source, &Options::default())?;
        let n = params.n;
        let seed = params.seed;
        let (mut x, mut y) = (vec![0.0; n], vec![0.0; n]);
        rng::fill_uniform_f32(seed, STREAM_X, &mut x, -1.0, 1.0);
        rng::fill_uniform_f32(seed, STREAM_Y, &mut y, -1.0, 1.0);
        let run = SaxpyGpu {
            function: Gpu::function(&module, "saxpy")?,
            seed,
            a: params.a,
            n,
            x: gpu::upload(gpu, &x)?,
            y: gpu::upload(gpu, &y)?,
            updates: 0,
        };
        Ok(PreparedGpu::new(run, vec![report]))
    }

    /// One multiply-add (2 FLOP) per element; x and y read, y written.
    fn op_counts(&self, params: &Self::Params) -> Option<super::OpCounts> {
        let n = params.n as f64;
        Some(super::OpCounts {
            flops: 2.0 * n,
            bytes: 3.0 * n * 4.0,
            ceiling: "fp32",
        })
    }

    fn roofline_note(&self) -> &'static str {
        "2 × n FLOP over 3 × n × 4 bytes (1/6 FLOP/byte)"
    }
}

struct SaxpyGpu {
    function: CudaFunction,
    seed: u64,
    a: f32,
    n: usize,
    x: CudaSlice<f32>,
    y: CudaSlice<f32>,
    updates: u32,
}

impl GpuRun for SaxpyGpu {
    fn step(&mut self, gpu: &Gpu) -> Result<(), GpuError> {
        let n = self.n as u64;
        let mut launch = gpu.stream.launch_builder(&self.function);
        launch.arg(&self.a).arg(&self.x).arg(&mut self.y).arg(&n);
        // SAFETY: saxpy(float, const float*, float*, unsigned long long) gets a, two buffers
        // of n floats and n; it touches no index at or past n.
        unsafe { launch.launch(Gpu::linear_launch(n / 4, BLOCK)) }.during("launching saxpy")?;
        self.updates += 1;
        Ok(())
    }

    fn finish(self: Box<Self>, gpu: &mut Gpu) -> Result<RunReport, GpuError> {
        let mut y = gpu::download(gpu, &self.y)?;
        y.truncate(self.n);
        Ok(RunReport {
            work: Work::Bytes(3.0 * self.n as f64 * 4.0),
            verification: verify(self.seed, self.a, self.updates, &y),
            output: json!({ "n": self.n, "a": self.a, "updates": self.updates }),
            artifact: None,
        })
    }
}

struct SaxpyRun {
    seed: u64,
    a: f32,
    x: Vec<f32>,
    y: Vec<f32>,
    /// How many times `y` has been updated: every run, the warm-up included, moves it on.
    updates: u32,
}

impl CpuRun for SaxpyRun {
    fn run(&mut self) {
        let a = self.a;
        self.y
            .par_chunks_mut(CHUNK)
            .zip(self.x.par_chunks(CHUNK))
            .for_each(|(y, x)| {
                for (y, x) in y.iter_mut().zip(x) {
                    *y += a * x;
                }
            });
        self.updates += 1;
    }

    fn finish(self: Box<Self>) -> RunReport {
        let n = self.y.len();
        RunReport {
            work: Work::Bytes(3.0 * n as f64 * 4.0),
            verification: verify(self.seed, self.a, self.updates, &self.y),
            output: json!({ "n": n, "a": self.a, "updates": self.updates }),
            artifact: None,
        }
    }
}

/// Checks every element of `y` after `updates` in-place updates against the closed form
/// `y₀ + updates·a·x` in double precision, with `x` and `y₀` drawn again from the seed.
///
/// The error of an element is taken relative to `|y₀| + updates·|a·x|`, which bounds every
/// intermediate value of `y`: relative to `|y|` itself it would blow up wherever the updates
/// cancel `y₀`. Each single-precision update rounds at most twice (or once when fused into an
/// FMA, as GPUs do), by at most ε/2 of that bound each, so `updates` of them stay within
/// `2·updates·ε`, the tolerance.
fn verify(seed: u64, a: f32, updates: u32, y: &[f32]) -> Verification {
    let (a, r) = (a as f64, updates as f64);
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    for (i, &got) in y.iter().enumerate() {
        let x = rng::uniform_f32_at(seed, STREAM_X, i as u64, -1.0, 1.0) as f64;
        let y0 = rng::uniform_f32_at(seed, STREAM_Y, i as u64, -1.0, 1.0) as f64;
        let want = y0 + r * (a * x);
        let bound = y0.abs() + r * (a * x).abs();
        // NaN and ∞ become f64::MAX: JSON has no number for them, and they must fail the check.
        let abs = (got as f64 - want).abs().min(f64::MAX);
        let rel = (abs / bound.max(f64::MIN_POSITIVE)).min(f64::MAX);
        max_abs = max_abs.max(abs);
        max_rel = max_rel.max(rel);
    }
    let tolerance = 2.0 * r * f32::EPSILON as f64;
    Verification {
        passed: max_rel <= tolerance,
        max_abs_error: max_abs,
        max_rel_error: max_rel,
        tolerance,
        method: format!(
            "Every element of y compared with y₀ + r·a·x in double precision from the seed, \
             r = {updates} in-place updates, error relative to |y₀| + r·|a·x|; the tolerance \
             2·r·ε_f32 is the worst-case rounding of r single-precision updates, fused or not."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::harness;

    fn run(params: serde_json::Value, repetitions: u32) -> harness::Outcome {
        let params = serde_json::from_value(params).unwrap();
        let params = ResolvedParams::resolve(&Saxpy.spec().params, Some(&params)).unwrap();
        let params = SaxpyParams::from_params(&params).unwrap();
        harness::time_cpu_run(Saxpy.prepare_cpu(&params).unwrap(), repetitions, |_, _| {})
    }

    #[test]
    fn repeated_updates_pass_the_check() {
        let outcome = run(json!({ "n": 2 * CHUNK + 3, "a": -1.5, "seed": 4 }), 3);
        let v = &outcome.result.verification;
        assert!(v.passed, "{v:?}");
        // The warm-up counts: one plus three timed runs.
        assert_eq!(outcome.result.output["updates"], 4);
        assert!((v.tolerance - 8.0 * f32::EPSILON as f64).abs() < 1e-15);
    }

    #[test]
    fn a_stale_or_wrong_element_is_caught() {
        let (seed, a, n) = (3, 2.5f32, 500);
        let mut y: Vec<f32> = (0..n as u64)
            .map(|i| rng::uniform_f32_at(seed, STREAM_Y, i, -1.0, 1.0))
            .collect();
        for _ in 0..2 {
            for (i, y) in y.iter_mut().enumerate() {
                *y += a * rng::uniform_f32_at(seed, STREAM_X, i as u64, -1.0, 1.0);
            }
        }
        assert!(verify(seed, a, 2, &y).passed);
        // Counting one update too many, as if the warm-up had been forgotten, fails.
        assert!(!verify(seed, a, 3, &y).passed);
        let mut wrong = y.clone();
        wrong[n / 2] += 1e-3;
        assert!(!verify(seed, a, 2, &wrong).passed);
        wrong[n / 2] = f32::NAN;
        assert!(!verify(seed, a, 2, &wrong).passed);
    }
}

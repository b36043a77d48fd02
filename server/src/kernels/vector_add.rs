//! `vector_add`: `c = a + b` over `n` single-precision floats, a three-stream bandwidth test.

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

/// The random streams `a` and `b` are drawn from, in `[-1, 1)`.
const STREAM_A: u64 = 0;
const STREAM_B: u64 = 1;

/// The CUDA source of the GPU path, with the entry points it launches.
const CUDA: &[CudaSource] = &[cuda_source!("vector_add.cu", ["vector_add"])];

/// Element-wise sum of two vectors.
pub struct VectorAdd;

pub struct VectorAddParams {
    n: usize,
    seed: u64,
}

impl FromParams for VectorAddParams {
    fn from_params(params: &ResolvedParams) -> Result<Self, ParamError> {
        Ok(VectorAddParams {
            n: params.count("n")?,
            seed: params.integer("seed")?,
        })
    }
}

impl Kernel for VectorAdd {
    type Params = VectorAddParams;

    fn spec(&self) -> KernelSpec {
        KernelSpec {
            name: "vector_add".into(),
            description: "Adds two vectors of n single-precision floats element by element \
                          (c = a + b): a memory-bandwidth test that reads two streams and \
                          writes one."
                .into(),
            devices: vec![DeviceKind::Cpu, DeviceKind::Cuda],
            params: vec![
                spec::integer(
                    "n",
                    1 << 22,
                    1,
                    1 << 30,
                    Some("elements"),
                    "Length of each vector.",
                ),
                spec::seed(),
            ],
            throughput_formula: "3 × n × 4 bytes / median time (GB/s)".into(),
        }
    }

    fn cuda_sources(&self) -> &'static [CudaSource] {
        CUDA
    }

    fn memory_bytes(&self, params: &VectorAddParams) -> u64 {
        3 * params.n as u64 * 4
    }

    fn prepare_cpu(&self, params: &VectorAddParams) -> Result<Box<dyn CpuRun>, String> {
        let VectorAddParams { n, seed } = *params;
        let mut a = vec![0.0; n];
        let mut b = vec![0.0; n];
        rng::fill_uniform_f32(seed, STREAM_A, &mut a, -1.0, 1.0);
        rng::fill_uniform_f32(seed, STREAM_B, &mut b, -1.0, 1.0);
        Ok(Box::new(VectorAddRun {
            seed,
            a,
            b,
            c: vec![0.0; n],
        }))
    }

    fn prepare_cuda(
        &self,
        params: &VectorAddParams,
        gpu: &mut Gpu,
    ) -> Result<PreparedGpu, GpuError> {
        gpu.ensure_fits(self.memory_bytes(params), "vector_add")?;
        let (module, report) = gpu.module(CUDA[0].file, CUDA[0].source, &Options::default())?;
        let VectorAddParams { n, seed } = *params;
        let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
        rng::fill_uniform_f32(seed, STREAM_A, &mut a, -1.0, 1.0);
        rng::fill_uniform_f32(seed, STREAM_B, &mut b, -1.0, 1.0);
        let run = VectorAddGpu {
            function: Gpu::function(&module, "vector_add")?,
            seed,
            n,
            a: gpu::upload(gpu, &a)?,
            b: gpu::upload(gpu, &b)?,
            c: gpu::zeros(gpu, n)?,
        };
        Ok(PreparedGpu::new(run, vec![report]))
    }

    /// One add per element; two floats read and one written.
    fn op_counts(&self, params: &Self::Params) -> Option<super::OpCounts> {
        let n = params.n as f64;
        Some(super::OpCounts {
            flops: n,
            bytes: 3.0 * n * 4.0,
            ceiling: "fp32",
        })
    }

    fn roofline_note(&self) -> &'static str {
        "n FLOP over 3 × n × 4 bytes (1/12 FLOP/byte)"
    }
}

struct VectorAddGpu {
    function: CudaFunction,
    seed: u64,
    n: usize,
    a: CudaSlice<f32>,
    b: CudaSlice<f32>,
    c: CudaSlice<f32>,
}

impl GpuRun for VectorAddGpu {
    fn step(&mut self, gpu: &Gpu) -> Result<(), GpuError> {
        let n = self.n as u64;
        let mut launch = gpu.stream.launch_builder(&self.function);
        launch.arg(&self.a).arg(&self.b).arg(&mut self.c).arg(&n);
        // SAFETY: vector_add(const float*, const float*, float*, unsigned long long) gets
        // three buffers of n floats and n; it touches no index at or past n.
        unsafe { launch.launch(Gpu::linear_launch(n / 4, BLOCK)) }
            .during("launching vector_add")?;
        Ok(())
    }

    fn finish(self: Box<Self>, gpu: &mut Gpu) -> Result<RunReport, GpuError> {
        let mut c = gpu::download(gpu, &self.c)?;
        c.truncate(self.n);
        Ok(RunReport {
            work: Work::Bytes(3.0 * self.n as f64 * 4.0),
            verification: verify(self.seed, &c),
            output: json!({ "n": self.n }),
            artifact: None,
        })
    }
}

struct VectorAddRun {
    seed: u64,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl CpuRun for VectorAddRun {
    fn run(&mut self) {
        self.c
            .par_chunks_mut(CHUNK)
            .zip(self.a.par_chunks(CHUNK))
            .zip(self.b.par_chunks(CHUNK))
            .for_each(|((c, a), b)| {
                for ((c, a), b) in c.iter_mut().zip(a).zip(b) {
                    *c = a + b;
                }
            });
    }

    fn finish(self: Box<Self>) -> RunReport {
        let n = self.c.len();
        RunReport {
            work: Work::Bytes(3.0 * n as f64 * 4.0),
            verification: verify(self.seed, &self.c),
            output: json!({ "n": n }),
            artifact: None,
        }
    }
}

/// Checks every element of `c` against `a + b`, with `a` and `b` drawn again from the seed so
/// that the reference shares nothing with the kernel's buffers.
fn verify(seed: u64, c: &[f32]) -> Verification {
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    for (i, &got) in c.iter().enumerate() {
        let a = rng::uniform_f32_at(seed, STREAM_A, i as u64, -1.0, 1.0);
        let b = rng::uniform_f32_at(seed, STREAM_B, i as u64, -1.0, 1.0);
        let want = a + b;
        // NaN and ∞ become f64::MAX: JSON has no number for them, and they must fail the check.
        let abs = (got as f64 - want as f64).abs().min(f64::MAX);
        let rel = (abs / (want.abs() as f64).max(f64::MIN_POSITIVE)).min(f64::MAX);
        max_abs = max_abs.max(abs);
        max_rel = max_rel.max(rel);
    }
    // IEEE 754 addition is correctly rounded on every device, so the sums must be identical.
    let tolerance = 0.0;
    Verification {
        passed: max_rel <= tolerance,
        max_abs_error: max_abs,
        max_rel_error: max_rel,
        tolerance,
        method: "Every element of c compared with a + b computed sequentially from the seed; \
                 addition is exact up to its one correct rounding, so the tolerance is zero."
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::harness;

    fn run(params: serde_json::Value) -> harness::Outcome {
        let params = serde_json::from_value(params).unwrap();
        let params = ResolvedParams::resolve(&VectorAdd.spec().params, Some(&params)).unwrap();
        let params = VectorAddParams::from_params(&params).unwrap();
        harness::time_cpu_run(VectorAdd.prepare_cpu(&params).unwrap(), 2, |_, _| {})
    }

    #[test]
    fn sums_pass_the_exact_check() {
        // Not a multiple of the chunk, so the last task is a short one.
        let outcome = run(json!({ "n": 3 * CHUNK + 5, "seed": 9 }));
        let v = &outcome.result.verification;
        assert!(v.passed, "{v:?}");
        assert_eq!(v.max_abs_error, 0.0);
        assert_eq!(outcome.result.output["n"], 3 * CHUNK + 5);
        assert_eq!(outcome.result.throughput.unit, "GB/s");
        assert!(outcome.artifact.is_none());
    }

    #[test]
    fn a_wrong_or_missing_element_is_caught() {
        let n = 1000;
        let c: Vec<f32> = (0..n as u64)
            .map(|i| {
                rng::uniform_f32_at(1, STREAM_A, i, -1.0, 1.0)
                    + rng::uniform_f32_at(1, STREAM_B, i, -1.0, 1.0)
            })
            .collect();
        assert!(verify(1, &c).passed);
        let mut off = c.clone();
        off[n - 1] = f32::from_bits(off[n - 1].to_bits() + 1);
        assert!(!verify(1, &off).passed);
        let mut nan = c.clone();
        nan[0] = f32::NAN;
        let v = verify(1, &nan);
        assert!(!v.passed && v.max_abs_error == f64::MAX);
        // The job's result must still travel as JSON.
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(serde_json::from_str::<Verification>(&json).unwrap(), v);
        // The right sums of another seed's inputs are wrong for this one.
        assert!(!verify(2, &c).passed);
    }

    #[test]
    fn memory_counts_three_vectors() {
        let params = ResolvedParams::resolve(&VectorAdd.spec().params, None).unwrap();
        let params = VectorAddParams::from_params(&params).unwrap();
        assert_eq!(VectorAdd.memory_bytes(&params), 3 * 4 * (1 << 22));
    }
}

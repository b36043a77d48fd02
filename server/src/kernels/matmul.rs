//! `matmul`: the matrix product `C = A·B`: in single precision on the CPU through
//! `matrixmultiply`'s SGEMM, on a GPU through cuBLAS SGEMM (TF32 off) or the tiled
//! shared-memory teaching kernel of `matmul_tiled.cu`, chosen by `variant`; in the other
//! data types of `dtype` through the libraries ([`dtypes`], [`tensor`]).

mod dtypes;
mod tensor;

use gpulab_shared::peaks::GemmDtype;
use gpulab_shared::{Device, DeviceKind, KernelSpec, Verification};
use serde_json::json;

use super::gpu::{self, source};
use super::params::spec;
use super::{
    rng, CpuRun, GpuRun, Kernel, OpCounts, ParamError, PreparedGpu, ResolvedParams, RunReport, Work,
};
use crate::cuda::{DriverContext, Gpu, GpuError, Options};
use cudarc::cublas::{sys::cublasOperation_t, Gemm, GemmConfig};
use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

/// The random streams `A` and `B` are drawn from, in `[-1, 1)`.
const STREAM_A: u64 = 0;
const STREAM_B: u64 = 1;

/// The sequence that picks which entries of `C` are checked; fixed, so every run checks the
/// same ones.
const SAMPLE_SEED: u64 = 0x6D61_746D_756C;

/// Entries of `C` checked against a double-precision dot product.
const SAMPLE: usize = 256;

/// Dense matrix product.
pub struct Matmul;

impl Kernel for Matmul {
    fn spec(&self) -> KernelSpec {
        let dim =
            |name: &str, help: &str| spec::integer(name, 1024, 1, 16384, Some("elements"), help);
        KernelSpec {
            name: "matmul".into(),
            description: "Multiplies an m×k by a k×n single-precision matrix (C = A·B, \
                          row-major) with a cache-blocked SIMD GEMM: a floating-point \
                          throughput test."
                .into(),
            devices: vec![DeviceKind::Cpu, DeviceKind::Cuda],
            params: vec![
                dim("m", "Rows of A and C."),
                dim("n", "Columns of B and C."),
                dim(
                    "k",
                    "Columns of A, rows of B: the length of each dot product.",
                ),
                spec::seed(),
                spec::choice(
                    "variant",
                    "cublas",
                    &["cublas", "tiled"],
                    "On a CUDA device: cuBLAS SGEMM (TF32 off), or the tiled shared-memory \
                     kernel of the CUDA programming guide. The CPU always runs \
                     matrixmultiply's SGEMM.",
                ),
                spec::choice(
                    "dtype",
                    GemmDtype::Fp32.as_str(),
                    &GemmDtype::ALL.map(GemmDtype::as_str),
                    "The data type of A and B: fp32 (SIMT, TF32 off), fp64, or on the tensor \
                     cores tf32, fp16, bf16 (fp32 accumulation), fp8_e4m3 (per-tensor scales, \
                     compute capability 8.9 and above) and int8 (int32 accumulation). Types \
                     other than fp32 run with variant `cublas` only; fp8_e4m3 and int8 need \
                     m, n and k multiples of 16. Which a device runs: `choices_by_device`.",
                ),
            ],
            throughput_formula: "2 × m × n × k FLOP / median time (GFLOP/s)".into(),
        }
    }

    fn memory_bytes(&self, params: &ResolvedParams) -> u64 {
        let (m, n, k) = (params.u64("m"), params.u64("n"), params.u64("k"));
        let dtype = dtype(params);
        let workspace = match dtype {
            GemmDtype::Fp64 | GemmDtype::Fp32 => 0,
            _ => tensor::WORKSPACE_BYTES as u64,
        };
        (m * k + k * n) * dtype.input_bytes() as u64
            + m * n * dtypes::output_bytes(dtype)
            + workspace
    }

    /// FLOPs (int8: integer operations) `2·m·n·k`; bytes: A and B read once in the input
    /// type, C written once in the output type (fp16, bf16 for fp8_e4m3, int32 for int8).
    fn op_counts(&self, params: &ResolvedParams) -> Option<OpCounts> {
        let (m, n, k) = (
            params.u64("m") as f64,
            params.u64("n") as f64,
            params.u64("k") as f64,
        );
        let dtype = dtype(params);
        Some(OpCounts {
            flops: 2.0 * m * n * k,
            bytes: (m * k + k * n) * dtype.input_bytes() as f64
                + m * n * dtypes::output_bytes(dtype) as f64,
            ceiling: dtype.as_str(),
        })
    }

    fn device_choices(&self, device: &Device) -> Vec<(&'static str, Vec<String>)> {
        let dtypes = dtypes::dtypes_on(device);
        vec![(
            "dtype",
            dtypes.iter().map(|d| d.as_str().to_owned()).collect(),
        )]
    }

    fn check_params(&self, params: &ResolvedParams, device: &Device) -> Result<(), ParamError> {
        dtypes::check(dtype(params), params.str("variant"), shape(params), device)
    }

    fn prepare_cpu(&self, params: &ResolvedParams) -> Result<Box<dyn CpuRun>, String> {
        let shape = shape(params);
        let seed = params.u64("seed");
        match dtype(params) {
            GemmDtype::Fp32 => {}
            GemmDtype::Fp64 => return Ok(Box::new(dtypes::Fp64CpuRun::new(shape, seed))),
            other => {
                return Err(format!(
                    "dtype `{}` does not run on the CPU (fp64 and fp32 do)",
                    other.as_str()
                ))
            }
        }
        let mut a = vec![0.0; shape.m * shape.k];
        let mut b = vec![0.0; shape.k * shape.n];
        rng::fill_uniform_f32(seed, STREAM_A, &mut a, -1.0, 1.0);
        rng::fill_uniform_f32(seed, STREAM_B, &mut b, -1.0, 1.0);
        Ok(Box::new(MatmulRun {
            shape,
            a,
            b,
            c: vec![0.0; shape.m * shape.n],
        }))
    }

    fn prepare_cuda(
        &self,
        params: &ResolvedParams,
        gpu: &mut Gpu,
    ) -> Result<PreparedGpu, GpuError> {
        gpu.ensure_fits(self.memory_bytes(params), "matmul")?;
        let shape = shape(params);
        let dtype = dtype(params);
        if dtype != GemmDtype::Fp32 {
            return tensor::prepare(dtype, shape, params.u64("seed"), gpu);
        }
        let (variant, modules) = match params.str("variant") {
            "tiled" => {
                let (module, report) =
                    gpu.module("matmul_tiled.cu", source::MATMUL_TILED, &Options::default())?;
                (
                    Variant::Tiled(Gpu::function(&module, "matmul_tiled")?),
                    vec![report],
                )
            }
            _ => {
                gpu.blas()?;
                (Variant::Cublas, Vec::new())
            }
        };
        let seed = params.u64("seed");
        let mut a = vec![0.0; shape.m * shape.k];
        let mut b = vec![0.0; shape.k * shape.n];
        rng::fill_uniform_f32(seed, STREAM_A, &mut a, -1.0, 1.0);
        rng::fill_uniform_f32(seed, STREAM_B, &mut b, -1.0, 1.0);
        let run = MatmulGpu {
            variant,
            shape,
            a_device: gpu::upload(gpu, &a)?,
            b_device: gpu::upload(gpu, &b)?,
            c: gpu::zeros(gpu, shape.m * shape.n)?,
            a,
            b,
        };
        Ok(PreparedGpu::new(run, modules))
    }
}

/// The tile of `matmul_tiled.cu`: its blocks are `TILE × TILE` threads.
const TILE: u32 = 32;

enum Variant {
    Cublas,
    Tiled(CudaFunction),
}

struct MatmulGpu {
    variant: Variant,
    shape: Shape,
    /// The inputs, kept on the host for the reference dot products.
    a: Vec<f32>,
    b: Vec<f32>,
    a_device: CudaSlice<f32>,
    b_device: CudaSlice<f32>,
    c: CudaSlice<f32>,
}

impl GpuRun for MatmulGpu {
    fn step(&mut self, gpu: &Gpu) -> Result<(), GpuError> {
        let Shape { m, n, k } = self.shape;
        match &self.variant {
            Variant::Cublas => {
                // cuBLAS is column-major: a row-major C = A·B is the column-major
                // Cᵀ = Bᵀ·Aᵀ, with B (n×k column-major view) first.
                let cfg = GemmConfig {
                    transa: cublasOperation_t::CUBLAS_OP_N,
                    transb: cublasOperation_t::CUBLAS_OP_N,
                    m: n as i32,
                    n: m as i32,
                    k: k as i32,
                    alpha: 1.0f32,
                    lda: n as i32,
                    ldb: k as i32,
                    beta: 0.0f32,
                    ldc: n as i32,
                };
                let blas = gpu
                    .blas_ready()
                    .ok_or_else(|| GpuError::Other("cuBLAS was not started".into()))?;
                // SAFETY: B is k×n (leading dimension n), A is m×k (leading dimension k) and
                // C is m×n (leading dimension n), each a buffer of exactly that many floats.
                unsafe { blas.gemm(cfg, &self.b_device, &self.a_device, &mut self.c) }
                    .map_err(|e| GpuError::Other(format!("cuBLAS SGEMM failed: {e:?}")))?;
            }
            Variant::Tiled(function) => {
                let (mi, ni, ki) = (m as i32, n as i32, k as i32);
                let mut launch = gpu.stream.launch_builder(function);
                launch
                    .arg(&self.a_device)
                    .arg(&self.b_device)
                    .arg(&mut self.c)
                    .arg(&mi)
                    .arg(&ni)
                    .arg(&ki);
                let cfg = LaunchConfig {
                    grid_dim: ((n as u32).div_ceil(TILE), (m as u32).div_ceil(TILE), 1),
                    block_dim: (TILE, TILE, 1),
                    shared_mem_bytes: 0,
                };
                // SAFETY: matmul_tiled(const float*, const float*, float*, int, int, int)
                // gets A (m×k), B (k×n) and C (m×n) and guards every index by m, n and k.
                unsafe { launch.launch(cfg) }.during("launching matmul_tiled")?;
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>, gpu: &mut Gpu) -> Result<RunReport, GpuError> {
        let Shape { m, n, k } = self.shape;
        let c = gpu::download(gpu, &self.c)?;
        let (verification, checked) = verify(self.shape, &self.a, &self.b, &c[..m * n]);
        let (variant, arithmetic) = match self.variant {
            Variant::Cublas => ("cublas", dtypes::gpu_arithmetic(GemmDtype::Fp32)),
            Variant::Tiled(_) => ("tiled", dtypes::TILED_FP32),
        };
        let mut output = json!({
            "m": m, "n": n, "k": k,
            "checked_entries": checked,
            "variant": variant,
            "dtype": "fp32",
        });
        dtypes::merge(&mut output, arithmetic.json());
        Ok(RunReport {
            work: Work::Flops(2.0 * m as f64 * n as f64 * k as f64),
            verification,
            output,
            artifact: None,
        })
    }
}

/// `A` is `m×k`, `B` is `k×n`, `C` is `m×n`, all row-major.
#[derive(Debug, Clone, Copy)]
struct Shape {
    m: usize,
    n: usize,
    k: usize,
}

fn shape(params: &ResolvedParams) -> Shape {
    Shape {
        m: params.u64("m") as usize,
        n: params.u64("n") as usize,
        k: params.u64("k") as usize,
    }
}

/// The `dtype` parameter; fp32 for parameters stored before it existed.
fn dtype(params: &ResolvedParams) -> GemmDtype {
    params
        .as_map()
        .get("dtype")
        .and_then(|v| v.as_str())
        .and_then(GemmDtype::parse)
        .unwrap_or(GemmDtype::Fp32)
}

struct MatmulRun {
    shape: Shape,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl CpuRun for MatmulRun {
    fn run(&mut self) {
        let Shape { m, n, k } = self.shape;
        // SAFETY: `a` holds m·k, `b` k·n and `c` m·n floats, which the row strides (k, n, n)
        // and column strides (1) given here address exactly; `c` is a separate allocation
        // borrowed mutably, so it aliases neither input. With β = 0, C is only written.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                self.a.as_ptr(),
                k as isize,
                1,
                self.b.as_ptr(),
                n as isize,
                1,
                0.0,
                self.c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    }

    fn finish(self: Box<Self>) -> RunReport {
        let Shape { m, n, k } = self.shape;
        let (verification, checked) = verify(self.shape, &self.a, &self.b, &self.c);
        let mut output = json!({
            "m": m, "n": n, "k": k,
            "checked_entries": checked,
            "dtype": "fp32",
        });
        dtypes::merge(&mut output, dtypes::CPU_FP32.json());
        RunReport {
            work: Work::Flops(2.0 * m as f64 * n as f64 * k as f64),
            verification,
            output,
            artifact: None,
        }
    }
}

/// Checks a fixed sample of `C`'s entries against double-precision dot products with the
/// tolerance of single precision ([`dtypes::verify`]), returning the verification and the
/// number checked.
fn verify(shape: Shape, a: &[f32], b: &[f32], c: &[f32]) -> (Verification, usize) {
    let Shape { n, k, .. } = shape;
    dtypes::verify(
        shape,
        GemmDtype::Fp32,
        |i, l| a[i * k + l] as f64,
        |l, j| b[l * n + j] as f64,
        |i, j| c[i * n + j] as f64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::harness;

    fn run(params: serde_json::Value) -> harness::Outcome {
        let params = serde_json::from_value(params).unwrap();
        let params = ResolvedParams::resolve(&Matmul.spec().params, Some(&params)).unwrap();
        harness::time_cpu_run(Matmul.prepare_cpu(&params).unwrap(), 2, |_, _| {})
    }

    #[test]
    fn a_rectangular_product_passes_the_check() {
        let outcome = run(json!({ "m": 37, "n": 53, "k": 71, "seed": 5 }));
        let v = &outcome.result.verification;
        assert!(v.passed, "{v:?}");
        assert!(v.max_rel_error < v.tolerance);
        let out = &outcome.result.output;
        assert_eq!(
            (out["m"].as_u64(), out["n"].as_u64(), out["k"].as_u64()),
            (Some(37), Some(53), Some(71))
        );
        assert_eq!(out["checked_entries"], SAMPLE);
        assert_eq!(outcome.result.throughput.unit, "GFLOP/s");
    }

    #[test]
    fn small_products_are_checked_entirely() {
        let outcome = run(json!({ "m": 1, "n": 3, "k": 1 }));
        assert!(outcome.result.verification.passed);
        assert_eq!(outcome.result.output["checked_entries"], 3);
    }

    #[test]
    fn a_wrong_corner_or_transposed_product_is_caught() {
        let shape = Shape {
            m: 40,
            n: 30,
            k: 20,
        };
        let a: Vec<f32> = (0..shape.m * shape.k)
            .map(|i| rng::uniform_f32(1, i as u64) - 0.5)
            .collect();
        let b: Vec<f32> = (0..shape.k * shape.n)
            .map(|i| rng::uniform_f32(2, i as u64) - 0.5)
            .collect();
        let mut c = vec![0.0f32; shape.m * shape.n];
        for i in 0..shape.m {
            for j in 0..shape.n {
                c[i * shape.n + j] = (0..shape.k)
                    .map(|l| a[i * shape.k + l] * b[l * shape.n + j])
                    .sum();
            }
        }
        assert!(verify(shape, &a, &b, &c).0.passed);
        let mut wrong = c.clone();
        wrong[shape.m * shape.n - 1] += 0.01;
        assert!(!verify(shape, &a, &b, &wrong).0.passed);
        // B read as if it were column-major: plausible values, wrong product.
        let mut transposed = c.clone();
        for i in 0..shape.m {
            for j in 0..shape.n {
                let bt = |l: usize, j: usize| b[j * shape.k + l];
                transposed[i * shape.n + j] =
                    (0..shape.k).map(|l| a[i * shape.k + l] * bt(l, j)).sum();
            }
        }
        assert!(!verify(shape, &a, &b, &transposed).0.passed);
    }
}

//! `matmul`: the single-precision matrix product `C = A·B`: on the CPU through
//! `matrixmultiply`'s SGEMM, on a GPU through cuBLAS SGEMM (TF32 off) or one of the two
//! teaching kernels, chosen by `variant`: the shared-memory tiling of `matmul_tiled.cu`, and
//! `matmul_register_tiled.cu`, where each thread computes an 8×8 block of C in registers. In
//! the other data types of `dtype`, through the libraries ([`dtypes`], [`tensor`]).

mod dtypes;
mod tensor;

use gpulab_shared::peaks::GemmDtype;
use gpulab_shared::{Device, DeviceKind, KernelSpec, Verification};
use serde_json::json;

use super::gpu;
use super::params::{choice_enum, spec, Choice, FromParams, ParamError};
use super::{
    cuda_source, rng, CpuRun, CudaSource, GpuRun, Kernel, OpCounts, PreparedGpu, ResolvedParams,
    RunReport, Work,
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

/// The teaching kernels' sources; cuBLAS needs none.
const CUDA: &[CudaSource] = &[TILED, REGISTER_TILED];
const TILED: CudaSource = cuda_source!("matmul_tiled.cu", ["matmul_tiled"]);
const REGISTER_TILED: CudaSource =
    cuda_source!("matmul_register_tiled.cu", ["matmul_register_tiled"]);

choice_enum! {
    /// How a CUDA device computes the product: the ladder from the teaching kernels to cuBLAS.
    pub enum Variant {
        Cublas = "cublas",
        Tiled = "tiled",
        RegisterTiled = "register_tiled",
    }
}

/// Dense matrix product.
pub struct Matmul;

/// The parameters of a `matmul` job.
#[derive(Debug, Clone, Copy)]
pub struct MatmulParams {
    shape: Shape,
    seed: u64,
    variant: Variant,
    dtype: GemmDtype,
}

impl FromParams for MatmulParams {
    fn from_params(params: &ResolvedParams) -> Result<Self, ParamError> {
        Ok(MatmulParams {
            shape: Shape {
                m: params.count("m")?,
                n: params.count("n")?,
                k: params.count("k")?,
            },
            seed: params.integer("seed")?,
            variant: params.choice("variant")?,
            dtype: params.choice("dtype")?,
        })
    }
}

impl Choice for GemmDtype {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("fp64", GemmDtype::Fp64),
        ("fp32", GemmDtype::Fp32),
        ("tf32", GemmDtype::Tf32),
        ("fp16", GemmDtype::Fp16),
        ("bf16", GemmDtype::Bf16),
        ("fp8_e4m3", GemmDtype::Fp8E4m3),
        ("int8", GemmDtype::Int8),
    ];

    fn name(self) -> &'static str {
        self.as_str()
    }
}

impl Kernel for Matmul {
    type Params = MatmulParams;

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
                spec::choice_of(
                    "variant",
                    Variant::Cublas,
                    "On a CUDA device: cuBLAS SGEMM (TF32 off), the tiled shared-memory \
                     kernel of the CUDA programming guide, or the register-tiled teaching \
                     kernel (an 8×8 block of C per thread, float4 loads). The CPU always runs \
                     matrixmultiply's SGEMM.",
                ),
                spec::choice_of(
                    "dtype",
                    GemmDtype::Fp32,
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

    fn cuda_sources(&self) -> &'static [CudaSource] {
        CUDA
    }

    fn memory_bytes(&self, params: &MatmulParams) -> u64 {
        let Shape { m, n, k } = params.shape;
        let (m, n, k) = (m as u64, n as u64, k as u64);
        let dtype = params.dtype;
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
    fn op_counts(&self, params: &MatmulParams) -> Option<OpCounts> {
        let Shape { m, n, k } = params.shape;
        let (m, n, k) = (m as f64, n as f64, k as f64);
        let dtype = params.dtype;
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

    fn check_on_device(&self, params: &MatmulParams, device: &Device) -> Result<(), ParamError> {
        dtypes::check(params.dtype, params.variant, params.shape, device)
    }

    fn prepare_cpu(&self, params: &MatmulParams) -> Result<Box<dyn CpuRun>, String> {
        let MatmulParams {
            shape,
            seed,
            variant,
            dtype,
        } = *params;
        match dtype {
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
            variant,
            a,
            b,
            c: vec![0.0; shape.m * shape.n],
        }))
    }

    fn prepare_cuda(&self, params: &MatmulParams, gpu: &mut Gpu) -> Result<PreparedGpu, GpuError> {
        gpu.ensure_fits(self.memory_bytes(params), "matmul")?;
        let MatmulParams {
            shape,
            seed,
            variant,
            dtype,
        } = *params;
        if dtype != GemmDtype::Fp32 {
            return tensor::prepare(dtype, shape, seed, gpu);
        }
        let kernel = |gpu: &mut Gpu, source: CudaSource| {
            let (module, report) = gpu.module(source.file, source.source, &Options::default())?;
            Ok::<_, GpuError>((Gpu::function(&module, source.entry_points[0])?, report))
        };
        let (path, modules) = match variant {
            Variant::Tiled => {
                let (function, report) = kernel(gpu, TILED)?;
                (GpuPath::Tiled(function), vec![report])
            }
            Variant::RegisterTiled => {
                let (function, report) = kernel(gpu, REGISTER_TILED)?;
                (GpuPath::RegisterTiled(function), vec![report])
            }
            Variant::Cublas => {
                gpu.blas()?;
                (GpuPath::Cublas, Vec::new())
            }
        };
        let mut a = vec![0.0; shape.m * shape.k];
        let mut b = vec![0.0; shape.k * shape.n];
        rng::fill_uniform_f32(seed, STREAM_A, &mut a, -1.0, 1.0);
        rng::fill_uniform_f32(seed, STREAM_B, &mut b, -1.0, 1.0);
        let run = MatmulGpu {
            path,
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

    /// Provisional (branch `peaks`), until `gemm` gives matmul its data types: 2·m·n·k FLOP
    /// over the compulsory traffic, A and B read once and C written once, in fp32.
    fn roofline_note(&self) -> &'static str {
        "2 × m × n × k FLOP (int8: integer operations) over (m × k + k × n) × the input type's \
         bytes (A and B read once) + m × n × the output type's bytes (C written once: fp64, \
         fp32 for fp32 and tf32, fp16, bf16 for bf16 and fp8_e4m3, int32 for int8); the \
         ceiling is the dtype's peak"
    }
}

/// The tile of `matmul_tiled.cu`: its blocks are `TILE × TILE` threads.
const TILE: u32 = 32;

/// The tile of C a block of `matmul_register_tiled.cu` computes (`BM × BN`), and its threads:
/// the kernel's `#define`s, which a test compares with these.
const RT_BM: u32 = 128;
const RT_BN: u32 = 128;
const RT_THREADS: u32 = 256;

/// The launch of `matmul_register_tiled` for an m×n C: one block per `RT_BM × RT_BN` tile,
/// the last row and column of tiles partly outside C (the kernel guards every index).
fn register_tiled_launch(m: usize, n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((n as u32).div_ceil(RT_BN), (m as u32).div_ceil(RT_BM), 1),
        block_dim: (RT_THREADS, 1, 1),
        // Its tiles are static shared memory.
        shared_mem_bytes: 0,
    }
}

/// What a CUDA device runs: cuBLAS, or a teaching kernel's function.
enum GpuPath {
    Cublas,
    Tiled(CudaFunction),
    RegisterTiled(CudaFunction),
}

struct MatmulGpu {
    path: GpuPath,
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
        match &self.path {
            GpuPath::Cublas => {
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
            GpuPath::Tiled(function) => {
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
            GpuPath::RegisterTiled(function) => {
                let (mi, ni, ki) = (m as i32, n as i32, k as i32);
                let mut launch = gpu.stream.launch_builder(function);
                launch
                    .arg(&self.a_device)
                    .arg(&self.b_device)
                    .arg(&mut self.c)
                    .arg(&mi)
                    .arg(&ni)
                    .arg(&ki);
                // SAFETY: matmul_register_tiled(const float*, const float*, float*, int, int,
                // int) gets A (m×k), B (k×n) and C (m×n), guards every index by m, n and k,
                // and reads or writes float4s only where k (A) or n (B, C) is a multiple of 4,
                // which makes their addresses 16-byte aligned in these cuMemAlloc buffers. Its
                // blocks are the RT_THREADS threads its __launch_bounds__ names.
                unsafe { launch.launch(register_tiled_launch(m, n)) }
                    .during("launching matmul_register_tiled")?;
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>, gpu: &mut Gpu) -> Result<RunReport, GpuError> {
        let Shape { m, n, k } = self.shape;
        let c = gpu::download(gpu, &self.c)?;
        let (verification, checked) = verify(self.shape, &self.a, &self.b, &c[..m * n]);
        let arithmetic = match self.path {
            GpuPath::Cublas => dtypes::gpu_arithmetic(GemmDtype::Fp32),
            GpuPath::Tiled(_) => dtypes::TILED_FP32,
            GpuPath::RegisterTiled(_) => dtypes::REGISTER_TILED_FP32,
        };
        let mut output = json!({
            "m": m, "n": n, "k": k,
            "checked_entries": checked,
            "variant": self.variant.name(),
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

struct MatmulRun {
    shape: Shape,
    /// The variant asked for, which only a CUDA device distinguishes.
    variant: Variant,
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
            "ran": format!(
                "matrixmultiply's SGEMM: variant `{}` applies to CUDA devices only",
                self.variant.name()
            ),
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
        let params = MatmulParams::from_params(&params).unwrap();
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
    fn the_cpu_says_what_ran_whatever_the_variant() {
        for variant in ["cublas", "tiled", "register_tiled"] {
            let outcome = run(json!({ "m": 9, "n": 7, "k": 5, "variant": variant }));
            assert!(outcome.result.verification.passed, "{variant}");
            let ran = outcome.result.output["ran"].as_str().unwrap();
            assert!(
                ran.starts_with("matrixmultiply's SGEMM") && ran.contains(variant),
                "{ran}"
            );
        }
    }

    /// The `#define NAME value` integers of a CUDA source.
    fn defines(source: &str) -> std::collections::HashMap<&str, u32> {
        source
            .lines()
            .filter_map(|line| {
                let mut words = line.strip_prefix("#define ")?.split_whitespace();
                Some((words.next()?, words.next()?.parse().ok()?))
            })
            .collect()
    }

    /// The launch in Rust and the kernel's tile agree, and the kernel's index arithmetic,
    /// written out again here, gives every entry of C to exactly one thread and loads every
    /// entry of each tile exactly once, for sizes at and around the tile's edges. (The CUDA
    /// code cannot run here; the GPU check runs it against the reference.)
    #[test]
    fn register_tiled_launch_covers_c_once_and_matches_the_kernel() {
        let d = defines(REGISTER_TILED.source);
        let (bm, bn, bk, tm, tn, threads) =
            (d["BM"], d["BN"], d["BK"], d["TM"], d["TN"], d["THREADS"]);
        assert_eq!((bm, bn, threads), (RT_BM, RT_BN, RT_THREADS));
        assert_eq!((bm / tm) * (bn / tn), threads, "one TM×TN block per thread");
        assert_eq!(bm * bk, 4 * threads, "one float4 of A's tile per thread");
        assert_eq!(bk * bn, 4 * threads, "one float4 of B's tile per thread");
        assert!(bk % 4 == 0 && tm % 4 == 0 && tn % 4 == 0, "float4 steps");
        let shared = 4 * bk * (bm + bn);
        assert!(shared <= 48 << 10, "{shared} bytes of static shared memory");

        // Each thread's float4 of the A tile (row, first column) and of the B tile.
        let mut a_tile = vec![0u32; (bm * bk) as usize];
        let mut b_tile = vec![0u32; (bk * bn) as usize];
        for tid in 0..threads {
            let (a_row, a_col) = (tid / (bk / 4), (tid % (bk / 4)) * 4);
            let (b_row, b_col) = (tid / (bn / 4), (tid % (bn / 4)) * 4);
            for q in 0..4 {
                a_tile[(a_row * bk + a_col + q) as usize] += 1;
                b_tile[(b_row * bn + b_col + q) as usize] += 1;
            }
        }
        assert!(a_tile.iter().chain(&b_tile).all(|&count| count == 1));

        for (m, n) in [
            (1, 1),
            (127, 129),
            (128, 128),
            (129, 257),
            (300, 4),
            (5, 1000),
        ] {
            let cfg = register_tiled_launch(m, n);
            assert_eq!(cfg.block_dim, (threads, 1, 1));
            let (gx, gy, gz) = cfg.grid_dim;
            assert_eq!(gz, 1);
            // No block lies wholly outside C.
            assert!(((gx - 1) * bn) < n as u32 && ((gy - 1) * bm) < m as u32);
            let mut owners = vec![0u32; m * n];
            for (bx, by, tid) in (0..gx)
                .flat_map(|bx| (0..gy).map(move |by| (bx, by)))
                .flat_map(|(bx, by)| (0..threads).map(move |tid| (bx, by, tid)))
            {
                let (tx, ty) = (tid % (bn / tn), tid / (bn / tn));
                for i in 0..tm {
                    for j in 0..tn {
                        let row = (by * bm + ty * tm + i) as usize;
                        let col = (bx * bn + tx * tn + j) as usize;
                        if row < m && col < n {
                            owners[row * n + col] += 1;
                        }
                    }
                }
            }
            assert!(owners.iter().all(|&o| o == 1), "{m}×{n}");
        }
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

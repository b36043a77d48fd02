//! The GPU paths of `matmul`'s data types other than fp32: cuBLAS DGEMM for `fp64`, and
//! cuBLASLt for `tf32`, `fp16`, `bf16`, `fp8_e4m3` and `int8`, each with the accumulation
//! the library uses by default for the type (see [`dtypes::gpu_arithmetic`]).
//!
//! Layout: C = A·B is row-major, which cuBLAS (column-major) sees as Cᵀ = Bᵀ·Aᵀ. For
//! cuBLASLt, B is stored transposed (n×k row-major, so each column of B is contiguous) and
//! passed as its first operand with `CUBLAS_OP_T`, A as its second with `CUBLAS_OP_N`: the
//! "TN" form, the one layout cuBLASLt's FP8 and int8 kernels take on every architecture,
//! used for every type here so that one path serves them all.

use std::ffi::c_void;
use std::mem::size_of;

use cudarc::cublas::{sys::cublasOperation_t, Gemm, GemmConfig};
use cudarc::cublaslt::{result as lt, sys as ltsys};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};
use gpulab_shared::peaks::GemmDtype;
use serde_json::json;

use super::dtypes::{self, Arithmetic};
use super::Shape;
use crate::cuda::{library_present, Gpu, GpuError, Library};
use crate::kernels::{gpu, GpuRun, PreparedGpu, RunReport, Work};

/// The cuBLASLt workspace: NVIDIA's recommendation for Hopper (32 MiB), enough for every
/// earlier architecture too (4 MiB recommended).
pub const WORKSPACE_BYTES: usize = 32 << 20;

/// Prepares a `dtype` GEMM (anything but fp32) on the GPU: draws the inputs from `seed`,
/// converts them on the host, uploads them and picks cuBLASLt's algorithm.
pub fn prepare(
    dtype: GemmDtype,
    shape: Shape,
    seed: u64,
    gpu: &mut Gpu,
) -> Result<PreparedGpu, GpuError> {
    let (a, b) = dtypes::draw_f32(shape, seed);
    if dtype == GemmDtype::Fp64 {
        gpu.blas()?;
        let a: Vec<f64> = a.into_iter().map(f64::from).collect();
        let b: Vec<f64> = b.into_iter().map(f64::from).collect();
        let run = DgemmRun {
            shape,
            a_device: gpu::upload(gpu, &a)?,
            b_device: gpu::upload(gpu, &b)?,
            c: gpu::zeros(gpu, shape.m * shape.n)?,
            a,
            b,
        };
        return Ok(PreparedGpu::new(run, Vec::new()));
    }
    if !library_present(Library::CublasLt) {
        return Err(GpuError::Other(format!(
            "cuBLASLt (libcublasLt.so.12 or .13) is not installed on this host: dtype `{}` \
             needs it (install the nvidia-cublas wheel, or CUDA's libcublas package)",
            dtype.as_str()
        )));
    }
    let inputs = HostInputs::convert(dtype, shape, &a, &b);
    drop((a, b));
    LtGemm::new(dtype, shape, inputs, gpu).map(|run| PreparedGpu::new(run, Vec::new()))
}

/// `C = A·B` in double precision through cuBLAS DGEMM.
struct DgemmRun {
    shape: Shape,
    a: Vec<f64>,
    b: Vec<f64>,
    a_device: CudaSlice<f64>,
    b_device: CudaSlice<f64>,
    c: CudaSlice<f64>,
}

impl GpuRun for DgemmRun {
    fn step(&mut self, gpu: &Gpu) -> Result<(), GpuError> {
        let Shape { m, n, k } = self.shape;
        // Column-major Cᵀ = Bᵀ·Aᵀ, as the fp32 path.
        let cfg = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_N,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: n as i32,
            n: m as i32,
            k: k as i32,
            alpha: 1.0f64,
            lda: n as i32,
            ldb: k as i32,
            beta: 0.0f64,
            ldc: n as i32,
        };
        let blas = gpu
            .blas_ready()
            .ok_or_else(|| GpuError::Other("cuBLAS was not started".into()))?;
        // SAFETY: B is k×n (leading dimension n), A is m×k (leading dimension k) and C is
        // m×n (leading dimension n), each a buffer of exactly that many doubles.
        unsafe { blas.gemm(cfg, &self.b_device, &self.a_device, &mut self.c) }
            .map_err(|e| GpuError::Other(format!("cuBLAS DGEMM failed: {e:?}")))?;
        Ok(())
    }

    fn finish(self: Box<Self>, gpu: &mut Gpu) -> Result<RunReport, GpuError> {
        let Shape { n, k, .. } = self.shape;
        let c = gpu::download(gpu, &self.c)?;
        let (verification, checked) = dtypes::verify(
            self.shape,
            GemmDtype::Fp64,
            |i, l| self.a[i * k + l],
            |l, j| self.b[l * n + j],
            |i, j| c[i * n + j],
        );
        Ok(report(
            GemmDtype::Fp64,
            self.shape,
            verification,
            checked,
            json!({}),
        ))
    }
}

fn report(
    dtype: GemmDtype,
    shape: Shape,
    verification: gpulab_shared::Verification,
    checked: usize,
    extra: serde_json::Value,
) -> RunReport {
    let Shape { m, n, k } = shape;
    let ops = 2.0 * m as f64 * n as f64 * k as f64;
    let mut output = json!({
        "m": m, "n": n, "k": k,
        "checked_entries": checked,
        "variant": "cublas",
        "dtype": dtype.as_str(),
    });
    dtypes::merge(&mut output, dtypes::gpu_arithmetic(dtype).json());
    dtypes::merge(&mut output, extra);
    RunReport {
        work: if dtype == GemmDtype::Int8 {
            Work::Ops(ops)
        } else {
            Work::Flops(ops)
        },
        verification,
        output,
        artifact: None,
    }
}

/// A and Bᵀ as the GPU reads them, both row-major (A m×k, Bᵀ n×k).
enum HostInputs {
    /// TF32 values held in f32 (their 13 low mantissa bits zero).
    F32 {
        a: Vec<f32>,
        bt: Vec<f32>,
    },
    F16 {
        a: Vec<u16>,
        bt: Vec<u16>,
    },
    Bf16 {
        a: Vec<u16>,
        bt: Vec<u16>,
    },
    /// E4M3 codes of `x / dtypes::FP8_SCALE`.
    Fp8 {
        a: Vec<u8>,
        bt: Vec<u8>,
    },
    Int8 {
        a: Vec<i8>,
        bt: Vec<i8>,
    },
}

impl HostInputs {
    fn convert(dtype: GemmDtype, shape: Shape, a: &[f32], b: &[f32]) -> Self {
        let Shape { n, k, .. } = shape;
        fn map<T>(
            a: &[f32],
            b: &[f32],
            n: usize,
            k: usize,
            f: impl Fn(f32) -> T,
        ) -> (Vec<T>, Vec<T>) {
            let a = a.iter().map(|&x| f(x)).collect();
            let bt = (0..n * k)
                .map(|idx| f(b[(idx % k) * n + idx / k]))
                .collect();
            (a, bt)
        }
        match dtype {
            GemmDtype::Tf32 => {
                let (a, bt) = map(a, b, n, k, dtypes::tf32_round);
                HostInputs::F32 { a, bt }
            }
            GemmDtype::Fp16 => {
                let (a, bt) = map(a, b, n, k, dtypes::f16_from_f32);
                HostInputs::F16 { a, bt }
            }
            GemmDtype::Bf16 => {
                let (a, bt) = map(a, b, n, k, dtypes::bf16_from_f32);
                HostInputs::Bf16 { a, bt }
            }
            GemmDtype::Fp8E4m3 => {
                let (a, bt) = map(a, b, n, k, |x| dtypes::e4m3_from_f32(x / dtypes::FP8_SCALE));
                HostInputs::Fp8 { a, bt }
            }
            GemmDtype::Int8 => {
                let (a, bt) = map(a, b, n, k, dtypes::int8_from_unit);
                HostInputs::Int8 { a, bt }
            }
            GemmDtype::Fp64 | GemmDtype::Fp32 => {
                unreachable!("fp64 and fp32 do not run on cuBLASLt here")
            }
        }
    }

    /// The inputs' bytes, as the GPU stores them.
    fn bytes(&self) -> (Vec<u8>, Vec<u8>) {
        fn le<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
            v.iter().flat_map(|&x| f(x)).collect()
        }
        match self {
            HostInputs::F32 { a, bt } => (le(a, f32::to_le_bytes), le(bt, f32::to_le_bytes)),
            HostInputs::F16 { a, bt } | HostInputs::Bf16 { a, bt } => {
                (le(a, u16::to_le_bytes), le(bt, u16::to_le_bytes))
            }
            HostInputs::Fp8 { a, bt } => (a.clone(), bt.clone()),
            HostInputs::Int8 { a, bt } => (le(a, i8::to_le_bytes), le(bt, i8::to_le_bytes)),
        }
    }

    /// Element `idx` of A (`bt` false) or of Bᵀ (`bt` true), as the value the GPU multiplies.
    fn value(&self, bt: bool, idx: usize) -> f64 {
        fn pick<T: Copy>(a: &[T], b: &[T], bt: bool, idx: usize) -> T {
            if bt {
                b[idx]
            } else {
                a[idx]
            }
        }
        match self {
            HostInputs::F32 { a, bt: b } => pick(a, b, bt, idx) as f64,
            HostInputs::F16 { a, bt: b } => dtypes::f16_to_f64(pick(a, b, bt, idx)),
            HostInputs::Bf16 { a, bt: b } => dtypes::bf16_to_f64(pick(a, b, bt, idx)),
            HostInputs::Fp8 { a, bt: b } => {
                dtypes::e4m3_to_f64(pick(a, b, bt, idx)) * dtypes::FP8_SCALE as f64
            }
            HostInputs::Int8 { a, bt: b } => pick(a, b, bt, idx) as f64,
        }
    }
}

/// The cuBLASLt types of one GEMM: inputs, output, compute and scale (α, β) types.
struct LtTypes {
    input: ltsys::cudaDataType,
    output: ltsys::cudaDataType,
    compute: ltsys::cublasComputeType_t,
    scale: ltsys::cudaDataType,
}

fn lt_types(dtype: GemmDtype) -> LtTypes {
    use ltsys::cublasComputeType_t as C;
    use ltsys::cudaDataType as T;
    let (input, output, compute, scale) = match dtype {
        GemmDtype::Tf32 => (
            T::CUDA_R_32F,
            T::CUDA_R_32F,
            C::CUBLAS_COMPUTE_32F_FAST_TF32,
            T::CUDA_R_32F,
        ),
        GemmDtype::Fp16 => (
            T::CUDA_R_16F,
            T::CUDA_R_16F,
            C::CUBLAS_COMPUTE_32F,
            T::CUDA_R_32F,
        ),
        GemmDtype::Bf16 => (
            T::CUDA_R_16BF,
            T::CUDA_R_16BF,
            C::CUBLAS_COMPUTE_32F,
            T::CUDA_R_32F,
        ),
        GemmDtype::Fp8E4m3 => (
            T::CUDA_R_8F_E4M3,
            T::CUDA_R_16BF,
            C::CUBLAS_COMPUTE_32F,
            T::CUDA_R_32F,
        ),
        GemmDtype::Int8 => (
            T::CUDA_R_8I,
            T::CUDA_R_32I,
            C::CUBLAS_COMPUTE_32I,
            T::CUDA_R_32I,
        ),
        GemmDtype::Fp64 | GemmDtype::Fp32 => unreachable!("not a cuBLASLt type here"),
    };
    LtTypes {
        input,
        output,
        compute,
        scale,
    }
}

fn lt_error(what: &str, dtype: GemmDtype) -> impl Fn(lt::CublasError) -> GpuError + '_ {
    move |e| {
        GpuError::Other(format!(
            "cuBLASLt {what} for dtype `{}`: {e}",
            dtype.as_str()
        ))
    }
}

/// Owners of cuBLASLt's descriptors, destroyed when dropped.
struct Handle(ltsys::cublasLtHandle_t);
struct Desc(ltsys::cublasLtMatmulDesc_t);
struct Layout(ltsys::cublasLtMatrixLayout_t);
struct Preference(ltsys::cublasLtMatmulPreference_t);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtCreate and dropped once; nothing uses it afterwards.
        let _ = unsafe { lt::destroy_handle(self.0) };
    }
}

impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtMatmulDescCreate and dropped once.
        let _ = unsafe { lt::destroy_matmul_desc(self.0) };
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtMatrixLayoutCreate and dropped once.
        let _ = unsafe { lt::destroy_matrix_layout(self.0) };
    }
}

impl Drop for Preference {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtMatmulPreferenceCreate and dropped once.
        let _ = unsafe { lt::destroy_matmul_pref(self.0) };
    }
}

/// Sets a descriptor attribute to `value`.
///
/// # Safety
/// `T` must be the type cuBLASLt documents for `attr`.
unsafe fn set_desc<T>(
    desc: &Desc,
    attr: ltsys::cublasLtMatmulDescAttributes_t,
    value: &T,
) -> Result<(), lt::CublasError> {
    // SAFETY: `value` is a live T of size_of::<T>() bytes, which cuBLASLt copies; the
    // caller vouches that T is the attribute's type.
    unsafe {
        lt::set_matmul_desc_attribute(
            desc.0,
            attr,
            value as *const T as *const c_void,
            size_of::<T>(),
        )
    }
}

/// One cuBLASLt GEMM, its descriptors built and its algorithm chosen once, before the
/// timed runs. The handle and the descriptors are dropped after the buffers they name
/// (fields drop in declaration order: descriptors first, then the buffers).
struct LtGemm {
    dtype: GemmDtype,
    shape: Shape,
    desc: Desc,
    /// cuBLASLt's first operand (Bᵀ), second (A), and C (also D).
    layouts: [Layout; 3],
    algo: ltsys::cublasLtMatmulAlgo_t,
    handle: Handle,
    inputs: HostInputs,
    a_device: CudaSlice<u8>,
    bt_device: CudaSlice<u8>,
    c: CudaSlice<u8>,
    workspace: CudaSlice<u8>,
    /// The per-tensor scales of FP8's A and B, which `desc` points to.
    _scales: Option<(CudaSlice<f32>, CudaSlice<f32>)>,
}

impl LtGemm {
    fn new(
        dtype: GemmDtype,
        shape: Shape,
        inputs: HostInputs,
        gpu: &mut Gpu,
    ) -> Result<Self, GpuError> {
        let Shape { m, n, k } = shape;
        let types = lt_types(dtype);
        let (a_bytes, bt_bytes) = inputs.bytes();
        let a_device = gpu::upload(gpu, &a_bytes)?;
        let bt_device = gpu::upload(gpu, &bt_bytes)?;
        drop((a_bytes, bt_bytes));
        let c = gpu::zeros::<u8>(gpu, m * n * dtypes::output_bytes(dtype) as usize)?;
        let workspace = gpu::zeros::<u8>(gpu, WORKSPACE_BYTES)?;

        let handle = Handle(lt::create_handle().map_err(lt_error("could not start", dtype))?);
        let desc = Desc(
            lt::create_matmul_desc(types.compute, types.scale)
                .map_err(lt_error("refused the compute type", dtype))?,
        );
        let (transpose, keep) = (1i32, 0i32); // CUBLAS_OP_T, CUBLAS_OP_N
        use ltsys::cublasLtMatmulDescAttributes_t as D;
        // SAFETY: TRANSA and TRANSB are int32_t (cublasOperation_t).
        unsafe {
            set_desc(&desc, D::CUBLASLT_MATMUL_DESC_TRANSA, &transpose)
                .and_then(|()| set_desc(&desc, D::CUBLASLT_MATMUL_DESC_TRANSB, &keep))
        }
        .map_err(lt_error("refused the transposes", dtype))?;
        let scales = if dtype == GemmDtype::Fp8E4m3 {
            let scale_bt = gpu::upload(gpu, &[dtypes::FP8_SCALE])?;
            let scale_a = gpu::upload(gpu, &[dtypes::FP8_SCALE])?;
            let (bt_ptr, _) = scale_bt.device_ptr(&gpu.stream);
            let (a_ptr, _) = scale_a.device_ptr(&gpu.stream);
            // Fast accumulation off: cuBLASLt promotes the tensor cores' partial sums to
            // FP32 at intervals, its default and PyTorch's for `_scaled_mm`'s default.
            let fast_accumulation = 0i8;
            // SAFETY: the scale pointers are `const void*` to a device float that lives as
            // long as this GEMM (`_scales`); FAST_ACCUM is int8_t.
            unsafe {
                set_desc(&desc, D::CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &bt_ptr)
                    .and_then(|()| set_desc(&desc, D::CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &a_ptr))
                    .and_then(|()| {
                        set_desc(
                            &desc,
                            D::CUBLASLT_MATMUL_DESC_FAST_ACCUM,
                            &fast_accumulation,
                        )
                    })
            }
            .map_err(lt_error("refused the FP8 scales", dtype))?;
            Some((scale_bt, scale_a))
        } else {
            None
        };
        let layout = |ty, rows: usize, cols: usize, ld: usize| {
            lt::create_matrix_layout(ty, rows as u64, cols as u64, ld as i64)
                .map(Layout)
                .map_err(lt_error("refused a matrix layout", dtype))
        };
        // Column-major views: Bᵀ stored n×k row-major is k×n column-major (ld k), used
        // transposed; A stored m×k row-major is k×m column-major (ld k); C m×n row-major is
        // n×m column-major (ld n).
        let layouts = [
            layout(types.input, k, n, k)?,
            layout(types.input, k, m, k)?,
            layout(types.output, n, m, n)?,
        ];
        let preference = Preference(
            lt::create_matmul_pref().map_err(lt_error("could not create a preference", dtype))?,
        );
        let workspace_bytes = WORKSPACE_BYTES as u64;
        // SAFETY: MAX_WORKSPACE_BYTES is a uint64_t, copied by cuBLASLt.
        unsafe {
            lt::set_matmul_pref_attribute(
                preference.0,
                ltsys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &workspace_bytes as *const u64 as *const c_void,
                size_of::<u64>(),
            )
        }
        .map_err(lt_error("refused the workspace size", dtype))?;
        // Split-K partial sums are reduced in the compute type (fp32, int32) in the
        // workspace, never in a 16-bit output buffer, whose rounding per part the tolerance
        // does not allow for; no split-K at all stays allowed.
        let reductions =
            ltsys::cublasLtReductionScheme_t::CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE as u32;
        // SAFETY: REDUCTION_SCHEME_MASK is a uint32_t, copied by cuBLASLt.
        unsafe {
            lt::set_matmul_pref_attribute(
                preference.0,
                ltsys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                &reductions as *const u32 as *const c_void,
                size_of::<u32>(),
            )
        }
        .map_err(lt_error("refused the reduction schemes", dtype))?;
        // SAFETY: every descriptor is live; C doubles as D (same layout).
        let heuristic = unsafe {
            lt::get_matmul_algo_heuristic(
                handle.0,
                desc.0,
                layouts[0].0,
                layouts[1].0,
                layouts[2].0,
                layouts[2].0,
                preference.0,
            )
        }
        .map_err(|e| {
            GpuError::Other(format!(
                "cuBLASLt has no {} kernel for m = {m}, n = {n}, k = {k} on this GPU \
                 (compute capability {}.{}): {e}",
                dtype.as_str(),
                gpu.arch.0,
                gpu.arch.1
            ))
        })?;
        Ok(LtGemm {
            dtype,
            shape,
            desc,
            layouts,
            algo: heuristic.algo,
            handle,
            inputs,
            a_device,
            bt_device,
            c,
            workspace,
            _scales: scales,
        })
    }
}

impl GpuRun for LtGemm {
    fn step(&mut self, gpu: &Gpu) -> Result<(), GpuError> {
        let (alpha_f, beta_f) = (1.0f32, 0.0f32);
        let (alpha_i, beta_i) = (1i32, 0i32);
        let (alpha, beta) = if self.dtype == GemmDtype::Int8 {
            (
                &alpha_i as *const i32 as *const c_void,
                &beta_i as *const i32 as *const c_void,
            )
        } else {
            (
                &alpha_f as *const f32 as *const c_void,
                &beta_f as *const f32 as *const c_void,
            )
        };
        let stream = &gpu.stream;
        let (bt, _bt_sync) = self.bt_device.device_ptr(stream);
        let (a, _a_sync) = self.a_device.device_ptr(stream);
        let (c, _c_sync) = self.c.device_ptr_mut(stream);
        let (workspace, _w_sync) = self.workspace.device_ptr_mut(stream);
        // SAFETY: the descriptors and the algorithm were made for exactly these buffers'
        // types and shapes (Bᵀ k×n, A k×m, C n×m column-major, each buffer that large), α and
        // β are host values of the scale type (int32 for int8, float otherwise) that live
        // through the call, the workspace is WORKSPACE_BYTES long, and the stream is this
        // context's.
        unsafe {
            lt::matmul(
                self.handle.0,
                self.desc.0,
                alpha,
                beta,
                bt as *const c_void,
                self.layouts[0].0,
                a as *const c_void,
                self.layouts[1].0,
                c as *const c_void,
                self.layouts[2].0,
                c as *mut c_void,
                self.layouts[2].0,
                &self.algo,
                workspace as *mut c_void,
                WORKSPACE_BYTES,
                stream.cu_stream() as ltsys::cudaStream_t,
            )
        }
        .map_err(lt_error("matmul failed", self.dtype))
    }

    fn finish(self: Box<Self>, gpu: &mut Gpu) -> Result<RunReport, GpuError> {
        let Shape { n, k, .. } = self.shape;
        let bytes = gpu::download(gpu, &self.c)?;
        let c = decode_output(self.dtype, &bytes);
        let inputs = &self.inputs;
        let (verification, checked) = dtypes::verify(
            self.shape,
            self.dtype,
            |i, l| inputs.value(false, i * k + l),
            |l, j| inputs.value(true, j * k + l),
            |i, j| c[i * n + j],
        );
        let extra = if self.dtype == GemmDtype::Fp8E4m3 {
            json!({ "scale_a": dtypes::FP8_SCALE, "scale_b": dtypes::FP8_SCALE, "fast_accumulation": false })
        } else {
            json!({})
        };
        Ok(report(self.dtype, self.shape, verification, checked, extra))
    }
}

/// C's bytes as numbers, in the output type of `dtype`.
fn decode_output(dtype: GemmDtype, bytes: &[u8]) -> Vec<f64> {
    let width = dtypes::output_bytes(dtype) as usize;
    let arithmetic: Arithmetic = dtypes::gpu_arithmetic(dtype);
    bytes
        .chunks_exact(width)
        .map(|b| match arithmetic.output {
            "fp32" => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            "int32" => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            "fp16" => dtypes::f16_to_f64(u16::from_le_bytes([b[0], b[1]])),
            "bf16" => dtypes::bf16_to_f64(u16::from_le_bytes([b[0], b[1]])),
            other => unreachable!("no cuBLASLt output of type {other}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b_is_stored_transposed_and_read_back_as_b() {
        let shape = Shape { m: 2, n: 3, k: 4 };
        let a: Vec<f32> = (0..8).map(|x| x as f32 / 8.0).collect();
        let b: Vec<f32> = (0..12).map(|x| x as f32 / 16.0 - 0.5).collect();
        for dtype in [
            GemmDtype::Tf32,
            GemmDtype::Fp16,
            GemmDtype::Bf16,
            GemmDtype::Fp8E4m3,
        ] {
            let inputs = HostInputs::convert(dtype, shape, &a, &b);
            for l in 0..shape.k {
                for j in 0..shape.n {
                    assert_eq!(
                        inputs.value(true, j * shape.k + l),
                        b[l * shape.n + j] as f64,
                        "{dtype:?} B[{l}][{j}]"
                    );
                }
            }
            assert_eq!(inputs.value(false, 5), a[5] as f64);
            let (a_bytes, bt_bytes) = inputs.bytes();
            assert_eq!(a_bytes.len(), 8 * dtype.input_bytes() as usize);
            assert_eq!(bt_bytes.len(), 12 * dtype.input_bytes() as usize);
        }
        let ints = HostInputs::convert(GemmDtype::Int8, shape, &a, &b);
        assert_eq!(ints.value(true, 0), -64.0, "B[0][0] = −0.5 → −64");
    }

    #[test]
    fn outputs_decode_in_their_type() {
        assert_eq!(
            decode_output(GemmDtype::Fp16, &[0x00, 0x3c, 0x00, 0xc0]),
            [1.0, -2.0]
        );
        assert_eq!(decode_output(GemmDtype::Bf16, &[0x80, 0x3f]), [1.0]);
        assert_eq!(
            decode_output(GemmDtype::Fp8E4m3, &[0x80, 0x3f]),
            [1.0],
            "bf16 out"
        );
        assert_eq!(
            decode_output(GemmDtype::Int8, &(-7i32).to_le_bytes()),
            [-7.0]
        );
        assert_eq!(decode_output(GemmDtype::Tf32, &0.5f32.to_le_bytes()), [0.5]);
    }
}

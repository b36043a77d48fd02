//! `matmul`'s `dtype`: which data types a device runs, how each combines with `variant`,
//! the host-side conversions that give the GPU and the reference the very same inputs, the
//! tolerance each type's arithmetic earns, and the CPU's double-precision GEMM.
//!
//! Inputs are drawn from the seed as single-precision numbers in `[-1, 1)` (as for fp32) and
//! rounded on the host, to nearest with ties to even, to the type the GPU multiplies: the
//! reference dot products then use exactly the values the GPU sees, and the only error
//! left to bound is the library's accumulation and the rounding of its output.

use gpulab_shared::peaks::GemmDtype;
use gpulab_shared::{ComputeCapability, Device, DeviceKind, Verification};
use serde_json::{json, Value};

use super::{Shape, Variant, SAMPLE, SAMPLE_SEED, STREAM_A, STREAM_B};
use crate::kernels::params::Choice;
use crate::kernels::params::ParamError;
use crate::kernels::{rng, CpuRun, RunReport, Work};

/// The data types `device` runs, in [`GemmDtype::ALL`]'s order.
pub fn dtypes_on(device: &Device) -> Vec<GemmDtype> {
    GemmDtype::ALL
        .into_iter()
        .filter(|d| runs_on(*d, device))
        .collect()
}

fn compute_capability(device: &Device) -> Option<ComputeCapability> {
    device.cuda.as_ref().and_then(|c| c.compute_capability)
}

fn runs_on(dtype: GemmDtype, device: &Device) -> bool {
    match device.kind {
        DeviceKind::Cpu => dtype.supported_on_cpu(),
        DeviceKind::Cuda => compute_capability(device).is_some_and(|cc| dtype.supported_by(cc)),
    }
}

/// `fp8_e4m3` and `int8` run on cuBLASLt's 8-bit tensor-core kernels, which need every
/// dimension (and so every leading dimension) a multiple of 16 elements: 16 bytes.
pub const EIGHT_BIT_MULTIPLE: usize = 16;

/// The checks the parameter schema cannot state: `dtype` against the device, against
/// `variant`, and against the sizes the library can do.
pub fn check(
    dtype: GemmDtype,
    variant: Variant,
    shape: Shape,
    device: &Device,
) -> Result<(), ParamError> {
    let field = "params.dtype".to_owned();
    if !runs_on(dtype, device) {
        let runs: Vec<&str> = dtypes_on(device).into_iter().map(|d| d.as_str()).collect();
        let why = match (device.kind, compute_capability(device)) {
            (DeviceKind::Cpu, _) => "the CPU multiplies natively in fp64 and fp32 only".into(),
            (DeviceKind::Cuda, Some(cc)) => {
                let min = dtype.min_compute_capability();
                format!(
                    "compute capability {}.{}; {} needs {}.{} or above",
                    cc.major,
                    cc.minor,
                    dtype.as_str(),
                    min.major,
                    min.minor
                )
            }
            (DeviceKind::Cuda, None) => "its compute capability is unknown".into(),
        };
        return Err(ParamError {
            field,
            detail: format!(
                "`{}` does not run on {} ({}: {why}); this device runs dtype: {}",
                dtype.as_str(),
                device.id,
                device.name,
                runs.join(", ")
            ),
        });
    }
    if dtype != GemmDtype::Fp32 && variant != Variant::Cublas {
        return Err(ParamError {
            field,
            detail: format!(
                "dtype `{}` runs only with variant `cublas` (the libraries' GEMM); the \
                 `{}` teaching kernel is single-precision: use dtype `fp32` with it",
                dtype.as_str(),
                variant.name()
            ),
        });
    }
    if matches!(dtype, GemmDtype::Fp8E4m3 | GemmDtype::Int8) {
        let Shape { m, n, k } = shape;
        if [m, n, k].iter().any(|d| d % EIGHT_BIT_MULTIPLE != 0) {
            return Err(ParamError {
                field,
                detail: format!(
                    "dtype `{}` needs m, n and k to be multiples of {EIGHT_BIT_MULTIPLE} \
                     (cuBLASLt's 8-bit tensor-core kernels need 16-byte aligned rows), got \
                     m = {m}, n = {n}, k = {k}",
                    dtype.as_str()
                ),
            });
        }
    }
    Ok(())
}

/// What the GPU (or CPU) computes in for `dtype`, for `result.output`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arithmetic {
    /// The type of C as stored.
    pub output: &'static str,
    /// The type the dot products are summed in.
    pub accumulate: &'static str,
    pub compute_type: &'static str,
    pub library: &'static str,
}

impl Arithmetic {
    pub fn json(self) -> Value {
        json!({
            "output_type": self.output,
            "accumulate": self.accumulate,
            "compute_type": self.compute_type,
            "library": self.library,
        })
    }
}

/// The libraries' default accumulation for each type on a GPU with variant `cublas`.
pub fn gpu_arithmetic(dtype: GemmDtype) -> Arithmetic {
    let lt = |output, compute_type| Arithmetic {
        output,
        accumulate: "fp32",
        compute_type,
        library: "cuBLASLt",
    };
    match dtype {
        GemmDtype::Fp64 => Arithmetic {
            output: "fp64",
            accumulate: "fp64",
            compute_type: "CUBLAS_COMPUTE_64F (cublasDgemm)",
            library: "cuBLAS",
        },
        GemmDtype::Fp32 => Arithmetic {
            output: "fp32",
            accumulate: "fp32",
            compute_type: "CUBLAS_COMPUTE_32F (cublasSgemm, CUBLAS_DEFAULT_MATH: TF32 off)",
            library: "cuBLAS",
        },
        GemmDtype::Tf32 => lt("fp32", "CUBLAS_COMPUTE_32F_FAST_TF32"),
        GemmDtype::Fp16 => lt("fp16", "CUBLAS_COMPUTE_32F"),
        GemmDtype::Bf16 => lt("bf16", "CUBLAS_COMPUTE_32F"),
        GemmDtype::Fp8E4m3 => lt("bf16", "CUBLAS_COMPUTE_32F (FP8 fast accumulation off)"),
        GemmDtype::Int8 => Arithmetic {
            output: "int32",
            accumulate: "int32",
            compute_type: "CUBLAS_COMPUTE_32I",
            library: "cuBLASLt",
        },
    }
}

/// Bytes of one element of C as the GPU stores it.
pub fn output_bytes(dtype: GemmDtype) -> u64 {
    match dtype {
        GemmDtype::Fp64 => 8,
        GemmDtype::Fp32 | GemmDtype::Tf32 | GemmDtype::Int8 => 4,
        GemmDtype::Fp16 | GemmDtype::Bf16 | GemmDtype::Fp8E4m3 => 2,
    }
}

/// The per-tensor scale of the FP8 inputs: A and B are stored as `256·x`, and cuBLASLt
/// multiplies the product by `2⁻⁸ · 2⁻⁸`. Powers of two, so scaling adds no rounding.
pub const FP8_SCALE: f32 = 1.0 / 256.0;

// --- Host-side conversions, round to nearest, ties to even. ---

/// `x` rounded to a binary format with `mantissa_bits` stored mantissa bits and smallest
/// normal exponent `min_exp` (below it, subnormals of quantum 2^(min_exp − mantissa_bits)).
/// No overflow handling: the callers check their format's largest value.
fn round_to_format(x: f64, mantissa_bits: i32, min_exp: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let exp = exponent(x.abs()).max(min_exp);
    let quantum = 2f64.powi(exp - mantissa_bits);
    (x / quantum).round_ties_even() * quantum
}

/// ⌊log₂ |x|⌋ of a normal, finite, non-zero f64.
fn exponent(x: f64) -> i32 {
    ((x.to_bits() >> 52) & 0x7ff) as i32 - 1023
}

/// The sign, exponent field and mantissa field of a value `v ≥ 0` that the format
/// (`mantissa_bits`, `bias`, smallest normal exponent `1 − bias`) represents exactly.
fn encode(v: f64, mantissa_bits: i32, bias: i32) -> u32 {
    let min_exp = 1 - bias;
    if v < 2f64.powi(min_exp) {
        (v / 2f64.powi(min_exp - mantissa_bits)) as u32
    } else {
        let e = exponent(v);
        let mantissa = (v / 2f64.powi(e) - 1.0) * 2f64.powi(mantissa_bits);
        (((e + bias) as u32) << mantissa_bits) | mantissa as u32
    }
}

fn decode(bits: u32, mantissa_bits: i32, bias: i32) -> f64 {
    let exp_field = (bits >> mantissa_bits) as i32;
    let mantissa = (bits & ((1 << mantissa_bits) - 1)) as f64;
    if exp_field == 0 {
        mantissa * 2f64.powi(1 - bias - mantissa_bits)
    } else {
        (1.0 + mantissa / 2f64.powi(mantissa_bits)) * 2f64.powi(exp_field - bias)
    }
}

/// IEEE binary16: 10 mantissa bits, bias 15, largest finite 65504; larger values round to
/// infinity as IEEE rounding does.
pub fn f16_from_f32(x: f32) -> u16 {
    let sign = if x.is_sign_negative() { 0x8000 } else { 0 };
    if x.is_nan() {
        return 0x7e00;
    }
    let v = round_to_format((x as f64).abs(), 10, -14);
    if v >= 65536.0 {
        return sign | 0x7c00;
    }
    sign | encode(v, 10, 15) as u16
}

pub fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    match h & 0x7fff {
        0x7c00 => sign * f64::INFINITY,
        m if m > 0x7c00 => f64::NAN,
        m => sign * decode(m as u32, 10, 15),
    }
}

/// bfloat16: the top 16 bits of an f32, rounded.
pub fn bf16_from_f32(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) as u16) | 0x0040;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

pub fn bf16_to_f64(h: u16) -> f64 {
    f32::from_bits((h as u32) << 16) as f64
}

/// TF32 as the tensor cores read it: an f32 whose 13 lowest mantissa bits are zero.
/// Rounding on the host makes the tensor cores' own conversion (which may truncate) exact.
pub fn tf32_round(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    let bits = x.to_bits();
    let round = 0x0fff + ((bits >> 13) & 1);
    f32::from_bits(bits.wrapping_add(round) & !0x1fff)
}

/// OCP FP8 E4M3 (`__nv_fp8_e4m3`): 3 mantissa bits, bias 7, no infinities, largest finite
/// 448 (`0x7e`), NaN `0x7f`. Out-of-range values saturate to ±448, as
/// `__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3)` does.
pub fn e4m3_from_f32(x: f32) -> u8 {
    if x.is_nan() {
        return 0x7f;
    }
    let sign = if x.is_sign_negative() { 0x80 } else { 0 };
    let v = round_to_format((x as f64).abs(), 3, -6);
    if v >= 448.0 {
        return sign | 0x7e;
    }
    sign | encode(v, 3, 7) as u8
}

pub fn e4m3_to_f64(q: u8) -> f64 {
    let sign = if q & 0x80 != 0 { -1.0 } else { 1.0 };
    match q & 0x7f {
        0x7f => f64::NAN,
        m => sign * decode(m as u32, 3, 7),
    }
}

/// An int8 input from a uniform draw `x ∈ [-1, 1)`: ⌊128·x⌋, covering −128…127.
pub fn int8_from_unit(x: f32) -> i8 {
    (x * 128.0).floor().clamp(-128.0, 127.0) as i8
}

// --- Verification. ---

/// The unit roundoff of the types of the bound.
pub mod unit_roundoff {
    pub const FP64: f64 = 1.0 / (1u64 << 53) as f64;
    pub const FP32: f64 = 1.0 / (1u64 << 24) as f64;
    pub const FP16: f64 = 1.0 / (1u64 << 11) as f64;
    pub const BF16: f64 = 1.0 / (1u64 << 8) as f64;
    /// What FP8 tensor cores keep between promotions to FP32: about 14 significant bits
    /// (DeepSeek-V3 Technical Report, §3.3.2, measured on H800).
    pub const FP8_TENSOR_CORE_PARTIAL: f64 = 1.0 / (1u64 << 14) as f64;
}

/// Products FP8 tensor cores sum before cuBLASLt promotes the partial sum to FP32 (fast
/// accumulation off), taken as at most 128 (DeepSeek-V3's interval N_C = 128; NVIDIA does
/// not document cuBLASLt's). An assumption the GPU check tests.
pub const FP8_PROMOTION_INTERVAL: usize = 128;

/// The largest admissible error of an entry of C, relative to `Σ_l |a_il·b_lj|`, and how it
/// was derived.
#[derive(Debug, Clone, PartialEq)]
pub struct Tolerance {
    pub relative: f64,
    pub derivation: String,
}

/// The tolerance of a `dtype` product with inner dimension `k`.
///
/// The inputs are exact (rounded on the host), and products of two inputs are exact in the
/// accumulator, so the error is the accumulation's and the output's. A sum of `k` products
/// in a type of unit roundoff `u` errs by at most `γ_k·Σ|a_il·b_lj|` with `γ_k = k·u/(1 − k·u)`
/// (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1); `2·k·u` covers that
/// while `k·u ≤ 1/2`, and also adders that truncate rather than round (tensor cores do:
/// Fasi, Higham, Mikaitis and Pranesh, "Numerical behavior of NVIDIA tensor cores", 2021).
/// Rounding C to a narrower output type adds `u_out·|c_ij| ≤ u_out·Σ|a_il·b_lj|` (once:
/// cuBLASLt is allowed split-K only with its parts summed in the compute type).
pub fn tolerance(dtype: GemmDtype, k: usize) -> Tolerance {
    use unit_roundoff as u;
    let kf = k as f64;
    let fp32_sum = 2.0 * kf * u::FP32;
    let (relative, derivation) = match dtype {
        GemmDtype::Fp64 => (
            2.0 * kf * u::FP64,
            format!("2·k·u_fp64, u_fp64 = 2⁻⁵³ (fp64 accumulation), k = {k}"),
        ),
        GemmDtype::Fp32 => (
            fp32_sum,
            format!("2·k·u_fp32, u_fp32 = 2⁻²⁴ (fp32 accumulation), k = {k}"),
        ),
        GemmDtype::Tf32 => (
            fp32_sum,
            format!(
                "2·k·u_fp32, u_fp32 = 2⁻²⁴ (fp32 accumulation), k = {k}; the inputs are \
                 rounded to TF32 (u_tf32 = 2⁻¹¹) on the host, so the reference multiplies \
                 the same values"
            ),
        ),
        GemmDtype::Fp16 => (
            fp32_sum + u::FP16,
            format!(
                "2·k·u_fp32 + u_fp16, u_fp32 = 2⁻²⁴ (fp32 accumulation), u_fp16 = 2⁻¹¹ (C \
                 stored in fp16), k = {k}"
            ),
        ),
        GemmDtype::Bf16 => (
            fp32_sum + u::BF16,
            format!(
                "2·k·u_fp32 + u_bf16, u_fp32 = 2⁻²⁴ (fp32 accumulation), u_bf16 = 2⁻⁸ (C \
                 stored in bf16), k = {k}"
            ),
        ),
        GemmDtype::Fp8E4m3 => {
            let interval = k.min(FP8_PROMOTION_INTERVAL) as f64;
            (
                fp32_sum + 2.0 * interval * u::FP8_TENSOR_CORE_PARTIAL + u::BF16,
                format!(
                    "2·k·u_fp32 + 2·min(k, {FP8_PROMOTION_INTERVAL})·2⁻¹⁴ + u_bf16: fp32 \
                     accumulation across cuBLASLt's promotions (u_fp32 = 2⁻²⁴), about 14 \
                     bits within each run of at most {FP8_PROMOTION_INTERVAL} products on \
                     the tensor cores, C stored in bf16 (u_bf16 = 2⁻⁸), k = {k}; the inputs \
                     are E4M3 (u = 2⁻⁴) rounded on the host with power-of-two per-tensor \
                     scales (2⁻⁸ each), which add no rounding"
                ),
            )
        }
        GemmDtype::Int8 => (
            0.0,
            format!(
                "exact: int8 products summed in int32 cannot round or overflow \
                 (|c_ij| ≤ k·128² = {} < 2³¹), k = {k}",
                k as u64 * 128 * 128
            ),
        ),
    };
    Tolerance {
        relative,
        derivation,
    }
}

/// Checks a fixed sample of `C`'s entries (the four corners always among them) against dot
/// products in double precision of the very inputs the device multiplied, returning the
/// verification and the number checked. `a(i, l)`, `b(l, j)` and `c(i, j)` read the inputs
/// and the output, whatever their layout and type.
pub fn verify(
    shape: Shape,
    dtype: GemmDtype,
    a: impl Fn(usize, usize) -> f64,
    b: impl Fn(usize, usize) -> f64,
    c: impl Fn(usize, usize) -> f64,
) -> (Verification, usize) {
    let Shape { m, n, k } = shape;
    let corners = [0, n - 1, (m - 1) * n, m * n - 1];
    let sample = rng::sample_indices(SAMPLE_SEED, m * n, SAMPLE, &corners);
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    for &index in &sample {
        let (i, j) = (index / n, index % n);
        let (mut dot, mut magnitude) = (0.0f64, 0.0f64);
        for l in 0..k {
            let product = a(i, l) * b(l, j);
            dot += product;
            magnitude += product.abs();
        }
        // NaN and ∞ become f64::MAX: JSON has no number for them, and they must fail the check.
        let abs = (c(i, j) - dot).abs();
        let abs = if abs.is_nan() {
            f64::MAX
        } else {
            abs.min(f64::MAX)
        };
        let rel = if abs == 0.0 {
            0.0
        } else {
            (abs / magnitude.max(f64::MIN_POSITIVE)).min(f64::MAX)
        };
        max_abs = max_abs.max(abs);
        max_rel = max_rel.max(rel);
    }
    let tolerance = tolerance(dtype, k);
    let verification = Verification {
        passed: max_rel <= tolerance.relative,
        max_abs_error: max_abs,
        max_rel_error: max_rel,
        tolerance: tolerance.relative,
        method: format!(
            "{} entries of C, the corners among them, compared with dot products in double \
             precision of the same {} inputs, error relative to Σ_l |a_il·b_lj|; tolerance {}.",
            sample.len(),
            dtype.as_str(),
            tolerance.derivation
        ),
    };
    (verification, sample.len())
}

// --- The CPU's fp64 GEMM. ---

/// Double-precision `C = A·B` on the CPU through `matrixmultiply`'s DGEMM.
pub struct Fp64CpuRun {
    shape: Shape,
    a: Vec<f64>,
    b: Vec<f64>,
    c: Vec<f64>,
}

impl Fp64CpuRun {
    /// The fp32 job's inputs, widened: the same draws from the same seed.
    pub fn new(shape: Shape, seed: u64) -> Self {
        let (a, b) = draw_f32(shape, seed);
        Fp64CpuRun {
            shape,
            a: a.into_iter().map(f64::from).collect(),
            b: b.into_iter().map(f64::from).collect(),
            c: vec![0.0; shape.m * shape.n],
        }
    }
}

/// A (m×k) and B (k×n), row-major, drawn from `seed` in `[-1, 1)` as every dtype starts.
pub fn draw_f32(shape: Shape, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut a = vec![0.0; shape.m * shape.k];
    let mut b = vec![0.0; shape.k * shape.n];
    rng::fill_uniform_f32(seed, STREAM_A, &mut a, -1.0, 1.0);
    rng::fill_uniform_f32(seed, STREAM_B, &mut b, -1.0, 1.0);
    (a, b)
}

impl CpuRun for Fp64CpuRun {
    fn run(&mut self) {
        let Shape { m, n, k } = self.shape;
        // SAFETY: `a` holds m·k, `b` k·n and `c` m·n doubles, which the row strides (k, n, n)
        // and column strides (1) given here address exactly; `c` is a separate allocation
        // borrowed mutably, so it aliases neither input. With β = 0, C is only written.
        unsafe {
            matrixmultiply::dgemm(
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
        let (verification, checked) = verify(
            self.shape,
            GemmDtype::Fp64,
            |i, l| self.a[i * k + l],
            |l, j| self.b[l * n + j],
            |i, j| self.c[i * n + j],
        );
        let mut output = json!({
            "m": m, "n": n, "k": k,
            "checked_entries": checked,
            "dtype": "fp64",
        });
        merge(&mut output, CPU_FP64.json());
        RunReport {
            work: Work::Flops(2.0 * m as f64 * n as f64 * k as f64),
            verification,
            output,
            artifact: None,
        }
    }
}

pub const CPU_FP32: Arithmetic = Arithmetic {
    output: "fp32",
    accumulate: "fp32",
    compute_type: "sgemm (FP32 SIMD FMA)",
    library: "matrixmultiply",
};

pub const CPU_FP64: Arithmetic = Arithmetic {
    output: "fp64",
    accumulate: "fp64",
    compute_type: "dgemm (FP64 SIMD FMA)",
    library: "matrixmultiply",
};

pub const TILED_FP32: Arithmetic = Arithmetic {
    output: "fp32",
    accumulate: "fp32",
    compute_type: "FP32 FFMA on the SIMT cores",
    library: "gpulab matmul_tiled.cu",
};

pub const REGISTER_TILED_FP32: Arithmetic = Arithmetic {
    output: "fp32",
    accumulate: "fp32",
    compute_type: "FP32 FFMA on the SIMT cores",
    library: "gpulab matmul_register_tiled.cu",
};

/// Adds the fields of the object `extra` to the object `output`.
pub fn merge(output: &mut Value, extra: Value) {
    if let (Some(out), Value::Object(extra)) = (output.as_object_mut(), extra) {
        out.extend(extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpulab_shared::CudaDeviceInfo;

    #[test]
    fn fp16_conversion_matches_known_bit_patterns() {
        let cases: &[(f32, u16)] = &[
            (0.0, 0x0000),
            (-0.0, 0x8000),
            (1.0, 0x3c00),
            (-2.0, 0xc000),
            (0.1, 0x2e66),
            (1.0 / 3.0, 0x3555),
            (65504.0, 0x7bff),
            // Halfway between 65504 and 65536 (the first power beyond): to even, infinity.
            (65520.0, 0x7c00),
            (65519.0, 0x7bff),
            (f32::INFINITY, 0x7c00),
            (2f32.powi(-14), 0x0400),
            (2f32.powi(-24), 0x0001),
            (2f32.powi(-25), 0x0000),
            (3.0 * 2f32.powi(-26), 0x0001),
            // Ties to even: 1 + 2⁻¹¹ → 1, 1 + 3·2⁻¹¹ → 1 + 2⁻⁹.
            (1.0 + 2f32.powi(-11), 0x3c00),
            (1.0 + 3.0 * 2f32.powi(-11), 0x3c02),
        ];
        for &(x, bits) in cases {
            assert_eq!(f16_from_f32(x), bits, "{x:e}");
        }
        assert_eq!(f16_from_f32(f32::NAN) & 0x7c00, 0x7c00);
        for bits in (0..0x7c00u16).step_by(7) {
            let x = f16_to_f64(bits) as f32;
            assert_eq!(f16_from_f32(x), bits, "round trip of {bits:#06x}");
            assert_eq!(f16_from_f32(-x), bits | 0x8000);
        }
    }

    #[test]
    fn bf16_conversion_matches_known_bit_patterns() {
        let cases: &[(f32, u16)] = &[
            (1.0, 0x3f80),
            (-2.0, 0xc000),
            (std::f32::consts::PI, 0x4049),
            (0.1, 0x3dcd),
            (1.0 + 2f32.powi(-8), 0x3f80),
            (1.0 + 3.0 * 2f32.powi(-8), 0x3f82),
            (f32::MAX, 0x7f80),
            (f32::INFINITY, 0x7f80),
        ];
        for &(x, bits) in cases {
            assert_eq!(bf16_from_f32(x), bits, "{x:e}");
        }
        assert!(bf16_to_f64(bf16_from_f32(f32::NAN)).is_nan());
        assert_eq!(bf16_to_f64(0x4049), 3.140625);
    }

    #[test]
    fn tf32_rounding_keeps_ten_mantissa_bits() {
        assert_eq!(tf32_round(1.0), 1.0);
        assert_eq!(tf32_round(1.0 + 2f32.powi(-11)), 1.0, "a tie goes to even");
        assert_eq!(
            tf32_round(1.0 + 3.0 * 2f32.powi(-11)),
            1.0 + 2f32.powi(-9),
            "a tie goes to even"
        );
        assert_eq!(
            tf32_round(1.0 + 2f32.powi(-11) + 2f32.powi(-20)),
            1.0 + 2f32.powi(-10)
        );
        assert_eq!(tf32_round(0.1).to_bits() & 0x1fff, 0);
        assert_eq!(
            tf32_round(0.1),
            f32::from_bits(0x3dcc_c000),
            "0x3dcccccd rounds down"
        );
    }

    #[test]
    fn e4m3_conversion_matches_known_bit_patterns() {
        let cases: &[(f32, u8)] = &[
            (0.0, 0x00),
            (1.0, 0x38),
            (0.5, 0x30),
            (-2.0, 0xc0),
            (448.0, 0x7e),
            (-448.0, 0xfe),
            // Saturating: beyond the largest finite value, and infinity.
            (500.0, 0x7e),
            (f32::INFINITY, 0x7e),
            (2f32.powi(-6), 0x08),
            (2f32.powi(-9), 0x01),
            (7.0 * 2f32.powi(-9), 0x07),
            (2f32.powi(-10), 0x00),
            (1.5 * 2f32.powi(-10), 0x01),
            // Ties to even: 1.0625 → 1.0, 1.1875 → 1.25.
            (1.0625, 0x38),
            (1.1875, 0x3a),
            (240.0, 0x77),
        ];
        for &(x, bits) in cases {
            assert_eq!(e4m3_from_f32(x), bits, "{x:e}");
        }
        assert_eq!(e4m3_from_f32(f32::NAN), 0x7f);
        assert!(e4m3_to_f64(0x7f).is_nan());
        for q in 0..0x7fu8 {
            let x = e4m3_to_f64(q) as f32;
            assert_eq!(e4m3_from_f32(x), q, "round trip of {q:#04x}");
        }
        assert_eq!(e4m3_to_f64(0x7e), 448.0);
    }

    #[test]
    fn int8_inputs_cover_the_whole_range() {
        assert_eq!(int8_from_unit(-1.0), -128);
        assert_eq!(int8_from_unit(0.0), 0);
        assert_eq!(int8_from_unit(0.999_999), 127);
        assert_eq!(int8_from_unit(-0.001), -1);
    }

    #[test]
    fn tolerances_grow_with_k_and_with_coarser_types() {
        let k = 4096;
        let t = |d| tolerance(d, k).relative;
        assert_eq!(t(GemmDtype::Fp64), 2.0 * 4096.0 * 2f64.powi(-53));
        assert_eq!(t(GemmDtype::Fp32), 2.0 * 4096.0 * 2f64.powi(-24));
        // The old fp32 tolerance, k·ε_f32, is unchanged.
        assert_eq!(t(GemmDtype::Fp32), 4096.0 * f32::EPSILON as f64);
        assert_eq!(t(GemmDtype::Tf32), t(GemmDtype::Fp32));
        assert_eq!(t(GemmDtype::Fp16), t(GemmDtype::Fp32) + 2f64.powi(-11));
        assert_eq!(t(GemmDtype::Bf16), t(GemmDtype::Fp32) + 2f64.powi(-8));
        assert_eq!(
            t(GemmDtype::Fp8E4m3),
            t(GemmDtype::Fp32) + 2.0 * 128.0 * 2f64.powi(-14) + 2f64.powi(-8)
        );
        assert_eq!(t(GemmDtype::Int8), 0.0);
        assert!(tolerance(GemmDtype::Fp32, 2 * k).relative > t(GemmDtype::Fp32));
        // Below the promotion interval, FP8's tensor-core term shrinks with k.
        assert!(tolerance(GemmDtype::Fp8E4m3, 64).relative < t(GemmDtype::Fp8E4m3));
        for d in GemmDtype::ALL {
            let text = tolerance(d, k).derivation;
            assert!(text.contains("k = 4096"), "{d:?}: {text}");
            // Never vacuous: a relative error of 1 (a wrong sign, a missing term) fails.
            assert!(tolerance(d, 16384).relative < 0.05, "{d:?}");
        }
    }

    /// A product computed as the device would (exact sums rounded to the output type) passes;
    /// the same with one entry off by a little more than the tolerance fails.
    #[test]
    fn a_faithful_product_passes_and_a_perturbed_one_fails() {
        let shape = Shape {
            m: 48,
            n: 32,
            k: 64,
        };
        let (a32, b32) = draw_f32(shape, 7);
        for dtype in GemmDtype::ALL {
            // How the device sees an input, and how it stores an exact sum.
            type Rounding = (fn(f32) -> f64, fn(f64) -> f64);
            let (quantise, round_out): Rounding = match dtype {
                GemmDtype::Fp64 => (|x| x as f64, |x| x),
                GemmDtype::Fp32 => (|x| x as f64, |x| x as f32 as f64),
                GemmDtype::Tf32 => (|x| tf32_round(x) as f64, |x| x as f32 as f64),
                GemmDtype::Fp16 => (
                    |x| f16_to_f64(f16_from_f32(x)),
                    |x| f16_to_f64(f16_from_f32(x as f32)),
                ),
                GemmDtype::Bf16 => (
                    |x| bf16_to_f64(bf16_from_f32(x)),
                    |x| bf16_to_f64(bf16_from_f32(x as f32)),
                ),
                GemmDtype::Fp8E4m3 => (
                    |x| e4m3_to_f64(e4m3_from_f32(x / FP8_SCALE)) * FP8_SCALE as f64,
                    |x| bf16_to_f64(bf16_from_f32(x as f32)),
                ),
                GemmDtype::Int8 => (|x| int8_from_unit(x) as f64, |x| x),
            };
            let a: Vec<f64> = a32.iter().map(|&x| quantise(x)).collect();
            let b: Vec<f64> = b32.iter().map(|&x| quantise(x)).collect();
            let Shape { m, n, k } = shape;
            let mut c: Vec<f64> = (0..m * n)
                .map(|idx| {
                    let (i, j) = (idx / n, idx % n);
                    round_out((0..k).map(|l| a[i * k + l] * b[l * n + j]).sum())
                })
                .collect();
            let check = |c: &[f64]| {
                verify(
                    shape,
                    dtype,
                    |i, l| a[i * k + l],
                    |l, j| b[l * n + j],
                    |i, j| c[i * n + j],
                )
                .0
            };
            let v = check(&c);
            assert!(v.passed, "{dtype:?}: {v:?}");
            assert!(v.method.contains(dtype.as_str()), "{}", v.method);
            // One corner off by twice the tolerance (or by one, for exact int8).
            let last = m * n - 1;
            let (i, j) = (last / n, last % n);
            let magnitude: f64 = (0..k).map(|l| (a[i * k + l] * b[l * n + j]).abs()).sum();
            let tol = tolerance(dtype, k).relative;
            c[last] +=
                (2.0 * tol * magnitude)
                    .max(1.0e-300)
                    .max(if tol == 0.0 { 1.0 } else { 0.0 });
            let v = check(&c);
            assert!(!v.passed, "{dtype:?}: a perturbed corner passed: {v:?}");
            c[last] = f64::NAN;
            assert!(!check(&c).passed, "{dtype:?}: NaN passed");
        }
    }

    fn gpu(major: u32, minor: u32) -> Device {
        Device {
            id: "cuda:0".into(),
            kind: DeviceKind::Cuda,
            name: "Test GPU".into(),
            total_memory_bytes: Some(80 << 30),
            free_memory_bytes: Some(80 << 30),
            cuda: Some(CudaDeviceInfo {
                compute_capability: Some(ComputeCapability { major, minor }),
                ..Default::default()
            }),
            cpu: None,
            last_diagnostic: None,
            peaks: Vec::new(),
        }
    }

    fn cpu() -> Device {
        Device {
            id: "cpu".into(),
            kind: DeviceKind::Cpu,
            name: "Test CPU".into(),
            total_memory_bytes: None,
            free_memory_bytes: None,
            cuda: None,
            cpu: Some(Default::default()),
            last_diagnostic: None,
            peaks: Vec::new(),
        }
    }

    const SQUARE: Shape = Shape {
        m: 1024,
        n: 1024,
        k: 1024,
    };

    #[test]
    fn a_device_is_offered_and_refused_by_its_compute_capability() {
        let names =
            |d: &Device| -> Vec<&str> { dtypes_on(d).into_iter().map(|d| d.as_str()).collect() };
        assert_eq!(names(&cpu()), ["fp64", "fp32"]);
        assert_eq!(
            names(&gpu(8, 0)),
            ["fp64", "fp32", "tf32", "fp16", "bf16", "int8"]
        );
        assert_eq!(names(&gpu(9, 0)).len(), 7);
        let e = check(GemmDtype::Fp8E4m3, Variant::Cublas, SQUARE, &gpu(8, 0)).unwrap_err();
        assert_eq!(e.field, "params.dtype");
        assert!(e.detail.contains("compute capability 8.0"), "{}", e.detail);
        assert!(e.detail.contains("8.9"), "{}", e.detail);
        assert!(
            e.detail.contains("fp64, fp32, tf32, fp16, bf16, int8"),
            "{}",
            e.detail
        );
        assert!(check(GemmDtype::Fp8E4m3, Variant::Cublas, SQUARE, &gpu(8, 9)).is_ok());
        let e = check(GemmDtype::Bf16, Variant::Cublas, SQUARE, &cpu()).unwrap_err();
        assert!(
            e.detail.contains("this device runs dtype: fp64, fp32"),
            "{}",
            e.detail
        );
        assert!(check(GemmDtype::Fp64, Variant::Cublas, SQUARE, &cpu()).is_ok());
    }

    #[test]
    fn only_fp32_runs_the_teaching_kernels_and_8_bit_types_need_multiples_of_16() {
        let h100 = gpu(9, 0);
        assert!(check(GemmDtype::Fp32, Variant::Tiled, SQUARE, &h100).is_ok());
        let e = check(GemmDtype::Bf16, Variant::Tiled, SQUARE, &h100).unwrap_err();
        assert_eq!(e.field, "params.dtype");
        assert!(e.detail.contains("variant `cublas`"), "{}", e.detail);
        let odd = Shape {
            m: 1024,
            n: 1000,
            k: 1024,
        };
        for dtype in [GemmDtype::Fp8E4m3, GemmDtype::Int8] {
            let e = check(dtype, Variant::Cublas, odd, &h100).unwrap_err();
            assert!(e.detail.contains("multiples of 16"), "{}", e.detail);
            assert!(e.detail.contains("n = 1000"), "{}", e.detail);
        }
        assert!(check(GemmDtype::Bf16, Variant::Cublas, odd, &h100).is_ok());
    }

    #[test]
    fn the_cpu_fp64_product_passes_its_check() {
        let shape = Shape {
            m: 37,
            n: 53,
            k: 71,
        };
        let mut run = Box::new(Fp64CpuRun::new(shape, 5));
        run.run();
        let report = run.finish();
        assert!(report.verification.passed, "{:?}", report.verification);
        assert!(report.verification.max_rel_error < 1e-12);
        assert_eq!(report.output["accumulate"], "fp64");
        assert_eq!(report.output["library"], "matrixmultiply");
    }
}

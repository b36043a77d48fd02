//! What a device could do at most, and how near a job came: the theoretical peaks of
//! `GET /api/devices/{id}`, `result.fraction_of_peak` on every job that has one, the data
//! types of `matmul`'s `dtype`, and the roofline of `GET /api/devices/{id}/roofline`.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::ComputeCapability;

/// The names of [`Peak::name`].
pub mod names {
    /// Device memory bandwidth, bytes counted once (read or write), in GB/s.
    pub const MEMORY_BANDWIDTH: &str = "memory_bandwidth";
    /// The host↔device link, one direction, in GB/s.
    pub const PCIE: &str = "pcie";
}

/// How a peak was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PeakBasis {
    /// From the device's attributes and the architecture table (`formula`, `source`).
    Computed,
    /// A figure from the vendor's datasheet (`source`).
    Datasheet,
    /// Measured on this machine (the CPU's STREAM-style memory bandwidth): a ceiling that
    /// was reached, not a theoretical one.
    Measured,
}

/// One theoretical (or measured) ceiling of a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Peak {
    /// [`names::MEMORY_BANDWIDTH`], [`names::PCIE`], or a [`GemmDtype`] name for the
    /// arithmetic peak of that data type (`fp64`, `fp32` SIMT, `tf32`, `fp16`, `bf16`,
    /// `fp8_e4m3`, `int8`, dense, without sparsity).
    pub name: String,
    pub value: f64,
    /// `GB/s`, `GFLOP/s` or `GOP/s` (int8).
    pub unit: String,
    pub basis: PeakBasis,
    /// The arithmetic with this device's figures, such as
    /// `"132 SMs × 1.98 GHz × 128 FMA/clock/SM × 2 FLOP/FMA"`.
    pub formula: String,
    /// Where the constants of the formula come from (a datasheet, a whitepaper's table, a
    /// measurement), with its address where it has one.
    pub source: String,
}

/// How near a job's figure came to its device's peak: `result.fraction_of_peak`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FractionOfPeak {
    /// `result.throughput.value / peak_value`, both in `unit`.
    pub fraction: f64,
    /// [`Peak::name`] of the peak compared with.
    pub peak: String,
    pub peak_value: f64,
    pub unit: String,
    pub basis: PeakBasis,
    /// How the job's figure counts its work, such as "bytes read + written, each once
    /// (a device-to-device copy of n bytes counts 2n, as bandwidthTest does)".
    pub convention: String,
}

/// The work of one repetition, for the roofline: `result.roofline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RooflinePoint {
    /// Floating-point (or integer, for `int8`) operations of one repetition.
    pub flops: f64,
    /// Bytes of memory traffic of one repetition, as the catalog's formula counts them.
    pub bytes: f64,
    /// `flops / bytes`, FLOP per byte.
    pub arithmetic_intensity: f64,
    /// Achieved GFLOP/s (GOP/s for `int8`): `flops / median time`.
    pub achieved: f64,
    /// The compute ceiling this job is under: a [`Peak::name`] such as `fp32` or `bf16`.
    pub ceiling: String,
}

/// `GET /api/devices/{id}/roofline`: the device's roofline and its finished jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Roofline {
    pub device: String,
    /// The bandwidth slope; `null` when the device's bandwidth is unknown.
    pub bandwidth: Option<Peak>,
    /// One compute ceiling per data type the device has a peak for, highest first.
    pub ceilings: Vec<Peak>,
    /// The device's succeeded jobs that have a [`RooflinePoint`], newest first (at most
    /// 500).
    pub points: Vec<RooflineJob>,
}

/// One job on a roofline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RooflineJob {
    pub job_id: i64,
    pub kernel: String,
    /// A short description for the hover: `"matmul tiled, n = 1024, fp32"`.
    pub label: String,
    pub point: RooflinePoint,
    pub fraction_of_peak: Option<FractionOfPeak>,
}

/// The data types of `matmul`'s `dtype` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum GemmDtype {
    Fp64,
    /// IEEE single precision on the SIMT cores, TF32 off.
    Fp32,
    /// FP32 inputs rounded to TF32 on the tensor cores, FP32 accumulation.
    Tf32,
    Fp16,
    Bf16,
    /// 8-bit float (4 exponent, 3 mantissa bits) with per-tensor scales.
    Fp8E4m3,
    Int8,
}

impl GemmDtype {
    pub const ALL: [GemmDtype; 7] = [
        GemmDtype::Fp64,
        GemmDtype::Fp32,
        GemmDtype::Tf32,
        GemmDtype::Fp16,
        GemmDtype::Bf16,
        GemmDtype::Fp8E4m3,
        GemmDtype::Int8,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GemmDtype::Fp64 => "fp64",
            GemmDtype::Fp32 => "fp32",
            GemmDtype::Tf32 => "tf32",
            GemmDtype::Fp16 => "fp16",
            GemmDtype::Bf16 => "bf16",
            GemmDtype::Fp8E4m3 => "fp8_e4m3",
            GemmDtype::Int8 => "int8",
        }
    }

    pub fn parse(s: &str) -> Option<GemmDtype> {
        GemmDtype::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Bytes of one input element.
    pub fn input_bytes(self) -> u32 {
        match self {
            GemmDtype::Fp64 => 8,
            GemmDtype::Fp32 | GemmDtype::Tf32 => 4,
            GemmDtype::Fp16 | GemmDtype::Bf16 => 2,
            GemmDtype::Fp8E4m3 | GemmDtype::Int8 => 1,
        }
    }

    /// The lowest compute capability whose cuBLAS/cuBLASLt runs this type's GEMM (on the
    /// tensor cores, for the tensor-core types).
    ///
    /// From the CUDA C++ Programming Guide's table of warp matrix (tensor-core) element
    /// types (§ "Element Types and Matrix Sizes": `__half` from 7.0, `signed/unsigned char`
    /// from 7.2, `__nv_bfloat16` and `precision::tf32` from 8.0) and cuBLASLt's FP8
    /// requirements (`cublasLtMatmul`: "FP8 ... compute capability 8.9 and above"); FP64 and
    /// FP32 SIMT GEMMs run on every GPU CUDA 12 supports (5.0 and above).
    pub fn min_compute_capability(self) -> ComputeCapability {
        let (major, minor) = match self {
            GemmDtype::Fp64 | GemmDtype::Fp32 => (5, 0),
            GemmDtype::Fp16 => (7, 0),
            // Xavier's Volta (7.2) already has INT8 tensor cores; V100 (7.0) does not.
            GemmDtype::Int8 => (7, 2),
            GemmDtype::Tf32 | GemmDtype::Bf16 => (8, 0),
            GemmDtype::Fp8E4m3 => (8, 9),
        };
        ComputeCapability { major, minor }
    }

    /// Whether a GPU of compute capability `cc` runs this type.
    pub fn supported_by(self, cc: ComputeCapability) -> bool {
        let min = self.min_compute_capability();
        (cc.major, cc.minor) >= (min.major, min.minor)
    }

    /// Whether the host CPU device runs this type (natively, not emulated).
    pub fn supported_on_cpu(self) -> bool {
        matches!(self, GemmDtype::Fp64 | GemmDtype::Fp32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_round_trips_through_its_wire_name() {
        for dtype in GemmDtype::ALL {
            let json = serde_json::to_string(&dtype).unwrap();
            assert_eq!(json, format!("\"{}\"", dtype.as_str()));
            assert_eq!(GemmDtype::parse(dtype.as_str()), Some(dtype));
        }
        assert_eq!(GemmDtype::parse("fp8"), None);
    }

    /// The GPUs of NVIDIA's tables, with what each runs.
    #[test]
    fn dtypes_per_compute_capability_follow_nvidias_table() {
        use GemmDtype::*;
        let cases: &[(&str, u32, u32, &[GemmDtype])] = &[
            ("Tesla P100", 6, 0, &[Fp64, Fp32]),
            ("Tesla V100", 7, 0, &[Fp64, Fp32, Fp16]),
            ("Jetson AGX Xavier", 7, 2, &[Fp64, Fp32, Fp16, Int8]),
            ("Tesla T4", 7, 5, &[Fp64, Fp32, Fp16, Int8]),
            ("A100", 8, 0, &[Fp64, Fp32, Tf32, Fp16, Bf16, Int8]),
            ("RTX 3090", 8, 6, &[Fp64, Fp32, Tf32, Fp16, Bf16, Int8]),
            ("L4 / L40", 8, 9, &GemmDtype::ALL),
            ("H100 / H200", 9, 0, &GemmDtype::ALL),
            ("B200", 10, 0, &GemmDtype::ALL),
            ("RTX 5090", 12, 0, &GemmDtype::ALL),
        ];
        for &(gpu, major, minor, expected) in cases {
            let cc = ComputeCapability { major, minor };
            let runs: Vec<GemmDtype> = GemmDtype::ALL
                .into_iter()
                .filter(|d| d.supported_by(cc))
                .collect();
            assert_eq!(runs, expected, "{gpu} ({major}.{minor})");
        }
        // The minor number counts only within a major: 8.9 is below 9.0, 10.0 above both.
        let fp8 = GemmDtype::Fp8E4m3;
        assert!(!fp8.supported_by(ComputeCapability { major: 8, minor: 7 }));
        assert!(fp8.supported_by(ComputeCapability {
            major: 10,
            minor: 0
        }));
    }

    #[test]
    fn the_cpu_runs_fp64_and_fp32_only() {
        let on_cpu: Vec<&str> = GemmDtype::ALL
            .into_iter()
            .filter(|d| d.supported_on_cpu())
            .map(GemmDtype::as_str)
            .collect();
        assert_eq!(on_cpu, ["fp64", "fp32"]);
    }
}

//! The gpulab REST API types: one definition of every request and response, used by the
//! server (which derives the OpenAPI document from them) and by the browser UI.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

pub mod custom;
pub mod diag;
pub mod fleet;
pub mod lab;
pub mod peaks;

/// Parameters of a job, by name. Values are JSON numbers, strings or booleans.
pub type Params = BTreeMap<String, serde_json::Value>;

/// `GET /api/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Health {
    /// `"ok"` while the server answers.
    pub status: String,
    /// The server's version.
    pub version: String,
    pub cuda: CudaStatus,
}

/// Whether CUDA can be used on this host, and why not when it cannot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CudaStatus {
    pub available: bool,
    /// The CUDA version the driver supports, such as `"12.8"`.
    pub driver_version: Option<String>,
    /// Why no CUDA device can be used; `null` when CUDA is available.
    pub reason: Option<String>,
    /// The CUDA libraries the server loads at run time, found or not whether or not a GPU is.
    /// Absent from an older server's answer, where it reads as nothing found.
    #[serde(default)]
    pub libraries: CudaLibraries,
}

/// The run-time CUDA libraries: NVRTC compiles every GPU kernel, cuBLAS runs matmul's
/// `cublas` variant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CudaLibraries {
    pub nvrtc: LibraryStatus,
    pub cublas: LibraryStatus,
}

/// Whether a library could be loaded, and its version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LibraryStatus {
    pub found: bool,
    /// `"12.8"` for NVRTC (major.minor), `"12.8.5"` for cuBLAS (major.minor.patch).
    pub version: Option<String>,
    /// Why the library is missing or unusable; `null` when it is found.
    pub error: Option<String>,
}

/// The two kinds of device gpulab runs kernels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }
}

/// One device: the host CPU (`cpu`) or a CUDA GPU (`cuda:N`). Unknown values are `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Device {
    /// `cpu` or `cuda:N`.
    pub id: String,
    pub kind: DeviceKind,
    pub name: String,
    pub total_memory_bytes: Option<u64>,
    /// Free (GPU) or available (CPU) memory when the inventory was taken.
    pub free_memory_bytes: Option<u64>,
    /// Present for CUDA devices.
    pub cuda: Option<CudaDeviceInfo>,
    /// Present for the CPU device.
    pub cpu: Option<CpuDeviceInfo>,
    /// The device's last finished diagnostic, if it has had one.
    #[serde(default)]
    pub last_diagnostic: Option<diag::LastDiagnostic>,
    /// The device's theoretical peaks (and, for the CPU, its measured memory-bandwidth
    /// ceiling), each with its formula and source. Empty where none can be worked out.
    #[serde(default)]
    pub peaks: Vec<peaks::Peak>,
}

/// What the CUDA driver reports about one GPU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CudaDeviceInfo {
    /// The CUDA device ordinal, `N` in `cuda:N`.
    pub ordinal: u32,
    /// `GPU-xxxxxxxx-xxxx-…`, as nvidia-smi prints it.
    pub uuid: Option<String>,
    pub pci_bus_id: Option<String>,
    pub compute_capability: Option<ComputeCapability>,
    pub multiprocessor_count: Option<u32>,
    pub max_sm_clock_mhz: Option<u32>,
    pub max_memory_clock_mhz: Option<u32>,
    pub memory_bus_width_bits: Option<u32>,
    pub l2_cache_bytes: Option<u64>,
    pub shared_memory_per_block_bytes: Option<u64>,
    pub shared_memory_per_sm_bytes: Option<u64>,
    pub registers_per_block: Option<u32>,
    pub max_threads_per_block: Option<u32>,
    pub max_threads_per_sm: Option<u32>,
    pub warp_size: Option<u32>,
    pub async_engine_count: Option<u32>,
    pub ecc_enabled: Option<bool>,
    /// The CUDA version the driver supports, such as `"12.8"`.
    pub driver_cuda_version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ComputeCapability {
    pub major: u32,
    pub minor: u32,
}

/// What the operating system reports about the host CPU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CpuDeviceInfo {
    pub model: Option<String>,
    pub physical_cores: Option<u32>,
    pub logical_threads: Option<u32>,
    pub total_memory_bytes: Option<u64>,
    pub available_memory_bytes: Option<u64>,
}

/// The type of a kernel parameter, which decides the form control the UI renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    Integer,
    Number,
    String,
    Boolean,
    /// One of `choices`.
    Enum,
}

/// One parameter of a catalog kernel. Every parameter has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ParamSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ParamType,
    /// A number, string or boolean, as `type` says.
    #[cfg_attr(feature = "openapi", schema(schema_with = param_value_schema))]
    pub default: serde_json::Value,
    /// Inclusive lower bound of a numeric parameter.
    pub min: Option<f64>,
    /// Inclusive upper bound of a numeric parameter.
    pub max: Option<f64>,
    /// The allowed values of an `enum` parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<String>>,
    /// For an `enum` parameter whose allowed values depend on the device (such as matmul's
    /// `dtype`): device id → the values that device runs. A device not listed takes
    /// `choices`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices_by_device: Option<BTreeMap<String, Vec<String>>>,
    pub unit: Option<String>,
    pub help: String,
}

/// The schema of one parameter value: a JSON number, string or boolean.
#[cfg(feature = "openapi")]
fn param_value_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .build()
        .into()
}

/// One entry of `GET /api/kernels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct KernelSpec {
    pub name: String,
    pub description: String,
    /// The device kinds this kernel runs on today.
    pub devices: Vec<DeviceKind>,
    pub params: Vec<ParamSpec>,
    /// How `result.throughput` is computed, such as `"3 × n × 4 bytes / median time"`.
    pub throughput_formula: String,
}

/// `POST /api/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    pub kernel: String,
    pub device: String,
    /// Missing parameters take their catalog defaults.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub params: Option<Params>,
    /// Timed repetitions after one warm-up run (default 10).
    #[serde(default)]
    pub repetitions: Option<u32>,
    /// Seconds before the job is ended as `timed_out` (default 60, capped by the server).
    #[serde(default)]
    pub timeout_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    /// The server stopped while the job was queued or running.
    Interrupted,
}

impl JobStatus {
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::TimedOut,
        JobStatus::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::TimedOut => "timed_out",
            JobStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the job has ended and will not change again.
    pub fn is_finished(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

/// How far a running job has come: `done` of `total` timed repetitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Progress {
    pub done: u32,
    pub total: u32,
}

/// One job, as `GET /api/jobs/{id}` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Job {
    pub id: i64,
    pub kernel: String,
    pub device: String,
    /// Every parameter, defaults filled in.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub params: Params,
    pub repetitions: u32,
    pub timeout_s: f64,
    pub status: JobStatus,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub progress: Option<Progress>,
    pub result: Option<JobResult>,
    /// Why the job failed, timed out, was cancelled or interrupted.
    pub error: Option<String>,
    /// The user who submitted it, in lab mode; `null` in single mode.
    #[serde(default)]
    pub owner: Option<String>,
}

/// What a finished kernel run measured and checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JobResult {
    pub timing: Timing,
    pub throughput: Throughput,
    pub verification: Verification,
    /// Kernel-specific output, such as the estimate of π.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub output: serde_json::Value,
    /// Whether `GET /api/jobs/{id}/artifact` has an image for this job.
    pub has_artifact: bool,
    /// `throughput` against the device's peak for this kind of work; `null` when the
    /// device has no such peak or the work is not arithmetic or memory traffic.
    #[serde(default)]
    pub fraction_of_peak: Option<peaks::FractionOfPeak>,
    /// FLOPs and bytes of one repetition and where they put the job on the roofline;
    /// `null` for kernels the roofline does not describe.
    #[serde(default)]
    pub roofline: Option<peaks::RooflinePoint>,
}

/// Wall time of the timed repetitions (the warm-up run is not counted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Timing {
    pub repetitions: u32,
    pub min_ms: f64,
    pub median_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Throughput {
    pub value: f64,
    /// Such as `"GB/s"` or `"GFLOP/s"`.
    pub unit: String,
}

/// The output checked against an independently computed reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Verification {
    pub passed: bool,
    pub max_abs_error: f64,
    pub max_rel_error: f64,
    /// The largest `max_rel_error` that passes.
    pub tolerance: f64,
    /// What was compared with what, in a sentence.
    pub method: String,
}

/// `GET /api/jobs`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Pass as `cursor` to get the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /api/jobs` with `"device": "all"`: one job per CUDA device, in device order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JobGroup {
    pub jobs: Vec<Job>,
    /// `GET` it for each device's figure once the jobs have finished.
    pub compare: String,
}

/// `GET /api/jobs/compare?ids=…`: the same job's figure on several devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JobComparison {
    /// The throughput unit, when every finished job shares one.
    pub unit: Option<String>,
    /// The best throughput among the jobs that succeeded.
    pub best: Option<f64>,
    /// How much slower than the best a device may be before it is flagged: 0.10.
    pub slow_threshold: f64,
    /// Every job asked for, in the order asked.
    pub entries: Vec<ComparisonEntry>,
    /// Whether every job has finished.
    pub complete: bool,
}

/// One device's figure in a [`JobComparison`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ComparisonEntry {
    pub job_id: i64,
    pub device: String,
    pub status: JobStatus,
    pub throughput: Option<f64>,
    /// `best / throughput − 1`: how much longer this device takes than the best one
    /// (0.25 = 25 % slower).
    pub slower_than_best: Option<f64>,
    /// More than `slow_threshold` slower than the best, as gpu-fryer flags a GPU.
    pub flagged: bool,
    /// The job's `result.fraction_of_peak`: its own device's peak, so that devices of
    /// different models compare fairly.
    #[serde(default)]
    pub fraction_of_peak: Option<peaks::FractionOfPeak>,
}

/// An RFC 9457 problem document (`application/problem+json`): every error the API answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    /// What was wrong, for a person to read.
    pub detail: String,
    /// The request field the problem is about, such as `params.n`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// With a 429 for a quota: the device seconds left in the period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_seconds: Option<f64>,
    /// With a 429 for a quota: when the period renews.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renews_at: Option<DateTime<Utc>>,
}

/// `GET /api/devices/{id}/telemetry`: the latest sample and the recent history of one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DeviceTelemetry {
    pub device: String,
    /// Seconds between samples.
    pub interval_s: f64,
    /// Seconds of history kept.
    pub window_s: u64,
    pub latest: Option<TelemetrySample>,
    /// Oldest first, at most `window_s / interval_s` samples.
    pub history: Vec<TelemetrySample>,
    /// What the figures cannot say, such as why GPU fields are null.
    pub notes: Vec<String>,
}

/// One reading of one device. Values the device or its driver does not report are `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TelemetrySample {
    pub device: String,
    pub at: DateTime<Utc>,
    /// Present for the CPU device.
    pub cpu: Option<CpuTelemetry>,
    /// Present for CUDA devices.
    pub gpu: Option<GpuTelemetry>,
}

/// What the operating system reports about the host CPU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CpuTelemetry {
    /// Busy share of all logical CPUs since the previous sample, 0 to 1.
    pub utilization_ratio: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    /// 1, 5 and 15 minute load averages.
    pub load_average: Option<[f64; 3]>,
    /// The hottest CPU sensor the OS exposes.
    pub temperature_celsius: Option<f64>,
}

/// What NVML reports about one GPU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct GpuTelemetry {
    pub temperature_celsius: Option<f64>,
    pub power_watts: Option<f64>,
    pub power_limit_watts: Option<f64>,
    /// Energy used since the driver was loaded.
    pub energy_joules: Option<f64>,
    /// Share of the last sample period in which a kernel ran, 0 to 1.
    pub utilization_ratio: Option<f64>,
    /// Share of the last sample period in which device memory was read or written, 0 to 1.
    pub memory_utilization_ratio: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_free_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub sm_clock_mhz: Option<u32>,
    pub memory_clock_mhz: Option<u32>,
    /// P0 (fastest) to P15 (slowest) as the number 0 to 15.
    pub performance_state: Option<u32>,
    /// Active clock throttle reasons, such as `sw_power_cap` or `hw_thermal_slowdown`.
    pub throttle_reasons: Option<Vec<String>>,
    /// Fan speed as a share of its maximum, 0 to 1.
    pub fan_speed_ratio: Option<f64>,
    pub pcie_generation: Option<u32>,
    pub pcie_width: Option<u32>,
    pub pcie_tx_bytes_per_second: Option<f64>,
    pub pcie_rx_bytes_per_second: Option<f64>,
    /// Volatile (since boot) ECC error counts.
    pub ecc_corrected_errors: Option<u64>,
    pub ecc_uncorrected_errors: Option<u64>,
    /// Pages retired for ECC errors (pre-Ampere GPUs).
    pub retired_pages: Option<u64>,
    /// Rows remapped for ECC errors (Ampere and newer).
    pub remapped_rows: Option<RemappedRows>,
    /// Compute processes on the GPU. PIDs are as NVML gives them: inside a container they
    /// are the host's PIDs unless it runs with `--pid=host`.
    pub processes: Option<Vec<GpuProcess>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct RemappedRows {
    pub correctable: u64,
    pub uncorrectable: u64,
    pub pending: bool,
    pub failed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct GpuProcess {
    pub pid: u32,
    pub used_memory_bytes: Option<u64>,
}

/// The `event:` names of `GET /api/events` (server-sent events); `data:` is the JSON of a
/// [`Job`] or a [`TelemetrySample`].
pub mod events {
    /// A job changed: queued, started, progressed or ended. `data` is the whole [`crate::Job`].
    pub const JOB: &str = "job";
    /// A device's new telemetry sample. `data` is a [`crate::TelemetrySample`].
    pub const TELEMETRY: &str = "telemetry";
    /// A diagnostic changed: queued, a check started or ended, finished. `data` is the whole
    /// [`crate::diag::Diagnostic`].
    pub const DIAGNOSTIC: &str = "diagnostic";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_status_round_trips_through_its_wire_name() {
        for status in JobStatus::ALL {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(JobStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(JobStatus::parse("done"), None);
    }

    #[test]
    fn job_request_takes_kernel_and_device_alone() {
        let req: JobRequest = serde_json::from_str(r#"{"kernel":"saxpy","device":"cpu"}"#).unwrap();
        assert_eq!(req.params, None);
        assert_eq!(req.repetitions, None);
        assert!(
            serde_json::from_str::<JobRequest>(r#"{"kernel":"saxpy","device":"cpu","x":1}"#)
                .is_err()
        );
    }
}

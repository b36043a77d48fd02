//! What each device could do at most, and how near a job came: the theoretical peaks of a
//! GPU (from its attributes and `server/data/architectures.toml`) and of the CPU (from its
//! flags and clock, with a measured STREAM-style memory-bandwidth ceiling), each job's
//! `result.fraction_of_peak` and `result.roofline`, and the roofline of a device.

pub mod arch;
pub mod cpu;
pub mod gpu;
pub mod stream;

use std::sync::Arc;

use gpulab_shared::peaks::{names, FractionOfPeak, Peak, PeakBasis, Roofline, RooflineJob};
use gpulab_shared::peaks::{GemmDtype, RooflinePoint};
use gpulab_shared::{Device, DeviceKind, Job, JobResult, Params};

/// How a job's GB/s counts its bytes.
pub const BYTES_CONVENTION: &str = "bytes read + written, each once, as the kernel's formula \
     counts them (a copy of n bytes counts 2n, read + write, as CUDA's bandwidthTest does; \
     nvbandwidth would count n)";
/// How a job's GFLOP/s counts its operations.
pub const FLOPS_CONVENTION: &str =
    "2 FLOP per multiply-add (a GEMM: 2 × m × n × k), against the dense peak of the job's data type";

/// A device's peaks as they stand now: those worked out at start-up, and for the CPU the
/// memory-bandwidth ceiling once it has been measured. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DevicePeaks {
    fixed: Arc<Vec<Peak>>,
    cpu: bool,
}

impl DevicePeaks {
    pub fn of(device: &Device) -> Self {
        DevicePeaks {
            fixed: Arc::new(device.peaks.clone()),
            cpu: device.kind == DeviceKind::Cpu,
        }
    }

    pub fn now(&self) -> Vec<Peak> {
        let mut peaks = Vec::with_capacity(self.fixed.len() + 1);
        if self.cpu {
            peaks.extend(stream::measured().cloned());
        }
        peaks.extend(self.fixed.iter().cloned());
        peaks
    }
}

/// The device with its peaks as they stand now (the CPU's measured bandwidth is added once
/// measured).
pub fn with_current_peaks(mut device: Device) -> Device {
    device.peaks = DevicePeaks::of(&device).now();
    device
}

/// The peak a result of `kernel` with `params` and throughput `unit` is judged against:
/// GB/s against the memory bandwidth, GFLOP/s against the job's data type (`dtype`,
/// fp32 where the job has none); other units (samples, pixels, elements) against none.
fn peak_for<'a>(
    unit: &str,
    params: &Params,
    peaks: &'a [Peak],
) -> Option<(&'a Peak, &'static str)> {
    let (name, convention) = match unit {
        "GB/s" => (names::MEMORY_BANDWIDTH, BYTES_CONVENTION),
        "GFLOP/s" | "GOP/s" => (dtype_of(params).as_str(), FLOPS_CONVENTION),
        _ => return None,
    };
    peaks
        .iter()
        .find(|p| p.name == name && p.unit == unit)
        .map(|p| (p, convention))
}

/// `params["dtype"]` where it names a data type, else fp32 (matmul before it had one).
fn dtype_of(params: &Params) -> GemmDtype {
    params
        .get("dtype")
        .and_then(|d| d.as_str())
        .and_then(GemmDtype::parse)
        .unwrap_or(GemmDtype::Fp32)
}

/// Sets `result.fraction_of_peak` (against `peaks`) and `result.roofline` (from the
/// catalog's operation counts) of a finished job of `kernel` with `params`.
pub fn annotate(result: &mut JobResult, kernel: &str, params: &Params, peaks: &[Peak]) {
    result.fraction_of_peak = peak_for(&result.throughput.unit, params, peaks)
        .filter(|(peak, _)| peak.value > 0.0)
        .map(|(peak, convention)| FractionOfPeak {
            fraction: result.throughput.value / peak.value,
            peak: peak.name.clone(),
            peak_value: peak.value,
            unit: peak.unit.clone(),
            basis: peak.basis,
            convention: convention.into(),
        });
    result.roofline = roofline_point(kernel, params, result.timing.median_ms);
}

/// Where one repetition of `kernel` taking `median_ms` sits on the roofline.
fn roofline_point(kernel: &str, params: &Params, median_ms: f64) -> Option<RooflinePoint> {
    let (kernel, spec) = crate::kernels::find_with_spec(kernel)?;
    let params = crate::kernels::ResolvedParams::resolve(&spec.params, Some(params)).ok()?;
    let counts = kernel.configure(&params).ok()?.op_counts()?;
    if counts.bytes <= 0.0 || median_ms <= 0.0 {
        return None;
    }
    Some(RooflinePoint {
        flops: counts.flops,
        bytes: counts.bytes,
        arithmetic_intensity: counts.flops / counts.bytes,
        achieved: counts.flops / (median_ms / 1e3) / 1e9,
        ceiling: counts.ceiling.into(),
    })
}

/// The roofline of `device` from its peaks, with `jobs` (newest first) as its points.
pub fn roofline(device: &str, peaks: &[Peak], jobs: &[Job]) -> Roofline {
    let bandwidth = peaks
        .iter()
        .find(|p| p.name == names::MEMORY_BANDWIDTH)
        .cloned();
    let mut ceilings: Vec<Peak> = peaks
        .iter()
        .filter(|p| GemmDtype::parse(&p.name).is_some())
        .cloned()
        .collect();
    ceilings.sort_by(|a, b| b.value.total_cmp(&a.value));
    let points = jobs
        .iter()
        .filter_map(|job| {
            let result = job.result.as_ref()?;
            Some(RooflineJob {
                job_id: job.id,
                kernel: job.kernel.clone(),
                label: label(job),
                point: result.roofline.clone()?,
                fraction_of_peak: result.fraction_of_peak.clone(),
            })
        })
        .collect();
    Roofline {
        device: device.into(),
        bandwidth,
        ceilings,
        points,
    }
}

/// `"matmul tiled, n = 1024, fp32"`: the kernel, its variant, its size and its data type.
fn label(job: &Job) -> String {
    let mut parts = vec![job.kernel.clone()];
    if let Some(variant) = job.params.get("variant").and_then(|v| v.as_str()) {
        parts[0] = format!("{} {variant}", job.kernel);
    }
    let size = ["n", "size_mib", "samples"]
        .into_iter()
        .find_map(|name| Some((name, job.params.get(name)?)));
    if let Some((name, value)) = size {
        parts.push(format!("{name} = {value}"));
    }
    let dtype = job
        .result
        .as_ref()
        .and_then(|r| r.roofline.as_ref())
        .map_or_else(
            || dtype_of(&job.params).as_str().to_owned(),
            |p| p.ceiling.clone(),
        );
    parts.push(dtype);
    parts.join(", ")
}

/// A peak's basis in words, for the CLI.
pub fn basis_word(basis: PeakBasis) -> &'static str {
    match basis {
        PeakBasis::Computed => "computed",
        PeakBasis::Datasheet => "datasheet",
        PeakBasis::Measured => "measured",
    }
}

#[cfg(test)]
mod tests;

/// `gpulab run`: judges the result against the device's peaks (the CPU's bandwidth is
/// measured now, when the result is in GB/s) and prints the fraction of peak, with its
/// convention, on stderr; stdout keeps the JSON.
pub fn judge_cli_result(result: &mut JobResult, kernel: &str, params: &Params, device: &str) {
    let Some(device) = crate::devices::DeviceInventory::detect_one(device) else {
        return;
    };
    let mut peaks = device.peaks.clone();
    if device.kind == DeviceKind::Cpu && result.throughput.unit == "GB/s" {
        peaks.push(stream::measure_now().clone());
    }
    annotate(result, kernel, params, &peaks);
    match &result.fraction_of_peak {
        Some(f) => eprintln!(
            "{:.1} % of peak: {:.2} {} of {} {:.1} {} ({}); {}",
            f.fraction * 100.0,
            result.throughput.value,
            result.throughput.unit,
            f.peak,
            f.peak_value,
            f.unit,
            basis_word(f.basis),
            f.convention
        ),
        None => eprintln!(
            "% of peak: none ({} has no peak for {})",
            device.id, result.throughput.unit
        ),
    }
}

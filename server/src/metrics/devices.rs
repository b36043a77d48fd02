//! Device families: the static attributes of every device from the inventory, and the
//! latest telemetry sample of each, in base units. A value the sample does not have is left
//! out, never written as a made-up 0.

use gpulab_shared::{CpuTelemetry, Device, GpuTelemetry, TelemetrySample};

use super::exposition::{Exposition, MetricType, Value};
use crate::devices::DeviceInventory;

/// `gpulab_device_info{device, kind, name, uuid, pci_bus_id, compute_capability} 1`.
pub fn write_info(out: &mut Exposition, inventory: &DeviceInventory) {
    let mut family = out.family(
        "gpulab_device_info",
        MetricType::Gauge,
        "Static attributes of each device gpulab runs kernels on; the value is always 1.",
    );
    for device in &inventory.devices {
        let cuda = device.cuda.as_ref();
        let capability = cuda
            .and_then(|c| c.compute_capability)
            .map(|cc| format!("{}.{}", cc.major, cc.minor));
        let mut labels = vec![
            ("device", device.id.as_str()),
            ("kind", device.kind.as_str()),
            ("name", device.name.as_str()),
        ];
        labels.extend(uuid(device).map(|u| ("uuid", u)));
        labels.extend(
            cuda.and_then(|c| c.pci_bus_id.as_deref())
                .map(|p| ("pci_bus_id", p)),
        );
        labels.extend(capability.as_deref().map(|c| ("compute_capability", c)));
        family.sample(&labels, 1u64);
    }
}

/// When each device's latest sample was taken, so a stalled sampler shows.
pub fn write_sample_times(out: &mut Exposition, samples: &[TelemetrySample]) {
    let mut family = out.family(
        "gpulab_telemetry_sample_timestamp_seconds",
        MetricType::Gauge,
        "When the latest telemetry sample of the device was taken, in seconds since the Unix epoch.",
    );
    for sample in samples {
        let seconds = sample.at.timestamp_millis() as f64 / 1000.0;
        family.sample(&[("device", sample.device.as_str())], seconds);
    }
}

type CpuField = fn(&CpuTelemetry) -> Option<Value>;

/// The CPU families that are one number per device.
const CPU_FAMILIES: &[(&str, MetricType, &str, CpuField)] = &[
    (
        "gpulab_cpu_utilization_ratio",
        MetricType::Gauge,
        "Busy share of all logical CPUs since the previous sample, 0 to 1.",
        |c| c.utilization_ratio.map(Value::from),
    ),
    (
        "gpulab_cpu_memory_used_bytes",
        MetricType::Gauge,
        "Host memory in use, in bytes.",
        |c| c.memory_used_bytes.map(Value::from),
    ),
    (
        "gpulab_cpu_memory_total_bytes",
        MetricType::Gauge,
        "Host memory in all, in bytes.",
        |c| c.memory_total_bytes.map(Value::from),
    ),
    (
        "gpulab_cpu_temperature_celsius",
        MetricType::Gauge,
        "Temperature of the hottest CPU sensor, in degrees Celsius.",
        |c| c.temperature_celsius.map(Value::from),
    ),
];

/// The CPU's telemetry, labelled `{device="cpu"}`.
pub fn write_cpu(out: &mut Exposition, samples: &[TelemetrySample]) {
    let cpus: Vec<(&str, &CpuTelemetry)> = samples
        .iter()
        .filter_map(|s| Some((s.device.as_str(), s.cpu.as_ref()?)))
        .collect();
    for (name, kind, help, field) in CPU_FAMILIES {
        let mut family = out.family(name, *kind, help);
        for (device, cpu) in &cpus {
            if let Some(value) = field(cpu) {
                family.sample(&[("device", device)], value);
            }
        }
    }
    let mut family = out.family(
        "gpulab_cpu_load_average",
        MetricType::Gauge,
        "System load average over the window: runnable and waiting tasks.",
    );
    for (device, cpu) in &cpus {
        if let Some(loads) = cpu.load_average {
            for (window, load) in ["1m", "5m", "15m"].into_iter().zip(loads) {
                family.sample(&[("device", device), ("window", window)], load);
            }
        }
    }
}

type GpuField = fn(&GpuTelemetry) -> Option<Value>;

fn hertz(mhz: Option<u32>) -> Option<Value> {
    mhz.map(|mhz| Value::from(u64::from(mhz) * 1_000_000))
}

/// The GPU families that are one number per device.
const GPU_FAMILIES: &[(&str, MetricType, &str, GpuField)] = &[
    (
        "gpulab_gpu_temperature_celsius",
        MetricType::Gauge,
        "GPU core temperature, in degrees Celsius.",
        |g| g.temperature_celsius.map(Value::from),
    ),
    (
        "gpulab_gpu_power_watts",
        MetricType::Gauge,
        "Power the GPU draws, in watts.",
        |g| g.power_watts.map(Value::from),
    ),
    (
        "gpulab_gpu_power_limit_watts",
        MetricType::Gauge,
        "Power limit the GPU is held to, in watts.",
        |g| g.power_limit_watts.map(Value::from),
    ),
    (
        "gpulab_gpu_energy_joules_total",
        MetricType::Counter,
        "Energy the GPU has used since the driver was loaded, in joules.",
        |g| g.energy_joules.map(Value::from),
    ),
    (
        "gpulab_gpu_utilization_ratio",
        MetricType::Gauge,
        "Share of the last sample period in which a kernel ran on the GPU, 0 to 1.",
        |g| g.utilization_ratio.map(Value::from),
    ),
    (
        "gpulab_gpu_memory_utilization_ratio",
        MetricType::Gauge,
        "Share of the last sample period in which device memory was read or written, 0 to 1.",
        |g| g.memory_utilization_ratio.map(Value::from),
    ),
    (
        "gpulab_gpu_memory_used_bytes",
        MetricType::Gauge,
        "Device memory in use, in bytes.",
        |g| g.memory_used_bytes.map(Value::from),
    ),
    (
        "gpulab_gpu_memory_free_bytes",
        MetricType::Gauge,
        "Device memory free, in bytes.",
        |g| g.memory_free_bytes.map(Value::from),
    ),
    (
        "gpulab_gpu_memory_total_bytes",
        MetricType::Gauge,
        "Device memory in all, in bytes.",
        |g| g.memory_total_bytes.map(Value::from),
    ),
    (
        "gpulab_gpu_sm_clock_hertz",
        MetricType::Gauge,
        "Current SM clock, in hertz.",
        |g| hertz(g.sm_clock_mhz),
    ),
    (
        "gpulab_gpu_memory_clock_hertz",
        MetricType::Gauge,
        "Current memory clock, in hertz.",
        |g| hertz(g.memory_clock_mhz),
    ),
    (
        "gpulab_gpu_performance_state",
        MetricType::Gauge,
        "Performance state: 0 for P0 (fastest) to 15 for P15 (slowest).",
        |g| g.performance_state.map(Value::from),
    ),
    (
        "gpulab_gpu_fan_speed_ratio",
        MetricType::Gauge,
        "Fan speed as a share of its maximum, 0 to 1.",
        |g| g.fan_speed_ratio.map(Value::from),
    ),
    (
        "gpulab_gpu_pcie_link_generation",
        MetricType::Gauge,
        "Current PCIe link generation.",
        |g| g.pcie_generation.map(Value::from),
    ),
    (
        "gpulab_gpu_pcie_link_width",
        MetricType::Gauge,
        "Current PCIe link width, in lanes.",
        |g| g.pcie_width.map(Value::from),
    ),
    (
        "gpulab_gpu_pcie_transmit_bytes_per_second",
        MetricType::Gauge,
        "PCIe bytes per second the GPU sends, as NVML measured them over its last sample.",
        |g| g.pcie_tx_bytes_per_second.map(Value::from),
    ),
    (
        "gpulab_gpu_pcie_receive_bytes_per_second",
        MetricType::Gauge,
        "PCIe bytes per second the GPU receives, as NVML measured them over its last sample.",
        |g| g.pcie_rx_bytes_per_second.map(Value::from),
    ),
    (
        "gpulab_gpu_retired_pages",
        MetricType::Gauge,
        "Device memory pages retired for ECC errors (GPUs before Ampere).",
        |g| g.retired_pages.map(Value::from),
    ),
    (
        "gpulab_gpu_row_remapping_pending",
        MetricType::Gauge,
        "1 when a row remapping waits for the GPU to be reset (Ampere and newer), else 0.",
        |g| g.remapped_rows.map(|r| Value::from(u64::from(r.pending))),
    ),
    (
        "gpulab_gpu_row_remapping_failed",
        MetricType::Gauge,
        "1 when a row remapping has failed (Ampere and newer), else 0.",
        |g| g.remapped_rows.map(|r| Value::from(u64::from(r.failed))),
    ),
    (
        "gpulab_gpu_processes",
        MetricType::Gauge,
        "Compute processes running on the GPU.",
        |g| g.processes.as_ref().map(|p| Value::from(p.len() as u64)),
    ),
];

/// Every GPU's telemetry, each series labelled `{device, uuid}`.
pub fn write_gpus(out: &mut Exposition, inventory: &DeviceInventory, samples: &[TelemetrySample]) {
    let gpus: Vec<(Vec<(&str, &str)>, &GpuTelemetry)> = samples
        .iter()
        .filter_map(|s| {
            let gpu = s.gpu.as_ref()?;
            let mut labels = vec![("device", s.device.as_str())];
            labels.extend(
                inventory
                    .find(&s.device)
                    .and_then(uuid)
                    .map(|u| ("uuid", u)),
            );
            Some((labels, gpu))
        })
        .collect();
    for (name, kind, help, field) in GPU_FAMILIES {
        let mut family = out.family(name, *kind, help);
        for (labels, gpu) in &gpus {
            if let Some(value) = field(gpu) {
                family.sample(labels, value);
            }
        }
    }
    let mut family = out.family(
        "gpulab_gpu_throttle_reason",
        MetricType::Gauge,
        "1 for each reason that holds the GPU's clocks down now; reasons not active are absent.",
    );
    for (labels, gpu) in &gpus {
        for reason in gpu.throttle_reasons.iter().flatten() {
            family.sample(&with(labels, ("reason", reason.as_str())), 1u64);
        }
    }

    let mut family = out.family(
        "gpulab_gpu_ecc_errors_total",
        MetricType::Counter,
        "ECC errors since the driver was loaded (volatile counts), by type.",
    );
    for (labels, gpu) in &gpus {
        let counts = [
            ("corrected", gpu.ecc_corrected_errors),
            ("uncorrected", gpu.ecc_uncorrected_errors),
        ];
        for (kind, count) in counts {
            if let Some(count) = count {
                family.sample(&with(labels, ("type", kind)), count);
            }
        }
    }

    let mut family = out.family(
        "gpulab_gpu_remapped_rows",
        MetricType::Gauge,
        "Device memory rows remapped for ECC errors (Ampere and newer), by type.",
    );
    for (labels, gpu) in &gpus {
        if let Some(rows) = gpu.remapped_rows {
            let counts = [
                ("correctable", rows.correctable),
                ("uncorrectable", rows.uncorrectable),
            ];
            for (kind, count) in counts {
                family.sample(&with(labels, ("type", kind)), count);
            }
        }
    }
}

/// A GPU's `{device, uuid}` and one label more.
fn with<'a>(labels: &[(&'a str, &'a str)], extra: (&'a str, &'a str)) -> Vec<(&'a str, &'a str)> {
    [labels, &[extra]].concat()
}

fn uuid(device: &Device) -> Option<&str> {
    device.cuda.as_ref()?.uuid.as_deref()
}

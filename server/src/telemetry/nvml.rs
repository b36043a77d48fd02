//! The GPUs' live figures, from NVML (`libnvidia-ml.so.1`, loaded at run time).
//!
//! NVML is opened once, by the sampler thread, and kept for the life of the server. Each
//! inventory GPU (`cuda:N`) is matched to its NVML device by UUID or PCI bus id: CUDA
//! ordinals and NVML indices can differ (`CUDA_DEVICE_ORDER`, `CUDA_VISIBLE_DEVICES`).
//! Every figure the GPU or its driver does not report is `None`; nothing here panics or
//! fails the sample.

use std::ffi::OsStr;

use gpulab_shared::{GpuProcess, GpuTelemetry, RemappedRows};
use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, PcieUtilCounter, PerformanceState, TemperatureSensor,
};
use nvml_wrapper::enums::device::{SampleValue, UsedGpuMemory};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::sys_exports::field_id::{
    NVML_FI_DEV_REMAPPED_COR, NVML_FI_DEV_REMAPPED_FAILURE, NVML_FI_DEV_REMAPPED_PENDING,
    NVML_FI_DEV_REMAPPED_UNC, NVML_FI_DEV_RETIRED_DBE, NVML_FI_DEV_RETIRED_SBE,
};
use nvml_wrapper::{Device, Nvml};

/// The name the driver installs; the unversioned `libnvidia-ml.so` is only in dev packages.
const NVML_LIBRARY: &str = "libnvidia-ml.so.1";

/// Retired pages (pre-Ampere) and remapped rows (Ampere and newer), in one NVML call.
const MEMORY_REPAIR_FIELDS: [FieldId; 6] = [
    FieldId(NVML_FI_DEV_RETIRED_SBE),
    FieldId(NVML_FI_DEV_RETIRED_DBE),
    FieldId(NVML_FI_DEV_REMAPPED_COR),
    FieldId(NVML_FI_DEV_REMAPPED_UNC),
    FieldId(NVML_FI_DEV_REMAPPED_PENDING),
    FieldId(NVML_FI_DEV_REMAPPED_FAILURE),
];

/// Throttle reason bits and the names the API gives them (nvidia-smi's, in snake case).
const THROTTLE_REASONS: [(ThrottleReasons, &str); 9] = [
    (ThrottleReasons::GPU_IDLE, "gpu_idle"),
    (
        ThrottleReasons::APPLICATIONS_CLOCKS_SETTING,
        "applications_clocks_setting",
    ),
    (ThrottleReasons::SW_POWER_CAP, "sw_power_cap"),
    (ThrottleReasons::HW_SLOWDOWN, "hw_slowdown"),
    (ThrottleReasons::SYNC_BOOST, "sync_boost"),
    (ThrottleReasons::SW_THERMAL_SLOWDOWN, "sw_thermal_slowdown"),
    (ThrottleReasons::HW_THERMAL_SLOWDOWN, "hw_thermal_slowdown"),
    (
        ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN,
        "hw_power_brake_slowdown",
    ),
    (
        ThrottleReasons::DISPLAY_CLOCK_SETTING,
        "display_clock_setting",
    ),
];

/// Opens NVML, or says why GPU telemetry is unavailable in a sentence for the notes.
pub(crate) fn open() -> Result<Nvml, String> {
    open_library(OsStr::new(NVML_LIBRARY))
}

fn open_library(path: &OsStr) -> Result<Nvml, String> {
    Nvml::builder()
        .lib_path(path)
        .init()
        .map_err(|error| init_failure_note(&error))
}

fn init_failure_note(error: &NvmlError) -> String {
    match error {
        NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound => format!(
            "{NVML_LIBRARY} not found: GPU telemetry needs the NVIDIA driver (start the \
             container with --gpus all)"
        ),
        NvmlError::DriverNotLoaded => "the NVIDIA driver is not loaded: GPU telemetry needs it \
             (on the host, check that nvidia-smi works)"
            .to_owned(),
        NvmlError::NoPermission => "NVML has no permission to talk to the NVIDIA driver: GPU \
             telemetry is unavailable to this user"
            .to_owned(),
        other => format!("NVML could not start ({other}): GPU telemetry is unavailable"),
    }
}

/// One inventory GPU to find among NVML's devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GpuTarget {
    /// `cuda:N`.
    pub device: String,
    /// `GPU-…`, as CUDA gives it.
    pub uuid: Option<String>,
    /// `0000:17:00.0`, as CUDA gives it.
    pub pci_bus_id: Option<String>,
}

/// One NVML device's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NvmlIdentity {
    pub index: u32,
    pub uuid: Option<String>,
    pub pci_bus_id: Option<String>,
}

/// The NVML index of each target, in the targets' order: the device with the same UUID,
/// or else the same PCI address. An NVML device is given to one target at most.
pub(super) fn match_devices(targets: &[GpuTarget], nvml: &[NvmlIdentity]) -> Vec<Option<u32>> {
    let mut taken = vec![false; nvml.len()];
    let mut claim = |found: Option<usize>| {
        let position = found.filter(|&i| !taken[i])?;
        taken[position] = true;
        Some(nvml[position].index)
    };
    let mut matches: Vec<Option<u32>> = targets
        .iter()
        .map(|target| {
            let uuid = target.uuid.as_deref()?;
            claim(nvml.iter().position(|n| {
                n.uuid
                    .as_deref()
                    .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
            }))
        })
        .collect();
    // The PCI address only for targets the UUID left unmatched, so that a device whose UUID
    // matched is never taken by another target's address.
    for (target, slot) in targets.iter().zip(&mut matches) {
        if slot.is_some() {
            continue;
        }
        let Some(address) = target.pci_bus_id.as_deref().and_then(PciAddress::parse) else {
            continue;
        };
        *slot =
            claim(nvml.iter().position(|n| {
                n.pci_bus_id.as_deref().and_then(PciAddress::parse) == Some(address)
            }));
    }
    matches
}

/// A PCI address, whatever the width its domain was written with: NVML writes
/// `00000000:17:00.0`, CUDA `0000:17:00.0`, sysfs `0000:17:00.0`, in either case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PciAddress {
    domain: u32,
    bus: u8,
    device: u8,
    function: u8,
}

impl PciAddress {
    /// Parses `domain:bus:device.function` (hexadecimal) or `bus:device.function`.
    pub(super) fn parse(text: &str) -> Option<PciAddress> {
        let text = text.trim();
        let (rest, function) = text.rsplit_once('.')?;
        let mut parts = rest.rsplitn(3, ':');
        let device = parts.next()?;
        let bus = parts.next()?;
        let domain = parts.next().unwrap_or("0");
        Some(PciAddress {
            domain: u32::from_str_radix(domain, 16).ok()?,
            bus: u8::from_str_radix(bus, 16).ok()?,
            device: u8::from_str_radix(device, 16).ok()?,
            function: u8::from_str_radix(function, 16).ok()?,
        })
    }
}

/// The inventory GPUs NVML can read, each with its handle.
pub(super) struct NvmlGpus<'nvml> {
    pub gpus: Vec<(String, Device<'nvml>)>,
    /// Per target device, what its figures cannot say.
    pub notes: Vec<(String, Vec<String>)>,
}

/// Finds each target among NVML's devices. `nvml` is NVML or why it could not start.
pub(super) fn attach<'nvml>(
    nvml: &'nvml Result<Nvml, String>,
    targets: &[GpuTarget],
) -> NvmlGpus<'nvml> {
    let nvml = match nvml {
        Ok(nvml) => nvml,
        Err(why) => {
            return NvmlGpus {
                gpus: Vec::new(),
                notes: targets
                    .iter()
                    .map(|t| (t.device.clone(), vec![why.clone()]))
                    .collect(),
            }
        }
    };
    let count = nvml.device_count().unwrap_or(0);
    let mut handles = Vec::new();
    let mut identities = Vec::new();
    for index in 0..count {
        // A GPU NVML cannot open (one that fell off the bus) is left out; the others work.
        let Ok(device) = nvml.device_by_index(index) else {
            continue;
        };
        identities.push(NvmlIdentity {
            index,
            uuid: device.uuid().ok(),
            pci_bus_id: device.pci_info().ok().map(|pci| pci.bus_id),
        });
        handles.push(Some(device));
    }
    let process_note = process_pid_note(
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .as_deref()
            .and_then(pid_namespace_depth),
    );
    let mut gpus = Vec::new();
    let mut notes = Vec::new();
    for (target, found) in targets.iter().zip(match_devices(targets, &identities)) {
        let handle = found
            .and_then(|index| identities.iter().position(|n| n.index == index))
            .and_then(|position| handles[position].take());
        match handle {
            Some(device) => {
                gpus.push((target.device.clone(), device));
                notes.push((target.device.clone(), vec![process_note.clone()]));
            }
            None => notes.push((
                target.device.clone(),
                vec![format!(
                    "NVML lists no GPU with this device's UUID ({}) or PCI bus id ({}), so \
                     its telemetry is unavailable",
                    target.uuid.as_deref().unwrap_or("unknown"),
                    target.pci_bus_id.as_deref().unwrap_or("unknown"),
                )],
            )),
        }
    }
    NvmlGpus { gpus, notes }
}

/// How many PID namespaces this process is nested in, from the `NSpid:` line of
/// `/proc/self/status` (one PID per namespace, outermost first).
pub(crate) fn pid_namespace_depth(status: &str) -> Option<usize> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    let depth = line.split_ascii_whitespace().count();
    (depth > 0).then_some(depth)
}

/// The note on the PIDs of `processes`, given this process's PID namespace depth.
fn process_pid_note(depth: Option<usize>) -> String {
    match depth {
        Some(1) => "processes: PIDs are as NVML gives them, the host's; this server shares the \
                    host's PID namespace, so they are the PIDs it sees too"
            .to_owned(),
        Some(_) => "processes: PIDs are as NVML gives them, the host's; this server runs in its \
                    own PID namespace (a container without --pid=host), so they do not match \
                    the PIDs seen inside it"
            .to_owned(),
        None => "processes: PIDs are as NVML gives them: inside a container they are the \
                 host's PIDs unless it runs with --pid=host"
            .to_owned(),
    }
}

/// Reads every figure of one GPU; a figure NVML does not give is `None`.
///
/// NVML documents that each of the two PCIe throughput reads samples over 20 ms, so a GPU
/// takes some 40 ms of the sampler thread's wall time.
pub(crate) fn sample(gpu: &Device<'_>) -> GpuTelemetry {
    let memory = gpu.memory_info().ok();
    let utilization = gpu.utilization_rates().ok();
    let repair = gpu
        .field_values_for(&MEMORY_REPAIR_FIELDS)
        .ok()
        .map(|values| {
            let mut numbers = [None; MEMORY_REPAIR_FIELDS.len()];
            for (slot, value) in numbers.iter_mut().zip(values) {
                *slot = value.ok().and_then(|v| v.value.ok()).and_then(as_u64);
            }
            numbers
        })
        .unwrap_or_default();
    let [retired_sbe, retired_dbe, remapped_cor, remapped_unc, remapped_pending, remapped_failure] =
        repair;
    GpuTelemetry {
        temperature_celsius: gpu.temperature(TemperatureSensor::Gpu).ok().map(f64::from),
        power_watts: gpu.power_usage().ok().map(milli),
        power_limit_watts: gpu.enforced_power_limit().ok().map(milli),
        energy_joules: gpu
            .total_energy_consumption()
            .ok()
            .map(|millijoules| millijoules as f64 / 1000.0),
        utilization_ratio: utilization.as_ref().map(|u| percent(u.gpu)),
        memory_utilization_ratio: utilization.as_ref().map(|u| percent(u.memory)),
        memory_used_bytes: memory.as_ref().map(|m| m.used),
        memory_free_bytes: memory.as_ref().map(|m| m.free),
        memory_total_bytes: memory.as_ref().map(|m| m.total),
        sm_clock_mhz: gpu.clock_info(Clock::SM).ok(),
        memory_clock_mhz: gpu.clock_info(Clock::Memory).ok(),
        performance_state: gpu
            .performance_state()
            .ok()
            .and_then(performance_state_number),
        throttle_reasons: gpu
            .current_throttle_reasons()
            .ok()
            .map(throttle_reason_names),
        fan_speed_ratio: gpu.fan_speed(0).ok().map(percent),
        pcie_generation: gpu.current_pcie_link_gen().ok(),
        pcie_width: gpu.current_pcie_link_width().ok(),
        pcie_tx_bytes_per_second: gpu
            .pcie_throughput(PcieUtilCounter::Send)
            .ok()
            .map(kib_per_second),
        pcie_rx_bytes_per_second: gpu
            .pcie_throughput(PcieUtilCounter::Receive)
            .ok()
            .map(kib_per_second),
        ecc_corrected_errors: gpu
            .total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile)
            .ok(),
        ecc_uncorrected_errors: gpu
            .total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)
            .ok(),
        retired_pages: match (retired_sbe, retired_dbe) {
            (None, None) => None,
            (sbe, dbe) => Some(sbe.unwrap_or(0) + dbe.unwrap_or(0)),
        },
        remapped_rows: remapped_rows(
            remapped_cor,
            remapped_unc,
            remapped_pending,
            remapped_failure,
        ),
        processes: gpu.running_compute_processes().ok().map(|processes| {
            processes
                .into_iter()
                .map(|p| GpuProcess {
                    pid: p.pid,
                    used_memory_bytes: match p.used_gpu_memory {
                        UsedGpuMemory::Used(bytes) => Some(bytes),
                        UsedGpuMemory::Unavailable => None,
                    },
                })
                .collect()
        }),
    }
}

fn remapped_rows(
    correctable: Option<u64>,
    uncorrectable: Option<u64>,
    pending: Option<u64>,
    failed: Option<u64>,
) -> Option<RemappedRows> {
    Some(RemappedRows {
        correctable: correctable?,
        uncorrectable: uncorrectable?,
        pending: pending? != 0,
        failed: failed? != 0,
    })
}

fn as_u64(value: SampleValue) -> Option<u64> {
    match value {
        SampleValue::U32(v) => Some(u64::from(v)),
        SampleValue::U64(v) => Some(v),
        SampleValue::I64(v) => u64::try_from(v).ok(),
        SampleValue::F64(_) => None,
    }
}

fn milli(value: u32) -> f64 {
    f64::from(value) / 1000.0
}

fn percent(value: u32) -> f64 {
    f64::from(value) / 100.0
}

/// NVML gives PCIe throughput in KB/s, meaning 1024 bytes.
fn kib_per_second(value: u32) -> f64 {
    f64::from(value) * 1024.0
}

fn performance_state_number(state: PerformanceState) -> Option<u32> {
    use PerformanceState as P;
    let number = match state {
        P::Zero => 0,
        P::One => 1,
        P::Two => 2,
        P::Three => 3,
        P::Four => 4,
        P::Five => 5,
        P::Six => 6,
        P::Seven => 7,
        P::Eight => 8,
        P::Nine => 9,
        P::Ten => 10,
        P::Eleven => 11,
        P::Twelve => 12,
        P::Thirteen => 13,
        P::Fourteen => 14,
        P::Fifteen => 15,
        P::Unknown => return None,
    };
    Some(number)
}

pub(crate) fn throttle_reason_names(reasons: ThrottleReasons) -> Vec<String> {
    THROTTLE_REASONS
        .iter()
        .filter(|(bit, _)| reasons.contains(*bit))
        .map(|(_, name)| (*name).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(device: &str, uuid: Option<&str>, pci: Option<&str>) -> GpuTarget {
        GpuTarget {
            device: device.to_owned(),
            uuid: uuid.map(str::to_owned),
            pci_bus_id: pci.map(str::to_owned),
        }
    }

    fn nvml(index: u32, uuid: Option<&str>, pci: Option<&str>) -> NvmlIdentity {
        NvmlIdentity {
            index,
            uuid: uuid.map(str::to_owned),
            pci_bus_id: pci.map(str::to_owned),
        }
    }

    const UUID_A: &str = "GPU-5a1c2b3d-0000-1111-2222-333344445555";
    const UUID_B: &str = "GPU-9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff";

    #[test]
    fn pci_bus_ids_of_nvml_and_cuda_name_the_same_address() {
        let nvml = PciAddress::parse("00000000:17:00.0").unwrap();
        assert_eq!(PciAddress::parse("0000:17:00.0"), Some(nvml));
        assert_eq!(PciAddress::parse("0000:17:00.0\n"), Some(nvml));
        assert_eq!(PciAddress::parse("17:00.0"), Some(nvml));
        assert_eq!(
            PciAddress::parse("00000000:B3:00.0"),
            PciAddress::parse("0000:b3:00.0")
        );
        assert_ne!(PciAddress::parse("0000:18:00.0"), Some(nvml));
        assert_ne!(PciAddress::parse("0001:17:00.0"), Some(nvml));
        assert_eq!(PciAddress::parse("garbage"), None);
        assert_eq!(PciAddress::parse("0000:17:00"), None);
        assert_eq!(PciAddress::parse("0000:117:00.0"), None);
    }

    #[test]
    fn gpus_are_matched_by_uuid_whatever_the_order() {
        // CUDA orders fastest first, NVML by PCI address: cuda:0 is NVML's index 1.
        let targets = [
            target("cuda:0", Some(UUID_B), Some("0000:b3:00.0")),
            target("cuda:1", Some(UUID_A), Some("0000:17:00.0")),
        ];
        let devices = [
            nvml(0, Some(UUID_A), Some("00000000:17:00.0")),
            nvml(1, Some(&UUID_B.to_uppercase()), None),
        ];
        assert_eq!(match_devices(&targets, &devices), [Some(1), Some(0)]);
    }

    #[test]
    fn the_pci_address_matches_when_a_uuid_is_missing() {
        let targets = [
            target("cuda:0", None, Some("0000:b3:00.0")),
            target("cuda:1", Some(UUID_A), None),
        ];
        let devices = [
            nvml(0, Some(UUID_A), Some("00000000:17:00.0")),
            nvml(1, Some(UUID_B), Some("00000000:B3:00.0")),
        ];
        assert_eq!(match_devices(&targets, &devices), [Some(1), Some(0)]);
    }

    #[test]
    fn an_nvml_device_is_given_to_one_gpu_at_most() {
        // Two MIG-like targets on the same PCI address: the UUID match wins, and the
        // address cannot hand the same GPU out again.
        let targets = [
            target("cuda:0", Some("MIG-1"), Some("0000:17:00.0")),
            target("cuda:1", Some(UUID_A), Some("0000:17:00.0")),
        ];
        let devices = [nvml(0, Some(UUID_A), Some("00000000:17:00.0"))];
        assert_eq!(match_devices(&targets, &devices), [None, Some(0)]);
    }

    #[test]
    fn a_gpu_nvml_does_not_list_is_unmatched() {
        let targets = [target("cuda:0", Some(UUID_B), Some("0000:b3:00.0"))];
        let devices = [nvml(0, Some(UUID_A), Some("00000000:17:00.0"))];
        assert_eq!(match_devices(&targets, &devices), [None]);
        assert_eq!(match_devices(&targets, &[]), [None]);
    }

    #[test]
    fn a_missing_library_is_a_note_not_a_panic() {
        let missing = open_library(OsStr::new("/nonexistent/libnvidia-ml.so.1"));
        let Err(note) = missing else {
            panic!("NVML opened from a path that does not exist");
        };
        assert!(note.contains("libnvidia-ml.so.1 not found"), "{note}");
        assert!(note.contains("--gpus all"), "{note}");

        let why: Result<Nvml, String> = Err(note.clone());
        let attached = attach(&why, &[target("cuda:0", Some(UUID_A), None)]);
        assert!(attached.gpus.is_empty());
        assert_eq!(attached.notes, [("cuda:0".to_owned(), vec![note])]);
    }

    #[test]
    fn pid_namespace_depth_counts_the_nspid_entries() {
        let host = "Name:\tgpulab\nPid:\t4242\nNSpid:\t4242\n";
        let container = "Name:\tgpulab\nPid:\t7\nNSpid:\t4242\t7\n";
        assert_eq!(pid_namespace_depth(host), Some(1));
        assert_eq!(pid_namespace_depth(container), Some(2));
        assert_eq!(pid_namespace_depth("Name:\tgpulab\n"), None);
        assert!(process_pid_note(Some(2)).contains("--pid=host"));
        assert!(process_pid_note(None).contains("--pid=host"));
        assert!(!process_pid_note(Some(1)).contains("do not match"));
    }

    #[test]
    fn throttle_reasons_are_named_once_each() {
        let reasons = ThrottleReasons::SW_POWER_CAP | ThrottleReasons::HW_THERMAL_SLOWDOWN;
        assert_eq!(
            throttle_reason_names(reasons),
            ["sw_power_cap", "hw_thermal_slowdown"]
        );
        // The deprecated USER_DEFINED_CLOCKS is the same bit as APPLICATIONS_CLOCKS_SETTING:
        // every bit set still names each reason once.
        let all = throttle_reason_names(ThrottleReasons::all());
        let mut distinct = all.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(
            (all.len(), distinct.len()),
            (THROTTLE_REASONS.len(), all.len())
        );
        assert!(throttle_reason_names(ThrottleReasons::NONE).is_empty());
    }

    #[test]
    fn units_are_converted_to_the_api_units() {
        assert_eq!(milli(350_500), 350.5);
        assert_eq!(percent(45), 0.45);
        assert_eq!(kib_per_second(2), 2048.0);
        assert_eq!(performance_state_number(PerformanceState::Zero), Some(0));
        assert_eq!(
            performance_state_number(PerformanceState::Fifteen),
            Some(15)
        );
        assert_eq!(performance_state_number(PerformanceState::Unknown), None);
        assert_eq!(as_u64(SampleValue::I64(-1)), None);
        assert_eq!(as_u64(SampleValue::U32(7)), Some(7));
        assert!(
            remapped_rows(Some(1), Some(2), Some(0), Some(1))
                .unwrap()
                .failed
        );
        assert_eq!(remapped_rows(Some(1), None, Some(0), Some(0)), None);
    }
}

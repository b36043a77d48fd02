//! The host CPU, as Linux describes it in `/proc/cpuinfo`, `/proc/meminfo` and sysfs.
//!
//! Every value the operating system does not report stays `None`: the parsers never guess.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use gpulab_shared::{CpuDeviceInfo, Device, DeviceKind};

/// The id of the one CPU device.
pub(super) const CPU_DEVICE_ID: &str = "cpu";

/// Takes the CPU device from the files of this host.
pub(super) fn detect() -> Device {
    let cpuinfo = parse_cpuinfo(&fs::read_to_string("/proc/cpuinfo").unwrap_or_default());
    let meminfo = parse_meminfo(&fs::read_to_string("/proc/meminfo").unwrap_or_default());
    let physical_cores = cpuinfo
        .physical_cores
        .or_else(|| sysfs_physical_cores(Path::new("/sys/devices/system/cpu")));
    // The processor count of /proc/cpuinfo describes the hardware, as the core count does;
    // available_parallelism (which honours CPU affinity and cgroup quotas) is only the
    // fallback for a host whose cpuinfo lists no processors.
    let logical_threads = cpuinfo.processors.or_else(|| {
        std::thread::available_parallelism()
            .ok()
            .and_then(|n| u32::try_from(n.get()).ok())
    });
    let mut device = cpu_device(CpuDeviceInfo {
        model: cpuinfo.model,
        physical_cores,
        logical_threads,
        total_memory_bytes: meminfo.total_bytes,
        available_memory_bytes: meminfo.available_bytes,
    });
    device.peaks = crate::peaks::cpu::detect(physical_cores.or(logical_threads));
    device
}

/// The `cpu` device for what is known about the CPU.
fn cpu_device(info: CpuDeviceInfo) -> Device {
    let name = info
        .model
        .clone()
        .unwrap_or_else(|| format!("{} CPU", std::env::consts::ARCH));
    Device {
        id: CPU_DEVICE_ID.to_owned(),
        kind: DeviceKind::Cpu,
        last_diagnostic: None,
        peaks: Vec::new(),
        name,
        total_memory_bytes: info.total_memory_bytes,
        free_memory_bytes: info.available_memory_bytes,
        cuda: None,
        cpu: Some(info),
    }
}

/// What `/proc/cpuinfo` says about the CPU.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct CpuInfo {
    pub model: Option<String>,
    /// Distinct (`physical id`, `core id`) pairs, or `cpu cores` times the packages.
    pub physical_cores: Option<u32>,
    /// The number of `processor` entries.
    pub processors: Option<u32>,
}

/// Parses the text of `/proc/cpuinfo`: one block of `key : value` lines per logical processor.
pub(super) fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut processors = 0u32;
    let mut model = None;
    let mut arm_ids: Option<(String, String)> = None;
    let mut core_pairs = BTreeSet::new();
    let mut packages = BTreeSet::new();
    let mut cores_per_package = None;

    for block in text.split("\n\n") {
        let mut physical_id = None;
        let mut core_id = None;
        let mut implementer = None;
        let mut part = None;
        let mut is_processor = false;
        for (key, value) in block.lines().filter_map(key_value) {
            match key {
                "processor" => is_processor = true,
                // x86 and most others say `model name`; 32-bit ARM kernels once said
                // `Processor`, MIPS says `cpu model`, POWER says `cpu`.
                "model name" | "Processor" | "cpu model" | "cpu"
                    if model.is_none() && !value.is_empty() =>
                {
                    model = Some(value.to_owned());
                }
                "physical id" => physical_id = Some(value.to_owned()),
                "core id" => core_id = Some(value.to_owned()),
                "cpu cores" => cores_per_package = value.parse::<u32>().ok(),
                "CPU implementer" => implementer = Some(value.to_owned()),
                "CPU part" => part = Some(value.to_owned()),
                _ => {}
            }
        }
        if is_processor {
            processors += 1;
        }
        if let Some(package) = &physical_id {
            packages.insert(package.clone());
        }
        if let Some(core) = core_id {
            // A processor without `physical id` sits on the only package.
            core_pairs.insert((physical_id.unwrap_or_default(), core));
        }
        if arm_ids.is_none() {
            arm_ids = implementer.zip(part);
        }
    }

    let model = model.or_else(|| {
        arm_ids
            .and_then(|(implementer, part)| arm_core_name(&implementer, &part).map(str::to_owned))
    });
    let physical_cores = if !core_pairs.is_empty() {
        u32::try_from(core_pairs.len()).ok()
    } else {
        cores_per_package
            .filter(|_| !packages.is_empty())
            .and_then(|cores| cores.checked_mul(u32::try_from(packages.len()).ok()?))
    };
    CpuInfo {
        model,
        physical_cores,
        processors: (processors > 0).then_some(processors),
    }
}

/// The core design named by an ARM `CPU implementer` and `CPU part` (the MIDR fields), for
/// the server-class cores a GPU host is likely to have; `None` for any other.
fn arm_core_name(implementer: &str, part: &str) -> Option<&'static str> {
    let implementer = parse_hex(implementer)?;
    let part = parse_hex(part)?;
    let name = match (implementer, part) {
        (0x41, 0xd08) => "ARM Cortex-A72",
        (0x41, 0xd0b) => "ARM Cortex-A76",
        (0x41, 0xd0c) => "ARM Neoverse-N1",
        (0x41, 0xd40) => "ARM Neoverse-V1",
        (0x41, 0xd49) => "ARM Neoverse-N2",
        // NVIDIA Grace (GH200, GB200) is built from Neoverse-V2 cores.
        (0x41, 0xd4f) => "ARM Neoverse-V2",
        (0x41, 0xd84) => "ARM Neoverse-V3",
        (0x41, 0xd8e) => "ARM Neoverse-N3",
        (0xc0, 0xac3) => "Ampere-1",
        (0xc0, 0xac4) => "Ampere-1a",
        _ => return None,
    };
    Some(name)
}

fn parse_hex(text: &str) -> Option<u32> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))?;
    u32::from_str_radix(digits, 16).ok()
}

/// What `/proc/meminfo` says about memory, in bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct MemInfo {
    pub total_bytes: Option<u64>,
    pub available_bytes: Option<u64>,
}

/// Parses the text of `/proc/meminfo`, whose sizes are in kibibytes (written `kB`).
pub(crate) fn parse_meminfo(text: &str) -> MemInfo {
    let mut info = MemInfo::default();
    for (key, value) in text.lines().filter_map(key_value) {
        let slot = match key {
            "MemTotal" => &mut info.total_bytes,
            "MemAvailable" => &mut info.available_bytes,
            _ => continue,
        };
        *slot = value
            .strip_suffix("kB")
            .and_then(|kib| kib.trim().parse::<u64>().ok())
            .and_then(|kib| kib.checked_mul(1024));
    }
    info
}

/// The number of distinct cores in sysfs' CPU topology, for kernels (such as ARM's) whose
/// `/proc/cpuinfo` has no `core id`. `root` is `/sys/devices/system/cpu` outside tests.
fn sysfs_physical_cores(root: &Path) -> Option<u32> {
    let mut cores = BTreeSet::new();
    for entry in fs::read_dir(root).ok()?.flatten() {
        let name = entry.file_name();
        let is_cpu_dir = name
            .to_str()
            .and_then(|n| n.strip_prefix("cpu"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !is_cpu_dir {
            continue;
        }
        let topology = entry.path().join("topology");
        let read = |file: &str| {
            fs::read_to_string(topology.join(file))
                .ok()
                .map(|s| s.trim().to_owned())
        };
        // An offline CPU has no topology directory; it is left out rather than guessed.
        if let (Some(package), Some(core)) = (read("physical_package_id"), read("core_id")) {
            cores.insert((package, core));
        }
    }
    (!cores.is_empty())
        .then(|| u32::try_from(cores.len()).ok())
        .flatten()
}

/// Splits a `key : value` line, trimming both sides; `None` for a line without a colon.
fn key_value(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once(':')?;
    Some((key.trim(), value.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sockets of two hyperthreaded cores: 8 processors, 4 cores. Core ids repeat on
    /// the second socket, so counting `core id` alone would say 2.
    const X86_HYPERTHREADED: &str = "\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
physical id\t: 0
siblings\t: 4
core id\t\t: 0
cpu cores\t: 2

processor\t: 1
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
physical id\t: 0
core id\t\t: 1
cpu cores\t: 2

processor\t: 2
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
physical id\t: 0
core id\t\t: 0
cpu cores\t: 2

processor\t: 3
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
physical id\t: 0
core id\t\t: 1
cpu cores\t: 2

processor\t: 4
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
physical id\t: 1
core id\t\t: 0
cpu cores\t: 2

processor\t: 5
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
physical id\t: 1
core id\t\t: 1
cpu cores\t: 2

processor\t: 6
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
physical id\t: 1
core id\t\t: 0
cpu cores\t: 2

processor\t: 7
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
physical id\t: 1
core id\t\t: 1
cpu cores\t: 2
";

    /// An arm64 kernel's cpuinfo: no `model name`, no `core id`.
    const ARM64: &str = "\
processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1

processor\t: 1
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1
";

    #[test]
    fn x86_cores_are_distinct_socket_and_core_pairs() {
        let info = parse_cpuinfo(X86_HYPERTHREADED);
        assert_eq!(
            info.model.as_deref(),
            Some("Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz")
        );
        assert_eq!(info.physical_cores, Some(4));
        assert_eq!(info.processors, Some(8));
    }

    #[test]
    fn arm_without_model_name_is_named_from_its_part_number_and_counts_no_cores() {
        let info = parse_cpuinfo(ARM64);
        assert_eq!(info.model.as_deref(), Some("ARM Neoverse-N1"));
        assert_eq!(info.physical_cores, None);
        assert_eq!(info.processors, Some(2));
    }

    #[test]
    fn unknown_arm_part_leaves_the_model_unknown() {
        let info = parse_cpuinfo(&ARM64.replace("0xd0c", "0xfff"));
        assert_eq!(info.model, None);
    }

    #[test]
    fn cores_fall_back_to_cpu_cores_times_packages() {
        let text = "processor : 0\nphysical id : 0\ncpu cores : 6\n\n\
                    processor : 1\nphysical id : 1\ncpu cores : 6\n";
        assert_eq!(parse_cpuinfo(text).physical_cores, Some(12));
    }

    #[test]
    fn empty_cpuinfo_knows_nothing() {
        assert_eq!(parse_cpuinfo(""), CpuInfo::default());
    }

    #[test]
    fn meminfo_sizes_are_kibibytes() {
        let text = "MemTotal:       16318412 kB\nMemFree:         1234567 kB\n\
                    MemAvailable:   10485760 kB\nBuffers:          204800 kB\n";
        assert_eq!(
            parse_meminfo(text),
            MemInfo {
                total_bytes: Some(16_318_412 * 1024),
                available_bytes: Some(10_485_760 * 1024),
            }
        );
    }

    #[test]
    fn meminfo_without_mem_available_leaves_it_unknown() {
        // Kernels before 3.14 have no MemAvailable.
        let info = parse_meminfo("MemTotal: 2048 kB\nMemFree: 1024 kB\n");
        assert_eq!(info.total_bytes, Some(2048 * 1024));
        assert_eq!(info.available_bytes, None);
    }

    #[test]
    fn sysfs_topology_counts_distinct_cores() {
        let root = tempfile::tempdir().unwrap();
        // cpu0 and cpu1 are SMT siblings; cpu2 is another core; cpu3 is offline.
        for (cpu, package, core) in [(0, 0, 0), (1, 0, 0), (2, 0, 1)] {
            let topology = root.path().join(format!("cpu{cpu}/topology"));
            fs::create_dir_all(&topology).unwrap();
            fs::write(topology.join("physical_package_id"), format!("{package}\n")).unwrap();
            fs::write(topology.join("core_id"), format!("{core}\n")).unwrap();
        }
        fs::create_dir_all(root.path().join("cpu3")).unwrap();
        fs::create_dir_all(root.path().join("cpufreq")).unwrap();
        assert_eq!(sysfs_physical_cores(root.path()), Some(2));
        assert_eq!(sysfs_physical_cores(&root.path().join("missing")), None);
    }

    #[test]
    fn device_is_named_after_the_model_or_the_architecture() {
        let device = cpu_device(CpuDeviceInfo {
            model: Some("AMD EPYC 7763 64-Core Processor".into()),
            total_memory_bytes: Some(1 << 30),
            available_memory_bytes: Some(1 << 29),
            ..CpuDeviceInfo::default()
        });
        assert_eq!(device.id, "cpu");
        assert_eq!(device.kind, DeviceKind::Cpu);
        assert_eq!(device.name, "AMD EPYC 7763 64-Core Processor");
        assert_eq!(device.total_memory_bytes, Some(1 << 30));
        assert_eq!(device.free_memory_bytes, Some(1 << 29));

        let unnamed = cpu_device(CpuDeviceInfo::default());
        assert_eq!(unnamed.name, format!("{} CPU", std::env::consts::ARCH));
        assert_eq!(unnamed.cpu.unwrap().model, None);
    }

    #[test]
    fn this_host_has_a_cpu_device() {
        let device = detect();
        let info = device.cpu.expect("cpu info");
        let threads = info
            .logical_threads
            .expect("every Linux host lists its processors");
        assert!(threads >= 1);
        if let Some(cores) = info.physical_cores {
            assert!(
                cores >= 1 && cores <= threads,
                "{cores} cores, {threads} threads"
            );
        }
    }
}

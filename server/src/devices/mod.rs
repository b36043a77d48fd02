//! The device inventory: the host CPU and every usable CUDA GPU.

mod cpu;
mod cuda;
pub mod host_memory;
pub use cuda::NO_DRIVER_REASON;

use gpulab_shared::{CudaStatus, Device, DeviceKind};

// The telemetry sampler reads /proc/meminfo every second with the inventory's parser.
pub(crate) use cpu::parse_meminfo;

/// Every device of this host, taken once at start-up.
#[derive(Debug, Clone)]
pub struct DeviceInventory {
    /// `cuda:0`, `cuda:1`, … first, then `cpu`.
    pub devices: Vec<Device>,
    pub cuda: CudaStatus,
}

impl DeviceInventory {
    /// Takes the inventory of this host: the CUDA GPUs in ordinal order, then the CPU.
    ///
    /// Never fails: when CUDA cannot be used, `cuda.reason` says why and only the CPU is
    /// listed. Initialises the CUDA driver in this process (so start worker processes with
    /// `std::process::Command`, never a bare `fork`), and briefly retains each GPU's primary
    /// context to read its free memory, which takes up to a few hundred milliseconds per GPU.
    /// No context is left alive afterwards.
    pub fn detect() -> Self {
        let (mut devices, mut cuda) = cuda::detect();
        cuda.libraries = crate::cuda::libraries_from_child();
        devices.push(cpu::detect());
        DeviceInventory { devices, cuda }
    }

    /// One device by id, taken now (for `gpulab run`, which has no inventory): `None` for
    /// an id this host has no device for.
    pub fn detect_one(id: &str) -> Option<Device> {
        if id == cpu::CPU_DEVICE_ID {
            return Some(cpu::detect());
        }
        cuda::detect().0.into_iter().find(|device| device.id == id)
    }

    /// An inventory of the given devices, for tests.
    #[cfg(test)]
    pub fn from_parts(devices: Vec<Device>, cuda: CudaStatus) -> Self {
        DeviceInventory { devices, cuda }
    }

    /// The device whose id is `id` (`cpu`, `cuda:0`, …).
    pub fn find(&self, id: &str) -> Option<&Device> {
        self.devices.iter().find(|device| device.id == id)
    }

    /// How many CUDA GPUs there are.
    pub fn cuda_count(&self) -> usize {
        self.cuda_devices().count()
    }

    /// The line the original course page printed with PyCUDA, character for character:
    /// `2 device(s) found., Device #0: NAME, Compute Capability: 9.0, Total Memory: N KB, …`
    /// (the CPU is not counted; a value the driver did not report prints as `?`).
    pub fn pycuda_line(&self) -> String {
        let mut line = format!("{} device(s) found.", self.cuda_count());
        for (index, device) in self.cuda_devices().enumerate() {
            let info = device.cuda.as_ref();
            let ordinal = info.map_or(index as u32, |info| info.ordinal);
            let capability = info.and_then(|info| info.compute_capability).map_or_else(
                || "?.?".to_owned(),
                |cc| format!("{}.{}", cc.major, cc.minor),
            );
            let total_kb = device
                .total_memory_bytes
                .map_or_else(|| "?".to_owned(), |bytes| (bytes / 1024).to_string());
            line.push_str(&format!(
                ", Device #{ordinal}: {}, Compute Capability: {capability}, Total Memory: {total_kb} KB",
                device.name
            ));
        }
        line
    }

    /// A text table of every device for `gpulab devices`, then a line about CUDA: the
    /// version the driver supports, or why CUDA cannot be used. `?` marks a value the
    /// system did not report, `-` one that does not apply to the device.
    pub fn table(&self) -> String {
        let header = ["ID", "NAME", "MEMORY", "COMPUTE", "SMs", "CLOCKS"].map(str::to_owned);
        let rows: Vec<[String; 6]> = std::iter::once(header)
            .chain(self.devices.iter().map(table_row))
            .collect();
        let mut widths = [0usize; 6];
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &rows {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(widths) {
                line.push_str(&format!("{cell:<width$}  "));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        match (&self.cuda.reason, &self.cuda.driver_version) {
            (Some(reason), _) if !self.cuda.available => {
                out.push_str(&format!("CUDA unavailable: {reason}\n"));
            }
            (_, Some(version)) => {
                out.push_str(&format!("CUDA driver supports CUDA {version}\n"));
            }
            _ => {}
        }
        out
    }

    fn cuda_devices(&self) -> impl Iterator<Item = &Device> {
        self.devices
            .iter()
            .filter(|device| device.kind == DeviceKind::Cuda)
    }
}

fn table_row(device: &Device) -> [String; 6] {
    let memory = match (device.total_memory_bytes, device.free_memory_bytes) {
        (Some(total), Some(free)) => format!("{} ({} free)", gib(total), gib(free)),
        (Some(total), None) => gib(total),
        (None, _) => "?".to_owned(),
    };
    let (compute, sms, clocks) = match (&device.cuda, &device.cpu) {
        (Some(gpu), _) => (
            gpu.compute_capability.map_or_else(
                || "CC ?".to_owned(),
                |cc| format!("CC {}.{}", cc.major, cc.minor),
            ),
            or_unknown(gpu.multiprocessor_count),
            format!(
                "SM {} MHz, memory {} MHz",
                or_unknown(gpu.max_sm_clock_mhz),
                or_unknown(gpu.max_memory_clock_mhz)
            ),
        ),
        (None, Some(cpu)) => (
            format!(
                "{} cores, {} threads",
                or_unknown(cpu.physical_cores),
                or_unknown(cpu.logical_threads)
            ),
            "-".to_owned(),
            "-".to_owned(),
        ),
        (None, None) => ("?".to_owned(), "-".to_owned(), "-".to_owned()),
    };
    [
        device.id.clone(),
        device.name.clone(),
        memory,
        compute,
        sms,
        clocks,
    ]
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn or_unknown(value: Option<u32>) -> String {
    value.map_or_else(|| "?".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use gpulab_shared::{ComputeCapability, CpuDeviceInfo, CudaDeviceInfo};

    use super::*;

    fn gpu(ordinal: u32, name: &str, total: u64, major: u32, minor: u32) -> Device {
        Device {
            id: format!("cuda:{ordinal}"),
            kind: DeviceKind::Cuda,
            last_diagnostic: None,
            peaks: Vec::new(),
            name: name.to_owned(),
            total_memory_bytes: Some(total),
            free_memory_bytes: Some(total / 2),
            cuda: Some(CudaDeviceInfo {
                ordinal,
                compute_capability: Some(ComputeCapability { major, minor }),
                multiprocessor_count: Some(132),
                max_sm_clock_mhz: Some(1980),
                max_memory_clock_mhz: Some(2619),
                ..CudaDeviceInfo::default()
            }),
            cpu: None,
        }
    }

    fn cpu() -> Device {
        Device {
            id: "cpu".to_owned(),
            kind: DeviceKind::Cpu,
            last_diagnostic: None,
            peaks: Vec::new(),
            name: "AMD EPYC 7763 64-Core Processor".to_owned(),
            total_memory_bytes: Some(16 << 30),
            free_memory_bytes: Some(12 << 30),
            cuda: None,
            cpu: Some(CpuDeviceInfo {
                model: Some("AMD EPYC 7763 64-Core Processor".to_owned()),
                physical_cores: Some(8),
                logical_threads: Some(16),
                total_memory_bytes: Some(16 << 30),
                available_memory_bytes: Some(12 << 30),
            }),
        }
    }

    fn no_cuda() -> CudaStatus {
        CudaStatus {
            available: false,
            driver_version: None,
            reason: Some(cuda::NO_DRIVER_REASON.to_owned()),
            libraries: Default::default(),
        }
    }

    fn two_gpus() -> DeviceInventory {
        DeviceInventory::from_parts(
            vec![
                gpu(0, "NVIDIA H100 80GB HBM3", 85_899_345_920, 9, 0),
                // 12 GiB less one byte: the KB figure is rounded down, as `//` did.
                gpu(1, "NVIDIA GeForce RTX 3060", 12_884_901_887, 8, 6),
                cpu(),
            ],
            CudaStatus {
                available: true,
                driver_version: Some("12.8".to_owned()),
                reason: None,
                libraries: Default::default(),
            },
        )
    }

    #[test]
    fn pycuda_line_without_gpus_counts_none() {
        let inventory = DeviceInventory::from_parts(vec![cpu()], no_cuda());
        assert_eq!(inventory.pycuda_line(), "0 device(s) found.");
    }

    #[test]
    fn pycuda_line_with_two_gpus_matches_the_course_page() {
        assert_eq!(
            two_gpus().pycuda_line(),
            "2 device(s) found., \
             Device #0: NVIDIA H100 80GB HBM3, Compute Capability: 9.0, Total Memory: 83886080 KB, \
             Device #1: NVIDIA GeForce RTX 3060, Compute Capability: 8.6, Total Memory: 12582911 KB"
        );
    }

    #[test]
    fn find_and_count() {
        let inventory = two_gpus();
        assert_eq!(inventory.cuda_count(), 2);
        assert_eq!(
            inventory.find("cuda:1").unwrap().name,
            "NVIDIA GeForce RTX 3060"
        );
        assert_eq!(inventory.find("cpu").unwrap().kind, DeviceKind::Cpu);
        assert!(inventory.find("cuda:2").is_none());
        assert!(inventory.find("CPU").is_none());
    }

    #[test]
    fn table_of_the_cpu_alone_says_why_cuda_is_unavailable() {
        let inventory = DeviceInventory::from_parts(vec![cpu()], no_cuda());
        assert_eq!(
            inventory.table(),
            format!(
                "ID   NAME                             MEMORY                    COMPUTE              SMs  CLOCKS\n\
                 cpu  AMD EPYC 7763 64-Core Processor  16.0 GiB (12.0 GiB free)  8 cores, 16 threads  -    -\n\
                 CUDA unavailable: {}\n",
                cuda::NO_DRIVER_REASON
            )
        );
    }

    #[test]
    fn table_aligns_gpus_and_cpu_in_columns() {
        let table = two_gpus().table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(lines[1].starts_with("cuda:0  NVIDIA H100 80GB HBM3  "));
        assert!(lines[1].contains("80.0 GiB (40.0 GiB free)"));
        assert!(lines[1].contains("CC 9.0"));
        assert!(lines[1].ends_with("SM 1980 MHz, memory 2619 MHz"));
        assert!(lines[3].starts_with("cpu     AMD EPYC"));
        let memory_column = lines[0].find("MEMORY").unwrap();
        for line in &lines[1..4] {
            assert_ne!(line.as_bytes()[memory_column], b' ', "{line}");
            assert_eq!(line.as_bytes()[memory_column - 1], b' ', "{line}");
        }
        assert_eq!(lines[4], "CUDA driver supports CUDA 12.8");
    }

    #[test]
    fn detected_inventory_lists_gpus_then_the_cpu() {
        let inventory = DeviceInventory::detect();
        let last = inventory.devices.last().expect("the CPU is always listed");
        assert_eq!(last.id, "cpu");
        let count = inventory.cuda_count();
        assert_eq!(inventory.devices.len(), count + 1);
        assert_eq!(inventory.cuda.available, count > 0);
        assert!(inventory
            .pycuda_line()
            .starts_with(&format!("{count} device(s) found.")));
        assert!(inventory.table().contains("cpu "));
    }
}

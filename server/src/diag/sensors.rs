//! What a device reports while the checks run: temperature, clock, power and the throttle
//! reasons active now. The GPU's come from NVML, the CPU's from `/sys`; the
//! [`Fault::ThermalThrottle`](gpulab_shared::diag::Fault::ThermalThrottle) fault is faked
//! here, in the telemetry source, so that the checks above see it as they would a real one.

use std::path::{Path, PathBuf};

/// One reading of the device's sensors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    pub temperature_celsius: Option<f64>,
    pub sm_clock_mhz: Option<u32>,
    pub power_watts: Option<f64>,
    /// The active throttle reasons; `None` when the device does not say.
    pub throttle_reasons: Option<Vec<String>>,
}

/// The throttle reason the fault fakes, as NVML names it.
pub const FAKED_REASON: &str = "hw_thermal_slowdown";

/// The throttle reasons that mean trouble: heat, the power brake, a hardware slowdown
/// (not the power cap or an idle GPU, which are normal).
pub const TROUBLE: [&str; 5] = [
    "hw_slowdown",
    "hw_thermal_slowdown",
    "sw_thermal_slowdown",
    "hw_power_brake_slowdown",
    CPU_THERMAL,
];

/// The CPU's one reason: a core or package thermal-throttle counter rose.
pub const CPU_THERMAL: &str = "cpu_thermal_throttle";

/// The reasons of `reasons` that mean trouble.
pub fn troubling(reasons: &[String]) -> Vec<String> {
    reasons
        .iter()
        .filter(|r| TROUBLE.contains(&r.as_str()))
        .cloned()
        .collect()
}

/// A device's sensors, with the injected thermal fault on top.
pub struct Sensors<'a> {
    read: Box<dyn FnMut() -> Reading + 'a>,
    fake_thermal: bool,
    /// Where the readings come from, for the evidence.
    pub source: String,
}

impl<'a> Sensors<'a> {
    pub fn new(
        source: impl Into<String>,
        fake_thermal: bool,
        read: impl FnMut() -> Reading + 'a,
    ) -> Self {
        Sensors {
            read: Box::new(read),
            fake_thermal,
            source: source.into(),
        }
    }

    pub fn read(&mut self) -> Reading {
        let mut reading = (self.read)();
        if self.fake_thermal {
            let reasons = reading.throttle_reasons.get_or_insert_with(Vec::new);
            if !reasons.iter().any(|r| r == FAKED_REASON) {
                reasons.push(FAKED_REASON.to_owned());
            }
        }
        reading
    }

    /// The source, and that a fault was injected when one was.
    pub fn described(&self) -> String {
        if self.fake_thermal {
            format!(
                "{} (test fault thermal_throttle: `{FAKED_REASON}` faked)",
                self.source
            )
        } else {
            self.source.clone()
        }
    }
}

/// The CPU's sensors: the hottest CPU temperature sensor and the thermal-throttle counters
/// of `/sys/devices/system/cpu/cpu*/thermal_throttle` (x86 with the `therm_throt` driver);
/// a counter that rose since the last reading is an active `cpu_thermal_throttle`.
pub struct CpuSensors {
    temperature: crate::telemetry::cpu::CpuSampler,
    counters: Vec<PathBuf>,
    last_count: Option<u64>,
}

impl CpuSensors {
    pub fn new() -> Self {
        CpuSensors {
            temperature: crate::telemetry::cpu::CpuSampler::new(),
            counters: throttle_counters(Path::new("/sys/devices/system/cpu")),
            last_count: None,
        }
    }

    pub fn has_throttle_counters(&self) -> bool {
        !self.counters.is_empty()
    }

    pub fn read(&mut self) -> Reading {
        let temperature_celsius = self.temperature.sample().temperature_celsius;
        let throttle_reasons = if self.counters.is_empty() {
            None
        } else {
            let count: u64 = self
                .counters
                .iter()
                .filter_map(|p| std::fs::read_to_string(p).ok())
                .filter_map(|t| t.trim().parse::<u64>().ok())
                .sum();
            let rose = self.last_count.is_some_and(|last| count > last);
            self.last_count = Some(count);
            Some(if rose {
                vec![CPU_THERMAL.to_owned()]
            } else {
                Vec::new()
            })
        };
        Reading {
            temperature_celsius,
            sm_clock_mhz: None,
            power_watts: None,
            throttle_reasons,
        }
    }
}

/// `core_throttle_count` and `package_throttle_count` of every CPU under `cpu_root`.
fn throttle_counters(cpu_root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(cpu_root) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with("cpu") || !name[3..].chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        for counter in ["core_throttle_count", "package_throttle_count"] {
            let path = entry.path().join("thermal_throttle").join(counter);
            if path.is_file() {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fault_adds_a_thermal_reason_to_what_the_device_says() {
        let mut quiet = Sensors::new("test", false, Reading::default);
        assert_eq!(quiet.read().throttle_reasons, None);
        let mut faulted = Sensors::new("test", true, || Reading {
            throttle_reasons: Some(vec!["sw_power_cap".into()]),
            ..Reading::default()
        });
        let reasons = faulted.read().throttle_reasons.unwrap();
        assert_eq!(reasons, ["sw_power_cap", FAKED_REASON]);
        assert_eq!(troubling(&reasons), [FAKED_REASON]);
        assert!(faulted.described().contains("thermal_throttle"));
    }

    #[test]
    fn throttle_counters_are_found_per_cpu() {
        let dir = tempfile::tempdir().unwrap();
        for cpu in ["cpu0", "cpu1", "cpufreq"] {
            let t = dir.path().join(cpu).join("thermal_throttle");
            std::fs::create_dir_all(&t).unwrap();
            std::fs::write(t.join("core_throttle_count"), "3\n").unwrap();
        }
        let found = throttle_counters(dir.path());
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(throttle_counters(&dir.path().join("none")).is_empty());
    }
}

//! `GET /metrics`: the Prometheus text exposition (format 0.0.4) of device telemetry, device
//! attributes, jobs, diagnostics and build, rendered at scrape time from what the API itself serves. This
//! room only writes text from the data it is given; the API reads that data.
//!
//! Units are Prometheus' base units: seconds, bytes, hertz, joules, ratios from 0 to 1.
//! Every GPU series is labelled `{device, uuid}`, every CPU series `{device="cpu"}`.

mod devices;
mod diagnostics;
mod exposition;
mod jobs;

use gpulab_shared::TelemetrySample;

use crate::devices::DeviceInventory;
use crate::store::diagnostics::LastPart;
use crate::store::stats::JobStats;
use exposition::{Exposition, MetricType};
pub use jobs::DURATION_BUCKETS_S;

/// The exposition of what was read, every family once, in a fixed order.
pub fn render(
    inventory: &DeviceInventory,
    telemetry: &[TelemetrySample],
    jobs: &JobStats,
    diagnostics: &[(String, LastPart)],
) -> String {
    let mut out = Exposition::new();
    out.family(
        "gpulab_build_info",
        MetricType::Gauge,
        "The gpulab server's version; the value is always 1.",
    )
    .sample(&[("version", env!("CARGO_PKG_VERSION"))], 1u64);
    devices::write_info(&mut out, inventory);
    devices::write_sample_times(&mut out, telemetry);
    devices::write_cpu(&mut out, telemetry);
    devices::write_gpus(&mut out, inventory, telemetry);
    jobs::write(&mut out, inventory, jobs);
    diagnostics::write(&mut out, diagnostics);
    out.finish()
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use gpulab_shared::{
        ComputeCapability, CpuDeviceInfo, CpuTelemetry, CudaDeviceInfo, CudaStatus, Device,
        DeviceKind, GpuProcess, GpuTelemetry, JobStatus, RemappedRows,
    };
    use prometheus_parse::{Scrape, Value};

    use super::*;
    use crate::store::stats::{FinishedJobs, JobDurations, UnfinishedJobs};
    use crate::store::usage::UserDeviceSeconds;

    fn inventory() -> DeviceInventory {
        let gpu = |ordinal: u32, uuid: Option<&str>| Device {
            id: format!("cuda:{ordinal}"),
            kind: DeviceKind::Cuda,
            last_diagnostic: None,
            peaks: Vec::new(),
            name: "NVIDIA \"Test\" GPU".into(),
            total_memory_bytes: Some(80 << 30),
            free_memory_bytes: None,
            cuda: Some(CudaDeviceInfo {
                ordinal,
                uuid: uuid.map(str::to_owned),
                pci_bus_id: Some(format!("00000000:0{ordinal}:00.0")),
                compute_capability: Some(ComputeCapability { major: 9, minor: 0 }),
                ..Default::default()
            }),
            cpu: None,
        };
        let cpu = Device {
            id: "cpu".into(),
            kind: DeviceKind::Cpu,
            last_diagnostic: None,
            peaks: Vec::new(),
            name: "Test CPU".into(),
            total_memory_bytes: Some(1 << 30),
            free_memory_bytes: None,
            cuda: None,
            cpu: Some(CpuDeviceInfo::default()),
        };
        DeviceInventory::from_parts(
            vec![gpu(0, Some("GPU-0000")), gpu(1, None), cpu],
            CudaStatus {
                available: true,
                driver_version: Some("12.8".into()),
                reason: None,
                libraries: Default::default(),
            },
        )
    }

    fn telemetry() -> Vec<TelemetrySample> {
        let at = Utc.timestamp_millis_opt(1_700_000_000_250).unwrap();
        let busy = GpuTelemetry {
            temperature_celsius: Some(61.0),
            power_watts: Some(312.5),
            energy_joules: Some(1.5e6),
            utilization_ratio: Some(0.97),
            memory_used_bytes: Some(40 << 30),
            sm_clock_mhz: Some(1980),
            throttle_reasons: Some(vec!["sw_power_cap".into(), "hw_thermal_slowdown".into()]),
            ecc_corrected_errors: Some(3),
            ecc_uncorrected_errors: Some(0),
            remapped_rows: Some(RemappedRows {
                correctable: 2,
                uncorrectable: 0,
                pending: true,
                failed: false,
            }),
            processes: Some(vec![GpuProcess {
                pid: 42,
                used_memory_bytes: None,
            }]),
            ..Default::default()
        };
        vec![
            TelemetrySample {
                device: "cuda:0".into(),
                at,
                cpu: None,
                gpu: Some(busy),
            },
            TelemetrySample {
                device: "cuda:1".into(),
                at,
                cpu: None,
                // A GPU whose driver reports nothing.
                gpu: Some(GpuTelemetry::default()),
            },
            TelemetrySample {
                device: "cpu".into(),
                at,
                cpu: Some(CpuTelemetry {
                    utilization_ratio: Some(0.25),
                    memory_used_bytes: Some(512 << 20),
                    memory_total_bytes: Some(1 << 30),
                    load_average: Some([1.5, 1.0, 0.5]),
                    temperature_celsius: None,
                }),
                gpu: None,
            },
        ]
    }

    fn stats() -> JobStats {
        JobStats {
            finished: vec![FinishedJobs {
                kernel: "saxpy".into(),
                device: "cuda:0".into(),
                status: JobStatus::Succeeded,
                count: 4,
            }],
            unfinished: vec![UnfinishedJobs {
                device: "cuda:0".into(),
                status: JobStatus::Running,
                count: 1,
            }],
            durations: vec![JobDurations {
                kernel: "saxpy".into(),
                device: "cuda:0".into(),
                at_most: vec![0, 1, 1, 2, 2, 2, 3, 4, 4, 4, 4, 4, 4],
                count: 4,
                sum_seconds: 3.5,
            }],
            pruned: 3,
            user_device_seconds: vec![
                UserDeviceSeconds {
                    owner: None,
                    device: "cpu".into(),
                    seconds: 1.5,
                },
                UserDeviceSeconds {
                    owner: Some("alice".into()),
                    device: "cuda:0".into(),
                    seconds: 2.25,
                },
            ],
        }
    }

    fn values(scrape: &Scrape, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
        let mut out: Vec<_> = scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| {
                let mut labels: Vec<(String, String)> = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                labels.sort();
                let v = match s.value {
                    Value::Gauge(v) | Value::Counter(v) | Value::Untyped(v) => v,
                    _ => f64::NAN,
                };
                (labels, v)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut out: Vec<_> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn device_seconds_are_by_user_and_device_and_the_anonymous_user_is_empty() {
        let text = render(&inventory(), &[], &stats(), &[]);
        assert!(text.contains("# TYPE gpulab_user_device_seconds_total counter"));
        assert!(
            text.contains("gpulab_user_device_seconds_total{user=\"\",device=\"cpu\"} 1.5"),
            "{text}"
        );
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        assert_eq!(
            values(&scrape, "gpulab_user_device_seconds_total")
                .into_iter()
                .map(|(_, v)| v)
                .sum::<f64>(),
            3.75
        );
    }

    #[test]
    fn gpu_telemetry_is_written_in_base_units_and_nulls_are_left_out() {
        let text = render(&inventory(), &telemetry(), &stats(), &[]);
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let gpu0 = [("device", "cuda:0"), ("uuid", "GPU-0000")];
        let with = |extra: (&str, &str)| labels(&[gpu0[0], gpu0[1], extra]);

        assert_eq!(
            values(&scrape, "gpulab_gpu_sm_clock_hertz"),
            [(labels(&gpu0), 1.98e9)],
            "MHz become hertz; cuda:1 reported no clock and has no series"
        );
        assert_eq!(
            values(&scrape, "gpulab_gpu_energy_joules_total"),
            [(labels(&gpu0), 1.5e6)]
        );
        assert!(matches!(
            scrape
                .samples
                .iter()
                .find(|s| s.metric == "gpulab_gpu_energy_joules_total")
                .unwrap()
                .value,
            Value::Counter(_)
        ));
        assert_eq!(
            values(&scrape, "gpulab_gpu_memory_used_bytes"),
            [(labels(&gpu0), (40u64 << 30) as f64)]
        );
        assert_eq!(
            values(&scrape, "gpulab_gpu_throttle_reason"),
            [
                (with(("reason", "hw_thermal_slowdown")), 1.0),
                (with(("reason", "sw_power_cap")), 1.0)
            ]
        );
        assert_eq!(
            values(&scrape, "gpulab_gpu_ecc_errors_total"),
            [
                (with(("type", "corrected")), 3.0),
                (with(("type", "uncorrected")), 0.0)
            ]
        );
        assert_eq!(
            values(&scrape, "gpulab_gpu_row_remapping_pending"),
            [(labels(&gpu0), 1.0)]
        );
        assert_eq!(
            values(&scrape, "gpulab_gpu_processes"),
            [(labels(&gpu0), 1.0)]
        );
        // No value was reported for these on any GPU, so the families are absent.
        for absent in ["gpulab_gpu_fan_speed_ratio", "gpulab_gpu_power_limit_watts"] {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
        assert!(!text.contains("device=\"cuda:1\",uuid"), "{text}");
        assert!(!text.contains("gpulab_cpu_temperature_celsius"), "{text}");

        assert_eq!(
            values(&scrape, "gpulab_cpu_load_average"),
            [
                (labels(&[("device", "cpu"), ("window", "15m")]), 0.5),
                (labels(&[("device", "cpu"), ("window", "1m")]), 1.5),
                (labels(&[("device", "cpu"), ("window", "5m")]), 1.0),
            ]
        );
        assert_eq!(
            values(&scrape, "gpulab_telemetry_sample_timestamp_seconds")[0].1,
            1_700_000_000.25
        );
    }

    #[test]
    fn device_info_has_every_device_with_its_static_attributes() {
        let text = render(&inventory(), &[], &JobStats::default(), &[]);
        assert!(text.contains(
            "gpulab_device_info{device=\"cuda:0\",kind=\"cuda\",name=\"NVIDIA \\\"Test\\\" GPU\",\
             uuid=\"GPU-0000\",pci_bus_id=\"00000000:00:00.0\",compute_capability=\"9.0\"} 1\n"
        ));
        assert!(text.contains(
            "gpulab_device_info{device=\"cuda:1\",kind=\"cuda\",name=\"NVIDIA \\\"Test\\\" GPU\",\
             pci_bus_id=\"00000000:01:00.0\",compute_capability=\"9.0\"} 1\n"
        ));
        assert!(
            text.contains("gpulab_device_info{device=\"cpu\",kind=\"cpu\",name=\"Test CPU\"} 1\n")
        );
        // Without telemetry no device family is written at all.
        assert!(!text.contains("gpulab_gpu_"), "{text}");
        assert!(!text.contains("gpulab_cpu_"), "{text}");
    }

    #[test]
    fn diagnostics_show_each_judged_check_the_verdict_and_when_per_device_and_level() {
        use crate::store::diagnostics::LastPart;
        use gpulab_shared::diag::Verdict;
        use gpulab_shared::diag::{CheckResult, CheckState, DeviceDiagnostic, DiagnosticStatus};
        let check = |id: &str, verdict| CheckResult {
            check: id.into(),
            title: id.into(),
            state: CheckState::Done,
            verdict: Some(verdict),
            summary: String::new(),
            reason: None,
            evidence: Vec::new(),
            progress: None,
            duration_s: None,
            series: Vec::new(),
        };
        let finished_at = Utc.timestamp_millis_opt(1_700_000_100_500).unwrap();
        let last = |device: &str, uuid: Option<&str>, level, checks: Vec<CheckResult>| {
            let verdict = Verdict::combine(checks.iter().filter_map(|c| c.verdict));
            (
                device.to_owned(),
                LastPart {
                    level,
                    finished_at,
                    part: DeviceDiagnostic {
                        device: device.into(),
                        name: "x".into(),
                        uuid: uuid.map(str::to_owned),
                        status: DiagnosticStatus::Finished,
                        verdict: Some(verdict),
                        started_at: None,
                        finished_at: Some(finished_at),
                        checks,
                        error: None,
                    },
                },
            )
        };
        let parts = [
            last(
                "cuda:0",
                Some("GPU-0000"),
                2,
                vec![
                    check("memory_test", Verdict::Fail),
                    check("pcie_link", Verdict::Warn),
                    check("persistence", Verdict::Skip),
                ],
            ),
            last("cpu", None, 1, vec![check("memory", Verdict::Pass)]),
        ];
        let text = render(&inventory(), &[], &JobStats::default(), &parts);
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let gpu = |extra: &[(&str, &str)]| {
            let mut all = vec![("device", "cuda:0"), ("uuid", "GPU-0000"), ("level", "2")];
            all.extend_from_slice(extra);
            labels(&all)
        };
        let cpu = |extra: &[(&str, &str)]| {
            let mut all = vec![("device", "cpu"), ("level", "1")];
            all.extend_from_slice(extra);
            labels(&all)
        };
        let mut expected = vec![
            (gpu(&[("check", "memory_test")]), 2.0),
            (gpu(&[("check", "pcie_link")]), 1.0),
            (cpu(&[("check", "memory")]), 0.0),
        ];
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            values(&scrape, "gpulab_diagnostic_result"),
            expected,
            "a skipped check has no series"
        );
        assert_eq!(
            values(&scrape, "gpulab_diagnostic_verdict"),
            [(cpu(&[]), 0.0), (gpu(&[]), 2.0)]
        );
        assert_eq!(
            values(&scrape, "gpulab_diagnostic_last_run_timestamp_seconds"),
            [(cpu(&[]), 1_700_000_100.5), (gpu(&[]), 1_700_000_100.5)]
        );
        assert!(text.contains("# TYPE gpulab_diagnostic_verdict gauge\n"));
        // Without diagnostics the families are absent.
        let none = render(&inventory(), &[], &JobStats::default(), &[]);
        assert!(!none.contains("gpulab_diagnostic"), "{none}");
    }

    #[test]
    fn jobs_show_every_device_and_a_histogram() {
        let text = render(&inventory(), &[], &stats(), &[]);
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let now = values(&scrape, "gpulab_jobs");
        assert_eq!(now.len(), 6, "queued and running for each of 3 devices");
        assert!(now.contains(&(labels(&[("device", "cuda:0"), ("status", "running")]), 1.0)));
        assert!(now.contains(&(labels(&[("device", "cpu"), ("status", "queued")]), 0.0)));
        assert_eq!(
            values(&scrape, "gpulab_jobs_total"),
            [(
                labels(&[
                    ("device", "cuda:0"),
                    ("kernel", "saxpy"),
                    ("status", "succeeded")
                ]),
                4.0
            )]
        );
        assert_eq!(values(&scrape, "gpulab_jobs_pruned_total"), [(vec![], 3.0)]);
        let histogram = scrape
            .samples
            .iter()
            .find(|s| s.metric == "gpulab_job_duration_seconds")
            .unwrap();
        let Value::Histogram(buckets) = &histogram.value else {
            panic!("{histogram:?}");
        };
        assert_eq!(buckets.len(), jobs::DURATION_BUCKETS_S.len() + 1);
        assert_eq!(buckets[1].less_than, 0.005);
        assert_eq!(buckets[1].count, 1.0);
        assert_eq!(buckets.last().unwrap().count, 4.0);
        assert!(text
            .contains("gpulab_job_duration_seconds_sum{kernel=\"saxpy\",device=\"cuda:0\"} 3.5\n"));
        assert!(text
            .contains("gpulab_job_duration_seconds_count{kernel=\"saxpy\",device=\"cuda:0\"} 4\n"));
    }
}

//! The same job on several devices, side by side: `device: "all"` and
//! `GET /api/jobs/compare`.

use gpulab_shared::{ComparisonEntry, Job, JobComparison, JobStatus};

/// A device more than this much slower than the best is flagged (gpu-fryer's rule).
pub const SLOW_THRESHOLD: f64 = 0.10;

/// Compares the throughput of `jobs` (which should be one kernel with the same parameters
/// on different devices), flagging each device more than [`SLOW_THRESHOLD`] slower than
/// the best one that succeeded.
pub fn compare(jobs: &[Job]) -> JobComparison {
    let figure = |job: &Job| {
        (job.status == JobStatus::Succeeded)
            .then_some(job.result.as_ref())
            .flatten()
            .map(|r| (r.throughput.value, r.throughput.unit.clone()))
    };
    let figures: Vec<Option<(f64, String)>> = jobs.iter().map(figure).collect();
    let mut units = figures.iter().flatten().map(|(_, unit)| unit.as_str());
    let unit = units.next().map(str::to_owned);
    let one_unit = unit
        .as_deref()
        .is_some_and(|u| units.all(|other| other == u));
    let best = figures
        .iter()
        .flatten()
        .map(|(value, _)| *value)
        .filter(|v| *v > 0.0)
        .reduce(f64::max)
        .filter(|_| one_unit);
    let entries = jobs
        .iter()
        .zip(&figures)
        .map(|(job, figure)| {
            let throughput = figure.as_ref().map(|(value, _)| *value);
            let slower_than_best = best
                .zip(throughput)
                .filter(|(_, t)| *t > 0.0)
                .map(|(best, t)| best / t - 1.0);
            ComparisonEntry {
                job_id: job.id,
                device: job.device.clone(),
                status: job.status,
                throughput,
                slower_than_best,
                flagged: slower_than_best.is_some_and(|s| s > SLOW_THRESHOLD),
                fraction_of_peak: job
                    .result
                    .as_ref()
                    .filter(|_| job.status == JobStatus::Succeeded)
                    .and_then(|r| r.fraction_of_peak.clone()),
            }
        })
        .collect();
    JobComparison {
        unit: unit.filter(|_| one_unit),
        best,
        slow_threshold: SLOW_THRESHOLD,
        entries,
        complete: jobs.iter().all(|j| j.status.is_finished()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpulab_shared::{JobResult, Throughput, Timing, Verification};

    fn job(id: i64, status: JobStatus, value: Option<f64>) -> Job {
        let mut job: Job = serde_json::from_value(serde_json::json!({
            "id": id, "kernel": "saxpy", "device": format!("cuda:{id}"), "params": {},
            "repetitions": 1, "timeout_s": 60.0, "status": "queued",
            "created_at": "2026-11-26T00:00:00Z", "started_at": null, "finished_at": null,
            "progress": null, "result": null, "error": null
        }))
        .unwrap();
        job.status = status;
        job.result = value.map(|value| JobResult {
            timing: Timing {
                repetitions: 1,
                min_ms: 1.0,
                median_ms: 1.0,
                max_ms: 1.0,
            },
            throughput: Throughput {
                value,
                unit: "GB/s".into(),
            },
            verification: Verification {
                passed: true,
                max_abs_error: 0.0,
                max_rel_error: 0.0,
                tolerance: 0.0,
                method: String::new(),
            },
            output: serde_json::Value::Null,
            has_artifact: false,
            fraction_of_peak: None,
            roofline: None,
        });
        job
    }

    #[test]
    fn a_device_more_than_ten_percent_slower_is_flagged() {
        let c = compare(&[
            job(0, JobStatus::Succeeded, Some(1000.0)),
            job(1, JobStatus::Succeeded, Some(950.0)),
            job(2, JobStatus::Succeeded, Some(800.0)),
            job(3, JobStatus::Failed, None),
        ]);
        assert_eq!(c.best, Some(1000.0));
        assert_eq!(c.unit.as_deref(), Some("GB/s"));
        let flagged: Vec<bool> = c.entries.iter().map(|e| e.flagged).collect();
        assert_eq!(flagged, [false, false, true, false]);
        assert!((c.entries[2].slower_than_best.unwrap() - 0.25).abs() < 1e-12);
        assert_eq!(c.entries[0].slower_than_best, Some(0.0));
        assert_eq!(c.entries[3].slower_than_best, None);
        assert!(c.complete);
    }

    #[test]
    fn each_entry_carries_its_own_fraction_of_peak() {
        let mut fast = job(0, JobStatus::Succeeded, Some(1000.0));
        let peak = gpulab_shared::peaks::FractionOfPeak {
            fraction: 0.5,
            peak: "memory_bandwidth".into(),
            peak_value: 2000.0,
            unit: "GB/s".into(),
            basis: gpulab_shared::peaks::PeakBasis::Computed,
            convention: "read + write".into(),
        };
        fast.result.as_mut().unwrap().fraction_of_peak = Some(peak.clone());
        let c = compare(&[fast, job(1, JobStatus::Succeeded, Some(900.0))]);
        assert_eq!(c.entries[0].fraction_of_peak, Some(peak));
        assert_eq!(c.entries[1].fraction_of_peak, None);
    }

    #[test]
    fn unfinished_jobs_leave_the_comparison_incomplete() {
        let c = compare(&[
            job(0, JobStatus::Succeeded, Some(10.0)),
            job(1, JobStatus::Running, None),
        ]);
        assert!(!c.complete);
        assert!(!c.entries[1].flagged);
        assert_eq!(c.best, Some(10.0));
    }
}

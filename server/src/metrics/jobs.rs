//! Job families, from the aggregates of the job history: finished jobs by kernel, device
//! and status, the jobs waiting and running on each device, and how long jobs ran.

use std::collections::BTreeMap;

use gpulab_shared::JobStatus;

use super::exposition::{Exposition, MetricType};
use crate::devices::DeviceInventory;
use crate::store::stats::JobStats;

/// Upper bounds of the job duration buckets, in seconds: from a tiny kernel to the longest
/// timeout a job is likely to be given.
pub const DURATION_BUCKETS_S: [f64; 13] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
];

pub fn write(out: &mut Exposition, inventory: &DeviceInventory, stats: &JobStats) {
    let mut family = out.family(
        "gpulab_jobs_total",
        MetricType::Counter,
        "Jobs that have ended, by kernel, device and final status (the whole history, \
         jobs the retention deleted included).",
    );
    for f in &stats.finished {
        let labels = [
            ("kernel", f.kernel.as_str()),
            ("device", f.device.as_str()),
            ("status", f.status.as_str()),
        ];
        family.sample(&labels, f.count);
    }

    // Every device shows 0 rather than nothing, so a dashboard sees an idle device.
    let mut now: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for device in &inventory.devices {
        for status in [JobStatus::Queued, JobStatus::Running] {
            now.insert((device.id.as_str(), status.as_str()), 0);
        }
    }
    for u in &stats.unfinished {
        now.insert((u.device.as_str(), u.status.as_str()), u.count);
    }
    let mut family = out.family(
        "gpulab_jobs",
        MetricType::Gauge,
        "Jobs waiting in a device's queue (queued) or running on it now (running).",
    );
    for ((device, status), count) in now {
        family.sample(&[("device", device), ("status", status)], count);
    }

    out.family(
        "gpulab_jobs_pruned_total",
        MetricType::Counter,
        "Finished jobs the retention deleted (--retention-days, --retention-max-mb).",
    )
    .sample(&[], stats.pruned);

    let mut family = out.family(
        "gpulab_job_duration_seconds",
        MetricType::Histogram,
        "How long jobs ran, from start to end, in seconds; jobs that never started, and jobs \
         the retention deleted, are not counted.",
    );
    for d in &stats.durations {
        family.histogram(
            &[("kernel", d.kernel.as_str()), ("device", d.device.as_str())],
            &DURATION_BUCKETS_S,
            &d.at_most,
            d.count,
            d.sum_seconds,
        );
    }

    let mut family = out.family(
        "gpulab_user_device_seconds_total",
        MetricType::Counter,
        "Device time used, in seconds (worker busy time: GPU seconds on a GPU, CPU seconds on \
         the CPU), by user and device, jobs and diagnostic parts together. The anonymous \
         user of single mode is user=\"\".",
    );
    for u in &stats.user_device_seconds {
        let user = u.owner.as_deref().unwrap_or("");
        family.sample(&[("user", user), ("device", u.device.as_str())], u.seconds);
    }
}

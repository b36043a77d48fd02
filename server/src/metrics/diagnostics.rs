//! Diagnostic families, from each device's last finished diagnostic at each level: every
//! judged check's verdict, the device's verdict and when it ended, so that an alert can
//! fire on a failing node. Values: pass 0, warn 1, fail 2; a skipped check has no series.

use super::exposition::{Exposition, MetricType};
use crate::store::diagnostics::LastPart;

pub fn write(out: &mut Exposition, parts: &[(String, LastPart)]) {
    // Labels of one device's part: `device`, `uuid` where the device has one, `level`.
    let levels: Vec<String> = parts.iter().map(|(_, p)| p.level.to_string()).collect();
    let base = |i: usize| {
        let (device, last) = &parts[i];
        let mut labels = vec![("device", device.as_str())];
        if let Some(uuid) = &last.part.uuid {
            labels.push(("uuid", uuid.as_str()));
        }
        labels.push(("level", levels[i].as_str()));
        labels
    };

    let mut family = out.family(
        "gpulab_diagnostic_result",
        MetricType::Gauge,
        "Each check of a device's last finished diagnostic at each level: 0 pass, 1 warn, \
         2 fail (skipped checks have no series).",
    );
    for (i, (_, last)) in parts.iter().enumerate() {
        for check in &last.part.checks {
            if let Some(value) = check.verdict.and_then(|v| v.metric_value()) {
                let mut labels = base(i);
                labels.push(("check", check.check.as_str()));
                family.sample(&labels, u32::from(value));
            }
        }
    }

    let mut family = out.family(
        "gpulab_diagnostic_verdict",
        MetricType::Gauge,
        "A device's verdict in its last finished diagnostic at each level, the worst of its \
         checks: 0 pass, 1 warn, 2 fail.",
    );
    for (i, (_, last)) in parts.iter().enumerate() {
        if let Some(value) = last.part.verdict.and_then(|v| v.metric_value()) {
            family.sample(&base(i), u32::from(value));
        }
    }

    let mut family = out.family(
        "gpulab_diagnostic_last_run_timestamp_seconds",
        MetricType::Gauge,
        "When a device's last finished diagnostic at each level ended, in seconds since \
         the Unix epoch.",
    );
    for (i, (_, last)) in parts.iter().enumerate() {
        let at = last.finished_at.timestamp_millis() as f64 / 1e3;
        family.sample(&base(i), at);
    }
}

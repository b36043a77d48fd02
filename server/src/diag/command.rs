//! `gpulab diag`: a diagnostic in this process, without a server: a readable report, or
//! the diagnostic's JSON; the exit code says how it went.

use std::path::PathBuf;

use anyhow::Context as _;
use chrono::Utc;
use clap::Args;
use gpulab_shared::diag::{
    CheckResult, DeviceDiagnostic, Diagnostic, DiagnosticStatus, Fault, Verdict,
    DEFAULT_STRESS_DURATION_S, SCHEMA_VERSION,
};
use gpulab_shared::{Device, DeviceKind};

use super::{compare_devices, planned_checks, run_device, Baseline, Plan, Target};
use crate::devices::DeviceInventory;

/// The exit code when the diagnostic could not run (an unknown device, a GPU that cannot
/// be opened).
pub const COULD_NOT_RUN: u8 = 3;

/// The longest `--duration`: a day.
const MAX_DURATION_S: f64 = 86_400.0;

#[derive(Debug, Clone, Args)]
pub struct DiagArgs {
    /// 1: quick health, no load (≤ 10 s per GPU); 2: plus memory test, bandwidth, PCIe and
    /// GEMM repeatability (≤ 2 min per GPU); 3: plus sustained GEMM stress for --duration.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub level: u8,
    /// A device id (`cpu`, `cuda:0`, as `gpulab devices` lists them) or `all`.
    #[arg(long, default_value = "all")]
    pub device: String,
    /// Level 3's stress time per device: `90`, `60s`, `10m`, `1h` (default 10m).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<f64>,
    /// Print the diagnostic as JSON (the schema of `GET /api/diagnostics/{id}`).
    #[arg(long)]
    pub json: bool,
    /// An earlier `gpulab diag --json` output: the CPU's speeds are judged against its
    /// figures (0.75 × their median). Repeat for more, newest first.
    #[arg(long)]
    pub baseline: Vec<PathBuf>,
    /// Inject a fault (memory_bit_flip, gemm_mismatch, slow_throughput, thermal_throttle).
    /// Tests only.
    #[arg(long, hide = true, value_parser = parse_fault)]
    pub inject: Vec<Fault>,
    /// At most this many MiB in the memory test. Tests only.
    #[arg(long, hide = true, env = "GPULAB_DIAG_MEMORY_TEST_MIB")]
    pub memory_test_mib: Option<u64>,
}

/// `60s`, `10m`, `1h` or plain seconds, more than 0 and at most a day.
pub fn parse_duration(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let (number, scale) = match text.char_indices().last() {
        Some((at, 's')) => (&text[..at], 1.0),
        Some((at, 'm')) => (&text[..at], 60.0),
        Some((at, 'h')) => (&text[..at], 3600.0),
        _ => (text, 1.0),
    };
    let seconds = number
        .trim()
        .parse::<f64>()
        .map_err(|_| format!("`{text}` is not a duration: write 90, 60s, 10m or 1h"))?
        * scale;
    if !(seconds > 0.0 && seconds <= MAX_DURATION_S) {
        return Err(format!(
            "the duration must be more than 0 and at most 24h, got `{text}`"
        ));
    }
    Ok(seconds)
}

fn parse_fault(text: &str) -> Result<Fault, String> {
    serde_json::from_value(serde_json::Value::from(text)).map_err(|_| {
        format!(
            "unknown fault `{text}`: memory_bit_flip, gemm_mismatch, slow_throughput or \
             thermal_throttle"
        )
    })
}

/// Runs `gpulab diag`; returns its exit code.
pub fn run(args: DiagArgs) -> anyhow::Result<u8> {
    let inventory = DeviceInventory::detect();
    let devices: Vec<Device> = if args.device == "all" {
        inventory.devices.clone()
    } else {
        match inventory.find(&args.device) {
            Some(device) => vec![device.clone()],
            None => {
                let known: Vec<&str> = inventory.devices.iter().map(|d| d.id.as_str()).collect();
                let why = inventory
                    .cuda
                    .reason
                    .as_deref()
                    .filter(|_| args.device.starts_with("cuda:"))
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                eprintln!(
                    "gpulab diag: no device `{}` on this host{why}; the devices are: {}, or all",
                    args.device,
                    known.join(", ")
                );
                return Ok(COULD_NOT_RUN);
            }
        }
    };
    let mut history = Vec::new();
    for path in &args.baseline {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the baseline {}", path.display()))?;
        let earlier: Diagnostic = serde_json::from_str(&text).with_context(|| {
            format!("{} is not the JSON of `gpulab diag --json`", path.display())
        })?;
        history.push(earlier);
    }
    let duration_s = args.duration.unwrap_or(DEFAULT_STRESS_DURATION_S);
    let plan_for = |device: &Device| Plan {
        faults: args.inject.clone(),
        baseline: Baseline::from_history(
            history
                .iter()
                .flat_map(|d| &d.devices)
                .filter(|d| d.device == device.id),
        ),
        memory_test_max_bytes: args.memory_test_mib.map(|mib| mib << 20),
        ..Plan::new(args.level, duration_s)
    };
    let created_at = Utc::now();
    let print = !args.json;
    let printer = std::sync::Mutex::new(());
    let report = |device: &str, check: &CheckResult| {
        if print && check.verdict.is_some() {
            let _guard = printer.lock();
            println!("{}", line(device, check));
        }
    };
    // The GPUs at once (level 3 loads them together, as a job would), each in its own
    // thread with its own context; the CPU after them, so that its figures are its own.
    let (gpus, cpus): (Vec<&Device>, Vec<&Device>) =
        devices.iter().partition(|d| d.kind == DeviceKind::Cuda);
    let mut results: Vec<DeviceDiagnostic> = std::thread::scope(|scope| {
        let handles: Vec<_> = gpus
            .iter()
            .map(|device| {
                let plan = plan_for(device);
                let report = &report;
                scope.spawn(move || diagnose(device, &plan, report))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a device's diagnostic thread panicked"))
            .collect()
    });
    for device in cpus {
        results.push(diagnose(device, &plan_for(device), &report));
    }
    // Back to inventory order.
    results.sort_by_key(|r| devices.iter().position(|d| d.id == r.device));
    if args.level >= 3 {
        compare_devices(&mut results);
    }
    let could_not_run = results.iter().any(|r| r.status == DiagnosticStatus::Failed);
    let verdict = Verdict::combine(results.iter().filter_map(|r| r.verdict));
    let diagnostic = Diagnostic {
        owner: None,
        schema_version: SCHEMA_VERSION,
        id: 0,
        level: args.level,
        device: args.device.clone(),
        duration_s: (args.level >= 3).then_some(duration_s),
        status: if could_not_run {
            DiagnosticStatus::Failed
        } else {
            DiagnosticStatus::Finished
        },
        verdict: Some(verdict),
        created_at,
        started_at: Some(created_at),
        finished_at: Some(Utc::now()),
        error: could_not_run.then(|| {
            results
                .iter()
                .filter_map(|r| r.error.as_deref().map(|e| format!("{}: {e}", r.device)))
                .collect::<Vec<_>>()
                .join("; ")
        }),
        devices: results,
    };
    let code = if could_not_run {
        COULD_NOT_RUN
    } else {
        verdict.exit_code()
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&diagnostic)?);
    } else {
        if let Some(error) = &diagnostic.error {
            println!("could not run: {error}");
        }
        let seconds = (diagnostic.finished_at.unwrap_or(created_at) - created_at).num_milliseconds()
            as f64
            / 1e3;
        println!(
            "level {} on {}: {} in {seconds:.1} s (exit code {code})",
            args.level,
            args.device,
            if could_not_run {
                "could not run"
            } else {
                verdict.as_str()
            }
        );
    }
    Ok(code)
}

/// One device's diagnostic, in this thread.
fn diagnose(
    device: &Device,
    plan: &Plan,
    report: &(dyn Fn(&str, &CheckResult) + Sync),
) -> DeviceDiagnostic {
    let started_at = Utc::now();
    let mut on_change = |check: &CheckResult| report(&device.id, check);
    let outcome: Result<Vec<CheckResult>, String> = match device.kind {
        DeviceKind::Cpu => Ok(run_device(device, Target::Cpu, plan, &mut on_change)),
        DeviceKind::Cuda => match crate::worker::Device::open(&device.id) {
            Ok(crate::worker::Device::Cuda(Ok(mut gpu))) => Ok(run_device(
                device,
                Target::Gpu(&mut gpu),
                plan,
                &mut on_change,
            )),
            Ok(crate::worker::Device::Cuda(Err(why))) => Err(why),
            Ok(crate::worker::Device::Cpu) => Err("not a GPU".to_owned()),
            Err(e) => Err(format!("{e:#}")),
        },
    };
    let (checks, error) = match outcome {
        Ok(checks) => {
            if super::context_broken(&checks) {
                eprintln!(
                    "gpulab diag: {}: a driver error broke the CUDA context; the checks after \
                     it were skipped",
                    device.id
                );
            }
            (checks, None)
        }
        Err(why) => (planned_checks(device, plan.level), Some(why)),
    };
    let verdict = error
        .is_none()
        .then(|| Verdict::combine(checks.iter().filter_map(|c| c.verdict)));
    DeviceDiagnostic {
        device: device.id.clone(),
        name: device.name.clone(),
        uuid: device.cuda.as_ref().and_then(|c| c.uuid.clone()),
        status: if error.is_some() {
            DiagnosticStatus::Failed
        } else {
            DiagnosticStatus::Finished
        },
        verdict,
        started_at: Some(started_at),
        finished_at: Some(Utc::now()),
        checks,
        error,
    }
}

/// A check's line in the readable report: device, check, verdict, summary, and the reason
/// on a second line when it did not pass.
pub fn line(device: &str, check: &CheckResult) -> String {
    let verdict = check.verdict.map_or("…", |v| match v {
        Verdict::Pass => "pass",
        Verdict::Warn => "WARN",
        Verdict::Fail => "FAIL",
        Verdict::Skip => "skip",
    });
    let mut line = format!(
        "{device:<7} {:<20} {verdict:<4}  {} ({:.1} s)",
        check.check,
        check.summary,
        check.duration_s.unwrap_or(0.0)
    );
    if let (Some(reason), Some(Verdict::Warn | Verdict::Fail | Verdict::Skip)) =
        (&check.reason, check.verdict)
    {
        if check.summary.contains(reason.as_str()) {
            return line;
        }
        line.push_str(&format!("\n{:<29}{reason}", ""));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_plain_seconds() {
        assert_eq!(parse_duration("60s"), Ok(60.0));
        assert_eq!(parse_duration("10m"), Ok(600.0));
        assert_eq!(parse_duration("1h"), Ok(3600.0));
        assert_eq!(parse_duration("90"), Ok(90.0));
        assert_eq!(parse_duration("1.5m"), Ok(90.0));
        for bad in ["", "m", "ten", "0", "-5s", "25h", "NaN"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn faults_are_named_as_in_the_api() {
        assert_eq!(parse_fault("memory_bit_flip"), Ok(Fault::MemoryBitFlip));
        assert_eq!(parse_fault("thermal_throttle"), Ok(Fault::ThermalThrottle));
        assert!(parse_fault("meteor").unwrap_err().contains("gemm_mismatch"));
    }
}

//! Diagnostics: "is this device healthy and as fast as it should be?", answered by a list of
//! checks per level, each ending in a verdict with its evidence (see `gpulab_shared::diag`).
//!
//! The engine runs in the process that owns the device: a worker (for the server) or
//! `gpulab diag` itself. [`planned_checks`] lists what a level will run, all `waiting`;
//! [`run_device`] runs them in order and reports each change; [`compare_devices`] adds the
//! comparison between several GPUs of a level-3 run.
//!
//! Expectations come from [`expectations`] (the table of GPU models, or the GPU's own
//! attributes) and, for the CPU, from the device's own history ([`Baseline`]).

pub mod command;
mod cpu;
mod evidence;
pub mod expectations;
mod gpu;
mod memtest;
mod sensors;

use std::collections::BTreeMap;
use std::time::Instant;

use gpulab_shared::diag::{
    CheckResult, CheckState, DeviceDiagnostic, Fault, StressSample, Verdict,
};
use gpulab_shared::{Device, DeviceKind};

use crate::cuda::Gpu;
pub(crate) use gpu::CUDA;

/// What a run of one device is asked to do. Serde, so that the server can send it to a
/// worker.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// 1, 2 or 3.
    pub level: u8,
    /// Level 3's stress time, in seconds.
    pub duration_s: f64,
    /// Faults to inject (tests of the fail paths).
    pub faults: Vec<Fault>,
    /// This device's earlier figures: the CPU's expectations.
    pub baseline: Baseline,
    /// At most this many bytes in the memory test; `None`: the check's own size (the CPU's
    /// min(1 GiB, 25 % of available memory), a GPU's 90 % of its free memory). Tests keep it
    /// small.
    pub memory_test_max_bytes: Option<u64>,
}

impl Plan {
    /// A plan with no faults, no history and the checks' own sizes.
    pub fn new(level: u8, duration_s: f64) -> Self {
        Plan {
            level,
            duration_s,
            faults: Vec::new(),
            baseline: Baseline::default(),
            memory_test_max_bytes: None,
        }
    }

    pub(crate) fn injects(&self, fault: Fault) -> bool {
        self.faults.contains(&fault)
    }

    /// A measured throughput as the checks see it: a tenth of it under
    /// [`Fault::SlowThroughput`].
    pub(crate) fn throughput(&self, measured: f64) -> f64 {
        if self.injects(Fault::SlowThroughput) {
            measured / 10.0
        } else {
            measured
        }
    }
}

/// How many of a device's earlier figures an expectation is drawn from, newest first.
pub const BASELINE_RUNS: usize = 10;
/// The CPU's expectation: this share of the median of its earlier figures (DCGM judges
/// against 0.75 of a measured value too).
pub const BASELINE_FRACTION: f64 = 0.75;

/// Previous measured figures of this device, keyed by (check id, evidence name), newest
/// first; may be empty.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(from = "Vec<BaselineEntry>", into = "Vec<BaselineEntry>")]
pub struct Baseline(BTreeMap<(String, String), Vec<f64>>);

/// One figure's history, as a [`Baseline`] is written in JSON.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct BaselineEntry {
    check: String,
    evidence: String,
    /// Newest first.
    figures: Vec<f64>,
}

impl From<Vec<BaselineEntry>> for Baseline {
    fn from(entries: Vec<BaselineEntry>) -> Self {
        Baseline(
            entries
                .into_iter()
                .map(|e| ((e.check, e.evidence), e.figures))
                .collect(),
        )
    }
}

impl From<Baseline> for Vec<BaselineEntry> {
    fn from(baseline: Baseline) -> Self {
        baseline
            .0
            .into_iter()
            .map(|((check, evidence), figures)| BaselineEntry {
                check,
                evidence,
                figures,
            })
            .collect()
    }
}

impl Baseline {
    /// The figures of earlier runs of one device, given newest first: every measured number
    /// of a check that passed or warned (a failed run's figures would lower the bar).
    pub fn from_history<'a>(runs: impl IntoIterator<Item = &'a DeviceDiagnostic>) -> Self {
        let mut baseline = Baseline::default();
        for run in runs {
            for check in &run.checks {
                if !matches!(check.verdict, Some(Verdict::Pass | Verdict::Warn)) {
                    continue;
                }
                for evidence in &check.evidence {
                    if let Some(measured) = evidence.measured {
                        baseline.push(&check.check, &evidence.name, measured);
                    }
                }
            }
        }
        baseline
    }

    /// Adds an older figure (after those already there).
    pub fn push(&mut self, check: &str, evidence: &str, measured: f64) {
        if measured.is_finite() {
            self.0
                .entry((check.to_owned(), evidence.to_owned()))
                .or_default()
                .push(measured);
        }
    }

    /// The figures of one evidence, newest first.
    pub fn figures(&self, check: &str, evidence: &str) -> &[f64] {
        self.0
            .get(&(check.to_owned(), evidence.to_owned()))
            .map_or(&[], Vec::as_slice)
    }

    /// The expectation for a figure: [`BASELINE_FRACTION`] of the median of its last
    /// [`BASELINE_RUNS`] values, and the sentence that says so; `None` with no history.
    pub fn expectation(&self, check: &str, evidence: &str) -> Option<(f64, String)> {
        let figures = self.figures(check, evidence);
        let recent = &figures[..figures.len().min(BASELINE_RUNS)];
        let median = median(recent)?;
        Some((
            BASELINE_FRACTION * median,
            format!(
                "this device's history: {BASELINE_FRACTION} × the median ({median:.4}) of its \
                 last {} measured value(s)",
                recent.len()
            ),
        ))
    }
}

/// The median of `values`; `None` when empty.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// The device the calling process owns.
pub enum Target<'a> {
    Cpu,
    /// A GPU opened by this process (a worker's, or `gpulab diag`'s).
    Gpu(&'a mut Gpu),
}

/// One check of a level: its id and title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CheckSpec {
    pub id: &'static str,
    pub title: &'static str,
    /// The lowest level that runs it.
    pub level: u8,
}

const fn spec(id: &'static str, title: &'static str, level: u8) -> CheckSpec {
    CheckSpec { id, title, level }
}

/// The relative-throughput check that [`compare_devices`] adds.
pub const RELATIVE_THROUGHPUT: &str = "relative_throughput";
/// How far below the best GPU another may be in [`compare_devices`].
pub const RELATIVE_SHORTFALL: f64 = 0.10;

/// The checks a level runs on a device kind, all `waiting` (the server shows them before
/// the run).
pub fn planned_checks(device: &Device, level: u8) -> Vec<CheckResult> {
    let specs: &[CheckSpec] = match device.kind {
        DeviceKind::Cpu => cpu::CHECKS,
        DeviceKind::Cuda => gpu::CHECKS,
    };
    specs
        .iter()
        .filter(|s| s.level <= level)
        .map(|s| waiting(s.id, s.title))
        .collect()
}

fn waiting(id: &str, title: &str) -> CheckResult {
    CheckResult {
        check: id.to_owned(),
        title: title.to_owned(),
        state: CheckState::Waiting,
        verdict: None,
        summary: String::new(),
        reason: None,
        evidence: Vec::new(),
        progress: None,
        duration_s: None,
        series: Vec::new(),
    }
}

/// Runs every check in order on the device the calling process owns (the CPU, or the
/// worker's `Gpu`); calls `report` each time a check starts, progresses (a stress run: once
/// a second, with its new [`StressSample`]) or ends.
///
/// A `Target` that does not fit the device (a GPU target for `cpu`) ends every check
/// `skip` with the reason.
pub fn run_device(
    device: &Device,
    target: Target<'_>,
    plan: &Plan,
    report: &mut dyn FnMut(&CheckResult),
) -> Vec<CheckResult> {
    let mut checks = planned_checks(device, plan.level);
    match (device.kind, target) {
        (DeviceKind::Cpu, Target::Cpu) => {
            let mut context = cpu::Context::new(device, plan);
            for check in &mut checks {
                let mut run = CheckRun::start(check, report);
                context.run(&mut run);
                run.finish();
            }
        }
        (DeviceKind::Cuda, Target::Gpu(gpu)) => {
            let mut context = gpu::Context::new(device, gpu, plan);
            for check in &mut checks {
                let mut run = CheckRun::start(check, report);
                context.run(&mut run);
                run.finish();
            }
        }
        (kind, _) => {
            for check in &mut checks {
                let mut run = CheckRun::start(check, report);
                run.skip(format!(
                    "the process does not own this {} device, so it cannot be tested",
                    kind.as_str()
                ));
                run.finish();
            }
        }
    }
    checks
}

/// The evidence of a check that ended on a CUDA driver error: the process's context can no
/// longer be trusted, and the rest of the run was skipped.
pub const CONTEXT_BROKEN: &str = "driver error (the CUDA context is broken)";

/// Whether a run ended on a driver error, after which the process (a worker) must be replaced
/// before the GPU runs anything else.
pub fn context_broken(checks: &[CheckResult]) -> bool {
    checks
        .iter()
        .any(|c| c.evidence.iter().any(|e| e.name == CONTEXT_BROKEN))
}

/// Level 3 with several GPUs: adds a `relative_throughput` check to each, flagging any GPU
/// more than 10 % below the best at the stress GEMM (FP32).
pub fn compare_devices(devices: &mut [DeviceDiagnostic]) {
    let throughput = |d: &DeviceDiagnostic| {
        d.checks
            .iter()
            .find(|c| c.check == gpu::STRESS_FP32)
            .and_then(|c| c.evidence.iter().find(|e| e.name == gpu::STRESS_GFLOPS))
            .and_then(|e| e.measured)
    };
    let figures: Vec<Option<f64>> = devices.iter().map(throughput).collect();
    if figures.iter().flatten().count() < 2 {
        return;
    }
    let best = figures.iter().flatten().copied().fold(f64::MIN, f64::max);
    let (best_index, _) = figures
        .iter()
        .enumerate()
        .filter_map(|(i, f)| f.map(|f| (i, f)))
        .fold((0, f64::MIN), |b, (i, f)| if f > b.1 { (i, f) } else { b });
    let best_device = devices[best_index].device.clone();
    for (device, figure) in devices.iter_mut().zip(figures) {
        // Only the GPUs that ran are compared (the CPU has no stress GEMM of this kind).
        if device.status != gpulab_shared::diag::DiagnosticStatus::Finished
            || !device.device.starts_with("cuda:")
        {
            continue;
        }
        let mut check = waiting(RELATIVE_THROUGHPUT, "Throughput against the other GPUs");
        let expected = best * (1.0 - RELATIVE_SHORTFALL);
        let mut noop = |_: &CheckResult| {};
        let mut run = CheckRun::start(&mut check, &mut noop);
        match figure {
            Some(measured) => {
                run.evidence(evidence::at_least(
                    gpu::STRESS_GFLOPS,
                    measured,
                    "GFLOP/s",
                    expected,
                    format!(
                        "the best GPU of this run ({best_device}, {best:.0} GFLOP/s) less {:.0} %",
                        RELATIVE_SHORTFALL * 100.0
                    ),
                    Verdict::Fail,
                ));
                run.summary(format!(
                    "{:.1} % of the best GPU's sustained FP32 GEMM throughput",
                    100.0 * measured / best
                ));
            }
            None => run.skip("this GPU's stress run gave no throughput to compare"),
        }
        run.finish();
        device.checks.push(check);
        device.verdict = Some(Verdict::combine(
            device.checks.iter().filter_map(|c| c.verdict),
        ));
    }
}

/// One check while it runs: what it found so far, and where to report it.
pub(crate) struct CheckRun<'a> {
    check: &'a mut CheckResult,
    report: &'a mut dyn FnMut(&CheckResult),
    started: Instant,
    skipped: Option<String>,
}

impl<'a> CheckRun<'a> {
    fn start(check: &'a mut CheckResult, report: &'a mut dyn FnMut(&CheckResult)) -> Self {
        check.state = CheckState::Running;
        check.progress = Some(0.0);
        report(check);
        CheckRun {
            check,
            report,
            started: Instant::now(),
            skipped: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.check.check
    }

    /// Adds a figure.
    pub fn evidence(&mut self, evidence: gpulab_shared::diag::Evidence) {
        self.check.evidence.push(evidence);
    }

    /// The sentence of what was found.
    pub fn summary(&mut self, summary: impl Into<String>) {
        self.check.summary = summary.into();
    }

    /// The check could not run: why.
    pub fn skip(&mut self, reason: impl Into<String>) {
        let reason = reason.into();
        if self.check.summary.is_empty() {
            self.check.summary = format!("skipped: {reason}");
        }
        self.skipped = Some(reason);
    }

    /// The share done, reported.
    pub fn progress(&mut self, done: f64) {
        self.check.progress = Some(done.clamp(0.0, 1.0));
        self.check.duration_s = Some(self.started.elapsed().as_secs_f64());
        (self.report)(self.check);
    }

    /// A second of a stress run, reported with the share done.
    pub fn sample(&mut self, sample: StressSample, done: f64) {
        self.check.series.push(sample);
        self.progress(done);
    }

    /// Ends the check: the verdict is the worst of its evidence's (or `skip`), and the
    /// reason names the figures that warned or failed.
    fn finish(self) {
        let check = self.check;
        check.state = CheckState::Done;
        check.progress = Some(1.0);
        check.duration_s = Some(self.started.elapsed().as_secs_f64());
        if let (Some(reason), true) = (&self.skipped, check.evidence.is_empty()) {
            // Even a check that could not measure shows what it could not read, and why.
            check.evidence.push(gpulab_shared::diag::Evidence {
                name: "not measured".into(),
                measured: None,
                measured_text: Some(reason.clone()),
                unit: None,
                expected: None,
                expected_text: Some("a figure to judge".into()),
                bound: None,
                source: Some(format!("the `{}` check", check.check)),
                verdict: Verdict::Skip,
            });
        }
        let verdict = match &self.skipped {
            Some(_) => Verdict::Skip,
            None => Verdict::combine(check.evidence.iter().map(|e| e.verdict)),
        };
        check.reason = match (&self.skipped, verdict) {
            (Some(reason), _) => Some(reason.clone()),
            (None, Verdict::Warn | Verdict::Fail) => Some(
                check
                    .evidence
                    .iter()
                    .filter(|e| e.verdict == verdict)
                    .map(evidence::describe)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            (None, Verdict::Skip) => Some("no figure of this check could be read".to_owned()),
            (None, Verdict::Pass) => None,
        };
        check.verdict = Some(verdict);
        (self.report)(check);
    }
}

#[cfg(test)]
mod tests;

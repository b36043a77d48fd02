//! Diagnostics: a run of checks on one device or on all of them, at a level, each check
//! ending in a [`Verdict`] with its evidence. The JSON of a [`Diagnostic`] is the one schema
//! of `GET /api/diagnostics/{id}`, of the `diagnostic` event and of `gpulab diag --json`;
//! [`SCHEMA_VERSION`] changes when a field changes meaning or goes away.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// The version of the diagnostic JSON: `schema_version` of every [`Diagnostic`].
pub const SCHEMA_VERSION: u32 = 1;

/// The levels, quick to long.
pub const LEVELS: [u8; 3] = [1, 2, 3];

/// Level 3's default stress time per device, in seconds.
pub const DEFAULT_STRESS_DURATION_S: f64 = 600.0;

/// How a check ended. Ordered from best to worst except `Skip`, which is not a judgement:
/// the check could not run, and its `reason` says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
            Verdict::Skip => "skip",
        }
    }

    /// The value of `gpulab_diagnostic_result`: pass 0, warn 1, fail 2; a skipped check
    /// has none.
    pub fn metric_value(self) -> Option<u8> {
        match self {
            Verdict::Pass => Some(0),
            Verdict::Warn => Some(1),
            Verdict::Fail => Some(2),
            Verdict::Skip => None,
        }
    }

    /// The verdict of several checks: the worst judgement among them; `Skip` only when
    /// every one was skipped (or there were none).
    pub fn combine(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
        let mut worst = None;
        for verdict in verdicts {
            let rank = |v: Verdict| v.metric_value().unwrap_or(0);
            worst = match (worst, verdict) {
                (w, Verdict::Skip) => w,
                (None, v) => Some(v),
                (Some(w), v) if rank(v) > rank(w) => Some(v),
                (w, _) => w,
            };
        }
        worst.unwrap_or(Verdict::Skip)
    }

    /// The exit code of `gpulab diag` for an overall verdict: 0 pass, 1 warn, 2 fail,
    /// 3 could not run.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::Warn => 1,
            Verdict::Fail => 2,
            Verdict::Skip => 3,
        }
    }
}

/// `POST /api/diagnostics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DiagnosticRequest {
    /// 1 (quick, no load), 2 (medium: memory test, bandwidth, GEMM repeatability) or
    /// 3 (long: level 2 plus sustained stress for `duration_s`).
    pub level: u8,
    /// A device id from `GET /api/devices`, or `all`.
    pub device: String,
    /// Level 3's stress time per device, in seconds (default 600). Ignored below level 3.
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// Faults to inject, for tests of the fail paths: refused unless the server was started
    /// with `--enable-test-faults`.
    #[serde(default)]
    pub inject: Vec<Fault>,
}

/// A fault a test can inject so that a check is seen failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// One bit of the memory test's readback is flipped.
    MemoryBitFlip,
    /// One GEMM result differs from the first run once.
    GemmMismatch,
    /// The measured throughputs and bandwidths are scaled down to a tenth.
    SlowThroughput,
    /// The telemetry source reports `hw_thermal_slowdown` as an active throttle reason.
    ThermalThrottle,
}

/// Where a diagnostic, or one device's part of it, is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DiagnosticStatus {
    /// Waiting in the device's queue (behind the running job).
    Queued,
    Running,
    /// Every check ended; `verdict` says how.
    Finished,
    Cancelled,
    /// It could not run (the worker died, the device is gone); `error` says why.
    Failed,
    /// The server stopped while it ran.
    Interrupted,
}

impl DiagnosticStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, DiagnosticStatus::Queued | DiagnosticStatus::Running)
    }
}

/// A diagnostic: what was asked, and each device's checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Diagnostic {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    pub id: i64,
    pub level: u8,
    /// As asked: a device id or `all`.
    pub device: String,
    /// Level 3's stress time per device; `null` below level 3.
    pub duration_s: Option<f64>,
    pub status: DiagnosticStatus,
    /// The combined verdict of every device, once finished.
    pub verdict: Option<Verdict>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// One entry per device, in device order.
    pub devices: Vec<DeviceDiagnostic>,
    /// Why it failed, was cancelled or interrupted.
    pub error: Option<String>,
    /// The user who asked for it, in lab mode; `null` in single mode.
    #[serde(default)]
    pub owner: Option<String>,
}

/// One device's part of a diagnostic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DeviceDiagnostic {
    pub device: String,
    pub name: String,
    pub uuid: Option<String>,
    pub status: DiagnosticStatus,
    pub verdict: Option<Verdict>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Every check of the level, in the order they run; those not yet run are `waiting`.
    pub checks: Vec<CheckResult>,
    pub error: Option<String>,
}

/// Where a check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    Waiting,
    Running,
    Done,
}

/// One check: its verdict and the evidence for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CheckResult {
    /// Stable identifier, such as `memory_test` or `pcie_link`: the `check` label of
    /// `gpulab_diagnostic_result`.
    pub check: String,
    /// For people, such as "Memory test".
    pub title: String,
    pub state: CheckState,
    /// Set once `state` is `done`.
    pub verdict: Option<Verdict>,
    /// One sentence: what was found.
    pub summary: String,
    /// Why it was skipped, warned or failed, in words.
    pub reason: Option<String>,
    /// The figures behind the verdict.
    pub evidence: Vec<Evidence>,
    /// Share done while running, 0 to 1.
    pub progress: Option<f64>,
    pub duration_s: Option<f64>,
    /// Once a second during a stress run: throughput and what the device reported.
    #[serde(default)]
    pub series: Vec<StressSample>,
}

/// One figure behind a verdict: what was measured, what was expected and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Evidence {
    /// What the figure is, such as "copy bandwidth".
    pub name: String,
    /// The measured number, where it is one.
    pub measured: Option<f64>,
    /// The measurement as text where it is not a number (a version, a UUID, a mode).
    pub measured_text: Option<String>,
    pub unit: Option<String>,
    /// The limit the measurement is judged against, in the same unit.
    pub expected: Option<f64>,
    /// The expectation as text where it is not a number.
    pub expected_text: Option<String>,
    /// How `measured` must compare with `expected`.
    pub bound: Option<Bound>,
    /// Where the expectation comes from: a table row and its source, the device's own
    /// attributes (with the formula), or this device's history.
    pub source: Option<String>,
    /// This figure's own verdict.
    pub verdict: Verdict,
}

/// How a measured figure must compare with its expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    AtLeast,
    AtMost,
    Equal,
}

/// One second of a stress run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct StressSample {
    /// Seconds since the stress began.
    pub t_s: f64,
    /// GFLOP/s over the last second.
    pub gflops: f64,
    pub sm_clock_mhz: Option<u32>,
    pub temperature_celsius: Option<f64>,
    pub power_watts: Option<f64>,
    #[serde(default)]
    pub throttle_reasons: Vec<String>,
}

/// `GET /api/diagnostics`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DiagnosticPage {
    pub diagnostics: Vec<Diagnostic>,
    /// Pass as `cursor` to get the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A device's last finished diagnostic, shown on its card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LastDiagnostic {
    pub id: i64,
    pub level: u8,
    pub verdict: Verdict,
    pub finished_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_judgement_wins_and_skips_do_not_count() {
        use Verdict::*;
        assert_eq!(Verdict::combine([Pass, Skip, Pass]), Pass);
        assert_eq!(Verdict::combine([Pass, Warn, Skip]), Warn);
        assert_eq!(Verdict::combine([Warn, Fail, Pass]), Fail);
        assert_eq!(Verdict::combine([Fail, Warn]), Fail);
        assert_eq!(Verdict::combine([Skip, Skip]), Skip);
        assert_eq!(Verdict::combine([]), Skip);
    }

    #[test]
    fn exit_codes_are_the_documented_ones() {
        let codes: Vec<u8> = [Verdict::Pass, Verdict::Warn, Verdict::Fail, Verdict::Skip]
            .into_iter()
            .map(Verdict::exit_code)
            .collect();
        assert_eq!(codes, [0, 1, 2, 3]);
    }

    #[test]
    fn a_request_with_an_unknown_field_is_refused() {
        let err = serde_json::from_str::<DiagnosticRequest>(
            r#"{"level": 1, "device": "cpu", "levl": 2}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("levl"), "{err}");
    }
}

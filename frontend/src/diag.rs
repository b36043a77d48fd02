//! What the Diagnostics pages make of the API's diagnostics: how a verdict and a figure of
//! evidence read, which of two versions of a diagnostic is the later, and a device's
//! history and last verdict brought up to date with what the event stream pushed.
//!
//! Pure functions, tested on the host; the pages and the device card draw what they answer.

use std::collections::BTreeMap;

use gpulab_shared::diag::{
    Bound, CheckState, Diagnostic, DiagnosticStatus, Evidence, LastDiagnostic, Verdict,
};

use crate::format;

/// What a level does, as the form offers it.
pub fn level_title(level: u8) -> &'static str {
    match level {
        1 => "Level 1, quick: deployment and health, no load",
        2 => "Level 2, medium: level 1 plus memory test, bandwidth and GEMM repeatability",
        3 => "Level 3, long: level 2 plus sustained stress",
        _ => "Unknown level",
    }
}

/// A verdict as text with a sign, so that it reads without its colour: `"✓ pass"`.
pub fn verdict_text(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Pass => "✓ pass",
        Verdict::Warn => "⚠ warn",
        Verdict::Fail => "✗ fail",
        Verdict::Skip => "– skip",
    }
}

/// A check's badge: its class, the state it names (`data-state`) and its text. The verdict
/// once done, else `waiting` or `running` (with its share done, when known); a check its
/// diagnostic left unfinished (cancelled, failed, interrupted) says so rather than
/// `running` for ever.
pub fn check_badge(
    state: CheckState,
    verdict: Option<Verdict>,
    progress: Option<f64>,
    ended: bool,
) -> (String, &'static str, String) {
    match (state, verdict) {
        (CheckState::Done, Some(verdict)) => (
            format!("badge verdict-{}", verdict.as_str()),
            verdict.as_str(),
            verdict_text(verdict).to_owned(),
        ),
        (CheckState::Done, None) => ("badge".to_owned(), "done", "done".to_owned()),
        _ if ended => (
            "badge status-cancelled".to_owned(),
            "unfinished",
            "not finished".to_owned(),
        ),
        (CheckState::Running, _) => (
            "badge status-running".to_owned(),
            "running",
            match progress {
                Some(share) => format!("running {}", format::percent(share.clamp(0.0, 1.0))),
                None => "running".to_owned(),
            },
        ),
        (CheckState::Waiting, _) => (
            "badge status-queued".to_owned(),
            "waiting",
            "waiting".to_owned(),
        ),
    }
}

/// A diagnostic's (or one device's) status as its badge says it: the verdict once
/// finished, else the status.
pub fn status_text(status: DiagnosticStatus, verdict: Option<Verdict>) -> String {
    match (status, verdict) {
        (DiagnosticStatus::Finished, Some(verdict)) => verdict_text(verdict).to_owned(),
        (status, _) => status_name(status).to_owned(),
    }
}

/// The class of a badge for a status and verdict: `verdict-fail`, `status-running`…
pub fn badge_class(status: DiagnosticStatus, verdict: Option<Verdict>) -> String {
    match (status, verdict) {
        (DiagnosticStatus::Finished, Some(verdict)) => {
            format!("badge verdict-{}", verdict.as_str())
        }
        (status, _) => format!("badge status-{}", status_name(status)),
    }
}

pub fn status_name(status: DiagnosticStatus) -> &'static str {
    match status {
        DiagnosticStatus::Queued => "queued",
        DiagnosticStatus::Running => "running",
        DiagnosticStatus::Finished => "finished",
        DiagnosticStatus::Cancelled => "cancelled",
        DiagnosticStatus::Failed => "failed",
        DiagnosticStatus::Interrupted => "interrupted",
    }
}

/// The measured figure of a piece of evidence: its text, or its number with its unit.
pub fn measured(evidence: &Evidence) -> String {
    figure(
        evidence.measured,
        evidence.measured_text.as_deref(),
        evidence.unit.as_deref(),
    )
}

/// The expected figure of a piece of evidence, likewise.
pub fn expected(evidence: &Evidence) -> String {
    figure(
        evidence.expected,
        evidence.expected_text.as_deref(),
        evidence.unit.as_deref(),
    )
}

fn figure(number: Option<f64>, text: Option<&str>, unit: Option<&str>) -> String {
    match (text, number) {
        (Some(text), _) => text.to_owned(),
        // A size in bytes reads in binary units: "64.0 MiB".
        (None, Some(n)) if matches!(unit, Some("B" | "bytes")) && n >= 0.0 => {
            format::bytes(n as u64)
        }
        (None, Some(n)) => {
            // A count (of errors, of retired pages) reads as one: "1", not "1.00".
            let n = if n.fract() == 0.0 && n.abs() < 1e15 {
                format!("{n:.0}")
            } else {
                format::number(n)
            };
            match unit.filter(|u| !u.is_empty()) {
                Some(unit) => format!("{n} {unit}"),
                None => n,
            }
        }
        (None, None) => format::UNKNOWN.to_owned(),
    }
}

/// How long a check took: `"3.35 s"`, `"28 ms"`, `"< 1 ms"`.
pub fn seconds(s: f64) -> String {
    if s < 0.001 {
        "< 1 ms".to_owned()
    } else if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{} s", format::number(s))
    }
}

/// Whether a check's summary says more than its reason, shown beside it; a skipped check's
/// summary often only repeats it.
pub fn summary_adds(summary: &str, reason: Option<&str>) -> bool {
    let summary = summary.trim();
    !summary.is_empty() && reason.is_none_or(|reason| !summary.contains(reason.trim()))
}

/// How the measured figure must compare with the expected one, in words.
pub fn bound_text(bound: Option<Bound>) -> &'static str {
    match bound {
        Some(Bound::AtLeast) => "≥ at least",
        Some(Bound::AtMost) => "≤ at most",
        Some(Bound::Equal) => "= equal",
        None => format::UNKNOWN,
    }
}

/// The later of two versions of one diagnostic, whichever way each came (a fetch, the
/// stream, the answer to a cancel). A diagnostic only moves forward: queued, running with
/// more checks done and more samples, ended; on a tie `b` wins.
pub fn fresher(a: Diagnostic, b: Diagnostic) -> Diagnostic {
    // The same id with another creation time is another diagnostic: a server started afresh.
    if a.created_at != b.created_at {
        return if a.created_at > b.created_at { a } else { b };
    }
    if stage(&a) > stage(&b) {
        a
    } else {
        b
    }
}

/// How far a diagnostic has come: its status, then the checks that ended or started, then
/// the samples and progress of those running.
fn stage(d: &Diagnostic) -> (u8, usize, usize, usize, u64) {
    let status = match d.status {
        DiagnosticStatus::Queued => 0,
        DiagnosticStatus::Running => 1,
        _ => 2,
    };
    let checks = || d.devices.iter().flat_map(|device| device.checks.iter());
    let done = checks().filter(|c| c.state == CheckState::Done).count();
    let started = checks().filter(|c| c.state != CheckState::Waiting).count();
    let samples = checks().map(|c| c.series.len()).sum();
    // Progress in millionths, so that the stage stays `Ord`.
    let progress = checks()
        .filter_map(|c| c.progress)
        .map(|p| (p.clamp(0.0, 1.0) * 1e6) as u64)
        .sum();
    (status, done, started, samples, progress)
}

/// Whether `diagnostic` runs (or ran) on `device`.
pub fn includes(diagnostic: &Diagnostic, device: &str) -> bool {
    diagnostic.device == device || diagnostic.devices.iter().any(|d| d.device == device)
}

/// What `diagnostic` found on `device`, once that device's part has ended with a verdict.
pub fn last_of(diagnostic: &Diagnostic, device: &str) -> Option<LastDiagnostic> {
    let part = diagnostic.devices.iter().find(|d| d.device == device)?;
    if part.status != DiagnosticStatus::Finished {
        return None;
    }
    Some(LastDiagnostic {
        id: diagnostic.id,
        level: diagnostic.level,
        verdict: part.verdict?,
        finished_at: part.finished_at.or(diagnostic.finished_at)?,
    })
}

/// The more recent of a device's last diagnostic as the inventory reported it and the
/// diagnostics the stream pushed since.
pub fn latest_last(
    device: &str,
    reported: Option<LastDiagnostic>,
    pushed: &BTreeMap<i64, Diagnostic>,
) -> Option<LastDiagnostic> {
    pushed
        .values()
        .filter_map(|d| last_of(d, device))
        .chain(reported)
        // As the server picks it: the newest by id, ids growing with time.
        .max_by_key(|last| last.id)
}

/// A device's history as fetched, brought up to date with the diagnostics the stream
/// pushed since: rows take the later version of their diagnostic, and on the first page new
/// diagnostics of the device join at the top. Newest first.
pub fn history_rows(
    fetched: &[Diagnostic],
    pushed: &BTreeMap<i64, Diagnostic>,
    device: &str,
    first_page: bool,
) -> Vec<Diagnostic> {
    let mut rows: BTreeMap<i64, Diagnostic> = fetched.iter().map(|d| (d.id, d.clone())).collect();
    let oldest = fetched.iter().map(|d| d.id).min();
    for (&id, diagnostic) in pushed {
        if !includes(diagnostic, device) {
            continue;
        }
        match rows.remove(&id) {
            Some(known) => {
                rows.insert(id, fresher(known, diagnostic.clone()));
            }
            // A pushed diagnostic belongs to this page when it is newer than its oldest row
            // (or the page is the first and empty).
            None if first_page && oldest.is_none_or(|oldest| id > oldest) => {
                rows.insert(id, diagnostic.clone());
            }
            None => {}
        }
    }
    rows.into_values().rev().collect()
}

/// The verdict a device's history row shows: that device's own, when the diagnostic ran
/// on several; the diagnostic's otherwise.
pub fn verdict_on(diagnostic: &Diagnostic, device: &str) -> (DiagnosticStatus, Option<Verdict>) {
    match diagnostic.devices.iter().find(|d| d.device == device) {
        Some(part) if diagnostic.devices.len() > 1 => (part.status, part.verdict),
        _ => (diagnostic.status, diagnostic.verdict),
    }
}

/// How many of a device's checks ended, as the page says it: `"3 of 7 checks done"`.
pub fn checks_done(checks: &[gpulab_shared::diag::CheckResult]) -> String {
    let done = checks
        .iter()
        .filter(|c| c.state == CheckState::Done)
        .count();
    format!("{done} of {} checks done", checks.len())
}

/// Level 3's stress time as typed, in seconds: a positive number.
pub fn duration_s(text: &str) -> Result<f64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("Enter how long the stress runs, in seconds.".to_owned());
    }
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 => Ok(seconds),
        Ok(_) => Err("The stress time must be more than 0 seconds.".to_owned()),
        Err(_) => Err(format!("“{text}” is not a number of seconds.")),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use gpulab_shared::diag::{CheckResult, DeviceDiagnostic, StressSample};

    use super::*;

    fn check(name: &str, state: CheckState, verdict: Option<Verdict>) -> CheckResult {
        CheckResult {
            check: name.to_owned(),
            title: name.to_owned(),
            state,
            verdict,
            summary: String::new(),
            reason: None,
            evidence: Vec::new(),
            progress: None,
            duration_s: None,
            series: Vec::new(),
        }
    }

    fn diagnostic(
        id: i64,
        device: &str,
        status: DiagnosticStatus,
        checks: Vec<CheckResult>,
    ) -> Diagnostic {
        let at = |s| Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, s).unwrap();
        let verdict = (status == DiagnosticStatus::Finished)
            .then(|| Verdict::combine(checks.iter().filter_map(|c| c.verdict)));
        Diagnostic {
            owner: None,
            schema_version: 1,
            id,
            level: 1,
            device: device.to_owned(),
            duration_s: None,
            status,
            verdict,
            created_at: at(0),
            started_at: Some(at(1)),
            finished_at: status.is_terminal().then(|| at(id as u32 % 50 + 2)),
            devices: vec![DeviceDiagnostic {
                device: if device == "all" {
                    "cpu".to_owned()
                } else {
                    device.to_owned()
                },
                name: "CPU".to_owned(),
                uuid: None,
                status,
                verdict,
                started_at: Some(at(1)),
                finished_at: status.is_terminal().then(|| at(id as u32 % 50 + 2)),
                checks,
                error: None,
            }],
            error: None,
        }
    }

    fn evidence() -> Evidence {
        Evidence {
            name: "copy bandwidth".to_owned(),
            measured: Some(12.345),
            measured_text: None,
            unit: Some("GB/s".to_owned()),
            expected: Some(20.0),
            expected_text: None,
            bound: Some(Bound::AtLeast),
            source: Some("table".to_owned()),
            verdict: Verdict::Fail,
        }
    }

    #[test]
    fn a_verdict_reads_without_its_colour() {
        let texts: Vec<&str> = [Verdict::Pass, Verdict::Warn, Verdict::Fail, Verdict::Skip]
            .into_iter()
            .map(verdict_text)
            .collect();
        assert_eq!(texts, ["✓ pass", "⚠ warn", "✗ fail", "– skip"]);
        let text = |state, verdict, progress, ended| check_badge(state, verdict, progress, ended).2;
        assert_eq!(text(CheckState::Waiting, None, None, false), "waiting");
        assert_eq!(
            text(CheckState::Running, None, Some(0.424), false),
            "running 42 %"
        );
        assert_eq!(text(CheckState::Running, None, None, false), "running");
        assert_eq!(
            text(CheckState::Done, Some(Verdict::Fail), None, false),
            "✗ fail"
        );
        assert_eq!(
            check_badge(CheckState::Done, Some(Verdict::Warn), None, false).0,
            "badge verdict-warn"
        );
        // Cancelled under way: what ran keeps its verdict, the rest says it never finished.
        assert_eq!(
            text(CheckState::Done, Some(Verdict::Pass), None, true),
            "✓ pass"
        );
        assert_eq!(
            text(CheckState::Running, None, Some(0.5), true),
            "not finished"
        );
        assert_eq!(
            check_badge(CheckState::Waiting, None, None, true).1,
            "unfinished"
        );
        assert_eq!(status_text(DiagnosticStatus::Cancelled, None), "cancelled");
        assert_eq!(
            status_text(DiagnosticStatus::Finished, Some(Verdict::Warn)),
            "⚠ warn"
        );
        assert_eq!(
            badge_class(DiagnosticStatus::Finished, Some(Verdict::Skip)),
            "badge verdict-skip"
        );
        assert_eq!(
            badge_class(DiagnosticStatus::Running, None),
            "badge status-running"
        );
    }

    #[test]
    fn evidence_reads_as_a_figure_with_its_unit_or_as_its_text() {
        let mut e = evidence();
        assert_eq!(measured(&e), "12.3 GB/s");
        assert_eq!(expected(&e), "20 GB/s");
        assert_eq!(bound_text(e.bound), "≥ at least");
        e.measured_text = Some("565.57.01".to_owned());
        e.expected = None;
        e.unit = None;
        assert_eq!(measured(&e), "565.57.01");
        assert_eq!(expected(&e), "—");
        e.measured_text = None;
        e.measured = Some(3.0);
        assert_eq!(measured(&e), "3", "a count");
        e.measured = Some(0.5);
        assert_eq!(measured(&e), "0.5");
        assert_eq!(bound_text(None), "—");
        e.measured = Some(67_108_864.0);
        e.unit = Some("B".to_owned());
        assert_eq!(measured(&e), "64.0 MiB", "bytes in binary units");
    }

    #[test]
    fn a_check_takes_seconds_or_milliseconds_and_its_summary_is_not_its_reason_again() {
        assert_eq!(seconds(3.354), "3.35 s");
        assert_eq!(seconds(0.028), "28 ms");
        assert_eq!(seconds(0.000_2), "< 1 ms");
        assert!(summary_adds("0 failing words", None));
        assert!(summary_adds("0.06 GiB tested", Some("a bit flipped")));
        assert!(!summary_adds(
            "skipped: no CUDA library",
            Some("no CUDA library")
        ));
        assert!(!summary_adds("  ", None));
    }

    #[test]
    fn the_later_version_of_a_diagnostic_wins_whichever_came_first() {
        use CheckState::*;
        let queued = diagnostic(
            7,
            "cpu",
            DiagnosticStatus::Queued,
            vec![check("a", Waiting, None), check("b", Waiting, None)],
        );
        let first_running = diagnostic(
            7,
            "cpu",
            DiagnosticStatus::Running,
            vec![check("a", Running, None), check("b", Waiting, None)],
        );
        let one_done = diagnostic(
            7,
            "cpu",
            DiagnosticStatus::Running,
            vec![
                check("a", Done, Some(Verdict::Pass)),
                check("b", Running, None),
            ],
        );
        let finished = diagnostic(
            7,
            "cpu",
            DiagnosticStatus::Finished,
            vec![
                check("a", Done, Some(Verdict::Pass)),
                check("b", Done, Some(Verdict::Fail)),
            ],
        );
        assert_eq!(fresher(one_done.clone(), queued.clone()), one_done);
        assert_eq!(
            fresher(queued.clone(), first_running.clone()),
            first_running
        );
        assert_eq!(fresher(finished.clone(), one_done.clone()), finished);
        assert_eq!(fresher(first_running.clone(), one_done.clone()), one_done);

        // More samples of a running stress check is later.
        let mut more = one_done.clone();
        more.devices[0].checks[1].series.push(StressSample {
            t_s: 1.0,
            gflops: 10.0,
            sm_clock_mhz: None,
            temperature_celsius: None,
            power_watts: None,
            throttle_reasons: Vec::new(),
        });
        assert_eq!(fresher(more.clone(), one_done.clone()), more);
        let mut further = one_done.clone();
        further.devices[0].checks[1].progress = Some(0.5);
        assert_eq!(fresher(further.clone(), one_done), further);

        // A diagnostic of a server started afresh replaces the old one of the same id.
        let mut newer_server = queued.clone();
        newer_server.created_at += chrono::Duration::seconds(60);
        assert_eq!(fresher(finished, newer_server.clone()), newer_server);
    }

    #[test]
    fn the_last_verdict_is_the_latest_finished_part_of_the_device() {
        use CheckState::*;
        let reported = LastDiagnostic {
            id: 3,
            level: 2,
            verdict: Verdict::Pass,
            finished_at: Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, 5).unwrap(),
        };
        let mut pushed = BTreeMap::new();
        assert_eq!(
            latest_last("cpu", Some(reported.clone()), &pushed),
            Some(reported.clone())
        );
        // A running one does not count yet, nor one on another device.
        pushed.insert(
            9,
            diagnostic(
                9,
                "cpu",
                DiagnosticStatus::Running,
                vec![check("a", Running, None)],
            ),
        );
        pushed.insert(
            10,
            diagnostic(
                10,
                "cuda:0",
                DiagnosticStatus::Finished,
                vec![check("a", Done, Some(Verdict::Fail))],
            ),
        );
        assert_eq!(
            latest_last("cpu", Some(reported.clone()), &pushed),
            Some(reported.clone())
        );
        pushed.insert(
            9,
            diagnostic(
                9,
                "cpu",
                DiagnosticStatus::Finished,
                vec![check("a", Done, Some(Verdict::Fail))],
            ),
        );
        let last = latest_last("cpu", Some(reported.clone()), &pushed).unwrap();
        assert_eq!((last.id, last.verdict, last.level), (9, Verdict::Fail, 1));
        assert_eq!(latest_last("cpu", None, &pushed).map(|l| l.id), Some(9));
        assert_eq!(
            latest_last("cuda:0", None, &pushed).map(|l| l.verdict),
            Some(Verdict::Fail)
        );
        // A cancelled part has no verdict to show.
        let cancelled = diagnostic(
            11,
            "cpu",
            DiagnosticStatus::Cancelled,
            vec![check("a", Done, Some(Verdict::Pass))],
        );
        assert_eq!(last_of(&cancelled, "cpu"), None);
    }

    #[test]
    fn the_history_takes_pushed_versions_and_new_diagnostics_of_its_device() {
        use CheckState::*;
        let fetched = vec![
            diagnostic(
                5,
                "cpu",
                DiagnosticStatus::Running,
                vec![check("a", Running, None)],
            ),
            diagnostic(
                4,
                "cpu",
                DiagnosticStatus::Finished,
                vec![check("a", Done, Some(Verdict::Pass))],
            ),
        ];
        let mut pushed = BTreeMap::new();
        pushed.insert(
            5,
            diagnostic(
                5,
                "cpu",
                DiagnosticStatus::Finished,
                vec![check("a", Done, Some(Verdict::Warn))],
            ),
        );
        pushed.insert(
            6,
            diagnostic(
                6,
                "all",
                DiagnosticStatus::Queued,
                vec![check("a", Waiting, None)],
            ),
        );
        pushed.insert(
            7,
            diagnostic(
                7,
                "cuda:0",
                DiagnosticStatus::Queued,
                vec![check("a", Waiting, None)],
            ),
        );
        pushed.insert(
            2,
            diagnostic(
                2,
                "cpu",
                DiagnosticStatus::Finished,
                vec![check("a", Done, Some(Verdict::Pass))],
            ),
        );
        let ids = |rows: Vec<Diagnostic>| rows.iter().map(|d| d.id).collect::<Vec<_>>();
        let rows = history_rows(&fetched, &pushed, "cpu", true);
        assert_eq!(
            rows[1].verdict,
            Some(Verdict::Warn),
            "row 5 took the pushed version"
        );
        assert_eq!(
            ids(rows),
            [6, 5, 4],
            "6 (on all devices) joins; 7 is another device's; 2 is older"
        );
        assert_eq!(
            ids(history_rows(&fetched, &pushed, "cpu", false)),
            [5, 4],
            "only the first page grows"
        );
        assert_eq!(ids(history_rows(&[], &pushed, "cuda:0", true)), [7]);
    }

    #[test]
    fn a_history_row_shows_its_devices_own_verdict() {
        use CheckState::*;
        let mut all = diagnostic(
            8,
            "all",
            DiagnosticStatus::Finished,
            vec![check("a", Done, Some(Verdict::Pass))],
        );
        let mut gpu = all.devices[0].clone();
        gpu.device = "cuda:0".to_owned();
        gpu.verdict = Some(Verdict::Fail);
        all.devices.push(gpu);
        all.verdict = Some(Verdict::Fail);
        assert_eq!(
            verdict_on(&all, "cpu"),
            (DiagnosticStatus::Finished, Some(Verdict::Pass))
        );
        assert_eq!(
            verdict_on(&all, "cuda:0"),
            (DiagnosticStatus::Finished, Some(Verdict::Fail))
        );
        assert_eq!(checks_done(&all.devices[0].checks), "1 of 1 checks done");
    }

    #[test]
    fn the_stress_time_is_a_positive_number_of_seconds() {
        assert_eq!(duration_s(" 60 "), Ok(60.0));
        assert_eq!(duration_s("0.5"), Ok(0.5));
        assert!(duration_s("").unwrap_err().contains("seconds"));
        assert!(duration_s("0").unwrap_err().contains("more than 0"));
        assert!(duration_s("-3").unwrap_err().contains("more than 0"));
        assert!(duration_s("10m").unwrap_err().contains("not a number"));
        assert!(duration_s("inf").is_err());
    }
}

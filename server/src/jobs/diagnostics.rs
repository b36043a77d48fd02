//! Diagnostics as queue work: a request becomes one part per device, each queued on its
//! device like a job (what is queued after it waits for it, and it waits for the job that
//! runs), run by the device's runner in its worker, and settled into one verdict when the
//! last part ends.

use std::sync::Arc;

use chrono::Utc;
use gpulab_shared::diag::{
    CheckResult, CheckState, DeviceDiagnostic, Diagnostic, DiagnosticPage, DiagnosticRequest,
    DiagnosticStatus, LastDiagnostic, Verdict, DEFAULT_STRESS_DURATION_S, LEVELS,
};
use gpulab_shared::{Device, DeviceKind};
use tokio::sync::broadcast;

use super::queue::{Cancel, DeviceQueue, QueuedPart, Work, WorkId};
use super::supervisor::blocking;
use super::{JobService, JobSettings, RequestError, SubmitError, MIN_TIMEOUT_S};
use crate::devices::DeviceInventory;
use crate::lab::Caller;
use crate::store::diagnostics::{DiagnosticFilter, LastPart, NewDiagnostic};
use crate::store::JobStore;
use crate::worker::protocol::PastFigures;

/// The `device` that means every CUDA device (the CPU on a host without one).
pub const ALL_DEVICES: &str = "all";

/// How long a level-1 part may run before its worker is killed.
pub const LEVEL_1_TIMEOUT_S: f64 = 60.0;
/// How long a level-2 part may run.
pub const LEVEL_2_TIMEOUT_S: f64 = 300.0;
/// Level 3 may run level 2's checks, then its stress for `duration_s` once per data type
/// (FP32 and a tensor-core type), and this much more.
pub const LEVEL_3_MARGIN_S: f64 = 60.0;

/// How long a part of `level` with a stress of `duration_s` may run.
pub fn part_timeout_s(level: u8, duration_s: f64) -> f64 {
    match level {
        1 => LEVEL_1_TIMEOUT_S,
        2 => LEVEL_2_TIMEOUT_S,
        _ => LEVEL_2_TIMEOUT_S + 2.0 * duration_s + LEVEL_3_MARGIN_S,
    }
}

/// A checked request: the parts to queue.
struct Checked {
    new: NewDiagnostic,
    devices: Vec<Device>,
    duration_s: f64,
}

/// What happened to a diagnostic that was asked to stop.
#[derive(Debug)]
pub enum DiagnosticCancel {
    Cancelled(Diagnostic),
    /// It had already ended: nothing to cancel.
    AlreadyFinished(Diagnostic),
    NotFound,
}

/// How a part ended, before it is written down.
#[derive(Debug)]
pub struct PartEnd {
    pub status: DiagnosticStatus,
    /// Every check, when the worker ran them to the end.
    pub checks: Option<Vec<CheckResult>>,
    pub error: Option<String>,
}

/// Checks a request against the devices and the limits: the devices it runs on (`all`:
/// every CUDA device, or the CPU on a host without one), its stress time and faults.
fn check(
    req: &DiagnosticRequest,
    inventory: &DeviceInventory,
    settings: &JobSettings,
) -> Result<Checked, RequestError> {
    if !LEVELS.contains(&req.level) {
        return Err(RequestError::Invalid {
            field: "level".into(),
            detail: format!(
                "`level` must be 1 (quick, no load), 2 (medium) or 3 (long), got {}",
                req.level
            ),
        });
    }
    let devices: Vec<Device> = if req.device == ALL_DEVICES {
        let gpus: Vec<Device> = inventory
            .devices
            .iter()
            .filter(|d| d.kind == DeviceKind::Cuda)
            .cloned()
            .collect();
        if gpus.is_empty() {
            inventory
                .devices
                .iter()
                .filter(|d| d.kind == DeviceKind::Cpu)
                .cloned()
                .collect()
        } else {
            gpus
        }
    } else {
        vec![inventory
            .find(&req.device)
            .cloned()
            .ok_or_else(|| RequestError::unknown_device(&req.device, inventory))?]
    };
    let max = settings.max_timeout_s;
    let duration_s = match (req.level, req.duration_s) {
        (3, Some(d)) if d.is_finite() && (MIN_TIMEOUT_S..=max).contains(&d) => Some(d),
        (3, Some(d)) => {
            return Err(RequestError::Invalid {
                field: "duration_s".into(),
                detail: format!(
                    "`duration_s` must be a number of seconds from {MIN_TIMEOUT_S} to {max} \
                     (this server's --max-timeout-s), got {d}"
                ),
            })
        }
        (3, None) => Some(DEFAULT_STRESS_DURATION_S.min(max)),
        // Ignored below level 3, as documented.
        _ => None,
    };
    if !req.inject.is_empty() && !settings.worker.test_faults {
        return Err(RequestError::Invalid {
            field: "inject".into(),
            detail: "`inject` makes checks fail on purpose, for tests, and this server does \
                     not take it: it was not started with --enable-test-faults"
                .into(),
        });
    }
    let mut faults = Vec::new();
    for fault in &req.inject {
        if !faults.contains(fault) {
            faults.push(*fault);
        }
    }
    let parts = devices
        .iter()
        .map(|device| DeviceDiagnostic {
            device: device.id.clone(),
            name: device.name.clone(),
            uuid: device.cuda.as_ref().and_then(|c| c.uuid.clone()),
            status: DiagnosticStatus::Queued,
            verdict: None,
            started_at: None,
            finished_at: None,
            checks: crate::diag::planned_checks(device, req.level),
            error: None,
        })
        .collect();
    Ok(Checked {
        new: NewDiagnostic {
            level: req.level,
            device: req.device.clone(),
            duration_s,
            faults,
            parts,
            owner: None,
        },
        devices,
        duration_s: duration_s.unwrap_or(0.0),
    })
}

/// Where the runners write what the parts do: the history and the event stream. Cheap to
/// clone.
#[derive(Clone)]
pub struct DiagnosticLedger {
    store: JobStore,
    events: broadcast::Sender<Diagnostic>,
}

impl DiagnosticLedger {
    pub fn new(store: JobStore) -> Self {
        let (events, _) = broadcast::channel(1024);
        DiagnosticLedger { store, events }
    }

    /// Changes the stored diagnostic and sends it to the event stream when it changed.
    /// Returns it as stored, and whether it changed.
    async fn change(
        &self,
        id: i64,
        change: impl FnOnce(&mut Diagnostic) -> bool + Send + 'static,
    ) -> anyhow::Result<Option<(Diagnostic, bool)>> {
        let mut changed = false;
        let stored = blocking(&self.store, move |s| {
            s.update_diagnostic(id, |d| {
                changed = change(d);
                changed
            })
            .map(|d| d.map(|d| (d, changed)))
        })
        .await?;
        if let Some((d, true)) = &stored {
            let _ = self.events.send(d.clone());
        }
        Ok(stored)
    }

    /// The part on `device` starts: false when it is no longer queued (cancelled).
    pub async fn start_part(&self, id: i64, device: &str) -> bool {
        let device = device.to_owned();
        let started = self
            .change(id, move |d| {
                let now = now();
                let Some(part) = d.devices.iter_mut().find(|p| p.device == device) else {
                    return false;
                };
                if part.status != DiagnosticStatus::Queued {
                    return false;
                }
                part.status = DiagnosticStatus::Running;
                part.started_at = Some(now);
                d.status = DiagnosticStatus::Running;
                d.started_at.get_or_insert(now);
                true
            })
            .await;
        match started {
            Ok(Some((_, started))) => started,
            Ok(None) => false,
            Err(e) => {
                tracing::error!(diagnostic = id, "cannot mark the part running: {e:#}");
                false
            }
        }
    }

    /// A check of the part on `device` changed.
    pub async fn update_check(&self, id: i64, device: &str, check: CheckResult) {
        let device = device.to_owned();
        let stored = self
            .change(id, move |d| {
                let Some(part) = d.devices.iter_mut().find(|p| p.device == device) else {
                    return false;
                };
                if part.status != DiagnosticStatus::Running {
                    return false;
                }
                match part.checks.iter_mut().find(|c| c.check == check.check) {
                    Some(slot) => *slot = check,
                    None => part.checks.push(check),
                }
                true
            })
            .await;
        if let Err(e) = stored {
            tracing::warn!(diagnostic = id, "cannot store a check's progress: {e:#}");
        }
    }

    /// The part on `device` ended; when it was the last, the diagnostic is settled.
    pub async fn end_part(&self, id: i64, device: &str, end: PartEnd) -> Option<Diagnostic> {
        let name = device.to_owned();
        let stored = self
            .change(id, move |d| {
                let Some(part) = d.devices.iter_mut().find(|p| p.device == name) else {
                    return false;
                };
                if part.status.is_terminal() {
                    return false;
                }
                end_part(part, end);
                settle(d);
                true
            })
            .await;
        match stored {
            Ok(Some((d, changed))) => {
                if changed {
                    self.meter_part(&d, device).await;
                }
                Some(d)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(diagnostic = id, %device, "cannot store the end of the part: {e:#}");
                None
            }
        }
    }

    /// Meters the device time of the part on `device` of `d`, which just ended, where it
    /// started at all.
    async fn meter_part(&self, d: &Diagnostic, device: &str) {
        let Some(part) = d.devices.iter().find(|p| p.device == device) else {
            return;
        };
        let (Some(started), Some(ended)) = (part.started_at, part.finished_at) else {
            return;
        };
        let (id, owner, device) = (d.id, d.owner.clone(), device.to_owned());
        let metered = blocking(&self.store, move |s| {
            s.record_part_usage(id, &device, owner.as_deref(), started, ended)
        })
        .await;
        if let Err(e) = metered {
            tracing::warn!(
                diagnostic = id,
                "cannot meter the part's device time: {e:#}"
            );
        }
    }

    /// The device's earlier measured figures, for its checks to compare against.
    pub async fn baseline(&self, device: &str) -> Vec<PastFigures> {
        let device = device.to_owned();
        match blocking(&self.store, move |s| s.measured_history(&device)).await {
            Ok(history) => history
                .into_iter()
                .map(|((check, evidence), measured)| PastFigures {
                    check,
                    evidence,
                    measured,
                })
                .collect(),
            Err(e) => {
                tracing::warn!("cannot read the device's earlier diagnostics: {e:#}");
                Vec::new()
            }
        }
    }
}

fn now() -> chrono::DateTime<Utc> {
    // What the history holds, to the millisecond, so that a reread compares equal.
    let ms = Utc::now().timestamp_millis();
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_else(Utc::now)
}

/// Writes a part's end into it. A part that did not run to its end keeps the checks it
/// finished; one left running is marked skipped with the reason.
fn end_part(part: &mut DeviceDiagnostic, end: PartEnd) {
    part.status = end.status;
    part.finished_at = Some(now());
    part.error = end.error;
    match end.checks {
        Some(checks) => part.checks = checks,
        None => {
            let reason = part.error.clone();
            for check in part
                .checks
                .iter_mut()
                .filter(|c| c.state == CheckState::Running)
            {
                check.state = CheckState::Done;
                check.verdict = Some(Verdict::Skip);
                check.reason = reason.clone();
                check.progress = None;
            }
        }
    }
    part.verdict = (part.status == DiagnosticStatus::Finished).then(|| part_verdict(part));
}

fn part_verdict(part: &DeviceDiagnostic) -> Verdict {
    Verdict::combine(part.checks.iter().filter_map(|c| c.verdict))
}

/// Once every part has ended: level 3 compares the devices with each other, and the
/// diagnostic takes its status (`cancelled`, `interrupted` or `failed` when any part did,
/// else `finished`), its verdict (the worst of the parts', when every part finished) and
/// its end.
fn settle(d: &mut Diagnostic) {
    if !d.devices.iter().all(|p| p.status.is_terminal()) {
        return;
    }
    if d.level == 3 {
        crate::diag::compare_devices(&mut d.devices);
        for part in d
            .devices
            .iter_mut()
            .filter(|p| p.status == DiagnosticStatus::Finished)
        {
            part.verdict = Some(part_verdict(part));
        }
    }
    let any = |status| d.devices.iter().any(|p| p.status == status);
    d.status = [
        DiagnosticStatus::Cancelled,
        DiagnosticStatus::Interrupted,
        DiagnosticStatus::Failed,
    ]
    .into_iter()
    .find(|s| any(*s))
    .unwrap_or(DiagnosticStatus::Finished);
    d.verdict = (d.status == DiagnosticStatus::Finished)
        .then(|| Verdict::combine(d.devices.iter().filter_map(|p| p.verdict)));
    let errors: Vec<String> = d
        .devices
        .iter()
        .filter_map(|p| p.error.as_ref().map(|e| format!("{}: {e}", p.device)))
        .collect();
    d.error = (!errors.is_empty()).then(|| errors.join("; "));
    d.finished_at = Some(now());
}

impl JobService {
    /// Every change of a diagnostic from now on.
    pub fn subscribe_diagnostics(&self) -> broadcast::Receiver<Diagnostic> {
        self.inner.diagnostics.events.subscribe()
    }

    /// Checks a request and queues one part per device, on every device's queue or, when
    /// any is full, on none. In a task of its own, as [`JobService::submit`].
    pub async fn submit_diagnostic(
        &self,
        req: DiagnosticRequest,
        caller: &Caller,
    ) -> Result<Diagnostic, SubmitError> {
        let this = self.clone();
        let owner = caller.owner();
        let admin = caller.is_admin();
        tokio::spawn(async move { this.submit_diagnostic_whole(req, owner, admin).await })
            .await
            .map_err(|e| SubmitError::Internal(anyhow::anyhow!("the submission failed: {e}")))?
    }

    async fn submit_diagnostic_whole(
        &self,
        req: DiagnosticRequest,
        owner: Option<String>,
        admin: bool,
    ) -> Result<Diagnostic, SubmitError> {
        let inner = &self.inner;
        let mut checked = check(&req, &inner.inventory, &inner.settings)?;
        checked.new.owner = owner;
        let mut queues: Vec<Arc<DeviceQueue>> = Vec::with_capacity(checked.devices.len());
        for device in &checked.devices {
            match self.reserve(&device.id) {
                Ok(queue) => queues.push(queue),
                Err(e) => {
                    queues.iter().for_each(|q| q.unreserve());
                    return Err(e);
                }
            }
        }
        let Checked {
            new,
            devices,
            duration_s,
        } = checked;
        let faults = new.faults.clone();
        let stored = blocking(&inner.store, move |s| s.insert_diagnostic(new)).await;
        let diagnostic = match stored {
            Ok(d) => d,
            Err(e) => {
                queues.iter().for_each(|q| q.unreserve());
                if crate::store::is_disk_full(&e) {
                    tracing::error!("a diagnostic was refused: {e:#}");
                    return Err(SubmitError::DiskFull);
                }
                return Err(e.into());
            }
        };
        let timeout_s = inner
            .settings
            .diagnostic_timeout_s
            .unwrap_or_else(|| part_timeout_s(diagnostic.level, duration_s));
        for (queue, device) in queues.into_iter().zip(devices) {
            let part = Work::Diagnostic(Box::new(QueuedPart {
                diag_id: diagnostic.id,
                device,
                level: diagnostic.level,
                duration_s,
                faults: faults.clone(),
                timeout_s,
                owner: diagnostic.owner.clone(),
            }));
            // An admin's parts are not held to the running limit of users.
            if admin {
                queue.push_reserved_exempt(part);
            } else {
                queue.push_reserved(part);
            }
        }
        let _ = inner.diagnostics.events.send(diagnostic.clone());
        Ok(diagnostic)
    }

    pub async fn get_diagnostic(&self, id: i64) -> anyhow::Result<Option<Diagnostic>> {
        blocking(&self.inner.store, move |s| s.get_diagnostic(id)).await
    }

    pub async fn list_diagnostics(
        &self,
        filter: DiagnosticFilter,
    ) -> anyhow::Result<DiagnosticPage> {
        blocking(&self.inner.store, move |s| s.list_diagnostics(&filter)).await
    }

    /// Each device's last finished diagnostic.
    pub async fn last_diagnostics(
        &self,
    ) -> anyhow::Result<std::collections::BTreeMap<String, LastDiagnostic>> {
        blocking(&self.inner.store, |s| s.last_diagnostics()).await
    }

    /// For each device and level, its part of the last finished diagnostic.
    pub async fn last_parts(&self) -> anyhow::Result<Vec<(String, LastPart)>> {
        blocking(&self.inner.store, |s| s.last_parts()).await
    }

    /// Cancels every part of a diagnostic: a queued part leaves its queue, a running one
    /// has its worker killed.
    pub async fn cancel_diagnostic(&self, id: i64) -> anyhow::Result<DiagnosticCancel> {
        let Some(diagnostic) = self.get_diagnostic(id).await? else {
            return Ok(DiagnosticCancel::NotFound);
        };
        if diagnostic.status.is_terminal() {
            return Ok(DiagnosticCancel::AlreadyFinished(diagnostic));
        }
        let ledger = &self.inner.diagnostics;
        for part in diagnostic
            .devices
            .iter()
            .filter(|p| !p.status.is_terminal())
        {
            let Some(queue) = self.inner.queues.get(&part.device) else {
                continue;
            };
            match queue.cancel(WorkId::Diagnostic(id)) {
                Cancel::Dequeued => {
                    let end = PartEnd {
                        status: DiagnosticStatus::Cancelled,
                        checks: None,
                        error: Some("cancelled before it started".into()),
                    };
                    ledger.end_part(id, &part.device, end).await;
                }
                Cancel::Running(line) => {
                    let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
                    if line.send(reply_tx).is_ok() {
                        let _ = reply_rx.await;
                    }
                }
                // Ending by itself right now.
                Cancel::NotHere => {}
            }
        }
        // The runners store a part's end before they leave the queue; wait for it briefly.
        for _ in 0..500 {
            match self.get_diagnostic(id).await? {
                Some(d) if d.status == DiagnosticStatus::Cancelled => {
                    return Ok(DiagnosticCancel::Cancelled(d))
                }
                Some(d) if d.status.is_terminal() => {
                    return Ok(DiagnosticCancel::AlreadyFinished(d))
                }
                Some(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                None => return Ok(DiagnosticCancel::NotFound),
            }
        }
        anyhow::bail!("diagnostic {id} neither ended nor could be cancelled")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpulab_shared::diag::Evidence;

    fn check(name: &str, verdict: Option<Verdict>, state: CheckState) -> CheckResult {
        CheckResult {
            check: name.into(),
            title: name.into(),
            state,
            verdict,
            summary: String::new(),
            reason: None,
            evidence: Vec::<Evidence>::new(),
            progress: None,
            duration_s: None,
            series: Vec::new(),
        }
    }

    fn part(device: &str, checks: Vec<CheckResult>) -> DeviceDiagnostic {
        DeviceDiagnostic {
            device: device.into(),
            name: device.into(),
            uuid: None,
            status: DiagnosticStatus::Running,
            verdict: None,
            started_at: None,
            finished_at: None,
            checks,
            error: None,
        }
    }

    fn diagnostic(parts: Vec<DeviceDiagnostic>) -> Diagnostic {
        Diagnostic {
            schema_version: 1,
            id: 1,
            level: 2,
            device: "all".into(),
            duration_s: None,
            status: DiagnosticStatus::Running,
            verdict: None,
            created_at: now(),
            started_at: None,
            finished_at: None,
            devices: parts,
            error: None,
            owner: None,
        }
    }

    #[test]
    fn the_diagnostic_ends_with_its_last_part_and_the_worst_verdict() {
        let mut d = diagnostic(vec![part("cuda:0", vec![]), part("cuda:1", vec![])]);
        let done = |v| {
            Some(vec![
                check("a", Some(Verdict::Pass), CheckState::Done),
                check("b", Some(v), CheckState::Done),
            ])
        };
        end_part(
            &mut d.devices[0],
            PartEnd {
                status: DiagnosticStatus::Finished,
                checks: done(Verdict::Warn),
                error: None,
            },
        );
        settle(&mut d);
        assert_eq!(d.status, DiagnosticStatus::Running, "one part still runs");
        assert_eq!(d.devices[0].verdict, Some(Verdict::Warn));
        end_part(
            &mut d.devices[1],
            PartEnd {
                status: DiagnosticStatus::Finished,
                checks: done(Verdict::Skip),
                error: None,
            },
        );
        settle(&mut d);
        assert_eq!(d.status, DiagnosticStatus::Finished);
        assert_eq!(d.devices[1].verdict, Some(Verdict::Pass));
        assert_eq!(d.verdict, Some(Verdict::Warn));
        assert!(d.finished_at.is_some() && d.error.is_none());
    }

    #[test]
    fn a_failed_part_fails_the_diagnostic_without_a_verdict_and_says_where() {
        let running = check("memory_test", None, CheckState::Running);
        let waiting = check("gemm", None, CheckState::Waiting);
        let mut d = diagnostic(vec![
            part("cpu", vec![running, waiting]),
            part("cuda:0", vec![]),
        ]);
        end_part(
            &mut d.devices[0],
            PartEnd {
                status: DiagnosticStatus::Failed,
                checks: None,
                error: Some("the worker died".into()),
            },
        );
        end_part(
            &mut d.devices[1],
            PartEnd {
                status: DiagnosticStatus::Finished,
                checks: Some(vec![check("x", Some(Verdict::Pass), CheckState::Done)]),
                error: None,
            },
        );
        settle(&mut d);
        assert_eq!(d.status, DiagnosticStatus::Failed);
        assert_eq!(d.verdict, None);
        assert_eq!(d.error.as_deref(), Some("cpu: the worker died"));
        let checks = &d.devices[0].checks;
        assert_eq!(checks[0].verdict, Some(Verdict::Skip));
        assert_eq!(checks[0].reason.as_deref(), Some("the worker died"));
        assert_eq!(checks[1].state, CheckState::Waiting);
        assert_eq!(d.devices[0].verdict, None);
    }

    #[test]
    fn at_level_3_a_gpu_more_than_ten_percent_below_the_best_fails_the_diagnostic() {
        // The engine's stress check and its throughput figure.
        let stress = |gflops: f64| {
            let mut c = check("stress_fp32", Some(Verdict::Pass), CheckState::Done);
            c.evidence.push(Evidence {
                name: "sustained throughput".into(),
                measured: Some(gflops),
                measured_text: None,
                unit: Some("GFLOP/s".into()),
                expected: None,
                expected_text: None,
                bound: None,
                source: None,
                verdict: Verdict::Pass,
            });
            c
        };
        let mut d = diagnostic(vec![part("cuda:0", vec![]), part("cuda:1", vec![])]);
        d.level = 3;
        for (i, gflops) in [1000.0, 850.0].into_iter().enumerate() {
            end_part(
                &mut d.devices[i],
                PartEnd {
                    status: DiagnosticStatus::Finished,
                    checks: Some(vec![stress(gflops)]),
                    error: None,
                },
            );
        }
        assert_eq!(d.devices[1].verdict, Some(Verdict::Pass), "alone it passes");
        settle(&mut d);
        let relative = |i: usize| {
            d.devices[i]
                .checks
                .iter()
                .find(|c| c.check == "relative_throughput")
                .and_then(|c| c.verdict)
        };
        assert_eq!(relative(0), Some(Verdict::Pass));
        assert_eq!(relative(1), Some(Verdict::Fail));
        assert_eq!(d.devices[1].verdict, Some(Verdict::Fail));
        assert_eq!(d.verdict, Some(Verdict::Fail));
        assert_eq!(d.status, DiagnosticStatus::Finished);
    }

    #[test]
    fn timeouts_grow_with_the_level_and_the_stress() {
        assert_eq!(part_timeout_s(1, 0.0), 60.0);
        assert_eq!(part_timeout_s(2, 0.0), 300.0);
        assert_eq!(part_timeout_s(3, 60.0), 480.0);
    }
}

//! Diagnostics in the history: each one's JSON as the API serves it, with its status,
//! verdict and times copied into columns, and one row per device part for a device's
//! history, its last verdict and the metrics.

use std::collections::BTreeMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use gpulab_shared::diag::{
    DeviceDiagnostic, Diagnostic, DiagnosticPage, DiagnosticStatus, Fault, LastDiagnostic, Verdict,
};
use rusqlite::{params, OptionalExtension, Transaction};

use super::{parse_timestamp, timestamp, JobStore};

/// A diagnostic as it enters the history, before it has an id.
#[derive(Debug, Clone)]
pub struct NewDiagnostic {
    pub level: u8,
    /// As asked: a device id or `all`.
    pub device: String,
    pub duration_s: Option<f64>,
    /// What a test injected: kept beside the JSON, and never used as a baseline.
    pub faults: Vec<Fault>,
    /// Each device's part, every check `waiting`.
    pub parts: Vec<DeviceDiagnostic>,
    /// Who asked for it (lab mode); `None` in single mode.
    pub owner: Option<String>,
}

/// Which diagnostics `GET /api/diagnostics` lists.
#[derive(Debug, Clone, Default)]
pub struct DiagnosticFilter {
    /// Only diagnostics with a part on this device.
    pub device: Option<String>,
    /// Only diagnostics with a smaller id than this (the previous page's `next_cursor`).
    pub before_id: Option<i64>,
    pub limit: u32,
    /// Only this user's diagnostics (a user of lab mode who is no admin).
    pub owner: Option<String>,
}

/// One device's last finished part at one level, for the metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct LastPart {
    pub level: u8,
    pub finished_at: DateTime<Utc>,
    pub part: DeviceDiagnostic,
}

/// Earlier measured figures of one device: for each (check, evidence name), the measured
/// values of its finished diagnostics, newest first.
pub type MeasuredHistory = BTreeMap<(String, String), Vec<f64>>;

/// How many earlier diagnostics of a device a baseline reads at most.
pub const BASELINE_DIAGNOSTICS: u32 = 20;

pub fn status_str(status: DiagnosticStatus) -> &'static str {
    match status {
        DiagnosticStatus::Queued => "queued",
        DiagnosticStatus::Running => "running",
        DiagnosticStatus::Finished => "finished",
        DiagnosticStatus::Cancelled => "cancelled",
        DiagnosticStatus::Failed => "failed",
        DiagnosticStatus::Interrupted => "interrupted",
    }
}

impl JobStore {
    /// Stores a new `queued` diagnostic with its parts.
    pub fn insert_diagnostic(&self, new: NewDiagnostic) -> anyhow::Result<Diagnostic> {
        // What the database holds, to the millisecond.
        let created_at = parse_timestamp(&timestamp(Utc::now()))?;
        let mut diagnostic = Diagnostic {
            schema_version: gpulab_shared::diag::SCHEMA_VERSION,
            id: 0,
            level: new.level,
            device: new.device,
            duration_s: new.duration_s,
            status: DiagnosticStatus::Queued,
            verdict: None,
            created_at,
            started_at: None,
            finished_at: None,
            devices: new.parts,
            error: None,
            owner: new.owner,
        };
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO diagnostics (device, level, status, created_at, faults, body, owner)
             VALUES (?1, ?2, 'queued', ?3, ?4, '{}', ?5)",
            params![
                diagnostic.device,
                diagnostic.level,
                timestamp(created_at),
                serde_json::to_string(&new.faults)?,
                diagnostic.owner,
            ],
        )?;
        diagnostic.id = tx.last_insert_rowid();
        for part in &diagnostic.devices {
            tx.execute(
                "INSERT INTO diagnostic_parts (diagnostic_id, device, level, status)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    diagnostic.id,
                    part.device,
                    diagnostic.level,
                    status_str(part.status)
                ],
            )?;
        }
        write_body(&tx, &diagnostic)?;
        tx.commit()?;
        self.keep_within_size(&mut conn);
        Ok(diagnostic)
    }

    /// The diagnostic, or `None` when there is none.
    pub fn get_diagnostic(&self, id: i64) -> anyhow::Result<Option<Diagnostic>> {
        let conn = self.reader();
        let body: Option<String> = conn
            .query_row("SELECT body FROM diagnostics WHERE id = ?1", [id], |row| {
                row.get(0)
            })
            .optional()?;
        body.map(|b| parse_body(id, &b)).transpose()
    }

    /// Changes a diagnostic in one transaction: `change` gets it as stored and says whether
    /// it changed anything. Returns the diagnostic as stored afterwards (`None` when there
    /// is none). A diagnostic that has ended is not offered to `change`: it never changes
    /// again.
    pub fn update_diagnostic(
        &self,
        id: i64,
        change: impl FnOnce(&mut Diagnostic) -> bool,
    ) -> anyhow::Result<Option<Diagnostic>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let body: Option<String> = tx
            .query_row("SELECT body FROM diagnostics WHERE id = ?1", [id], |row| {
                row.get(0)
            })
            .optional()?;
        let Some(body) = body else {
            return Ok(None);
        };
        let mut diagnostic = parse_body(id, &body)?;
        if diagnostic.status.is_terminal() || !change(&mut diagnostic) {
            return Ok(Some(diagnostic));
        }
        write_body(&tx, &diagnostic)?;
        for part in &diagnostic.devices {
            tx.execute(
                "UPDATE diagnostic_parts SET status = ?3, verdict = ?4, finished_at = ?5
                 WHERE diagnostic_id = ?1 AND device = ?2",
                params![
                    id,
                    part.device,
                    status_str(part.status),
                    part.verdict.map(Verdict::as_str),
                    part.finished_at.map(timestamp),
                ],
            )?;
        }
        tx.commit()?;
        if diagnostic.status.is_terminal() {
            self.keep_within_size(&mut conn);
        }
        Ok(Some(diagnostic))
    }

    /// A page of diagnostics, newest first. A row that does not parse is logged and left
    /// out; it still counts towards the page, so that the cursor moves past it.
    pub fn list_diagnostics(&self, filter: &DiagnosticFilter) -> anyhow::Result<DiagnosticPage> {
        let mut sql = "SELECT id, body FROM diagnostics WHERE 1 = 1".to_owned();
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(device) = &filter.device {
            // Walks the ids down from the newest and stops at the page's end.
            sql.push_str(
                " AND EXISTS (SELECT 1 FROM diagnostic_parts p
                              WHERE p.diagnostic_id = diagnostics.id AND p.device = ?)",
            );
            args.push(device.clone().into());
        }
        if let Some(owner) = &filter.owner {
            sql.push_str(" AND owner = ?");
            args.push(owner.clone().into());
        }
        if let Some(before) = filter.before_id {
            sql.push_str(" AND id < ?");
            args.push(before.into());
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        // One more than asked tells whether there is a next page.
        args.push(i64::from(filter.limit + 1).into());
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let limit = filter.limit as usize;
        let next_cursor = if rows.len() > limit {
            rows.get(limit - 1).map(|(id, _)| id.to_string())
        } else {
            None
        };
        let diagnostics = rows
            .into_iter()
            .take(limit)
            .filter_map(|(id, body)| match parse_body(id, &body) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::warn!(diagnostic = id, "left out of the list: {e:#}");
                    None
                }
            })
            .collect();
        Ok(DiagnosticPage {
            diagnostics,
            next_cursor,
        })
    }

    /// Marks every diagnostic (and part) that was queued or running when the server last
    /// stopped as `interrupted`. Returns how many diagnostics there were.
    pub fn interrupt_unfinished_diagnostics(&self) -> anyhow::Result<usize> {
        let ids: Vec<i64> = {
            let conn = self.conn();
            let mut stmt = conn.prepare(
                "SELECT id FROM diagnostics WHERE status IN ('queued', 'running') ORDER BY id",
            )?;
            let ids = stmt
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            ids
        };
        let now = parse_timestamp(&timestamp(Utc::now()))?;
        for &id in &ids {
            let ended = self.update_diagnostic(id, |d| {
                for part in d.devices.iter_mut().filter(|p| !p.status.is_terminal()) {
                    part.error = Some(format!(
                        "the server stopped while this part was {}",
                        status_str(part.status)
                    ));
                    part.status = DiagnosticStatus::Interrupted;
                    part.finished_at = Some(now);
                }
                d.error = Some(format!(
                    "the server stopped while this diagnostic was {}",
                    status_str(d.status)
                ));
                d.status = DiagnosticStatus::Interrupted;
                d.finished_at = Some(now);
                true
            });
            if let Err(e) = ended {
                // A body that does not parse: its columns at least say it ended.
                tracing::warn!(diagnostic = id, "cannot interrupt it in full: {e:#}");
                self.conn().execute(
                    "UPDATE diagnostics SET status = 'interrupted', finished_at = ?2
                     WHERE id = ?1",
                    params![id, timestamp(now)],
                )?;
            }
        }
        Ok(ids.len())
    }

    /// Each device's last finished diagnostic: its id, level, the device's own verdict
    /// and when its part ended.
    pub fn last_diagnostics(&self) -> anyhow::Result<BTreeMap<String, LastDiagnostic>> {
        let conn = self.reader();
        // The newest finished part per device (ids grow with time), in one pass of the
        // (device, status, diagnostic_id) index.
        let mut stmt = conn.prepare_cached(
            "SELECT p.device, p.diagnostic_id, p.level, p.verdict, p.finished_at
             FROM diagnostic_parts p
             JOIN (SELECT device, MAX(diagnostic_id) AS id FROM diagnostic_parts
                   WHERE status = 'finished' AND verdict IS NOT NULL
                   GROUP BY device) newest
               ON p.device = newest.device AND p.diagnostic_id = newest.id",
        )?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, u8>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, Option<String>>(4)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = BTreeMap::new();
        for (device, id, level, verdict, finished_at) in rows {
            let (Some(verdict), Some(finished_at)) = (parse_verdict(&verdict), finished_at) else {
                continue;
            };
            out.insert(
                device,
                LastDiagnostic {
                    id,
                    level,
                    verdict,
                    finished_at: parse_timestamp(&finished_at)?,
                },
            );
        }
        Ok(out)
    }

    /// For each device and level, the device's part of its last finished diagnostic.
    pub fn last_parts(&self) -> anyhow::Result<Vec<(String, LastPart)>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT p.device, p.level, p.finished_at, d.id, d.body
             FROM diagnostic_parts p
             JOIN (SELECT device, level, MAX(diagnostic_id) AS id FROM diagnostic_parts
                   WHERE status = 'finished'
                   GROUP BY device, level) newest
               ON p.device = newest.device AND p.level = newest.level
                  AND p.diagnostic_id = newest.id
             JOIN diagnostics d ON d.id = p.diagnostic_id
             ORDER BY p.device, p.level",
        )?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, u8>(1)?,
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, String>(4)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::new();
        for (device, level, finished_at, id, body) in rows {
            let parsed = parse_body(id, &body).and_then(|d| {
                let part = d
                    .devices
                    .into_iter()
                    .find(|p| p.device == device)
                    .context("its body has no part for the device")?;
                let finished_at = finished_at.context("it has no end time")?;
                Ok(LastPart {
                    level,
                    finished_at: parse_timestamp(&finished_at)?,
                    part,
                })
            });
            match parsed {
                Ok(last) => out.push((device, last)),
                Err(e) => tracing::warn!(diagnostic = id, "left out of the metrics: {e:#}"),
            }
        }
        Ok(out)
    }

    /// `device`'s measured figures from its last [`BASELINE_DIAGNOSTICS`] finished
    /// diagnostics, newest first: those of checks that passed or warned (a failed check's
    /// figures would lower the bar); diagnostics with injected faults are left out.
    pub fn measured_history(&self, device: &str) -> anyhow::Result<MeasuredHistory> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT d.id, d.body FROM diagnostic_parts p
             JOIN diagnostics d ON d.id = p.diagnostic_id
             WHERE p.device = ?1 AND p.status = 'finished' AND d.faults = '[]'
             ORDER BY p.diagnostic_id DESC LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![device, BASELINE_DIAGNOSTICS], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut history = MeasuredHistory::new();
        for (id, body) in rows {
            let Ok(diagnostic) = parse_body(id, &body) else {
                continue;
            };
            let checks = diagnostic
                .devices
                .iter()
                .filter(|p| p.device == device)
                .flat_map(|p| &p.checks)
                .filter(|c| matches!(c.verdict, Some(Verdict::Pass | Verdict::Warn)));
            for check in checks {
                for evidence in &check.evidence {
                    if let Some(measured) = evidence.measured.filter(|m| m.is_finite()) {
                        history
                            .entry((check.check.clone(), evidence.name.clone()))
                            .or_default()
                            .push(measured);
                    }
                }
            }
        }
        Ok(history)
    }
}

fn write_body(tx: &Transaction<'_>, d: &Diagnostic) -> anyhow::Result<()> {
    tx.execute(
        "UPDATE diagnostics SET status = ?2, verdict = ?3, finished_at = ?4, body = ?5
         WHERE id = ?1",
        params![
            d.id,
            status_str(d.status),
            d.verdict.map(Verdict::as_str),
            d.finished_at.map(timestamp),
            serde_json::to_string(d)?,
        ],
    )?;
    Ok(())
}

fn parse_body(id: i64, body: &str) -> anyhow::Result<Diagnostic> {
    serde_json::from_str(body)
        .with_context(|| format!("diagnostic {id} cannot be read from the history"))
}

fn parse_verdict(s: &str) -> Option<Verdict> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
}

#[cfg(test)]
mod tests {
    use gpulab_shared::diag::{CheckResult, CheckState, Evidence};

    use super::*;
    use crate::store::{Retention, StoreOptions};

    fn evidence(name: &str, measured: f64) -> Evidence {
        Evidence {
            name: name.into(),
            measured: Some(measured),
            measured_text: None,
            unit: Some("GB/s".into()),
            expected: None,
            expected_text: None,
            bound: None,
            source: None,
            verdict: Verdict::Pass,
        }
    }

    fn check(id: &str, verdict: Verdict, figure: f64) -> CheckResult {
        CheckResult {
            check: id.into(),
            title: id.into(),
            state: CheckState::Done,
            verdict: Some(verdict),
            summary: String::new(),
            reason: None,
            evidence: vec![evidence("copy", figure)],
            progress: None,
            duration_s: None,
            series: Vec::new(),
        }
    }

    fn part(device: &str) -> DeviceDiagnostic {
        DeviceDiagnostic {
            device: device.into(),
            name: device.into(),
            uuid: None,
            status: DiagnosticStatus::Queued,
            verdict: None,
            started_at: None,
            finished_at: None,
            checks: Vec::new(),
            error: None,
        }
    }

    fn new(devices: &[&str], level: u8, faults: Vec<Fault>) -> NewDiagnostic {
        NewDiagnostic {
            level,
            device: if devices.len() == 1 {
                devices[0].into()
            } else {
                "all".into()
            },
            duration_s: None,
            faults,
            parts: devices.iter().map(|d| part(d)).collect(),
            owner: None,
        }
    }

    /// Ends every part `finished` with one check of `verdict` measuring `figure`.
    fn finish(store: &JobStore, id: i64, verdict: Verdict, figure: f64) -> Diagnostic {
        let at = parse_timestamp(&timestamp(Utc::now())).unwrap();
        store
            .update_diagnostic(id, |d| {
                for p in &mut d.devices {
                    p.status = DiagnosticStatus::Finished;
                    p.checks = vec![check("bandwidth", verdict, figure)];
                    p.verdict = Some(verdict);
                    p.finished_at = Some(at);
                }
                d.status = DiagnosticStatus::Finished;
                d.verdict = Some(verdict);
                d.finished_at = Some(at);
                true
            })
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_diagnostic_is_stored_whole_and_an_ended_one_never_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let d = store
            .insert_diagnostic(new(&["cuda:0", "cpu"], 2, vec![]))
            .unwrap();
        assert_eq!(store.get_diagnostic(d.id).unwrap().unwrap(), d);
        let done = finish(&store, d.id, Verdict::Warn, 10.0);
        assert_eq!(store.get_diagnostic(d.id).unwrap().unwrap(), done);
        let mut offered = false;
        let again = store
            .update_diagnostic(d.id, |_| {
                offered = true;
                true
            })
            .unwrap()
            .unwrap();
        assert!(!offered, "an ended diagnostic is not offered for change");
        assert_eq!(again, done);
        assert_eq!(store.get_diagnostic(d.id + 1).unwrap(), None);
        let last = store.last_diagnostics().unwrap();
        assert_eq!(last.keys().collect::<Vec<_>>(), ["cpu", "cuda:0"]);
        assert_eq!(last["cpu"].verdict, Verdict::Warn);
        assert_eq!(last["cpu"].finished_at, done.finished_at.unwrap());
    }

    #[test]
    fn unfinished_diagnostics_become_interrupted_with_their_parts() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let done = store.insert_diagnostic(new(&["cpu"], 1, vec![])).unwrap();
        finish(&store, done.id, Verdict::Pass, 1.0);
        let running = store.insert_diagnostic(new(&["cpu"], 2, vec![])).unwrap();
        store
            .update_diagnostic(running.id, |d| {
                d.status = DiagnosticStatus::Running;
                d.devices[0].status = DiagnosticStatus::Running;
                true
            })
            .unwrap();
        assert_eq!(store.interrupt_unfinished_diagnostics().unwrap(), 1);
        let after = store.get_diagnostic(running.id).unwrap().unwrap();
        assert_eq!(after.status, DiagnosticStatus::Interrupted);
        assert_eq!(after.devices[0].status, DiagnosticStatus::Interrupted);
        assert_eq!(
            after.error.as_deref(),
            Some("the server stopped while this diagnostic was running")
        );
        assert_eq!(
            store.get_diagnostic(done.id).unwrap().unwrap().status,
            DiagnosticStatus::Finished
        );
        assert_eq!(store.interrupt_unfinished_diagnostics().unwrap(), 0);
    }

    #[test]
    fn the_baseline_is_the_devices_own_figures_newest_first_without_injected_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        for (figure, verdict, faults) in [
            (10.0, Verdict::Pass, vec![]),
            (1.0, Verdict::Pass, vec![Fault::SlowThroughput]),
            (3.0, Verdict::Fail, vec![]),
            (12.0, Verdict::Warn, vec![]),
        ] {
            let d = store.insert_diagnostic(new(&["cpu"], 2, faults)).unwrap();
            finish(&store, d.id, verdict, figure);
        }
        let other = store
            .insert_diagnostic(new(&["cuda:0"], 2, vec![]))
            .unwrap();
        finish(&store, other.id, Verdict::Pass, 99.0);
        // Queued: not yet a figure.
        store.insert_diagnostic(new(&["cpu"], 2, vec![])).unwrap();
        let history = store.measured_history("cpu").unwrap();
        assert_eq!(
            history,
            [(
                ("bandwidth".to_string(), "copy".to_string()),
                vec![12.0, 10.0]
            )]
            .into()
        );
    }

    #[test]
    fn each_device_and_level_has_its_last_finished_part_for_the_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let old = store.insert_diagnostic(new(&["cpu"], 1, vec![])).unwrap();
        finish(&store, old.id, Verdict::Fail, 1.0);
        let l1 = store
            .insert_diagnostic(new(&["cpu", "cuda:0"], 1, vec![]))
            .unwrap();
        finish(&store, l1.id, Verdict::Pass, 2.0);
        let l2 = store.insert_diagnostic(new(&["cpu"], 2, vec![])).unwrap();
        finish(&store, l2.id, Verdict::Warn, 3.0);
        store.insert_diagnostic(new(&["cpu"], 2, vec![])).unwrap();
        let parts = store.last_parts().unwrap();
        let seen: Vec<(&str, u8, Option<Verdict>)> = parts
            .iter()
            .map(|(device, last)| (device.as_str(), last.level, last.part.verdict))
            .collect();
        assert_eq!(
            seen,
            [
                ("cpu", 1, Some(Verdict::Pass)),
                ("cpu", 2, Some(Verdict::Warn)),
                ("cuda:0", 1, Some(Verdict::Pass))
            ]
        );
        let page = store
            .list_diagnostics(&DiagnosticFilter {
                device: Some("cuda:0".into()),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(page.diagnostics.len(), 1);
        assert_eq!(page.diagnostics[0].id, l1.id);
    }

    #[test]
    fn the_retention_deletes_old_finished_diagnostics_but_never_unfinished_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open_with(
            dir.path(),
            StoreOptions {
                retention: Retention {
                    max_age: Some(chrono::TimeDelta::days(30)),
                    max_bytes: None,
                },
                ..Default::default()
            },
        )
        .unwrap();
        let done = store.insert_diagnostic(new(&["cpu"], 1, vec![])).unwrap();
        finish(&store, done.id, Verdict::Pass, 1.0);
        let queued = store.insert_diagnostic(new(&["cpu"], 1, vec![])).unwrap();
        store.prune().unwrap();
        assert!(store.get_diagnostic(done.id).unwrap().is_some());
        store
            .prune_at(Utc::now() + chrono::TimeDelta::days(40))
            .unwrap();
        assert_eq!(store.get_diagnostic(done.id).unwrap(), None);
        assert!(store.get_diagnostic(queued.id).unwrap().is_some());
        assert!(store.last_diagnostics().unwrap().is_empty());
    }
}

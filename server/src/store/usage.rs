//! Metering: the device time each job and diagnostic part took, kept per owner, device,
//! kernel and UTC day.
//!
//! A job's device time is its worker's busy time as its runner sees it: from the moment
//! the runner marks it running to the moment it stores its end (`started_at` to
//! `finished_at`, the job's own recorded duration), written in the same transaction as the
//! end, so that no job that ran goes unmetered and none is metered twice. Time on the `cpu`
//! device is CPU seconds; on any other device, GPU seconds.

use std::collections::BTreeMap;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use gpulab_shared::lab::{UsageReport, UsageRow, UsageTotal};
use rusqlite::{params, Connection};

use super::{timestamp, JobStore};

/// Meters the job `?1` as it ends (inside the transaction that stores its end). A job that
/// never started took no device time.
pub(super) const RECORD_JOB: &str =
    "INSERT OR IGNORE INTO usage (job_id, owner, device, kernel, day, ended_at, busy_ms)
     SELECT id, owner, device, kernel, substr(finished_at, 1, 10), finished_at, duration_ms
     FROM jobs WHERE id = ?1 AND started_at IS NOT NULL AND duration_ms IS NOT NULL";

/// Meters the running jobs a stop just ended `interrupted` at `?1`.
pub(super) const RECORD_INTERRUPTED: &str =
    "INSERT OR IGNORE INTO usage (job_id, owner, device, kernel, day, ended_at, busy_ms)
     SELECT id, owner, device, kernel, substr(finished_at, 1, 10), finished_at, duration_ms
     FROM jobs WHERE finished_at = ?1 AND status = 'interrupted' AND started_at IS NOT NULL
                 AND duration_ms IS NOT NULL";

/// The kernel name usage rows give a diagnostic part.
pub const DIAGNOSTIC_KERNEL: &str = "diagnostic";

/// The device whose time is CPU time; every other device's is GPU time.
pub const CPU_DEVICE: &str = "cpu";

/// Whose usage a report covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageScope {
    Everyone,
    /// One owner (`None`: single mode's anonymous user).
    Owner(Option<String>),
}

/// Device seconds used by one owner on one device, over the whole history.
#[derive(Debug, Clone, PartialEq)]
pub struct UserDeviceSeconds {
    pub owner: Option<String>,
    pub device: String,
    pub seconds: f64,
}

fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

impl JobStore {
    /// Meters one device's part of a diagnostic that ran from `started` to `ended`.
    pub fn record_part_usage(
        &self,
        diagnostic_id: i64,
        device: &str,
        owner: Option<&str>,
        started: DateTime<Utc>,
        ended: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let busy_ms = (ended - started).num_milliseconds().max(0);
        let ended = timestamp(ended);
        self.conn().execute(
            "INSERT OR IGNORE INTO usage
                 (diagnostic_id, owner, device, kernel, day, ended_at, busy_ms)
             VALUES (?1, ?2, ?3, ?4, substr(?5, 1, 10), ?5, ?6)",
            params![
                diagnostic_id,
                owner,
                device,
                DIAGNOSTIC_KERNEL,
                ended,
                busy_ms
            ],
        )?;
        Ok(())
    }

    /// Device time used by `scope` on the days `from` to `to` (UTC, both included), by
    /// day, owner, device and kernel, with a total per owner.
    pub fn usage(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        scope: &UsageScope,
    ) -> anyhow::Result<UsageReport> {
        let (from_s, to_s) = (from.to_string(), to.to_string());
        let (everyone, owner) = match scope {
            UsageScope::Everyone => (true, None),
            UsageScope::Owner(owner) => (false, owner.clone()),
        };
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT day, owner, device, kernel, COUNT(*), SUM(busy_ms) FROM usage
             WHERE day BETWEEN ?1 AND ?2 AND (?3 OR owner IS ?4)
             GROUP BY day, owner, device, kernel
             ORDER BY day, owner, device, kernel",
        )?;
        let rows = stmt
            .query_map(params![from_s, to_s, everyone, owner], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<String>>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, i64>(5)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()
            .context("cannot read the usage")?;
        let mut totals: BTreeMap<Option<String>, UsageTotal> = BTreeMap::new();
        let rows: Vec<UsageRow> = rows
            .into_iter()
            .map(|(day, user, device, kernel, jobs, busy_ms)| {
                let s = seconds(busy_ms);
                let (gpu_seconds, cpu_seconds) = if device == CPU_DEVICE {
                    (0.0, s)
                } else {
                    (s, 0.0)
                };
                let total = totals.entry(user.clone()).or_insert_with(|| UsageTotal {
                    user: user.clone(),
                    jobs: 0,
                    gpu_seconds: 0.0,
                    cpu_seconds: 0.0,
                });
                total.jobs += jobs as u64;
                total.gpu_seconds += gpu_seconds;
                total.cpu_seconds += cpu_seconds;
                UsageRow {
                    day,
                    user,
                    device,
                    kernel,
                    jobs: jobs as u64,
                    gpu_seconds,
                    cpu_seconds,
                }
            })
            .collect();
        Ok(UsageReport {
            from: from_s,
            to: to_s,
            rows,
            totals: totals.into_values().collect(),
        })
    }

    /// Device seconds `owner` used in work that ended at or after `since`.
    pub fn used_seconds_since(
        &self,
        owner: Option<&str>,
        since: DateTime<Utc>,
    ) -> anyhow::Result<f64> {
        let ms: i64 = self.reader().query_row(
            "SELECT COALESCE(SUM(busy_ms), 0) FROM usage WHERE owner IS ?1 AND ended_at >= ?2",
            params![owner, timestamp(since)],
            |row| row.get(0),
        )?;
        Ok(seconds(ms))
    }
}

/// Device seconds by owner and device over the whole history, for the metrics.
pub(super) fn user_device_seconds(conn: &Connection) -> anyhow::Result<Vec<UserDeviceSeconds>> {
    let mut stmt = conn.prepare_cached(
        "SELECT owner, device, SUM(busy_ms) FROM usage GROUP BY owner, device
         ORDER BY owner, device",
    )?;
    let rows = stmt
        .query_map([], |row| {
            Ok(UserDeviceSeconds {
                owner: row.get(0)?,
                device: row.get(1)?,
                seconds: seconds(row.get(2)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The usage rows as CSV (RFC 4180: a header row, CRLF line ends, fields with a comma, a
/// quote or a line break quoted, quotes doubled). The anonymous user is an empty field.
pub fn to_csv(report: &UsageReport) -> String {
    fn field(out: &mut String, value: &str) {
        if value.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&value.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(value);
        }
    }
    let mut out = String::from("day,user,device,kernel,jobs,gpu_seconds,cpu_seconds\r\n");
    for row in &report.rows {
        let cells = [
            row.day.clone(),
            row.user.clone().unwrap_or_default(),
            row.device.clone(),
            row.kernel.clone(),
            row.jobs.to_string(),
            format!("{:.3}", row.gpu_seconds),
            format!("{:.3}", row.cpu_seconds),
        ];
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            field(&mut out, cell);
        }
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Ending, NewJob};
    use gpulab_shared::{JobStatus, Params};

    fn new_job(owner: Option<&str>, device: &str) -> NewJob {
        NewJob {
            kernel: "vector_add".into(),
            device: device.into(),
            params: Params::new(),
            repetitions: 1,
            timeout_s: 10.0,
            owner: owner.map(str::to_owned),
        }
    }

    fn run(store: &JobStore, owner: Option<&str>, device: &str) -> i64 {
        let id = store.insert(new_job(owner, device)).unwrap().id;
        assert!(store.mark_running(id, 1).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(5));
        let ending = Ending {
            status: JobStatus::Succeeded,
            result: None,
            error: None,
            artifact: None,
        };
        store.finish(id, ending).unwrap().unwrap();
        id
    }

    #[test]
    fn each_job_that_ran_is_metered_once_with_its_recorded_duration() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let ids = [
            run(&store, Some("alice"), "cpu"),
            run(&store, Some("alice"), "cuda:0"),
            run(&store, Some("bob"), "cpu"),
            run(&store, None, "cpu"),
        ];
        // A job cancelled before it started took no device time.
        let queued = store.insert(new_job(Some("bob"), "cpu")).unwrap().id;
        let cancelled = Ending {
            status: JobStatus::Cancelled,
            result: None,
            error: None,
            artifact: None,
        };
        store.finish(queued, cancelled).unwrap();
        let today = Utc::now().date_naive();
        let report = store.usage(today, today, &UsageScope::Everyone).unwrap();
        let recorded: f64 = ids
            .iter()
            .map(|&id| store.get(id).unwrap().unwrap())
            .map(|j| (j.finished_at.unwrap() - j.started_at.unwrap()).num_milliseconds() as f64)
            .sum::<f64>()
            / 1000.0;
        let metered: f64 = report
            .totals
            .iter()
            .map(|t| t.gpu_seconds + t.cpu_seconds)
            .sum();
        assert!((metered - recorded).abs() < 1e-9, "{metered} vs {recorded}");
        assert_eq!(report.totals.iter().map(|t| t.jobs).sum::<u64>(), 4);
        let alice = &report.totals[1];
        assert_eq!(alice.user.as_deref(), Some("alice"));
        assert!(alice.gpu_seconds > 0.0 && alice.cpu_seconds > 0.0);
        let mine = store
            .usage(today, today, &UsageScope::Owner(Some("bob".into())))
            .unwrap();
        assert_eq!(mine.rows.len(), 1);
        assert_eq!(mine.rows[0].user.as_deref(), Some("bob"));
        let anonymous = store.usage(today, today, &UsageScope::Owner(None)).unwrap();
        assert_eq!(anonymous.rows.len(), 1);
        assert_eq!(anonymous.rows[0].user, None);
        let yesterday = today.pred_opt().unwrap();
        assert!(store
            .usage(yesterday, yesterday, &UsageScope::Everyone)
            .unwrap()
            .rows
            .is_empty());
    }

    #[test]
    fn a_job_running_when_the_server_stops_is_metered_and_a_queued_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let running = store.insert(new_job(Some("alice"), "cpu")).unwrap().id;
        assert!(store.mark_running(running, 1).unwrap());
        store.insert(new_job(Some("alice"), "cpu")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(store.interrupt_unfinished().unwrap(), 2);
        let job = store.get(running).unwrap().unwrap();
        let took = (job.finished_at.unwrap() - job.started_at.unwrap()).num_milliseconds();
        let today = Utc::now().date_naive();
        let report = store.usage(today, today, &UsageScope::Everyone).unwrap();
        assert_eq!(report.rows.len(), 1);
        assert_eq!(report.rows[0].jobs, 1);
        assert_eq!(report.rows[0].cpu_seconds, took as f64 / 1000.0);
        assert!(took >= 5);
    }

    #[test]
    fn csv_has_a_header_and_quotes_what_needs_it() {
        let report = UsageReport {
            from: "2026-01-01".into(),
            to: "2026-01-01".into(),
            rows: vec![UsageRow {
                day: "2026-01-01".into(),
                user: Some("a,\"b\"".into()),
                device: "cpu".into(),
                kernel: "custom".into(),
                jobs: 2,
                gpu_seconds: 0.0,
                cpu_seconds: 1.5,
            }],
            totals: Vec::new(),
        };
        assert_eq!(
            to_csv(&report),
            "day,user,device,kernel,jobs,gpu_seconds,cpu_seconds\r\n\
             2026-01-01,\"a,\"\"b\"\"\",cpu,custom,2,0.000,1.500\r\n"
        );
    }
}

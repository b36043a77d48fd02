//! Job history in SQLite: one embedded database file in the data directory, in WAL mode,
//! so a finished job survives a restart and even a `kill -9` of the server.

pub mod stats;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use gpulab_shared::{Job, JobPage, JobResult, JobStatus, Params, Progress};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::kernels::Artifact;

/// The database file inside the data directory.
pub const DB_FILE: &str = "gpulab.sqlite3";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    kernel         TEXT NOT NULL,
    device         TEXT NOT NULL,
    params         TEXT NOT NULL,
    repetitions    INTEGER NOT NULL,
    timeout_s      REAL NOT NULL,
    status         TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    started_at     TEXT,
    finished_at    TEXT,
    progress_done  INTEGER,
    progress_total INTEGER,
    result         TEXT,
    error          TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, id);
CREATE INDEX IF NOT EXISTS jobs_device ON jobs (device, id);
CREATE INDEX IF NOT EXISTS jobs_kernel ON jobs (kernel, id);
CREATE TABLE IF NOT EXISTS artifacts (
    job_id       INTEGER PRIMARY KEY REFERENCES jobs (id),
    content_type TEXT NOT NULL,
    bytes        BLOB NOT NULL
);
";

/// A job as it enters the history, before it has an id.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kernel: String,
    pub device: String,
    pub params: Params,
    pub repetitions: u32,
    pub timeout_s: f64,
}

/// Which jobs `GET /api/jobs` lists.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub device: Option<String>,
    pub kernel: Option<String>,
    /// Only jobs with a smaller id than this (the previous page's `next_cursor`).
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct Ending<'a> {
    pub status: JobStatus,
    pub result: Option<&'a JobResult>,
    pub error: Option<&'a str>,
    pub artifact: Option<&'a Artifact>,
}

/// The SQLite job history. Cheap to clone; every call blocks briefly on the one connection,
/// so async code calls it through `spawn_blocking`.
#[derive(Clone)]
pub struct JobStore {
    conn: Arc<Mutex<Connection>>,
}

impl JobStore {
    /// Opens (or creates) the history in `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let path = data_dir.join(DB_FILE);
        let conn = Connection::open(&path)
            .with_context(|| format!("cannot open the job history {}", path.display()))?;
        // WAL with synchronous=NORMAL loses nothing when the process dies (kill -9); only a
        // power cut can take back the last commits.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)
            .context("cannot create the job history tables")?;
        Ok(JobStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (each statement is
        // atomic), so a poisoned lock is still safe to use.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks every job that was queued or running when the server last stopped as
    /// `interrupted`. Returns how many there were.
    pub fn interrupt_unfinished(&self) -> anyhow::Result<usize> {
        let n = self.conn().execute(
            "UPDATE jobs SET status = 'interrupted', finished_at = ?1,
                 error = 'the server stopped while this job was ' || status
             WHERE status IN ('queued', 'running')",
            params![timestamp(Utc::now())],
        )?;
        Ok(n)
    }

    /// Stores a new `queued` job.
    pub fn insert(&self, job: NewJob) -> anyhow::Result<Job> {
        let created_at = Utc::now();
        let conn = self.conn();
        conn.execute(
            "INSERT INTO jobs (kernel, device, params, repetitions, timeout_s, status, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6)",
            params![
                job.kernel,
                job.device,
                serde_json::to_string(&job.params)?,
                job.repetitions,
                job.timeout_s,
                timestamp(created_at),
            ],
        )?;
        Ok(Job {
            id: conn.last_insert_rowid(),
            kernel: job.kernel,
            device: job.device,
            params: job.params,
            repetitions: job.repetitions,
            timeout_s: job.timeout_s,
            status: JobStatus::Queued,
            // What the database holds, to the millisecond.
            created_at: parse_timestamp(&timestamp(created_at))?,
            started_at: None,
            finished_at: None,
            progress: None,
            result: None,
            error: None,
        })
    }

    pub fn get(&self, id: i64) -> anyhow::Result<Option<Job>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"))?;
        let row = stmt.query_row([id], row_to_job).optional()?;
        row.transpose()
    }

    /// A page of jobs, newest first.
    pub fn list(&self, filter: &JobFilter) -> anyhow::Result<JobPage> {
        let mut sql = format!("SELECT {COLUMNS} FROM jobs WHERE 1 = 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(status) = filter.status {
            sql.push_str(" AND status = ?");
            args.push(status.as_str().to_string().into());
        }
        if let Some(device) = &filter.device {
            sql.push_str(" AND device = ?");
            args.push(device.clone().into());
        }
        if let Some(kernel) = &filter.kernel {
            sql.push_str(" AND kernel = ?");
            args.push(kernel.clone().into());
        }
        if let Some(before) = filter.before_id {
            sql.push_str(" AND id < ?");
            args.push(before.into());
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?");
        // One more than asked tells whether there is a next page.
        args.push(i64::from(filter.limit + 1).into());
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut jobs = stmt
            .query_map(rusqlite::params_from_iter(args), row_to_job)?
            .collect::<Result<anyhow::Result<Vec<_>>, _>>()??;
        let next_cursor = if jobs.len() > filter.limit as usize {
            jobs.truncate(filter.limit as usize);
            jobs.last().map(|j| j.id.to_string())
        } else {
            None
        };
        Ok(JobPage { jobs, next_cursor })
    }

    /// Moves a queued job to `running`. False when it was no longer queued.
    pub fn mark_running(&self, id: i64, total_repetitions: u32) -> anyhow::Result<bool> {
        let n = self.conn().execute(
            "UPDATE jobs SET status = 'running', started_at = ?2, progress_done = 0,
                 progress_total = ?3
             WHERE id = ?1 AND status = 'queued'",
            params![id, timestamp(Utc::now()), total_repetitions],
        )?;
        Ok(n == 1)
    }

    pub fn set_progress(&self, id: i64, progress: Progress) -> anyhow::Result<()> {
        self.conn().execute(
            "UPDATE jobs SET progress_done = ?2, progress_total = ?3
             WHERE id = ?1 AND status = 'running'",
            params![id, progress.done, progress.total],
        )?;
        Ok(())
    }

    /// Ends a queued or running job. Returns the job as stored, or `None` when it had
    /// already ended (a finished job never changes again).
    pub fn finish(&self, id: i64, ending: Ending<'_>) -> anyhow::Result<Option<Job>> {
        debug_assert!(ending.status.is_finished());
        let result = ending.result.map(serde_json::to_string).transpose()?;
        {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let n = tx.execute(
                "UPDATE jobs SET status = ?2, finished_at = ?3, result = ?4, error = ?5
                 WHERE id = ?1 AND status IN ('queued', 'running')",
                params![
                    id,
                    ending.status.as_str(),
                    timestamp(Utc::now()),
                    result,
                    ending.error
                ],
            )?;
            if n == 0 {
                return Ok(None);
            }
            if let Some(artifact) = ending.artifact {
                tx.execute(
                    "INSERT OR REPLACE INTO artifacts (job_id, content_type, bytes)
                     VALUES (?1, ?2, ?3)",
                    params![id, artifact.content_type, artifact.bytes],
                )?;
            }
            tx.commit()?;
        }
        self.get(id)
    }

    pub fn artifact(&self, id: i64) -> anyhow::Result<Option<Artifact>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT content_type, bytes FROM artifacts WHERE job_id = ?1")?;
        Ok(stmt
            .query_row([id], |row| {
                Ok(Artifact {
                    content_type: row.get(0)?,
                    bytes: row.get(1)?,
                })
            })
            .optional()?)
    }
}

const COLUMNS: &str = "id, kernel, device, params, repetitions, timeout_s, status, created_at, \
                       started_at, finished_at, progress_done, progress_total, result, error";

/// Reads one row of `COLUMNS`. The outer `Result` is SQLite's, the inner one is ours (a
/// value that does not parse).
fn row_to_job(row: &Row<'_>) -> rusqlite::Result<anyhow::Result<Job>> {
    let params: String = row.get(3)?;
    let status: String = row.get(6)?;
    let created_at: String = row.get(7)?;
    let started_at: Option<String> = row.get(8)?;
    let finished_at: Option<String> = row.get(9)?;
    let progress_done: Option<u32> = row.get(10)?;
    let progress_total: Option<u32> = row.get(11)?;
    let result: Option<String> = row.get(12)?;
    let id: i64 = row.get(0)?;
    let kernel: String = row.get(1)?;
    let device: String = row.get(2)?;
    let repetitions: u32 = row.get(4)?;
    let timeout_s: f64 = row.get(5)?;
    let error: Option<String> = row.get(13)?;
    Ok((|| {
        Ok(Job {
            id,
            kernel,
            device,
            params: serde_json::from_str(&params)?,
            repetitions,
            timeout_s,
            status: JobStatus::parse(&status)
                .with_context(|| format!("job {id} has an unknown status {status:?}"))?,
            created_at: parse_timestamp(&created_at)?,
            started_at: started_at.as_deref().map(parse_timestamp).transpose()?,
            finished_at: finished_at.as_deref().map(parse_timestamp).transpose()?,
            progress: progress_done
                .zip(progress_total)
                .map(|(done, total)| Progress { done, total }),
            result: result.as_deref().map(serde_json::from_str).transpose()?,
            error,
        })
    })())
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_timestamp(s: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(s)
        .with_context(|| format!("bad timestamp {s:?} in the job history"))?
        .with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_job(kernel: &str) -> NewJob {
        NewJob {
            kernel: kernel.into(),
            device: "cpu".into(),
            params: [("n".to_string(), serde_json::Value::from(8))].into(),
            repetitions: 3,
            timeout_s: 60.0,
        }
    }

    #[test]
    fn a_job_goes_from_queued_to_succeeded_and_stays_there() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let job = store.insert(new_job("saxpy")).unwrap();
        assert_eq!(store.get(job.id).unwrap().unwrap(), job);
        assert!(store.mark_running(job.id, 3).unwrap());
        store
            .set_progress(job.id, Progress { done: 2, total: 3 })
            .unwrap();
        let running = store.get(job.id).unwrap().unwrap();
        assert_eq!(running.status, JobStatus::Running);
        assert_eq!(running.progress, Some(Progress { done: 2, total: 3 }));
        let artifact = Artifact {
            content_type: "image/png".into(),
            bytes: vec![1, 2, 3],
        };
        let done = store
            .finish(
                job.id,
                Ending {
                    status: JobStatus::Succeeded,
                    result: None,
                    error: None,
                    artifact: Some(&artifact),
                },
            )
            .unwrap()
            .unwrap();
        assert_eq!(done.status, JobStatus::Succeeded);
        assert!(done.finished_at.is_some());
        assert_eq!(store.artifact(job.id).unwrap(), Some(artifact));
        // A finished job never changes again.
        let again = Ending {
            status: JobStatus::Cancelled,
            result: None,
            error: None,
            artifact: None,
        };
        assert!(store.finish(job.id, again).unwrap().is_none());
        assert!(!store.mark_running(job.id, 3).unwrap());
    }

    #[test]
    fn unfinished_jobs_come_back_interrupted_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (queued, running) = {
            let store = JobStore::open(dir.path()).unwrap();
            let queued = store.insert(new_job("a")).unwrap();
            let running = store.insert(new_job("b")).unwrap();
            store.mark_running(running.id, 3).unwrap();
            (queued.id, running.id)
        };
        let store = JobStore::open(dir.path()).unwrap();
        assert_eq!(store.interrupt_unfinished().unwrap(), 2);
        for id in [queued, running] {
            let job = store.get(id).unwrap().unwrap();
            assert_eq!(job.status, JobStatus::Interrupted);
            assert!(job.error.unwrap().starts_with("the server stopped"));
        }
    }

    #[test]
    fn pages_run_newest_first_and_filters_apply() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let ids: Vec<i64> = (0..5)
            .map(|i| {
                store
                    .insert(new_job(if i % 2 == 0 { "even" } else { "odd" }))
                    .unwrap()
                    .id
            })
            .collect();
        let page = store
            .list(&JobFilter {
                limit: 2,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![ids[4], ids[3]]
        );
        let cursor: i64 = page.next_cursor.unwrap().parse().unwrap();
        let page = store
            .list(&JobFilter {
                limit: 2,
                before_id: Some(cursor),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![ids[2], ids[1]]
        );
        let last = store
            .list(&JobFilter {
                limit: 2,
                before_id: Some(ids[1]),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(last.jobs.len(), 1);
        assert_eq!(last.next_cursor, None);
        let odd = store
            .list(&JobFilter {
                kernel: Some("odd".into()),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            odd.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![ids[3], ids[1]]
        );
        let queued = store
            .list(&JobFilter {
                status: Some(JobStatus::Succeeded),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert!(queued.jobs.is_empty());
    }
}

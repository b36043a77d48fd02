//! Job history in SQLite: one embedded database file in the data directory, in WAL mode,
//! so a finished job survives a restart and even a `kill -9` of the server.
//!
//! Writes go through one connection; reads (lists, single jobs, artifacts, the metrics'
//! aggregates) through a second, read-only one, so that a long read never holds up a job's
//! update: under WAL a reader sees the last commit and blocks no writer.

pub mod diagnostics;
mod retention;
mod schema;
pub mod stats;
pub mod usage;
pub mod users;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use gpulab_shared::{Job, JobPage, JobResult, JobStatus, Params, Progress};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};

use crate::kernels::Artifact;
pub use retention::Retention;

/// The database file inside the data directory.
pub const DB_FILE: &str = "gpulab.sqlite3";

/// A job as it enters the history, before it has an id.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kernel: String,
    pub device: String,
    pub params: Params,
    pub repetitions: u32,
    pub timeout_s: f64,
    /// The user who submitted it (lab mode); `None` in single mode.
    pub owner: Option<String>,
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
    /// Only this user's jobs (a user of lab mode who is no admin).
    pub owner: Option<String>,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct Ending<'a> {
    pub status: JobStatus,
    pub result: Option<&'a JobResult>,
    pub error: Option<&'a str>,
    pub artifact: Option<&'a Artifact>,
}

/// How the history is opened.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreOptions {
    pub retention: Retention,
    /// SQLite's `max_page_count`: a database that may not grow past this many pages acts
    /// as a full disk. Tests only.
    pub max_page_count: Option<u64>,
}

/// A stored job that does not parse (an unknown status, broken JSON): lists leave it out,
/// and reading it alone answers this.
#[derive(Debug, thiserror::Error)]
#[error("job {id} cannot be read from the job history ({reason}); lists leave it out")]
pub struct UnreadableJob {
    pub id: i64,
    pub reason: String,
}

/// True when `e` comes from SQLite finding the disk (or the database's size limit) full.
pub fn is_disk_full(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<rusqlite::Error>(),
            Some(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::DiskFull
        )
    })
}

/// The SQLite job history. Cheap to clone; every call blocks briefly on one of its two
/// connections, so async code calls it through `spawn_blocking`.
#[derive(Clone)]
pub struct JobStore {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    retention: Retention,
    /// Jobs that ended `failed` on a full disk when not even that could be written: reads
    /// see them here until a later write gets through (or, if none does, the next start
    /// finds them `interrupted`).
    unstored: Arc<Mutex<BTreeMap<i64, Job>>>,
}

impl JobStore {
    /// Opens (or creates) the history in `data_dir`, without retention (the tests' store).
    #[cfg(test)]
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        Self::open_with(data_dir, StoreOptions::default())
    }

    /// Opens (or creates) the history in `data_dir` and brings its schema up to date.
    pub fn open_with(data_dir: &Path, options: StoreOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let path = data_dir.join(DB_FILE);
        let mut conn = Connection::open(&path)
            .with_context(|| format!("cannot open the job history {}", path.display()))?;
        // WAL with synchronous=NORMAL loses nothing when the process dies (kill -9); only a
        // power cut can take back the last commits.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::migrate(&mut conn, &path)?;
        if let Some(pages) = options.max_page_count {
            conn.pragma_update(None, "max_page_count", pages)?;
        }
        let reader = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("cannot open the job history {} to read", path.display()))?;
        reader.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(JobStore {
            writer: Arc::new(Mutex::new(conn)),
            reader: Arc::new(Mutex::new(reader)),
            retention: options.retention,
            unstored: Arc::default(),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        lock(&self.writer)
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        lock(&self.reader)
    }

    /// Marks every job that was queued or running when the server last stopped as
    /// `interrupted`. Returns how many there were.
    pub fn interrupt_unfinished(&self) -> anyhow::Result<usize> {
        self.store_unstored();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = timestamp(Utc::now());
        let n = tx.execute(
            &format!(
                "UPDATE jobs SET status = 'interrupted', finished_at = ?1,
                     duration_ms = {},
                     error = 'the server stopped while this job was ' || status
                 WHERE status IN ('queued', 'running')",
                schema::DURATION_MS
            ),
            params![now],
        )?;
        tx.execute(usage::RECORD_INTERRUPTED, params![now])?;
        tx.commit()?;
        Ok(n)
    }

    /// Stores a new `queued` job.
    pub fn insert(&self, job: NewJob) -> anyhow::Result<Job> {
        let created_at = Utc::now();
        let mut conn = self.conn();
        conn.execute(
            "INSERT INTO jobs (kernel, device, params, repetitions, timeout_s, status, created_at,
                               owner)
             VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7)",
            params![
                job.kernel,
                job.device,
                serde_json::to_string(&job.params)?,
                job.repetitions,
                job.timeout_s,
                timestamp(created_at),
                job.owner,
            ],
        )?;
        let id = conn.last_insert_rowid();
        self.keep_within_size(&mut conn);
        Ok(Job {
            id,
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
            owner: job.owner,
        })
    }

    /// The job, `None` when there is none, or an [`UnreadableJob`] error when its row does
    /// not parse.
    pub fn get(&self, id: i64) -> anyhow::Result<Option<Job>> {
        if let Some(job) = lock(&self.unstored).get(&id) {
            return Ok(Some(job.clone()));
        }
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"))?;
        let row = stmt.query_row([id], row_to_job).optional()?;
        match row {
            None => Ok(None),
            Some((_, Ok(job))) => Ok(Some(job)),
            Some((id, Err(e))) => Err(UnreadableJob {
                id,
                reason: format!("{e:#}"),
            }
            .into()),
        }
    }

    /// A page of jobs, newest first. A row that does not parse is logged and left out; it
    /// still counts towards the page, so that the cursor moves past it.
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
            .query_map(rusqlite::params_from_iter(args), row_to_job)?
            .collect::<Result<Vec<_>, _>>()?;
        let limit = filter.limit as usize;
        let next_cursor = if rows.len() > limit {
            rows.get(limit - 1).map(|(id, _)| id.to_string())
        } else {
            None
        };
        let unstored = lock(&self.unstored);
        let jobs = rows
            .into_iter()
            .take(limit)
            .filter_map(|(id, job)| match job {
                Ok(job) => Some(unstored.get(&id).cloned().unwrap_or(job)),
                Err(e) => {
                    tracing::warn!(job = id, "left out of the list: cannot read it: {e:#}");
                    None
                }
            })
            .collect();
        Ok(JobPage { jobs, next_cursor })
    }

    /// The newest `limit` succeeded jobs of `device` whose result has a roofline point,
    /// newest first; a row that does not parse is logged and left out.
    pub fn roofline_jobs(&self, device: &str, limit: u32) -> anyhow::Result<Vec<Job>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE device = ?1 AND status = 'succeeded' \
             AND json_type(result, '$.roofline') = 'object' ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = stmt
            .query_map(rusqlite::params![device, limit], row_to_job)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, job)| match job {
                Ok(job) => Some(job),
                Err(e) => {
                    tracing::warn!(job = id, "left out of the roofline: cannot read it: {e:#}");
                    None
                }
            })
            .collect())
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
    ///
    /// When the disk is full the job ends `failed` with that reason instead: written
    /// without its result and artifact, which needs a few bytes of its row, or, when not
    /// even that fits, kept in memory where reads find it. Either way it does not stay
    /// `running`.
    pub fn finish(&self, id: i64, ending: Ending<'_>) -> anyhow::Result<Option<Job>> {
        debug_assert!(ending.status.is_finished());
        self.store_unstored();
        match self.write_ending(id, &ending) {
            Err(e) if is_disk_full(&e) => self.fail_on_full_disk(id, &e),
            other => other,
        }
    }

    fn write_ending(&self, id: i64, ending: &Ending<'_>) -> anyhow::Result<Option<Job>> {
        let result = ending.result.map(serde_json::to_string).transpose()?;
        {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let n = tx.execute(
                &format!(
                    "UPDATE jobs SET status = ?2, finished_at = ?1, duration_ms = {},
                         result = ?4, error = ?5
                     WHERE id = ?3 AND status IN ('queued', 'running')",
                    schema::DURATION_MS
                ),
                params![
                    timestamp(Utc::now()),
                    ending.status.as_str(),
                    id,
                    result,
                    ending.error
                ],
            )?;
            if n == 0 {
                return Ok(None);
            }
            tx.execute(usage::RECORD_JOB, params![id])?;
            if let Some(artifact) = ending.artifact {
                tx.execute(
                    "INSERT OR REPLACE INTO artifacts (job_id, content_type, bytes)
                     VALUES (?1, ?2, ?3)",
                    params![id, artifact.content_type, artifact.bytes],
                )?;
            }
            tx.commit()?;
        }
        lock(&self.unstored).remove(&id);
        let job = self.get(id);
        self.keep_within_size(&mut self.conn());
        job
    }

    fn fail_on_full_disk(&self, id: i64, cause: &anyhow::Error) -> anyhow::Result<Option<Job>> {
        tracing::error!(job = id, "cannot store the end of the job: {cause:#}");
        let error = "the disk is full: this job's result could not be stored in the job history; \
                     free space in the data directory or lower --retention-max-mb / \
                     --retention-days"
            .to_owned();
        let failed = Ending {
            status: JobStatus::Failed,
            result: None,
            error: Some(&error),
            artifact: None,
        };
        match self.write_ending(id, &failed) {
            Err(e) if is_disk_full(&e) => {
                let Some(mut job) = self.get(id)? else {
                    return Ok(None);
                };
                if job.status.is_finished() {
                    return Ok(None);
                }
                tracing::error!(
                    job = id,
                    "not even the failure fits on the disk: the job is `failed` in memory only"
                );
                job.status = JobStatus::Failed;
                job.finished_at = Some(parse_timestamp(&timestamp(Utc::now()))?);
                job.error = Some(error);
                lock(&self.unstored).insert(id, job.clone());
                Ok(Some(job))
            }
            other => other,
        }
    }

    /// Writes the ends kept in memory, as far as the disk now lets it.
    fn store_unstored(&self) {
        let pending: Vec<Job> = lock(&self.unstored).values().cloned().collect();
        for job in pending {
            let ending = Ending {
                status: job.status,
                result: None,
                error: job.error.as_deref(),
                artifact: None,
            };
            match self.write_ending(job.id, &ending) {
                Ok(_) => {
                    lock(&self.unstored).remove(&job.id);
                }
                Err(e) if is_disk_full(&e) => break,
                Err(e) => tracing::warn!(job = job.id, "cannot store the end of the job: {e:#}"),
            }
        }
    }

    pub fn artifact(&self, id: i64) -> anyhow::Result<Option<Artifact>> {
        let conn = self.reader();
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave SQLite inconsistent (each statement is
    // atomic), nor the map of unstored jobs (each change is one call), so a poisoned lock
    // is still safe to use.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const COLUMNS: &str = "id, kernel, device, params, repetitions, timeout_s, status, created_at, \
                       started_at, finished_at, progress_done, progress_total, result, error, owner";

/// Reads one row of `COLUMNS` as its id and the job. Only the id can fail SQLite's way:
/// any other value that does not read (a wrong type, an unknown status, broken JSON) makes
/// the job an error of its own, so that one bad row cannot break a whole list.
fn row_to_job(row: &Row<'_>) -> rusqlite::Result<(i64, anyhow::Result<Job>)> {
    let id: i64 = row.get(0)?;
    let job = (|| -> anyhow::Result<Job> {
        let status: String = row.get(6)?;
        let params: String = row.get(3)?;
        let created_at: String = row.get(7)?;
        let started_at: Option<String> = row.get(8)?;
        let finished_at: Option<String> = row.get(9)?;
        let progress_done: Option<u32> = row.get(10)?;
        let progress_total: Option<u32> = row.get(11)?;
        let result: Option<String> = row.get(12)?;
        Ok(Job {
            id,
            kernel: row.get(1)?,
            device: row.get(2)?,
            params: serde_json::from_str(&params).context("its parameters are not JSON")?,
            repetitions: row.get(4)?,
            timeout_s: row.get(5)?,
            status: JobStatus::parse(&status)
                .with_context(|| format!("unknown status {status:?}"))?,
            created_at: parse_timestamp(&created_at)?,
            started_at: started_at.as_deref().map(parse_timestamp).transpose()?,
            finished_at: finished_at.as_deref().map(parse_timestamp).transpose()?,
            progress: progress_done
                .zip(progress_total)
                .map(|(done, total)| Progress { done, total }),
            result: result
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .context("its result is not a result")?,
            error: row.get(13)?,
            owner: row.get(14)?,
        })
    })();
    Ok((id, job))
}

pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
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
            owner: None,
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

    /// A database as gpulab made it before the schema had a version: today's DDL, verbatim.
    fn version_0_database(dir: &Path) {
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch(schema::VERSION_0).unwrap();
        conn.execute_batch(
            "INSERT INTO jobs (kernel, device, params, repetitions, timeout_s, status,
                               created_at, started_at, finished_at, progress_done,
                               progress_total, result, error)
             VALUES ('saxpy', 'cpu', '{\"n\":8}', 3, 60.0, 'failed',
                     '2025-01-01T00:00:00.000Z', '2025-01-01T00:00:01.000Z',
                     '2025-01-01T00:00:02.500Z', 3, 3, NULL, 'it broke'),
                    ('mandelbrot', 'cuda:0', '{}', 1, 30.0, 'running',
                     '2025-01-02T00:00:00.000Z', '2025-01-02T00:00:01.000Z',
                     NULL, 0, 1, NULL, NULL);
             INSERT INTO artifacts (job_id, content_type, bytes)
             VALUES (1, 'image/png', x'89504e47');",
        )
        .unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 0);
    }

    #[test]
    fn a_version_0_database_keeps_its_rows_and_reaches_the_current_version() {
        let dir = tempfile::tempdir().unwrap();
        version_0_database(dir.path());
        let store = JobStore::open(dir.path()).unwrap();
        let version: i64 = store
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, schema::CURRENT_VERSION);

        let failed = store.get(1).unwrap().unwrap();
        assert_eq!(failed.kernel, "saxpy");
        assert_eq!(failed.status, JobStatus::Failed);
        assert_eq!(failed.params["n"], 8);
        assert_eq!(failed.error.as_deref(), Some("it broke"));
        assert_eq!(failed.progress, Some(Progress { done: 3, total: 3 }));
        let running = store.get(2).unwrap().unwrap();
        assert_eq!(running.status, JobStatus::Running);
        assert_eq!(
            store.artifact(1).unwrap().unwrap().bytes,
            b"\x89PNG".to_vec()
        );
        // The duration of the job that ran, from its two timestamps.
        let stats = store.job_stats(&[1.0, 2.0]).unwrap();
        assert_eq!(stats.durations.len(), 1);
        assert_eq!(stats.durations[0].at_most, [0, 1]);
        assert_eq!(stats.durations[0].sum_seconds, 1.5);
        // New jobs continue the ids, and opening again migrates nothing twice.
        assert_eq!(store.insert(new_job("next")).unwrap().id, 3);
        drop(store);
        let again = JobStore::open(dir.path()).unwrap();
        let page = again
            .list(&JobFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(page.jobs.len(), 3);
    }

    #[test]
    fn a_database_from_a_newer_gpulab_is_refused_saying_so() {
        let dir = tempfile::tempdir().unwrap();
        JobStore::open(dir.path()).unwrap();
        let newer = schema::CURRENT_VERSION + 1;
        Connection::open(dir.path().join(DB_FILE))
            .unwrap()
            .pragma_update(None, "user_version", newer)
            .unwrap();
        let err = JobStore::open(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains(&format!("schema version {newer}")) && err.contains("newer gpulab"),
            "{err}"
        );
    }

    fn ended(
        store: &JobStore,
        kernel: &str,
        status: JobStatus,
        artifact: Option<&Artifact>,
    ) -> i64 {
        let id = store.insert(new_job(kernel)).unwrap().id;
        store.mark_running(id, 3).unwrap();
        let ending = Ending {
            status,
            result: None,
            error: None,
            artifact,
        };
        store.finish(id, ending).unwrap().unwrap();
        id
    }

    fn ids(store: &JobStore) -> Vec<i64> {
        let page = store
            .list(&JobFilter {
                limit: 500,
                ..Default::default()
            })
            .unwrap();
        page.jobs.iter().map(|j| j.id).collect()
    }

    #[test]
    fn finished_jobs_past_their_age_are_pruned_but_queued_and_running_never() {
        let dir = tempfile::tempdir().unwrap();
        let retention = Retention {
            max_age: Some(chrono::TimeDelta::days(30)),
            max_bytes: None,
        };
        let store = JobStore::open_with(
            dir.path(),
            StoreOptions {
                retention,
                ..Default::default()
            },
        )
        .unwrap();
        let png = Artifact {
            content_type: "image/png".into(),
            bytes: vec![7; 10_000],
        };
        let old = ended(&store, "mandelbrot", JobStatus::Succeeded, Some(&png));
        let recent = ended(&store, "saxpy", JobStatus::Failed, None);
        let queued = store.insert(new_job("q")).unwrap().id;
        let running = store.insert(new_job("r")).unwrap().id;
        store.mark_running(running, 3).unwrap();
        store
            .conn()
            .execute(
                "UPDATE jobs SET created_at = '2020-01-01T00:00:00.000Z',
                                 finished_at = '2020-01-01T00:00:01.000Z'
                 WHERE id IN (?1, ?2, ?3)",
                params![old, queued, running],
            )
            .unwrap();

        assert_eq!(store.prune().unwrap(), 1);
        assert_eq!(ids(&store), vec![running, queued, recent]);
        assert_eq!(store.artifact(old).unwrap(), None);
        // Forty days on, the recent one goes too; the unfinished ones stay.
        let later = Utc::now() + chrono::TimeDelta::days(40);
        assert_eq!(store.prune_at(later).unwrap(), 1);
        assert_eq!(ids(&store), vec![running, queued]);
        // What was deleted still counts among the finished jobs.
        let stats = store.job_stats(&[1.0]).unwrap();
        assert_eq!(stats.pruned, 2);
        let finished: Vec<(&str, JobStatus, u64)> = stats
            .finished
            .iter()
            .map(|f| (f.kernel.as_str(), f.status, f.count))
            .collect();
        assert_eq!(
            finished,
            [
                ("mandelbrot", JobStatus::Succeeded, 1),
                ("saxpy", JobStatus::Failed, 1)
            ]
        );
    }

    #[test]
    fn the_oldest_finished_jobs_go_when_the_history_outgrows_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let max_bytes = 300_000;
        let store = JobStore::open_with(
            dir.path(),
            StoreOptions {
                retention: Retention {
                    max_age: None,
                    max_bytes: Some(max_bytes),
                },
                ..Default::default()
            },
        )
        .unwrap();
        let queued = store.insert(new_job("waiting")).unwrap().id;
        let png = Artifact {
            content_type: "image/png".into(),
            bytes: vec![1; 50_000],
        };
        let all: Vec<i64> = (0..20)
            .map(|_| ended(&store, "mandelbrot", JobStatus::Succeeded, Some(&png)))
            .collect();
        // Checked after every write: never more than one artifact over the bound.
        let used = retention::used_bytes(&store.conn()).unwrap();
        assert!(used <= max_bytes, "{used} bytes used");
        let kept = ids(&store);
        assert!(kept.contains(&queued), "{kept:?}");
        let newest = *all.last().unwrap();
        assert!(kept.contains(&newest), "{kept:?}");
        assert!(!kept.contains(&all[0]), "{kept:?}");
        // The kept ones are the newest: what went is a prefix of the finished jobs.
        let finished_kept: Vec<i64> = all.iter().copied().filter(|id| kept.contains(id)).collect();
        assert_eq!(finished_kept, all[all.len() - finished_kept.len()..]);
        assert!(finished_kept.len() >= 3, "{finished_kept:?}");
        assert_eq!(
            store.job_stats(&[1.0]).unwrap().pruned,
            (all.len() - finished_kept.len()) as u64
        );
    }

    #[test]
    fn a_corrupt_row_is_left_out_of_lists_and_reading_it_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let ids: Vec<i64> = (0..5)
            .map(|_| store.insert(new_job("k")).unwrap().id)
            .collect();
        store
            .conn()
            .execute_batch(&format!(
                "UPDATE jobs SET status = 'exploded' WHERE id = {};
                 UPDATE jobs SET params = '{{not json' WHERE id = {};
                 UPDATE jobs SET repetitions = 'many' WHERE id = {};",
                ids[1], ids[2], ids[3]
            ))
            .unwrap();
        let page = store
            .list(&JobFilter {
                limit: 3,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![ids[4]]
        );
        // The cursor moves past the rows left out, to the last row of the page.
        assert_eq!(page.next_cursor, Some(ids[2].to_string()));
        let rest = store
            .list(&JobFilter {
                limit: 3,
                before_id: Some(ids[2]),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            rest.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![ids[0]]
        );
        let err = store.get(ids[1]).unwrap_err();
        let unreadable = err.downcast_ref::<UnreadableJob>().unwrap();
        assert_eq!(unreadable.id, ids[1]);
        assert!(unreadable.reason.contains("exploded"), "{err}");
        assert!(store.get(ids[2]).unwrap_err().is::<UnreadableJob>());
        // The metrics leave the unknown status out rather than fail.
        let stats = store.job_stats(&[1.0]).unwrap();
        let queued: u64 = stats.unfinished.iter().map(|u| u.count).sum();
        assert_eq!(queued, 4);
    }

    #[test]
    fn a_job_whose_end_does_not_fit_on_the_disk_ends_failed_saying_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open_with(
            dir.path(),
            StoreOptions {
                max_page_count: Some(12),
                ..Default::default()
            },
        )
        .unwrap();
        let png = Artifact {
            content_type: "image/png".into(),
            bytes: vec![0; 200_000],
        };
        let first = store.insert(new_job("big")).unwrap().id;
        store.mark_running(first, 3).unwrap();
        let ending = |artifact| Ending {
            status: JobStatus::Succeeded,
            result: None,
            error: None,
            artifact,
        };
        let job = store.finish(first, ending(Some(&png))).unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Failed);
        assert!(
            job.error
                .as_deref()
                .unwrap()
                .starts_with("the disk is full: "),
            "{job:?}"
        );
        assert_eq!(store.get(first).unwrap().unwrap(), job);
        assert_eq!(store.artifact(first).unwrap(), None);

        // Fill the rest with rows until not one more fits: then the end of a job cannot be
        // written at all, and it is still `failed`, not `queued`, to every reader.
        let mut last = None;
        let full = loop {
            match store.insert(new_job("filler")) {
                Ok(job) => last = Some(job.id),
                Err(e) => break e,
            }
        };
        assert!(is_disk_full(&full), "{full:#}");
        let last = last.unwrap();
        let job = store.finish(last, ending(None)).unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Failed);
        assert!(job
            .error
            .as_deref()
            .unwrap()
            .starts_with("the disk is full: "));
        assert_eq!(store.get(last).unwrap().unwrap().status, JobStatus::Failed);
        assert!(
            lock(&store.unstored).contains_key(&last),
            "the failure itself did not fit: it is kept in memory"
        );
        let page = store
            .list(&JobFilter {
                limit: 1,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(page.jobs[0].id, last);
        assert_eq!(page.jobs[0].status, JobStatus::Failed);
        // A failed job never changes again.
        assert!(store.finish(last, ending(None)).unwrap().is_none());

        // Once there is room again, the next pass of the retention writes it down.
        store
            .conn()
            .execute(
                "DELETE FROM jobs WHERE kernel = 'filler' AND id < ?1",
                [last],
            )
            .unwrap();
        store.prune().unwrap();
        assert!(lock(&store.unstored).is_empty());
        let error: String = store
            .reader()
            .query_row(
                "SELECT error FROM jobs WHERE id = ?1 AND status = 'failed'",
                [last],
                |r| r.get(0),
            )
            .unwrap();
        assert!(error.starts_with("the disk is full: "), "{error}");
    }

    #[test]
    fn a_long_read_holds_up_no_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        let id = store.insert(new_job("first")).unwrap().id;
        // A scrape in the middle of its scan: the read connection taken, a read
        // transaction open on it.
        let mut reader = store.reader();
        let tx = reader.transaction().unwrap();
        let seen: i64 = tx
            .query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(seen, 1);
        let writer = store.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            writer.mark_running(id, 3).unwrap();
            writer.insert(new_job("second")).unwrap();
            done_tx.send(()).unwrap();
        });
        done_rx
            .recv_timeout(std::time::Duration::from_secs(2))
            .expect("the writes waited for the read");
        // The read still sees the history as it was when it began.
        let seen: i64 = tx
            .query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(seen, 1);
        drop(tx);
        drop(reader);
        assert_eq!(store.get(id).unwrap().unwrap().status, JobStatus::Running);
    }
}

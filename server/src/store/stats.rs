//! Aggregates of the job history for the metrics: counts by kernel, device and status, and
//! job durations bucketed for a histogram. Computed by SQLite at read time, through the
//! read-only connection (a scrape never holds up a job's update), so they survive restarts
//! and always agree with what `GET /api/jobs` lists. Jobs the retention deleted still count
//! among the finished ones.

use anyhow::Context;
use gpulab_shared::JobStatus;
use rusqlite::Connection;

use super::JobStore;

/// Every aggregate the metrics need, read in one go so that they agree with each other.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobStats {
    /// Jobs that have ended, by kernel, device and status (only combinations that occur).
    pub finished: Vec<FinishedJobs>,
    /// Jobs queued or running now, by device (only combinations that occur).
    pub unfinished: Vec<UnfinishedJobs>,
    /// How long the jobs that started and ended ran, by kernel and device (jobs still in
    /// the history).
    pub durations: Vec<JobDurations>,
    /// Finished jobs the retention has deleted, ever.
    pub pruned: u64,
    /// Metered device seconds by owner and device, ever (the retention deletes none).
    pub user_device_seconds: Vec<super::usage::UserDeviceSeconds>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedJobs {
    pub kernel: String,
    pub device: String,
    pub status: JobStatus,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfinishedJobs {
    pub device: String,
    /// `Queued` or `Running`.
    pub status: JobStatus,
    pub count: u64,
}

/// A histogram of `finished_at − started_at` for one kernel on one device.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDurations {
    pub kernel: String,
    pub device: String,
    /// For each upper bound asked for, in the same order: how many jobs took at most that
    /// many seconds (cumulative, as Prometheus buckets are).
    pub at_most: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl JobStore {
    /// The job aggregates, with durations bucketed by `bucket_bounds_s` (upper bounds in
    /// seconds, ascending; the `+Inf` bucket is `count`).
    ///
    /// Durations are whole milliseconds, as the timestamps are, so a job of exactly 5 ms
    /// falls in the 0.005 bucket; one whose clock went backwards counts as 0 s.
    pub fn job_stats(&self, bucket_bounds_s: &[f64]) -> anyhow::Result<JobStats> {
        debug_assert!(bucket_bounds_s.windows(2).all(|w| w[0] < w[1]));
        // One read transaction for all the queries, so that they see the same commit.
        let mut conn = self.reader();
        let tx = conn.transaction()?;
        let stats = JobStats {
            finished: finished(&tx).context("cannot count the finished jobs")?,
            unfinished: unfinished(&tx).context("cannot count the queued and running jobs")?,
            durations: durations(&tx, bucket_bounds_s).context("cannot read the job durations")?,
            pruned: tx
                .query_row(
                    "SELECT COALESCE(SUM(count), 0) FROM pruned_jobs",
                    [],
                    |row| row.get::<_, i64>(0),
                )
                .context("cannot count the deleted jobs")?
                .try_into()?,
            user_device_seconds: super::usage::user_device_seconds(&tx)
                .context("cannot read the metered device time")?,
        };
        tx.finish()?;
        Ok(stats)
    }
}

fn finished(conn: &Connection) -> anyhow::Result<Vec<FinishedJobs>> {
    let mut stmt = conn.prepare_cached(
        "SELECT kernel, device, status, SUM(n) FROM (
             SELECT kernel, device, status, COUNT(*) AS n FROM jobs
             WHERE status NOT IN ('queued', 'running')
             GROUP BY kernel, device, status
             UNION ALL
             SELECT kernel, device, status, count FROM pruned_jobs)
         GROUP BY kernel, device, status
         ORDER BY kernel, device, status",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, i64>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (kernel, device, status, count) = row?;
        let Some(status) = known_status(&status) else {
            continue;
        };
        out.push(FinishedJobs {
            kernel,
            device,
            status,
            count: count.try_into()?,
        });
    }
    Ok(out)
}

fn unfinished(conn: &Connection) -> anyhow::Result<Vec<UnfinishedJobs>> {
    // Served by the (status, id) index: cheap however long the history grows.
    let mut stmt = conn.prepare_cached(
        "SELECT device, status, COUNT(*) FROM jobs
         WHERE status IN ('queued', 'running')
         GROUP BY device, status
         ORDER BY device, status",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (device, status, count) = row?;
        let Some(status) = known_status(&status) else {
            continue;
        };
        out.push(UnfinishedJobs {
            device,
            status,
            count: count.try_into()?,
        });
    }
    Ok(out)
}

fn durations(conn: &Connection, bucket_bounds_s: &[f64]) -> anyhow::Result<Vec<JobDurations>> {
    // Each `SUM(duration_ms <= ?)` is one cumulative bucket, so the whole histogram is one
    // pass over the (kernel, device, duration_ms) index.
    let buckets: String = (1..=bucket_bounds_s.len())
        .map(|i| format!(", SUM(duration_ms <= ?{i})"))
        .collect();
    let sql = format!(
        "SELECT kernel, device, COUNT(*), SUM(duration_ms){buckets}
         FROM jobs WHERE duration_ms IS NOT NULL
         GROUP BY kernel, device
         ORDER BY kernel, device"
    );
    let bounds_ms: Vec<f64> = bucket_bounds_s.iter().map(|s| s * 1000.0).collect();
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(&bounds_ms), |row| {
        let at_most = (0..bounds_ms.len())
            .map(|i| row.get::<_, i64>(4 + i))
            .collect::<rusqlite::Result<Vec<i64>>>()?;
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)?,
            row.get::<_, i64>(3)?,
            at_most,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (kernel, device, count, sum_ms, at_most) = row?;
        out.push(JobDurations {
            kernel,
            device,
            at_most: at_most
                .into_iter()
                .map(u64::try_from)
                .collect::<Result<_, _>>()?,
            count: count.try_into()?,
            sum_seconds: sum_ms as f64 / 1000.0,
        });
    }
    Ok(out)
}

/// The status, or `None` (logged) for one this gpulab does not know: a row it cannot read
/// is left out of the counts, as it is out of the lists.
fn known_status(status: &str) -> Option<JobStatus> {
    let known = JobStatus::parse(status);
    if known.is_none() {
        tracing::warn!("jobs with the unknown status {status:?} are left out of the metrics");
    }
    known
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;
    use crate::store::{Ending, NewJob};

    const BOUNDS: [f64; 4] = [0.001, 0.005, 1.0, 60.0];

    fn store() -> (tempfile::TempDir, JobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn insert(store: &JobStore, kernel: &str, device: &str) -> i64 {
        store
            .insert(NewJob {
                kernel: kernel.into(),
                device: device.into(),
                params: Default::default(),
                repetitions: 1,
                timeout_s: 60.0,
                owner: None,
            })
            .unwrap()
            .id
    }

    fn end(store: &JobStore, id: i64, status: JobStatus) {
        let ending = Ending {
            status,
            result: None,
            error: None,
            artifact: None,
        };
        store.finish(id, ending).unwrap().unwrap();
    }

    /// A job that ran from `started_at` to `finished_at`, as the history stores times.
    fn ran(store: &JobStore, kernel: &str, started_at: &str, finished_at: &str) -> i64 {
        let id = insert(store, kernel, "cpu");
        store.mark_running(id, 1).unwrap();
        end(store, id, JobStatus::Succeeded);
        store
            .conn()
            .execute(
                "UPDATE jobs SET started_at = ?2 WHERE id = ?1",
                params![id, started_at],
            )
            .unwrap();
        // As the end of a job writes it: from the stored start to the given end.
        store
            .conn()
            .execute(
                &format!(
                    "UPDATE jobs SET finished_at = ?1, duration_ms = {} WHERE id = ?2",
                    crate::store::schema::DURATION_MS
                ),
                params![finished_at, id],
            )
            .unwrap();
        id
    }

    #[test]
    fn an_empty_history_has_no_aggregates() {
        let (_dir, store) = store();
        assert_eq!(store.job_stats(&BOUNDS).unwrap(), JobStats::default());
    }

    #[test]
    fn jobs_are_counted_by_kernel_device_and_status() {
        let (_dir, store) = store();
        for _ in 0..2 {
            let id = insert(&store, "saxpy", "cpu");
            store.mark_running(id, 1).unwrap();
            end(&store, id, JobStatus::Succeeded);
        }
        let failed = insert(&store, "saxpy", "cuda:0");
        store.mark_running(failed, 1).unwrap();
        end(&store, failed, JobStatus::Failed);
        let cancelled = insert(&store, "matmul", "cpu");
        end(&store, cancelled, JobStatus::Cancelled);
        let running = insert(&store, "matmul", "cpu");
        store.mark_running(running, 1).unwrap();
        insert(&store, "matmul", "cpu");
        insert(&store, "saxpy", "cpu");
        insert(&store, "saxpy", "cuda:0");

        let stats = store.job_stats(&BOUNDS).unwrap();
        let finished = |kernel: &str, device: &str, status, count| FinishedJobs {
            kernel: kernel.into(),
            device: device.into(),
            status,
            count,
        };
        assert_eq!(
            stats.finished,
            [
                finished("matmul", "cpu", JobStatus::Cancelled, 1),
                finished("saxpy", "cpu", JobStatus::Succeeded, 2),
                finished("saxpy", "cuda:0", JobStatus::Failed, 1),
            ]
        );
        let unfinished = |device: &str, status, count| UnfinishedJobs {
            device: device.into(),
            status,
            count,
        };
        assert_eq!(
            stats.unfinished,
            [
                unfinished("cpu", JobStatus::Queued, 2),
                unfinished("cpu", JobStatus::Running, 1),
                unfinished("cuda:0", JobStatus::Queued, 1),
            ]
        );
        // The job cancelled before it started has no duration; the running one none yet.
        let observed: u64 = stats.durations.iter().map(|d| d.count).sum();
        assert_eq!(observed, 3);
    }

    #[test]
    fn durations_fall_in_cumulative_buckets_to_the_millisecond() {
        let (_dir, store) = store();
        // Exactly on a bound belongs to that bucket (`le` is "less than or equal").
        ran(
            &store,
            "k",
            "2025-01-01T00:00:00.000Z",
            "2025-01-01T00:00:00.001Z",
        );
        ran(
            &store,
            "k",
            "2025-01-01T23:59:59.998Z",
            "2025-01-02T00:00:00.003Z",
        );
        ran(
            &store,
            "k",
            "2025-01-01T00:00:00.000Z",
            "2025-01-01T00:00:00.006Z",
        );
        ran(
            &store,
            "k",
            "2025-01-01T00:00:00.000Z",
            "2025-01-01T00:02:00.000Z",
        );
        // The clock went backwards: counted as 0 s rather than a negative observation.
        ran(
            &store,
            "k",
            "2025-01-01T00:00:01.000Z",
            "2025-01-01T00:00:00.500Z",
        );
        ran(
            &store,
            "other",
            "2025-01-01T00:00:00.000Z",
            "2025-01-01T00:00:00.500Z",
        );

        let stats = store.job_stats(&BOUNDS).unwrap();
        assert_eq!(
            stats.durations,
            [
                JobDurations {
                    kernel: "k".into(),
                    device: "cpu".into(),
                    at_most: vec![2, 3, 4, 4],
                    count: 5,
                    sum_seconds: 120.012,
                },
                JobDurations {
                    kernel: "other".into(),
                    device: "cpu".into(),
                    at_most: vec![0, 0, 1, 1],
                    count: 1,
                    sum_seconds: 0.5,
                },
            ]
        );
    }
}

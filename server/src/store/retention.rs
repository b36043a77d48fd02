//! Retention: finished jobs, with their artifacts, and finished diagnostics are deleted once they are older than a
//! number of days, and the oldest of them while the history is over its size bound. Queued
//! and running jobs never are. A deleted job still counts in `gpulab_jobs_total` (the
//! `pruned_jobs` table keeps its count), so that counter never goes down.

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use super::{timestamp, JobStore};

/// How long and how much history is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Finished jobs that ended longer ago than this are deleted; `None` keeps them all.
    pub max_age: Option<chrono::TimeDelta>,
    /// The oldest finished jobs are deleted while the database's content is larger than
    /// this; `None` sets no bound. The file does not shrink: SQLite reuses the freed pages.
    pub max_bytes: Option<u64>,
}

/// Jobs deleted per transaction when they are past their age: a long prune lets the
/// job updates in between its batches.
const AGE_BATCH: usize = 500;
/// The oldest jobs looked at per transaction when the history is over its size.
const SIZE_BATCH: usize = 500;
/// What a job's row takes besides its values (the other columns, the indexes).
const ROW_OVERHEAD: u64 = 200;

impl JobStore {
    /// Applies the retention now. Returns how many jobs it deleted.
    pub fn prune(&self) -> anyhow::Result<u64> {
        self.prune_at(Utc::now())
    }

    /// Applies the retention as if it were `now`.
    pub fn prune_at(&self, now: DateTime<Utc>) -> anyhow::Result<u64> {
        let mut pruned = 0;
        if let Some(age) = self.retention.max_age {
            let cutoff = timestamp(now - age);
            loop {
                // Locked per batch, so that the job updates go in between.
                let mut conn = self.conn();
                let ids = ids_of(
                    &conn,
                    "SELECT id FROM jobs WHERE finished_at < ?1
                       AND status NOT IN ('queued', 'running')
                     ORDER BY finished_at LIMIT ?2",
                    rusqlite::params![cutoff, AGE_BATCH],
                )?;
                if ids.is_empty() {
                    break;
                }
                pruned += delete_jobs(&mut conn, &ids)?;
            }
            loop {
                let mut conn = self.conn();
                let ids = ids_of(
                    &conn,
                    "SELECT id FROM diagnostics WHERE finished_at < ?1
                       AND status NOT IN ('queued', 'running')
                     ORDER BY finished_at LIMIT ?2",
                    rusqlite::params![cutoff, AGE_BATCH],
                )?;
                if ids.is_empty() {
                    break;
                }
                delete_diagnostics(&mut conn, &ids)?;
            }
        }
        if let Some(max) = self.retention.max_bytes {
            pruned += prune_to_size(&mut self.conn(), max)?;
            let used = used_bytes(&self.reader())?;
            if used > max {
                tracing::warn!(
                    "the job history holds {used} bytes, over its bound of {max}, and has no \
                     finished job left to delete"
                );
            }
        }
        // What a full disk kept in memory may fit now, in the space just freed.
        self.store_unstored();
        Ok(pruned)
    }

    /// Called after a write, with the writer held: back under the size bound if the write
    /// took the history over it. A failure is logged, not returned: the write itself
    /// succeeded.
    pub(super) fn keep_within_size(&self, conn: &mut Connection) {
        let Some(max) = self.retention.max_bytes else {
            return;
        };
        match prune_to_size(conn, max) {
            Ok(0) => {}
            Ok(n) => tracing::info!("{n} old job(s) deleted to keep the history under {max} bytes"),
            Err(e) => tracing::warn!("cannot keep the job history under {max} bytes: {e:#}"),
        }
    }
}

/// Deletes the oldest finished jobs while the content is over `max` bytes: in each round,
/// as many of them as their rows and artifacts add up to the excess.
fn prune_to_size(conn: &mut Connection, max: u64) -> anyhow::Result<u64> {
    let mut pruned = 0;
    loop {
        let used = used_bytes(conn)?;
        if used <= max {
            break;
        }
        // Jobs and diagnostics together, the oldest first: `kind` 0 is a job, 1 a
        // diagnostic.
        let mut stmt = conn.prepare_cached(
            "SELECT kind, id, bytes FROM (
                 SELECT 0 AS kind, j.id AS id, j.created_at AS at,
                        length(j.params) + IFNULL(length(j.result), 0)
                          + IFNULL(length(j.error), 0) + IFNULL(length(a.bytes), 0) AS bytes
                 FROM jobs j LEFT JOIN artifacts a ON a.job_id = j.id
                 WHERE j.status NOT IN ('queued', 'running')
                 UNION ALL
                 SELECT 1, id, created_at, length(body) FROM diagnostics
                 WHERE status NOT IN ('queued', 'running'))
             ORDER BY at, kind, id LIMIT ?1",
        )?;
        let oldest = stmt
            .query_map([SIZE_BATCH], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        let (mut jobs, mut diagnostics) = (Vec::new(), Vec::new());
        let mut freed = 0;
        for (kind, id, bytes) in oldest {
            if freed >= used - max {
                break;
            }
            if kind == 0 {
                jobs.push(id);
            } else {
                diagnostics.push(id);
            }
            // A row takes more than its values; pages are only freed whole.
            freed += bytes.max(0) as u64 + ROW_OVERHEAD;
        }
        if jobs.is_empty() && diagnostics.is_empty() {
            break;
        }
        pruned += delete_jobs(conn, &jobs)?;
        delete_diagnostics(conn, &diagnostics)?;
    }
    Ok(pruned)
}

/// The bytes of the database's pages in use (free pages left out).
pub(super) fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pragma = |name: &str| conn.pragma_query_value(None, name, |row| row.get::<_, i64>(0));
    let used = (pragma("page_count")? - pragma("freelist_count")?).max(0);
    Ok(used as u64 * pragma("page_size")?.max(0) as u64)
}

fn ids_of(conn: &Connection, sql: &str, args: impl rusqlite::Params) -> anyhow::Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let ids = stmt
        .query_map(args, |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(ids)
}

/// Deletes the diagnostics and their parts in one transaction.
fn delete_diagnostics(conn: &mut Connection, ids: &[i64]) -> anyhow::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    // Numbers read from the table itself: safe to write into the statement.
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let tx = conn.transaction()?;
    tx.execute(
        &format!("DELETE FROM diagnostic_parts WHERE diagnostic_id IN ({list})"),
        [],
    )?;
    tx.execute(&format!("DELETE FROM diagnostics WHERE id IN ({list})"), [])?;
    tx.commit()?;
    Ok(())
}

/// Deletes the jobs and their artifacts in one transaction, adding them to `pruned_jobs`.
fn delete_jobs(conn: &mut Connection, ids: &[i64]) -> anyhow::Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    // Numbers read from the table itself: safe to write into the statement.
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let tx = conn.transaction()?;
    tx.execute(
        &format!(
            "INSERT INTO pruned_jobs (kernel, device, status, count)
             SELECT kernel, device, status, COUNT(*) FROM jobs WHERE id IN ({list})
             GROUP BY kernel, device, status
             ON CONFLICT (kernel, device, status) DO UPDATE SET count = count + excluded.count"
        ),
        [],
    )?;
    tx.execute(
        &format!("DELETE FROM artifacts WHERE job_id IN ({list})"),
        [],
    )?;
    let n = tx.execute(&format!("DELETE FROM jobs WHERE id IN ({list})"), [])?;
    tx.commit()?;
    Ok(n as u64)
}

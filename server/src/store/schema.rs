//! The tables of the job history and their versions. The version is SQLite's
//! `PRAGMA user_version`: 0 is the schema gpulab created before it kept a version, and each
//! migration moves a database one version up, in its own transaction.

use anyhow::Context;
use rusqlite::Connection;

/// Version 0: the tables exactly as gpulab made them before the schema had a version. A new
/// database starts here too, so that every database reaches the current version through the
/// same migrations.
pub(super) const VERSION_0: &str = "
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

/// `MIGRATIONS[v]` takes a database from version `v` to `v + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: retention. Old jobs are found by when they ended, and the jobs it deletes still
    // count in `gpulab_jobs_total`, which must never go down.
    "CREATE INDEX jobs_finished ON jobs (finished_at);
     CREATE TABLE pruned_jobs (
         kernel TEXT NOT NULL,
         device TEXT NOT NULL,
         status TEXT NOT NULL,
         count  INTEGER NOT NULL,
         PRIMARY KEY (kernel, device, status)
     );",
    // 2: each job's duration, computed once when it ends rather than from two timestamps
    // at every scrape; indexes from which the metrics' counts and histogram read alone.
    "ALTER TABLE jobs ADD COLUMN duration_ms INTEGER;
     UPDATE jobs SET duration_ms = MAX(0, CAST(round((julianday(finished_at)
                                                      - julianday(started_at)) * 86400000)
                                              AS INTEGER))
     WHERE started_at IS NOT NULL AND finished_at IS NOT NULL;
     CREATE INDEX jobs_durations ON jobs (kernel, device, duration_ms);
     CREATE INDEX jobs_totals ON jobs (kernel, device, status);",
    // 3: diagnostics. The whole diagnostic is kept as its JSON (`body`, the API's schema);
    // the columns beside it are copies for lookups. A diagnostic of `all` devices has one
    // part per device, so that a device's history and last verdict are found by index.
    // `faults`: what a test injected, kept out of the JSON and out of every baseline.
    "CREATE TABLE diagnostics (
         id          INTEGER PRIMARY KEY AUTOINCREMENT,
         device      TEXT NOT NULL,
         level       INTEGER NOT NULL,
         status      TEXT NOT NULL,
         verdict     TEXT,
         created_at  TEXT NOT NULL,
         finished_at TEXT,
         faults      TEXT NOT NULL DEFAULT '[]',
         body        TEXT NOT NULL
     );
     CREATE INDEX diagnostics_status ON diagnostics (status, id);
     CREATE INDEX diagnostics_finished ON diagnostics (finished_at);
     CREATE TABLE diagnostic_parts (
         diagnostic_id INTEGER NOT NULL REFERENCES diagnostics (id) ON DELETE CASCADE,
         device        TEXT NOT NULL,
         level         INTEGER NOT NULL,
         status        TEXT NOT NULL,
         verdict       TEXT,
         finished_at   TEXT,
         PRIMARY KEY (diagnostic_id, device)
     );
     CREATE INDEX diagnostic_parts_device ON diagnostic_parts (device, status, diagnostic_id);
     CREATE INDEX diagnostic_parts_level
         ON diagnostic_parts (device, level, status, diagnostic_id);",
    // 4: owners. In lab mode every job and diagnostic is a user's; NULL is single mode's
    // anonymous user (and every row written before accounts existed).
    "ALTER TABLE jobs ADD COLUMN owner TEXT;
     CREATE INDEX jobs_owner ON jobs (owner, id);
     ALTER TABLE diagnostics ADD COLUMN owner TEXT;
     CREATE INDEX diagnostics_owner ON diagnostics (owner, id);",
    // 5: accounts (lab mode). A user's API key is `glk_<name>_<secret>`: only the secret's
    // Argon2id hash is kept (`key_hash`, a PHC string). A session's id is kept only as its
    // SHA-256 (hex); its CSRF token is no secret without the cookie. `shared_jobs`: the jobs
    // their owners shared by link. `audit`: what admins (and the command line) did.
    "CREATE TABLE users (
         name          TEXT PRIMARY KEY,
         role          TEXT NOT NULL,
         disabled      INTEGER NOT NULL DEFAULT 0,
         created_at    TEXT NOT NULL,
         key_hash      TEXT NOT NULL,
         quota_period  TEXT,
         quota_seconds REAL
     );
     CREATE TABLE sessions (
         id_hash    TEXT PRIMARY KEY,
         user       TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
         csrf_token TEXT NOT NULL,
         created_at TEXT NOT NULL,
         expires_at TEXT NOT NULL
     );
     CREATE INDEX sessions_user ON sessions (user);
     CREATE TABLE shared_jobs (
         job_id    INTEGER PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
         shared_at TEXT NOT NULL
     );
     CREATE TABLE audit (
         id     INTEGER PRIMARY KEY AUTOINCREMENT,
         at     TEXT NOT NULL,
         actor  TEXT,
         action TEXT NOT NULL,
         target TEXT NOT NULL,
         detail TEXT
     );",
    // 6: metering. One row per job or diagnostic part that ran, written when it ends: its
    // owner, device, kernel (`diagnostic` for a part), the UTC day it ended and the device
    // time it took. Rows outlive the retention of the jobs they meter. The jobs already
    // ended are metered from their recorded durations.
    "CREATE TABLE usage (
         id            INTEGER PRIMARY KEY AUTOINCREMENT,
         job_id        INTEGER UNIQUE,
         diagnostic_id INTEGER,
         owner         TEXT,
         device        TEXT NOT NULL,
         kernel        TEXT NOT NULL,
         day           TEXT NOT NULL,
         ended_at      TEXT NOT NULL,
         busy_ms       INTEGER NOT NULL,
         UNIQUE (diagnostic_id, device)
     );
     CREATE INDEX usage_day ON usage (day, owner);
     CREATE INDEX usage_owner ON usage (owner, ended_at);
     INSERT INTO usage (job_id, owner, device, kernel, day, ended_at, busy_ms)
         SELECT id, owner, device, kernel, substr(finished_at, 1, 10), finished_at, duration_ms
         FROM jobs WHERE started_at IS NOT NULL AND duration_ms IS NOT NULL
                   AND finished_at IS NOT NULL",
];

/// A job's duration in whole milliseconds, from `started_at` to the `finished_at` given as
/// `?1`: NULL for a job that never started. SQLite keeps julianday() in whole milliseconds
/// internally, so rounding the difference gives the exact duration, without the error a
/// float subtraction of two ~2.5e6-day numbers would leave at a bucket's edge. A clock that
/// went backwards counts as 0.
pub(super) const DURATION_MS: &str =
    "MAX(0, CAST(round((julianday(?1) - julianday(started_at)) * 86400000) AS INTEGER))";

/// The version this gpulab writes.
pub const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`CURRENT_VERSION`], or refuses one that a newer gpulab wrote.
pub(super) fn migrate(conn: &mut Connection, path: &std::path::Path) -> anyhow::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    anyhow::ensure!(
        version <= CURRENT_VERSION,
        "the job history {} has schema version {version}, written by a newer gpulab; this one \
         knows versions up to {CURRENT_VERSION}. Run the newer gpulab, or start this one with \
         another --data-dir",
        path.display()
    );
    if version == 0 {
        conn.execute_batch(VERSION_0)
            .context("cannot create the job history tables")?;
    }
    for (from, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let to = from + 1;
        let tx = conn.transaction()?;
        tx.execute_batch(migration)
            .and_then(|()| tx.pragma_update(None, "user_version", to))
            .and_then(|()| tx.commit())
            .with_context(|| {
                format!(
                    "cannot update the job history {} from schema version {from} to {to}",
                    path.display()
                )
            })?;
        tracing::info!("the job history is now at schema version {to}");
    }
    Ok(())
}

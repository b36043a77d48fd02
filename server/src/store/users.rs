//! The accounts of lab mode in SQLite: users, sessions, shared jobs and the audit log.
//!
//! The command line (`gpulab users …`) writes these tables from another process while the
//! server runs; under WAL the server's next read sees each commit, which is why the server
//! reads a user's row on every request instead of keeping it.

use chrono::{DateTime, Utc};
use gpulab_shared::lab::{AuditEntry, AuditPage, Quota, QuotaPeriod, Role, UserChange};
use rusqlite::{params, OptionalExtension, Row, Transaction};

use super::{parse_timestamp, timestamp, JobStore};

/// A user's row: everything but the key's hash, which only [`JobStore::key_hash_of`] and
/// the authentication read.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRow {
    pub name: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    pub quota: Option<Quota>,
}

/// What the scheduler needs to know of a user: role (admins may take precedence), whether
/// they are disabled, and their quota. See [`JobStore::quota_of`].
// The fair-share scheduler and the quota check (issue 13's other half) read it.
#[allow(dead_code)]
#[derive(Debug, Clone, PartialEq)]
pub struct UserLimits {
    pub role: Role,
    pub disabled: bool,
    pub quota: Option<Quota>,
}

/// A user with the hash of their key, as the authentication reads it.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: UserRow,
    pub key_hash: String,
}

/// A live session, with its user as they are now.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub user: UserRow,
    pub csrf_token: String,
}

/// What a change of a user did, for the caller's answer.
#[derive(Debug)]
pub enum UserChangeOutcome {
    Changed(UserRow),
    NotFound,
}

const USER_COLUMNS: &str = "name, role, disabled, created_at, quota_period, quota_seconds";

fn role_str(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::User => "user",
    }
}

fn period_str(period: QuotaPeriod) -> &'static str {
    match period {
        QuotaPeriod::Daily => "daily",
        QuotaPeriod::Weekly => "weekly",
    }
}

fn row_to_user(row: &Row<'_>) -> rusqlite::Result<UserRow> {
    let role: String = row.get(1)?;
    let created_at: String = row.get(3)?;
    let period: Option<String> = row.get(4)?;
    let seconds: Option<f64> = row.get(5)?;
    let bad = |what: &str| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("a user's {what} does not read").into(),
        )
    };
    Ok(UserRow {
        name: row.get(0)?,
        role: match role.as_str() {
            "admin" => Role::Admin,
            "user" => Role::User,
            _ => return Err(bad("role")),
        },
        disabled: row.get(2)?,
        created_at: parse_timestamp(&created_at).map_err(|_| bad("created_at"))?,
        quota: match (period.as_deref(), seconds) {
            (Some("daily"), Some(seconds)) => Some(Quota {
                period: QuotaPeriod::Daily,
                seconds,
            }),
            (Some("weekly"), Some(seconds)) => Some(Quota {
                period: QuotaPeriod::Weekly,
                seconds,
            }),
            _ => None,
        },
    })
}

fn audit_in(
    tx: &Transaction<'_>,
    actor: Option<&str>,
    action: &str,
    target: &str,
    detail: Option<&str>,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO audit (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![timestamp(Utc::now()), actor, action, target, detail],
    )?;
    Ok(())
}

impl JobStore {
    /// Whether any account exists: lab mode.
    pub fn has_users(&self) -> anyhow::Result<bool> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM users)")?;
        Ok(stmt.query_row([], |row| row.get(0))?)
    }

    /// The user `name` as stored now.
    pub fn user(&self, name: &str) -> anyhow::Result<Option<UserRow>> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"))?;
        Ok(stmt.query_row([name], row_to_user).optional()?)
    }

    /// The role, state and quota of the user `name` (`None`: no such user). One indexed
    /// read of the primary key, fresh from SQLite: a quota an admin set a moment ago (from
    /// the API or the command line) counts at once.
    #[allow(dead_code)]
    pub fn quota_of(&self, name: &str) -> anyhow::Result<Option<UserLimits>> {
        Ok(self.user(name)?.map(|u| UserLimits {
            role: u.role,
            disabled: u.disabled,
            quota: u.quota,
        }))
    }

    /// The user `name` with the hash of their key.
    pub fn credentials(&self, name: &str) -> anyhow::Result<Option<Credentials>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {USER_COLUMNS}, key_hash FROM users WHERE name = ?1"
        ))?;
        Ok(stmt
            .query_row([name], |row| {
                Ok(Credentials {
                    user: row_to_user(row)?,
                    key_hash: row.get(6)?,
                })
            })
            .optional()?)
    }

    /// Every user, by name.
    pub fn users(&self) -> anyhow::Result<Vec<UserRow>> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))?;
        let users = stmt
            .query_map([], row_to_user)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(users)
    }

    /// Adds a user with the hash of their key; `None` when the name is taken. Audited as
    /// `user_added` by `actor` (`None`: the command line or the server's token).
    pub fn add_user(
        &self,
        name: &str,
        role: Role,
        key_hash: &str,
        actor: Option<&str>,
    ) -> anyhow::Result<Option<UserRow>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let added = tx.execute(
            "INSERT INTO users (name, role, disabled, created_at, key_hash)
             VALUES (?1, ?2, 0, ?3, ?4) ON CONFLICT (name) DO NOTHING",
            params![name, role_str(role), timestamp(Utc::now()), key_hash],
        )?;
        if added == 0 {
            return Ok(None);
        }
        audit_in(&tx, actor, "user_added", name, Some(role_str(role)))?;
        let user = tx
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"),
                [name],
                row_to_user,
            )
            .optional()?;
        tx.commit()?;
        Ok(user)
    }

    /// Applies an admin's change to `name`, each changed field audited. Disabling a user
    /// ends their sessions.
    pub fn change_user(
        &self,
        name: &str,
        change: &UserChange,
        actor: Option<&str>,
    ) -> anyhow::Result<UserChangeOutcome> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let Some(before) = tx
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"),
                [name],
                row_to_user,
            )
            .optional()?
        else {
            return Ok(UserChangeOutcome::NotFound);
        };
        if let Some(disabled) = change.disabled.filter(|d| *d != before.disabled) {
            tx.execute(
                "UPDATE users SET disabled = ?2 WHERE name = ?1",
                params![name, disabled],
            )?;
            if disabled {
                tx.execute("DELETE FROM sessions WHERE user = ?1", [name])?;
            }
            let action = if disabled {
                "user_disabled"
            } else {
                "user_enabled"
            };
            audit_in(&tx, actor, action, name, None)?;
        }
        if let Some(role) = change.role.filter(|r| *r != before.role) {
            tx.execute(
                "UPDATE users SET role = ?2 WHERE name = ?1",
                params![name, role_str(role)],
            )?;
            audit_in(&tx, actor, "role_changed", name, Some(role_str(role)))?;
        }
        if let Some(quota) = change.quota.as_ref().filter(|q| **q != before.quota) {
            let (period, seconds) = match quota {
                Some(q) => (Some(period_str(q.period)), Some(q.seconds)),
                None => (None, None),
            };
            tx.execute(
                "UPDATE users SET quota_period = ?2, quota_seconds = ?3 WHERE name = ?1",
                params![name, period, seconds],
            )?;
            let detail = match quota {
                Some(q) => format!("{} s {}", q.seconds, period_str(q.period)),
                None => "none".to_owned(),
            };
            audit_in(&tx, actor, "quota_changed", name, Some(&detail))?;
        }
        let after = tx.query_row(
            &format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"),
            [name],
            row_to_user,
        )?;
        tx.commit()?;
        Ok(UserChangeOutcome::Changed(after))
    }

    /// Replaces the hash of `name`'s key (a rotation): the old key stops working, and every
    /// session of the user ends. False when there is no such user.
    pub fn set_key_hash(
        &self,
        name: &str,
        key_hash: &str,
        actor: Option<&str>,
    ) -> anyhow::Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE users SET key_hash = ?2 WHERE name = ?1",
            params![name, key_hash],
        )?;
        if n == 0 {
            return Ok(false);
        }
        tx.execute("DELETE FROM sessions WHERE user = ?1", [name])?;
        audit_in(&tx, actor, "key_rotated", name, None)?;
        tx.commit()?;
        Ok(true)
    }

    /// Stores a new session, known by the SHA-256 of its id.
    pub fn insert_session(
        &self,
        id_hash: &str,
        user: &str,
        csrf_token: &str,
        expires_at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let conn = self.conn();
        let now = Utc::now();
        // Ended sessions go as new ones come: the table holds live ones only.
        conn.execute(
            "DELETE FROM sessions WHERE expires_at < ?1",
            [timestamp(now)],
        )?;
        conn.execute(
            "INSERT INTO sessions (id_hash, user, csrf_token, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                id_hash,
                user,
                csrf_token,
                timestamp(now),
                timestamp(expires_at)
            ],
        )?;
        Ok(())
    }

    /// The session whose id hashes to `id_hash`, with its user, unless it has expired.
    pub fn session(&self, id_hash: &str) -> anyhow::Result<Option<SessionRow>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT u.name, u.role, u.disabled, u.created_at, u.quota_period, u.quota_seconds,
                    s.csrf_token, s.expires_at
             FROM sessions s JOIN users u ON u.name = s.user
             WHERE s.id_hash = ?1",
        )?;
        let row = stmt
            .query_row([id_hash], |row| {
                Ok((
                    row_to_user(row)?,
                    row.get::<_, String>(6)?,
                    row.get::<_, String>(7)?,
                ))
            })
            .optional()?;
        let Some((user, csrf_token, expires_at)) = row else {
            return Ok(None);
        };
        let expires_at = parse_timestamp(&expires_at)?;
        Ok((expires_at > Utc::now()).then_some(SessionRow { user, csrf_token }))
    }

    /// Ends a session (sign-out).
    pub fn delete_session(&self, id_hash: &str) -> anyhow::Result<()> {
        self.conn()
            .execute("DELETE FROM sessions WHERE id_hash = ?1", [id_hash])?;
        Ok(())
    }

    /// Writes one entry of the audit log.
    pub fn audit(
        &self,
        actor: Option<&str>,
        action: &str,
        target: &str,
        detail: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        audit_in(&tx, actor, action, target, detail)?;
        tx.commit()?;
        Ok(())
    }

    /// A page of the audit log, newest first.
    pub fn audit_page(&self, before_id: Option<i64>, limit: u32) -> anyhow::Result<AuditPage> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT id, at, actor, action, target, detail FROM audit
             WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(
                params![before_id.unwrap_or(i64::MAX), i64::from(limit) + 1],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, Option<String>>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, Option<String>>(5)?,
                    ))
                },
            )?
            .collect::<Result<Vec<_>, _>>()?;
        let limit = limit as usize;
        let next_cursor = (rows.len() > limit)
            .then(|| rows.get(limit - 1).map(|r| r.0.to_string()))
            .flatten();
        let entries = rows
            .into_iter()
            .take(limit)
            .map(|(id, at, actor, action, target, detail)| {
                Ok(AuditEntry {
                    id,
                    at: parse_timestamp(&at)?,
                    actor,
                    action,
                    target,
                    detail,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(AuditPage {
            entries,
            next_cursor,
        })
    }

    /// Shares the job by link (`true`) or takes the share back.
    pub fn set_shared(&self, job_id: i64, shared: bool) -> anyhow::Result<()> {
        let conn = self.conn();
        if shared {
            conn.execute(
                "INSERT INTO shared_jobs (job_id, shared_at) VALUES (?1, ?2)
                 ON CONFLICT (job_id) DO NOTHING",
                params![job_id, timestamp(Utc::now())],
            )?;
        } else {
            conn.execute("DELETE FROM shared_jobs WHERE job_id = ?1", [job_id])?;
        }
        Ok(())
    }

    /// Whether the job's owner shared it.
    pub fn is_shared(&self, job_id: i64) -> anyhow::Result<bool> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM shared_jobs WHERE job_id = ?1)")?;
        Ok(stmt.query_row([job_id], |row| row.get(0))?)
    }

    /// Device seconds `owner` used (jobs and diagnostic parts, as metered) in work that
    /// ended since `since`.
    pub fn used_seconds(&self, owner: &str, since: DateTime<Utc>) -> anyhow::Result<f64> {
        self.used_seconds_since(Some(owner), since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn store() -> (tempfile::TempDir, JobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = JobStore::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn a_user_is_added_once_changed_and_audited() {
        let (_dir, store) = store();
        assert!(!store.has_users().unwrap());
        let alice = store
            .add_user("alice", Role::User, "$argon2id$x", None)
            .unwrap()
            .unwrap();
        assert_eq!(alice.role, Role::User);
        assert!(store.has_users().unwrap());
        assert!(store
            .add_user("alice", Role::Admin, "$argon2id$y", None)
            .unwrap()
            .is_none());
        let change = UserChange {
            disabled: Some(true),
            role: None,
            quota: Some(Some(Quota {
                period: QuotaPeriod::Weekly,
                seconds: 90.0,
            })),
        };
        let UserChangeOutcome::Changed(after) =
            store.change_user("alice", &change, Some("root")).unwrap()
        else {
            panic!("alice exists");
        };
        assert!(after.disabled);
        let limits = store.quota_of("alice").unwrap().unwrap();
        assert_eq!(limits.quota.unwrap().seconds, 90.0);
        assert!(limits.disabled);
        assert!(store.quota_of("nobody").unwrap().is_none());
        let page = store.audit_page(None, 10).unwrap();
        let actions: Vec<&str> = page.entries.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["quota_changed", "user_disabled", "user_added"]);
        assert_eq!(page.entries[0].actor.as_deref(), Some("root"));
        let first = store.audit_page(None, 2).unwrap();
        assert_eq!(first.entries.len(), 2);
        let cursor = first.next_cursor.unwrap().parse().unwrap();
        let rest = store.audit_page(Some(cursor), 2).unwrap();
        assert_eq!(rest.entries.len(), 1);
        assert_eq!(rest.next_cursor, None);
    }

    #[test]
    fn a_rotation_or_a_disable_ends_the_sessions() {
        let (_dir, store) = store();
        store.add_user("bob", Role::User, "h1", None).unwrap();
        let later = Utc::now() + Duration::hours(1);
        store.insert_session("s1", "bob", "c1", later).unwrap();
        assert_eq!(store.session("s1").unwrap().unwrap().csrf_token, "c1");
        assert!(store.set_key_hash("bob", "h2", None).unwrap());
        assert!(store.session("s1").unwrap().is_none());
        store.insert_session("s2", "bob", "c2", later).unwrap();
        let disable = UserChange {
            disabled: Some(true),
            ..Default::default()
        };
        store.change_user("bob", &disable, None).unwrap();
        assert!(store.session("s2").unwrap().is_none());
        store
            .insert_session("old", "bob", "c3", Utc::now() - Duration::seconds(1))
            .unwrap();
        assert!(store.session("old").unwrap().is_none(), "expired");
    }
}

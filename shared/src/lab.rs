//! The shared lab: accounts, sessions, usage, quotas and the audit log.
//!
//! With no accounts a gpulab is in `single` mode: one anonymous user, the server's token
//! (if any) protecting changes, as before. `gpulab users add NAME` turns on `lab` mode:
//! every request is a user's (a session cookie from the browser, the user's API key as a
//! bearer token from scripts), and what a user sees and does is theirs.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// The name of the session cookie (HttpOnly, SameSite=Strict; Secure over TLS).
pub const SESSION_COOKIE: &str = "gpulab_session";

/// The header that carries the session's CSRF token on every change made with the cookie.
pub const CSRF_HEADER: &str = "x-csrf-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LabMode {
    /// No accounts: one anonymous user.
    Single,
    /// Accounts: every request is a signed-in user's.
    Lab,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
}

/// One account, as `GET /api/users` lists it. The API key is never shown again after it
/// was made; only its hash is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct User {
    /// 1 to 32 characters: lowercase letters, digits, `-`, `_`, `.`; starts with a letter.
    pub name: String,
    pub role: Role,
    /// A disabled user is refused at once, on every request and on open event streams.
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    /// `null`: no quota.
    pub quota: Option<Quota>,
    /// Device seconds used in the current quota period (or today, without a quota).
    pub used_seconds: f64,
}

/// `POST /api/users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    #[serde(default)]
    pub admin: bool,
}

/// `PATCH /api/users/{name}` (admins): every field optional, absent = unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub role: Option<Role>,
    /// `{"quota": null}` removes the quota; an absent `quota` leaves it.
    #[serde(
        default,
        with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Quota>))]
    pub quota: Option<Option<Quota>>,
}

/// A user with a fresh API key: the answer of `POST /api/users` and of
/// `POST /api/users/{name}/key` (rotation). The key is shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UserWithKey {
    pub user: User,
    pub api_key: String,
}

/// `POST /api/session`: sign in with name and key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub name: String,
    pub key: String,
}

/// `GET /api/session` (and the answer of a sign-in): who the browser is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Session {
    pub mode: LabMode,
    /// The signed-in user; `null` in single mode or when nobody is signed in.
    pub user: Option<User>,
    /// Send it as the [`CSRF_HEADER`] header with every change made with the cookie.
    pub csrf_token: Option<String>,
}

/// A daily or weekly allowance of device time (GPU and CPU worker time together).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub period: QuotaPeriod,
    /// Device seconds per period, > 0.
    pub seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum QuotaPeriod {
    /// Renews at 00:00 UTC.
    Daily,
    /// Renews on Monday 00:00 UTC.
    Weekly,
}

/// `GET /api/usage`: device time used, by day (UTC), user, device and kernel. A user sees
/// their own; admins see everyone's. `?format=csv` gives the same rows as CSV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UsageReport {
    /// First day included, `YYYY-MM-DD`.
    pub from: String,
    /// Last day included, `YYYY-MM-DD`.
    pub to: String,
    pub rows: Vec<UsageRow>,
    /// One row per user over the whole range.
    pub totals: Vec<UsageTotal>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UsageRow {
    /// `YYYY-MM-DD` (UTC) of the day the work ended.
    pub day: String,
    /// `null` for the anonymous user of single mode.
    pub user: Option<String>,
    pub device: String,
    /// A kernel name, or `diagnostic`.
    pub kernel: String,
    pub jobs: u64,
    /// Worker busy time on a GPU.
    pub gpu_seconds: f64,
    /// Worker busy time on the CPU device.
    pub cpu_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UsageTotal {
    pub user: Option<String>,
    pub jobs: u64,
    pub gpu_seconds: f64,
    pub cpu_seconds: f64,
}

/// One admin action: `GET /api/audit` (admins), newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The admin who acted; `null` for the command line (`gpulab users …`).
    pub actor: Option<String>,
    /// `user_added`, `user_disabled`, `user_enabled`, `role_changed`, `key_rotated`,
    /// `quota_changed`, `job_cancelled`, `diagnostic_cancelled`.
    pub action: String,
    /// The user, job or diagnostic acted on, such as `alice` or `job 42`.
    pub target: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        value: &Option<Option<T>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            None => serializer.serialize_none(),
            Some(inner) => inner.serialize(serializer),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(deserializer).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_change_tells_an_absent_quota_from_a_null_one() {
        let absent: UserChange = serde_json::from_str(r#"{"disabled":true}"#).unwrap();
        assert_eq!(absent.quota, None);
        let removed: UserChange = serde_json::from_str(r#"{"quota":null}"#).unwrap();
        assert_eq!(removed.quota, Some(None));
        let set: UserChange =
            serde_json::from_str(r#"{"quota":{"period":"daily","seconds":60}}"#).unwrap();
        assert_eq!(
            set.quota,
            Some(Some(Quota {
                period: QuotaPeriod::Daily,
                seconds: 60.0
            }))
        );
    }
}

//! The calls of lab mode: the session, accounts, usage and the audit log.

use gloo_net::http::Request;
use gpulab_shared::lab::{
    AuditPage, NewUser, Session, SignIn, UsageReport, User, UserChange, UserWithKey,
};

use super::{authorized, get, read_json, read_problem, ApiResult};

/// `GET /api/session`: the mode, and who is signed in.
pub async fn session() -> ApiResult<Session> {
    read_json(get("/api/session").send().await?).await
}

/// `POST /api/session`: signs in with a name and an API key; the server sets the session
/// cookie.
pub async fn sign_in(request: SignIn) -> ApiResult<Session> {
    read_json(Request::post("/api/session").json(&request)?.send().await?).await
}

/// `DELETE /api/session`: signs out; the server ends the session and its cookie.
pub async fn sign_out() -> ApiResult<()> {
    let response = authorized(Request::delete("/api/session")).send().await?;
    if !response.ok() {
        return Err(read_problem(response).await);
    }
    Ok(())
}

/// `GET /api/users` (admins).
pub async fn users() -> ApiResult<Vec<User>> {
    read_json(get("/api/users").send().await?).await
}

/// `POST /api/users` (admins): the new user with their API key, shown this once.
pub async fn create_user(request: NewUser) -> ApiResult<UserWithKey> {
    read_json(
        authorized(Request::post("/api/users"))
            .json(&request)?
            .send()
            .await?,
    )
    .await
}

/// `PATCH /api/users/{name}` (admins): disables, enables, or sets the role or quota.
pub async fn change_user(name: &str, change: UserChange) -> ApiResult<User> {
    let name = String::from(js_sys::encode_uri_component(name));
    read_json(
        authorized(Request::patch(&format!("/api/users/{name}")))
            .json(&change)?
            .send()
            .await?,
    )
    .await
}

/// `POST /api/users/{name}/key`: a new API key for the user (an admin, or the user
/// themselves); the old one stops working. The key is shown this once.
pub async fn rotate_key(name: &str) -> ApiResult<UserWithKey> {
    let name = String::from(js_sys::encode_uri_component(name));
    read_json(
        authorized(Request::post(&format!("/api/users/{name}/key")))
            .send()
            .await?,
    )
    .await
}

/// `GET /api/audit` (admins): one page of admin actions, newest first, after `cursor`.
pub async fn audit(cursor: Option<String>, limit: u32) -> ApiResult<AuditPage> {
    let mut query = vec![("limit", limit.to_string())];
    if let Some(cursor) = cursor {
        query.push(("cursor", cursor));
    }
    read_json(get("/api/audit").query(query).send().await?).await
}

/// Which usage `GET /api/usage` reports: days from `from` to `to` (`YYYY-MM-DD`, UTC, both
/// included), and for an admin one user or (`None`) everyone.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageQuery {
    pub from: String,
    pub to: String,
    pub user: Option<String>,
}

impl UsageQuery {
    fn pairs(&self, format: &'static str) -> Vec<(&'static str, String)> {
        let mut query = vec![
            ("from", self.from.clone()),
            ("to", self.to.clone()),
            ("format", format.to_owned()),
        ];
        if let Some(user) = &self.user {
            query.push(("user", user.clone()));
        }
        query
    }
}

/// `GET /api/usage?format=json`.
pub async fn usage(query: &UsageQuery) -> ApiResult<UsageReport> {
    read_json(get("/api/usage").query(query.pairs("json")).send().await?).await
}

/// The address of the same report as CSV, for a download link (the session cookie goes
/// with it).
pub fn usage_csv_url(query: &UsageQuery) -> String {
    let pairs: Vec<String> = query
        .pairs("csv")
        .into_iter()
        .map(|(name, value)| format!("{name}={}", encode(&value)))
        .collect();
    format!("/api/usage?{}", pairs.join("&"))
}

/// `text` as one component of a URL's query.
fn encode(text: &str) -> String {
    // What encodeURIComponent leaves alone; the host tests have no JavaScript to call.
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'!' | b'~' | b'*' => {
                (b as char).to_string()
            }
            b'\'' | b'(' | b')' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csv_link_asks_for_the_same_days_and_user_as_the_table() {
        let mut query = UsageQuery {
            from: "2026-11-27".to_owned(),
            to: "2026-12-03".to_owned(),
            user: None,
        };
        assert_eq!(
            usage_csv_url(&query),
            "/api/usage?from=2026-11-27&to=2026-12-03&format=csv"
        );
        query.user = Some("a.b_c".to_owned());
        assert_eq!(
            usage_csv_url(&query),
            "/api/usage?from=2026-11-27&to=2026-12-03&format=csv&user=a.b_c"
        );
        query.user = Some("x&y=z é".to_owned());
        assert!(usage_csv_url(&query).ends_with("&user=x%26y%3Dz%20%C3%A9"));
    }
}

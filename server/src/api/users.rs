//! `/api/users` and `/api/audit`: accounts of lab mode (admins), key rotation (the owner or
//! an admin), and the audit log of admin actions.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use gpulab_shared::lab::{AuditPage, NewUser, Role, User, UserChange, UserWithKey};
use gpulab_shared::Problem;
use serde::Deserialize;

use super::error::{ApiError, ApiJson};
use super::jobs::page;
use super::AppState;
use crate::lab::quota::period_start;
use crate::lab::{keys, Caller, Lab};
use crate::store::users::{UserChangeOutcome, UserRow};

/// The largest quota: a year of device time per period.
const MAX_QUOTA_S: f64 = 366.0 * 86_400.0;

fn admins_only(caller: &Caller, what: &str) -> Result<(), ApiError> {
    if caller.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!("only admins may {what}")))
    }
}

/// The API's view of a stored user: with the device seconds used in the current quota
/// period (today, without a quota).
pub(super) async fn with_usage(lab: &Lab, row: UserRow) -> Result<User, ApiError> {
    let period = row
        .quota
        .as_ref()
        .map(|q| q.period)
        .unwrap_or(gpulab_shared::lab::QuotaPeriod::Daily);
    let since = period_start(period, Utc::now());
    let name = row.name.clone();
    let used_seconds = lab.blocking(move |s| s.used_seconds(&name, since)).await?;
    Ok(User {
        name: row.name,
        role: row.role,
        disabled: row.disabled,
        created_at: row.created_at,
        quota: row.quota,
        used_seconds,
    })
}

/// The body as `T`, which must come as a JSON object: serde would also read a struct from
/// an array of its fields in order (`["ada", true]`), which the API's schema does not allow.
pub(super) fn from_object<T: serde::de::DeserializeOwned>(
    body: serde_json::Value,
) -> Result<T, ApiError> {
    if !body.is_object() {
        return Err(ApiError::Unprocessable {
            field: None,
            detail: "the body must be a JSON object".into(),
        });
    }
    serde_json::from_value(body).map_err(|e| ApiError::Unprocessable {
        field: None,
        detail: format!("the body does not read: {e}"),
    })
}

fn no_user(name: &str) -> ApiError {
    ApiError::NotFound(format!("there is no user `{name}`"))
}

/// Makes a key for `name` and its Argon2id hash (off the async threads: ~50 ms).
async fn new_key(name: &str) -> Result<(String, String), ApiError> {
    let key = keys::new_key(name);
    let hashed = key.clone();
    let hash = tokio::task::spawn_blocking(move || keys::hash_key(&hashed))
        .await
        .map_err(|e| ApiError::Internal(e.into()))??;
    Ok((key, hash))
}

/// Every account, by name (admins).
#[utoipa::path(get, path = "/api/users", tag = "users", operation_id = "listUsers",
    responses(
        (status = 200, description = "The users (none: single mode)", body = Vec<User>),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<User>>, ApiError> {
    admins_only(&caller, "list the users")?;
    let rows = state.lab.blocking(|s| s.users()).await?;
    let mut users = Vec::with_capacity(rows.len());
    for row in rows {
        users.push(with_usage(&state.lab, row).await?);
    }
    Ok(Json(users))
}

/// Adds an account (admins; in single mode whoever may make changes, which turns lab mode
/// on). The answer holds the user's API key, shown this once.
#[utoipa::path(post, path = "/api/users", tag = "users", operation_id = "createUser",
    request_body(content = NewUser, example = json!({"name": "ada", "admin": false})),
    responses(
        (status = 201, description = "Added; `api_key` is shown this once", body = UserWithKey,
            headers(("Location" = String, description = "`/api/users/{name}`"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The name is taken", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as `Content-Type: application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad name or an unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "The disk is full", body = Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    admins_only(&caller, "add users")?;
    let new: NewUser = from_object(body)?;
    if !keys::valid_name(&new.name) {
        return Err(ApiError::invalid(
            "name",
            format!(
                "`{}` is no user name: 1 to 32 lowercase letters, digits, `-`, `_` or `.`, \
                 starting with a letter",
                new.name
            ),
        ));
    }
    let (api_key, hash) = new_key(&new.name).await?;
    let role = if new.admin { Role::Admin } else { Role::User };
    let name = new.name.clone();
    let actor = caller.user.clone();
    let added = state
        .lab
        .blocking(move |s| s.add_user(&name, role, &hash, actor.as_deref()))
        .await
        .map_err(disk_full_or_internal)?
        .ok_or_else(|| ApiError::Conflict(format!("the user `{}` exists already", new.name)))?;
    let location = HeaderValue::try_from(format!("/api/users/{}", added.name))
        .map_err(|e| ApiError::Internal(e.into()))?;
    let user = with_usage(&state.lab, added).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(UserWithKey { user, api_key }),
    )
        .into_response())
}

fn disk_full_or_internal(e: anyhow::Error) -> ApiError {
    if crate::store::is_disk_full(&e) {
        ApiError::InsufficientStorage("the disk is full: free space in the data directory".into())
    } else {
        ApiError::Internal(e)
    }
}

/// Changes an account (admins): disable or enable it, its role, its quota. Each change is
/// written to the audit log; disabling ends the user's sessions and open event streams.
#[utoipa::path(patch, path = "/api/users/{name}", tag = "users", operation_id = "changeUser",
    params(("name" = String, Path, description = "The user's name")),
    request_body(content = UserChange, example = json!({"quota": {"period": "daily", "seconds": 3600}})),
    responses(
        (status = 200, description = "The user, changed", body = User),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An admin may not disable or demote themselves", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as `Content-Type: application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad quota or an unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "The disk is full", body = Problem, content_type = "application/problem+json")))]
pub async fn change(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Json<User>, ApiError> {
    admins_only(&caller, "change users")?;
    let change: UserChange = from_object(body)?;
    if let Some(Some(quota)) = &change.quota {
        if !(quota.seconds > 0.0 && quota.seconds <= MAX_QUOTA_S) {
            return Err(ApiError::invalid(
                "quota.seconds",
                format!(
                    "a quota is from more than 0 to {MAX_QUOTA_S} device seconds per period, got \
                     {}; `\"quota\": null` removes it",
                    quota.seconds
                ),
            ));
        }
    }
    if caller.user.as_deref() == Some(name.as_str())
        && (change.disabled == Some(true) || change.role == Some(Role::User))
    {
        return Err(ApiError::Conflict(
            "an admin may not disable or demote themselves: ask another admin (or use `gpulab \
             users disable` on the server)"
                .into(),
        ));
    }
    let actor = caller.user.clone();
    let target = name.clone();
    let outcome = state
        .lab
        .blocking(move |s| s.change_user(&target, &change, actor.as_deref()))
        .await
        .map_err(disk_full_or_internal)?;
    match outcome {
        UserChangeOutcome::Changed(row) => Ok(Json(with_usage(&state.lab, row).await?)),
        UserChangeOutcome::NotFound => Err(no_user(&name)),
    }
}

/// Replaces a user's API key with a new one, shown this once; the old key and every
/// session of the user stop working at once. The user themselves or an admin.
#[utoipa::path(post, path = "/api/users/{name}/key", tag = "users", operation_id = "rotateUserKey",
    params(("name" = String, Path, description = "The user's name")),
    responses(
        (status = 200, description = "The user and their new key", body = UserWithKey),
        (status = 404, description = "No such user (or another user's name)", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "The disk is full", body = Problem, content_type = "application/problem+json")))]
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<UserWithKey>, ApiError> {
    // Another user's name is a 404 like a name nobody has: which names exist is not told.
    if !caller.may_see(Some(&name)) || !keys::valid_name(&name) {
        return Err(no_user(&name));
    }
    let (api_key, hash) = new_key(&name).await?;
    let actor = caller.user.clone();
    let target = name.clone();
    let rotated = state
        .lab
        .blocking(move |s| s.set_key_hash(&target, &hash, actor.as_deref()))
        .await
        .map_err(disk_full_or_internal)?;
    if !rotated {
        return Err(no_user(&name));
    }
    let target = name.clone();
    let row = state
        .lab
        .blocking(move |s| s.user(&target))
        .await?
        .ok_or_else(|| no_user(&name))?;
    let user = with_usage(&state.lab, row).await?;
    Ok(Json(UserWithKey { user, api_key }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries per page, 1 to 500 (default 50).
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The audit log (admins), newest first, a page at a time: users added, disabled, enabled,
/// roles and quotas changed, keys rotated, others' jobs and diagnostics cancelled.
#[utoipa::path(get, path = "/api/audit", tag = "users", operation_id = "listAudit",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of the audit log", body = AuditPage),
        (status = 400, description = "The query string cannot be read (a parameter given twice)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad `limit` or `cursor`", body = Problem, content_type = "application/problem+json")))]
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    admins_only(&caller, "read the audit log")?;
    let Query(q) = query?;
    let (limit, before_id) = page(q.limit.as_deref(), q.cursor.as_deref(), 50, 500)?;
    Ok(Json(
        state
            .lab
            .blocking(move |s| s.audit_page(before_id, limit))
            .await?,
    ))
}

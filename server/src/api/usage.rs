//! `GET /api/usage`: the metered device time, as JSON or CSV.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{Days, NaiveDate, Utc};
use gpulab_shared::lab::UsageReport;
use gpulab_shared::Problem;
use serde::Deserialize;

use super::error::ApiError;
use super::AppState;
use crate::lab::Caller;
use crate::store::usage::{to_csv, UsageScope};

/// Days a report covers when `from` is not given (ending with `to`).
const DEFAULT_DAYS: u64 = 30;
/// The longest range one report covers, in days.
const MAX_DAYS: i64 = 366;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// First day, `YYYY-MM-DD` (UTC); default: 29 days before `to`.
    from: Option<String>,
    /// Last day, `YYYY-MM-DD` (UTC); default: today.
    to: Option<String>,
    /// Only this user's usage. A user who is not an admin sees their own only.
    user: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

fn day(field: &str, value: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| {
        ApiError::invalid(
            field,
            format!("`{field}` must be a day as YYYY-MM-DD, got {value:?}"),
        )
    })
}

/// Device time used (worker busy time: GPU seconds on a GPU, CPU seconds on the CPU), by
/// UTC day, user, device and kernel, with each user's total. A user sees their own;
/// admins (and single mode's one user) everyone's, or one user's with `user`. With
/// `format=csv`: the rows as CSV (RFC 4180, a header row; the anonymous user is empty).
#[utoipa::path(get, path = "/api/usage", tag = "usage", operation_id = "getUsage",
    params(UsageQuery),
    responses(
        (status = 200, description = "The usage; with `format=csv`, its rows as CSV",
            content((UsageReport = "application/json"), (String = "text/csv"))),
        (status = 400, description = "The query string cannot be read (a parameter given twice)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A user asked for another user's usage", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad day, range or format", body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let csv = match q.format.as_deref() {
        None | Some("") | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "format",
                format!("unknown format `{other}`: use json or csv"),
            ))
        }
    };
    let to = match q.to.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => day("to", s)?,
        None => Utc::now().date_naive(),
    };
    let from = match q.from.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => day("from", s)?,
        None => to
            .checked_sub_days(Days::new(DEFAULT_DAYS - 1))
            .unwrap_or(NaiveDate::MIN),
    };
    if from > to {
        return Err(ApiError::invalid(
            "from",
            format!("`from` ({from}) is after `to` ({to})"),
        ));
    }
    if (to - from).num_days() >= MAX_DAYS {
        return Err(ApiError::invalid(
            "from",
            format!("a report covers at most {MAX_DAYS} days; {from} to {to} is longer"),
        ));
    }
    let asked = q.user.filter(|u| !u.is_empty());
    let scope = if caller.is_admin() {
        match asked {
            Some(user) => UsageScope::Owner(Some(user)),
            None => UsageScope::Everyone,
        }
    } else {
        if asked.is_some() && asked != caller.user {
            return Err(ApiError::Forbidden(
                "a user sees their own usage only; leave `user` out".into(),
            ));
        }
        UsageScope::Owner(caller.owner())
    };
    let report = state.jobs.usage(from, to, scope).await?;
    Ok(if csv {
        (
            [
                (
                    header::CONTENT_TYPE,
                    "text/csv; charset=utf-8; header=present",
                ),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"gpulab-usage.csv\"",
                ),
            ],
            to_csv(&report),
        )
            .into_response()
    } else {
        Json::<UsageReport>(report).into_response()
    })
}

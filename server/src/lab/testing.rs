//! Test-only ways in, present with `--enable-test-faults` alone: a request's caller named
//! by the `x-gpulab-test-user` header (and `x-gpulab-test-role: admin`), the quotas' clock
//! moved, and a user's quota set, so that the fair share, the limits and the quotas can be
//! tested through the real server before (and beside) the sign-in of lab mode.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use gpulab_shared::lab::{Quota, Role};
use serde::Deserialize;

use super::Caller;
use crate::api::error::{ApiError, ApiJson};
use crate::api::AppState;

pub const USER_HEADER: &str = "x-gpulab-test-user";
pub const ROLE_HEADER: &str = "x-gpulab-test-role";

/// Puts the caller the test headers name into the request, unless a caller is there.
pub async fn caller_from_headers(mut req: Request, next: Next) -> Response {
    if let Some(caller) = named_caller(&req) {
        if req.extensions().get::<Caller>().is_none() {
            req.extensions_mut().insert(caller);
        }
    }
    next.run(req).await
}

fn named_caller(req: &Request) -> Option<Caller> {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let user = header(USER_HEADER)?;
    let role = match header(ROLE_HEADER) {
        Some("admin") => Role::Admin,
        _ => Role::User,
    };
    Some(Caller::user(user, role))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockOffset {
    offset_s: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetQuota {
    quota: Option<Quota>,
}

/// The test routes: `POST /api/test/clock {"offset_s": N}` and
/// `POST /api/test/quota/{user} {"quota": …}`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/test/clock", post(set_clock))
        .route("/api/test/quota/{user}", post(set_quota))
}

async fn set_clock(
    State(state): State<AppState>,
    ApiJson(offset): ApiJson<ClockOffset>,
) -> Result<StatusCode, ApiError> {
    if !offset.offset_s.is_finite() {
        return Err(ApiError::invalid("offset_s", "a number of seconds"));
    }
    state
        .jobs
        .set_clock_offset((offset.offset_s * 1000.0).round() as i64);
    Ok(StatusCode::NO_CONTENT)
}

async fn set_quota(
    State(state): State<AppState>,
    Path(user): Path<String>,
    ApiJson(body): ApiJson<SetQuota>,
) -> Result<StatusCode, ApiError> {
    if let Some(q) = &body.quota {
        if !(q.seconds.is_finite() && q.seconds > 0.0) {
            return Err(ApiError::invalid(
                "quota.seconds",
                "a number of seconds above 0",
            ));
        }
    }
    state.jobs.set_quota(&user, body.quota).await?;
    Ok(StatusCode::NO_CONTENT)
}

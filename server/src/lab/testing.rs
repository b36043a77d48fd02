//! Test-only routes, present with `--enable-test-faults` alone: `POST /api/test/clock`
//! moves the clock the quotas read, so that a period's renewal can be tested through the
//! real server without waiting for midnight.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde::Deserialize;

use crate::api::error::{ApiError, ApiJson};
use crate::api::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockOffset {
    offset_s: f64,
}

/// `POST /api/test/clock {"offset_s": N}`: the quotas' clock runs N seconds from the real one.
pub fn routes() -> Router<AppState> {
    Router::new().route("/api/test/clock", post(set_clock))
}

async fn set_clock(
    State(state): State<AppState>,
    ApiJson(offset): ApiJson<ClockOffset>,
) -> Result<StatusCode, ApiError> {
    if !(offset.offset_s.is_finite() && offset.offset_s.abs() < 1e9) {
        return Err(ApiError::invalid("offset_s", "a number of seconds"));
    }
    state
        .jobs
        .set_clock_offset((offset.offset_s * 1000.0).round() as i64);
    Ok(StatusCode::NO_CONTENT)
}

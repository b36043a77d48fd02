//! `GET /metrics`: the Prometheus text exposition.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::error::ApiError;
use super::AppState;

/// The Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Device telemetry gauges, device info, job counters and durations, each device's last
/// diagnostic verdicts, build information.
#[utoipa::path(get, path = "/metrics", tag = "metrics", operation_id = "getMetrics",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4",
        content_type = "text/plain"),
        (status = 403, description = "Lab mode: only admins (or the server's token) read the metrics, whose labels name users", body = gpulab_shared::Problem, content_type = "application/problem+json")))]
pub async fn metrics(
    State(state): State<AppState>,
    caller: crate::lab::Caller,
) -> Result<impl IntoResponse, ApiError> {
    // In lab mode the metrics carry per-user figures: an admin's, or the token's (which a
    // Prometheus scrapes with), not every user's.
    if !caller.is_admin() {
        return Err(ApiError::Forbidden(
            "in lab mode only admins read /metrics: scrape it with the server's token (or an \
             admin's key) as `Authorization: Bearer`"
                .into(),
        ));
    }
    let jobs = state
        .jobs
        .stats(&crate::metrics::DURATION_BUCKETS_S)
        .await?;
    let diagnostics = state.jobs.last_parts().await?;
    let telemetry = state.telemetry.latest_all();
    let body = crate::metrics::render(&state.inventory, &telemetry, &jobs, &diagnostics);
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body))
}

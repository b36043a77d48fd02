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
        content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let jobs = state
        .jobs
        .stats(&crate::metrics::DURATION_BUCKETS_S)
        .await?;
    let diagnostics = state.jobs.last_parts().await?;
    let telemetry = state.telemetry.latest_all();
    let body = crate::metrics::render(&state.inventory, &telemetry, &jobs, &diagnostics);
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body))
}

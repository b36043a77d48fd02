//! `GET /api/fleet`.

use axum::extract::State;
use axum::Json;
use gpulab_shared::fleet::Fleet;
use gpulab_shared::Problem;

use super::error::ApiError;
use super::AppState;

/// Every gpulab node the server's Prometheus scrapes, with its devices.
///
/// Each node up or down, and each device's model, temperature, power, utilisation, memory
/// and last diagnostic, from the Prometheus of `--prometheus-url`, which the server asks
/// fixed queries of its own. Without `--prometheus-url` the answer has `configured: false`
/// and says how to set it.
#[utoipa::path(get, path = "/api/fleet", tag = "fleet", operation_id = "getFleet",
    responses(
        (status = 200, description = "The fleet, or `configured: false` with `setup`", body = Fleet),
        (status = 502, description = "Prometheus could not be reached, did not answer in time, \
            or gave a bad answer; `detail` says which", body = Problem,
            content_type = "application/problem+json")))]
pub async fn get(State(state): State<AppState>) -> Result<Json<Fleet>, ApiError> {
    let Some(reader) = &state.fleet else {
        return Ok(Json(crate::fleet::not_configured()));
    };
    match reader.read().await {
        Ok(fleet) => Ok(Json(fleet)),
        Err(error) => {
            tracing::warn!("the fleet cannot be read: {error}");
            Err(ApiError::BadGateway(error.to_string()))
        }
    }
}

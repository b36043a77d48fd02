//! `GET /api/devices/{id}/telemetry`.

use axum::extract::{Path, State};
use axum::Json;
use gpulab_shared::{DeviceTelemetry, Problem};

use super::error::ApiError;
use super::AppState;

/// The latest telemetry sample of a device and its history (the last ten minutes).
#[utoipa::path(get, path = "/api/devices/{id}/telemetry", tag = "devices", operation_id = "getDeviceTelemetry",
    params(("id" = String, Path, description = "`cpu` or `cuda:N`", example = "cpu")),
    responses(
        (status = 200, description = "Latest sample and history", body = DeviceTelemetry),
        (status = 404, description = "No such device", body = Problem,
            content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeviceTelemetry>, ApiError> {
    state
        .telemetry
        .telemetry(&id)
        .map(Json)
        .ok_or_else(|| crate::jobs::RequestError::unknown_device(&id, &state.inventory).into())
}

//! `GET /api/devices` and `GET /api/devices/{id}`.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use gpulab_shared::peaks::Roofline;
use gpulab_shared::{Device, Problem};
use serde::Deserialize;

use super::error::ApiError;
use super::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DevicesQuery {
    /// `json` (the default) or `text`: the one line of the original PyCUDA page.
    #[param(inline, value_type = Option<DeviceListFormat>)]
    format: Option<String>,
}

/// `json`: the devices as JSON; `text`: the PyCUDA line.
// Only for the OpenAPI document, which lists the values: the handler reads the raw
// string, so that an unknown one gets its own message.
#[derive(utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum DeviceListFormat {
    Json,
    Text,
}

/// Every device: each CUDA GPU, then the host CPU.
#[utoipa::path(get, path = "/api/devices", tag = "devices", operation_id = "listDevices",
    params(DevicesQuery),
    responses(
        (status = 200, description = "The devices; with `format=text`, the line \
            `N device(s) found., Device #0: NAME, Compute Capability: X.Y, Total Memory: M KB`",
            content((Vec<Device> = "application/json"), (String = "text/plain"))),
        (status = 400, description = "Unknown format", body = Problem,
            content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<DevicesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    match query.format.as_deref() {
        None | Some("json") => {
            let last = state.jobs.last_diagnostics().await?;
            let devices: Vec<Device> = state
                .inventory
                .devices
                .iter()
                .map(|d| with_last_diagnostic(crate::peaks::with_current_peaks(d.clone()), &last))
                .collect();
            Ok(Json(devices).into_response())
        }
        Some("text") => Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            state.inventory.pycuda_line(),
        )
            .into_response()),
        Some(other) => Err(ApiError::BadRequest(format!(
            "unknown format `{other}`: use json or text"
        ))),
    }
}

/// One device by id: `cpu` or `cuda:N`.
#[utoipa::path(get, path = "/api/devices/{id}", tag = "devices", operation_id = "getDevice",
    params(("id" = String, Path, description = "`cpu` or `cuda:N`", example = "cpu")),
    responses(
        (status = 200, description = "The device", body = Device),
        (status = 404, description = "No such device", body = Problem,
            content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Device>, ApiError> {
    let device = state
        .inventory
        .find(&id)
        .cloned()
        .ok_or_else(|| crate::jobs::RequestError::unknown_device(&id, &state.inventory))?;
    let last = state.jobs.last_diagnostics().await?;
    Ok(Json(with_last_diagnostic(
        crate::peaks::with_current_peaks(device),
        &last,
    )))
}

/// The most jobs a roofline shows.
const ROOFLINE_JOBS: u32 = 500;

/// The device's roofline: the bandwidth slope and one compute ceiling per data type from its
/// peaks, and its newest succeeded jobs that have a roofline point.
#[utoipa::path(get, path = "/api/devices/{id}/roofline", tag = "devices",
    operation_id = "getDeviceRoofline",
    params(("id" = String, Path, description = "`cpu` or `cuda:N`", example = "cpu")),
    responses(
        (status = 200, description = "The roofline and up to 500 of the device's newest \
            succeeded jobs on it, newest first", body = Roofline),
        (status = 404, description = "No such device", body = Problem,
            content_type = "application/problem+json")))]
pub async fn roofline(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Roofline>, ApiError> {
    let device = state
        .inventory
        .find(&id)
        .cloned()
        .ok_or_else(|| crate::jobs::RequestError::unknown_device(&id, &state.inventory))?;
    let peaks = crate::peaks::DevicePeaks::of(&device).now();
    let jobs = state.jobs.roofline_jobs(id.clone(), ROOFLINE_JOBS).await?;
    Ok(Json(crate::peaks::roofline(&id, &peaks, &jobs)))
}

/// The device with its last finished diagnostic, from the history.
fn with_last_diagnostic(
    mut device: Device,
    last: &std::collections::BTreeMap<String, gpulab_shared::diag::LastDiagnostic>,
) -> Device {
    device.last_diagnostic = last.get(&device.id).cloned();
    device
}

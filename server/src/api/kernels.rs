//! `GET /api/kernels`.

use axum::extract::State;
use axum::Json;
use gpulab_shared::KernelSpec;

use super::AppState;

/// The catalog of built-in kernels, with the parameter schema the UI renders as a form.
#[utoipa::path(get, path = "/api/kernels", tag = "kernels", operation_id = "listKernels",
    responses((status = 200, description = "The catalog", body = [KernelSpec])))]
pub async fn list(State(state): State<AppState>) -> Json<Vec<KernelSpec>> {
    Json(state.jobs.catalog())
}

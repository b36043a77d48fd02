//! `GET /api/health`.

use axum::extract::State;
use axum::Json;
use gpulab_shared::Health;

use super::AppState;

/// The server is up; whether CUDA is usable, and why not.
#[utoipa::path(get, path = "/api/health", tag = "health", operation_id = "getHealth",
    responses((status = 200, description = "The server answers", body = Health)))]
pub async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        cuda: state.inventory.cuda.clone(),
    })
}

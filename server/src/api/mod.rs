//! The REST API (axum): one file per resource, the router built by [`app`].

mod devices;
pub mod error;
mod events;
mod health;
mod jobs;
mod kernels;
mod metrics;
mod telemetry;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use subtle::ConstantTimeEq;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::services::{ServeDir, ServeFile};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::devices::DeviceInventory;
use crate::jobs::JobService;
use crate::telemetry::TelemetryHub;
use error::{problem_response, ApiError};

/// The largest request body the API reads.
pub const BODY_LIMIT: usize = 1 << 20;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub inventory: Arc<DeviceInventory>,
    pub jobs: JobService,
    pub telemetry: TelemetryHub,
    /// When set, `POST` and `DELETE` need `Authorization: Bearer <token>`.
    pub token: Option<Arc<str>>,
    /// Turns true when the server begins to shut down: long-lived responses end then.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "gpulab",
        description = "See and exercise the GPUs (and the CPU) of a machine: devices, kernel \
                       catalog and jobs. Every error is `application/problem+json`."
    ),
    components(schemas(gpulab_shared::Problem, gpulab_shared::JobStatus))
)]
struct ApiDoc;

/// The API routes and the OpenAPI document generated from the same declarations, so that
/// the document cannot miss a route.
pub fn api_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::health))
        .routes(routes!(devices::list))
        .routes(routes!(devices::get))
        .routes(routes!(telemetry::get))
        .routes(routes!(events::stream))
        .routes(routes!(kernels::list))
        .routes(routes!(jobs::create, jobs::list))
        .routes(routes!(jobs::compare))
        .routes(routes!(jobs::get, jobs::cancel))
        .routes(routes!(jobs::artifact))
        .routes(routes!(metrics::metrics))
        .split_for_parts();
    doc.paths
        .paths
        .insert("/api/openapi.json".into(), openapi_path_item());
    (router, doc)
}

fn openapi_path_item() -> utoipa::openapi::PathItem {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder};
    use utoipa::openapi::ResponseBuilder;
    utoipa::openapi::PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .summary(Some("This OpenAPI 3.1 document"))
            .tag("meta")
            .response("200", ResponseBuilder::new().description("The document")),
    )
}

/// The whole application: the API under `/api`, the UI from `static_dir` for every other
/// path (with `index.html` for the UI's own routes), compressed with brotli or gzip when the
/// browser takes it: the UI's WebAssembly shrinks to a third. Where the build left a
/// compressed copy beside a file (`app.wasm.br`, `app.wasm.gz`: brotli 11 and gzip 9, made
/// by `cargo xtask ui`) that copy is sent; other files are compressed on the fly.
pub fn app(state: AppState, static_dir: Option<PathBuf>) -> Router {
    let (api, doc) = api_routes();
    let doc = Arc::new(doc);
    let api = api
        .route(
            "/api/openapi.json",
            get(move || async move { Json(doc.as_ref().clone()) }),
        )
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    let ui = match static_dir {
        Some(dir) if dir.join("index.html").is_file() => Router::new()
            .fallback_service(
                ServeDir::new(&dir)
                    .precompressed_br()
                    .precompressed_gzip()
                    .fallback(ServeFile::new(dir.join("index.html"))),
            )
            .layer(CompressionLayer::new().br(true).gzip(true)),
        _ => Router::new().fallback(ui_missing),
    };
    Router::new()
        .route("/api", get(api_not_found))
        .route("/api/{*rest}", axum::routing::any(api_not_found))
        .merge(api)
        .merge(ui)
        .layer(CatchPanicLayer::custom(|_| {
            problem_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server failed; see its log".into(),
                None,
            )
        }))
}

/// Changes need the token when one is set; reads stay open.
async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            // Constant time, so the answer's timing does not tell how much of a guess was right.
            if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
                return ApiError::Unauthorized.into_response();
            }
        }
    }
    next.run(req).await
}

async fn api_not_found(req: Request) -> ApiError {
    ApiError::NotFound(format!(
        "there is no API route {} {}",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed(req: Request) -> Response {
    problem_response(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
        None,
    )
}

async fn ui_missing() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "The gpulab UI is not built: run `cargo xtask ui` (or start with --static-dir DIR). \
         The REST API is at /api.\n",
    )
}

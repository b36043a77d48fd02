//! The REST API (axum): one file per resource, the router built by [`app`].

mod devices;
mod diagnostics;
pub mod error;
pub mod events;
mod fleet;
mod health;
mod jobs;
mod kernels;
pub mod listener;
mod metrics;
pub mod security;
mod session;
mod telemetry;
mod ui;
mod usage;
mod users;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;
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
    /// The token, whether reads need it too, and the `Host` names answered.
    pub access: Arc<security::Access>,
    /// Turns true when the server begins to shut down: long-lived responses end then.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// The `/api/events` streams open now, at most [`events::MAX_CLIENTS`].
    pub event_clients: events::EventClients,
    /// Where `GET /api/fleet` reads the fleet; `None` without `--prometheus-url`.
    pub fleet: Option<Arc<crate::fleet::FleetReader>>,
    /// Accounts, sessions and the authentication layer of lab mode.
    pub lab: crate::lab::Lab,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "gpulab",
        description = "See and exercise the GPUs (and the CPU) of a machine: devices, kernel \
                       catalog, jobs and diagnostics. Every error is `application/problem+json`."
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
        .routes(routes!(devices::roofline))
        .routes(routes!(telemetry::get))
        .routes(routes!(events::stream))
        .routes(routes!(kernels::list))
        .routes(routes!(jobs::create, jobs::list))
        .routes(routes!(jobs::compare))
        .routes(routes!(jobs::get, jobs::cancel))
        .routes(routes!(jobs::artifact))
        .routes(routes!(diagnostics::create, diagnostics::list))
        .routes(routes!(diagnostics::get, diagnostics::cancel))
        .routes(routes!(metrics::metrics))
        .routes(routes!(fleet::get))
        .routes(routes!(usage::get))
        .routes(routes!(jobs::share, jobs::unshare))
        .routes(routes!(session::get, session::sign_in, session::sign_out))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::change))
        .routes(routes!(users::rotate))
        .routes(routes!(users::audit))
        .split_for_parts();
    doc.paths
        .paths
        .insert("/api/openapi.json".into(), openapi_path_item());
    document_guard_answers(&mut doc);
    (router, doc)
}

/// Adds what the guards in front of every route may answer ([`security`]) to each
/// operation that does not list it yet: 403 for a `Host` the server does not answer to,
/// and 401 without the token, except on the reads that stay open.
fn document_guard_answers(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
    let problem = |description: &str| -> RefOr<Response> {
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build();
        ResponseBuilder::new()
            .description(description)
            .content(error::PROBLEM_JSON, content)
            .build()
            .into()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let open = security::OPEN_READS.contains(&path.as_str());
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            let responses = &mut operation.responses.responses;
            if !open {
                responses.entry("401".into()).or_insert_with(|| {
                    problem(
                        "A token is set and missing or wrong (for a read: the server protects \
                         reads, `--protect-reads`); in lab mode: no user signed in, or a wrong \
                         or rotated key, an ended session, a disabled account",
                    )
                });
            }
            responses.entry("403".into()).or_insert_with(|| {
                problem(
                    "The `Host` is not a name this server answers to; in lab mode also: a \
                         change made with the session cookie without its `X-CSRF-Token`",
                )
            });
        }
    }
}

fn openapi_path_item() -> utoipa::openapi::PathItem {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder};
    use utoipa::openapi::ResponseBuilder;
    utoipa::openapi::PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .summary(Some("This OpenAPI 3.1 document"))
            .operation_id(Some("getOpenApi"))
            .tag("meta")
            .response(
                "200",
                ResponseBuilder::new()
                    .description("The document")
                    .content("application/json", Default::default()),
            ),
    )
}

/// The document as served. utoipa 5.5 writes a link's fields in snake case
/// (`operation_id`); OpenAPI names them in camel case, and clients such as Schemathesis
/// ignore a link without `operationId`.
fn openapi_json(doc: &utoipa::openapi::OpenApi) -> serde_json::Value {
    let mut json = serde_json::to_value(doc).expect("the OpenAPI document serializes");
    // `get_mut`, not indexing: indexing a missing key of a mutable `Value` inserts a null.
    let paths = json
        .get_mut("paths")
        .and_then(|paths| paths.as_object_mut());
    let operations = paths.into_iter().flat_map(|paths| {
        paths
            .values_mut()
            .filter_map(|item| item.as_object_mut())
            .flat_map(|item| item.values_mut())
    });
    for operation in operations {
        let Some(responses) = operation
            .get_mut("responses")
            .and_then(|responses| responses.as_object_mut())
        else {
            continue;
        };
        for response in responses.values_mut() {
            let Some(links) = response
                .get_mut("links")
                .and_then(|links| links.as_object_mut())
            else {
                continue;
            };
            for link in links.values_mut().filter_map(|link| link.as_object_mut()) {
                for (snake, camel) in [
                    ("operation_id", "operationId"),
                    ("operation_ref", "operationRef"),
                    ("request_body", "requestBody"),
                ] {
                    if let Some(value) = link.remove(snake) {
                        link.insert(camel.into(), value);
                    }
                }
            }
        }
    }
    json
}

/// The whole application: the API under `/api`, the UI from `static_dir` for every other
/// path (with `index.html` for the UI's own routes; a missing file is a 404), compressed
/// with brotli or gzip when the browser takes it: the UI's WebAssembly shrinks to a third.
/// Where the build left a compressed copy beside a file (`app.wasm.br`, `app.wasm.gz`:
/// brotli 11 and gzip 9, made by `cargo xtask ui`) that copy is sent; other files are
/// compressed on the fly. Every answer goes through the `Host` check and carries the
/// security headers ([`security`]).
pub fn app(state: AppState, static_dir: Option<PathBuf>) -> Router {
    let access = state.access.clone();
    let lab = state.lab.clone();
    let headers = Arc::new(security::ResponseHeaders::for_ui(static_dir.as_deref()));
    let (api, doc) = api_routes();
    let doc = Arc::new(openapi_json(&doc));
    let api = if state.jobs.test_faults() {
        api.merge(crate::lab::testing::routes())
    } else {
        api
    };
    let api = api
        .route(
            "/api/openapi.json",
            get(move || async move { Json(doc.as_ref().clone()) }),
        )
        .layer(middleware::from_fn_with_state(
            lab,
            crate::lab::auth::authenticate,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state);
    let ui = match static_dir {
        Some(dir) if dir.join("index.html").is_file() => {
            let index = Arc::new(ui::UiIndex::new(&dir));
            let page = {
                let index = index.clone();
                get(move |headers: axum::http::HeaderMap| async move { index.respond(&headers) })
            };
            Router::new()
                .route("/", page.clone())
                .route("/index.html", page)
                .fallback_service(
                    ServeDir::new(&dir)
                        .precompressed_br()
                        .precompressed_gzip()
                        .fallback(ui_page(index)),
                )
                .layer(CompressionLayer::new().br(true).gzip(true))
        }
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
        .layer(middleware::from_fn_with_state(
            headers,
            security::add_headers,
        ))
        .layer(middleware::from_fn_with_state(access, security::check_host))
}

/// What the UI answers for a path that is no file of its folder: a path that names a file
/// (`/missing.js`) is a 404, so that a stale page's asset fails plainly instead of being
/// parsed as HTML; any other path is one of the UI's pages, which `index.html` routes.
fn ui_page(index: Arc<ui::UiIndex>) -> axum::routing::MethodRouter {
    axum::routing::get(move |req: Request| async move {
        if security::names_a_file(req.uri().path()) {
            return problem_response(
                StatusCode::NOT_FOUND,
                format!("{} is not a file of the gpulab UI", req.uri().path()),
                None,
            );
        }
        index.respond(req.headers())
    })
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

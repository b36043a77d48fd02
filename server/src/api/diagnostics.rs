//! `/api/diagnostics`: start, list, read and cancel diagnostics.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gpulab_shared::diag::{Diagnostic, DiagnosticPage, DiagnosticRequest};
use gpulab_shared::Problem;
use serde::Deserialize;

use super::error::{ApiError, ApiJson};
use super::jobs::page;
use super::AppState;
use crate::jobs::DiagnosticCancel;
use crate::lab::Caller;
use crate::store::diagnostics::DiagnosticFilter;

const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

/// Starts a diagnostic on one device, or on `all` (every CUDA device at once; the CPU on a
/// host without one). Each device's part waits in the device's queue like a job, and jobs
/// queued after it wait for it. Answers with every check `waiting`.
#[utoipa::path(post, path = "/api/diagnostics", tag = "diagnostics", operation_id = "createDiagnostic",
    request_body(content = DiagnosticRequest, example = json!({"level": 1, "device": "cpu"})),
    responses(
        (status = 202, description = "Queued; `Location` names the diagnostic", body = Diagnostic,
            headers(("Location" = String, description = "`/api/diagnostics/{id}` of the new diagnostic")),
            links(
                ("GetDiagnostic" = (operation_id = "getDiagnostic", parameters(("id" = "$response.body#/id")))),
                ("CancelDiagnostic" = (operation_id = "cancelDiagnostic", parameters(("id" = "$response.body#/id")))))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "A token is set and missing or wrong", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown device", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as `Content-Type: application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad level or `duration_s`, an unknown field, or `inject` on a server without test faults", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "A device's queue is full; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "The disk of the history is full", body = Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<DiagnosticRequest>,
) -> Result<Response, ApiError> {
    let diagnostic = state.jobs.submit_diagnostic(req, &caller).await?;
    let location = HeaderValue::try_from(format!("/api/diagnostics/{}", diagnostic.id))
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(diagnostic),
    )
        .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only diagnostics that ran on this device (alone or among `all`).
    device: Option<String>,
    /// Diagnostics per page, 1 to 100 (default 20).
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Diagnostics, newest first, a page at a time.
#[utoipa::path(get, path = "/api/diagnostics", tag = "diagnostics", operation_id = "listDiagnostics",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of diagnostics", body = DiagnosticPage),
        (status = 400, description = "The query string cannot be read (a filter given twice)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad `limit` or `cursor`", body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<DiagnosticPage>, ApiError> {
    let Query(q) = query?;
    let (limit, before_id) = page(
        q.limit.as_deref(),
        q.cursor.as_deref(),
        DEFAULT_PAGE,
        MAX_PAGE,
    )?;
    let filter = DiagnosticFilter {
        device: q.device.filter(|d| !d.is_empty()),
        before_id,
        limit,
        owner: (!caller.is_admin()).then(|| caller.owner()).flatten(),
    };
    Ok(Json(state.jobs.list_diagnostics(filter).await?))
}

/// One diagnostic: each device's checks, live while it runs (the same JSON as the
/// `diagnostic` events), each check's verdict and evidence once done.
#[utoipa::path(get, path = "/api/diagnostics/{id}", tag = "diagnostics", operation_id = "getDiagnostic",
    params(("id" = i64, Path, description = "The diagnostic's id")),
    responses(
        (status = 200, description = "The diagnostic", body = Diagnostic),
        (status = 404, description = "No such diagnostic", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "The diagnostic's record cannot be read", body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Diagnostic>, ApiError> {
    let id = diagnostic_id(&id)?;
    Ok(Json(own_diagnostic(&state, &caller, id).await?))
}

/// The diagnostic `id` if `caller` may see it: their own, or any for an admin; another
/// user's is "no such diagnostic".
async fn own_diagnostic(
    state: &AppState,
    caller: &Caller,
    id: i64,
) -> Result<Diagnostic, ApiError> {
    match state.jobs.get_diagnostic(id).await? {
        Some(d) if caller.may_see(d.owner.as_deref()) => Ok(d),
        _ => Err(no_diagnostic(id)),
    }
}

/// Cancels a diagnostic: queued parts leave their queues, running ones have their workers
/// killed and replaced.
#[utoipa::path(delete, path = "/api/diagnostics/{id}", tag = "diagnostics", operation_id = "cancelDiagnostic",
    params(("id" = i64, Path, description = "The diagnostic's id")),
    responses(
        (status = 200, description = "The diagnostic, now cancelled", body = Diagnostic),
        (status = 401, description = "A token is set and missing or wrong", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such diagnostic", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The diagnostic has already ended", body = Problem, content_type = "application/problem+json")))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Diagnostic>, ApiError> {
    let id = diagnostic_id(&id)?;
    let owner = own_diagnostic(&state, &caller, id).await?.owner;
    match state.jobs.cancel_diagnostic(id).await? {
        DiagnosticCancel::Cancelled(d) => {
            if caller.user.is_some() && owner != caller.user {
                let actor = caller.user.clone();
                state
                    .lab
                    .blocking(move |s| {
                        let detail = owner.map(|o| format!("owner {o}"));
                        s.audit(
                            actor.as_deref(),
                            "diagnostic_cancelled",
                            &format!("diagnostic {id}"),
                            detail.as_deref(),
                        )
                    })
                    .await?;
            }
            Ok(Json(d))
        }
        DiagnosticCancel::AlreadyFinished(d) => Err(ApiError::Conflict(format!(
            "diagnostic {id} has already ended ({}); there is nothing to cancel",
            crate::store::diagnostics::status_str(d.status)
        ))),
        DiagnosticCancel::NotFound => Err(no_diagnostic(id)),
    }
}

fn diagnostic_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::NotFound(format!(
            "there is no diagnostic `{raw}`: diagnostic ids are numbers"
        ))
    })
}

fn no_diagnostic(id: i64) -> ApiError {
    ApiError::NotFound(format!("there is no diagnostic {id}"))
}

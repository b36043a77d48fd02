//! `/api/jobs`: submit, list, read, cancel, and the artifact of a job.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use gpulab_shared::{Job, JobComparison, JobGroup, JobPage, JobRequest, JobStatus, Problem};
use serde::Deserialize;

use super::error::{ApiError, ApiJson};
use super::AppState;
use crate::jobs::CancelOutcome;
use crate::lab::Caller;
use crate::store::JobFilter;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;
/// Distinct jobs one comparison may read.
const MAX_COMPARED: usize = 64;

/// Queues a job. Only `kernel` and `device` are required. `kernel: "custom"` runs CUDA C
/// (see the README); `device: "all"` queues the job on every CUDA device and answers a
/// [`JobGroup`] whose `compare` link gives each device's figure.
#[utoipa::path(post, path = "/api/jobs", tag = "jobs", operation_id = "createJob",
    request_body(content = JobRequest, example = json!({
        "kernel": "vector_add", "device": "cpu", "params": {"n": 1024}, "repetitions": 1})),
    responses(
        (status = 202, description = "Queued; `Location` names the job. With `device: \"all\"`, a JobGroup", body = Submitted,
            headers(("Location" = String, description = "`/api/jobs/{id}` of the new job (not sent for a JobGroup)")),
            links(
                ("GetJob" = (operation_id = "getJob", parameters(("id" = "$response.body#/id")))),
                ("CancelJob" = (operation_id = "cancelJob", parameters(("id" = "$response.body#/id")))))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "A token is set and missing or wrong", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown device", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as `Content-Type: application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown kernel, bad parameter, wrong device kind or too big, or a lab user's timeout over --user-max-timeout-s", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The device's queue is full, a lab user has --user-max-queued jobs queued, or the job would pass the user's quota (then `remaining_seconds` and `renews_at` say what is left and when it renews); see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "The disk of the job history is full", body = Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<JobRequest>,
) -> Result<Response, ApiError> {
    if req.device == ALL_DEVICES {
        let jobs = state.jobs.submit_all(req, &caller).await?;
        let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
        let group = JobGroup {
            compare: format!("/api/jobs/compare?ids={}", ids.join(",")),
            jobs,
        };
        return Ok((StatusCode::ACCEPTED, Json(group)).into_response());
    }
    let job = state.jobs.submit(req, &caller).await?;
    let location = HeaderValue::try_from(format!("/api/jobs/{}", job.id))
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(job),
    )
        .into_response())
}

/// The `device` that means every CUDA device.
pub const ALL_DEVICES: &str = "all";

/// What `POST /api/jobs` answers: one job, or a group for `device: "all"`.
/// Untagged: the body is the job (or the group) itself, with no wrapper object.
#[derive(utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Only its schema is used: the handler answers either type itself.
pub enum Submitted {
    Job(Box<Job>),
    Group(JobGroup),
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CompareQuery {
    /// Job ids, separated by commas (at most 64 distinct; a repeated id is listed once).
    ids: String,
}

/// The same job's figure on several devices: each job's throughput, how much slower than
/// the best it is, and a flag on any more than 10 % slower.
#[utoipa::path(get, path = "/api/jobs/compare", tag = "jobs", operation_id = "compareJobs",
    params(CompareQuery),
    responses(
        (status = 200, description = "The comparison", body = JobComparison),
        (status = 400, description = "The query string cannot be read (`ids` missing or given twice)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "An id names no job", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The ids are not a list of job ids", body = Problem, content_type = "application/problem+json")))]
pub async fn compare(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<CompareQuery>, QueryRejection>,
) -> Result<Json<JobComparison>, ApiError> {
    let Query(q) = query?;
    let ids = q
        .ids
        .split(',')
        .map(|id| id.trim().parse::<i64>())
        .collect::<Result<Vec<i64>, _>>()
        .ok()
        // A repeated id is one entry: each id costs a read of its whole job.
        .map(distinct)
        .filter(|ids| (1..=MAX_COMPARED).contains(&ids.len()))
        .ok_or_else(|| ApiError::Unprocessable {
            field: Some("ids".into()),
            detail: format!(
                "`ids` must be 1 to {MAX_COMPARED} distinct job ids separated by commas, got {:?}",
                q.ids
            ),
        })?;
    let mut jobs = Vec::with_capacity(ids.len());
    for id in ids {
        jobs.push(readable_job(&state, &caller, id).await?);
    }
    Ok(Json(crate::jobs::compare::compare(&jobs)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this status.
    status: Option<String>,
    /// Only jobs on this device.
    device: Option<String>,
    /// Only jobs of this kernel.
    kernel: Option<String>,
    /// Jobs per page, 1 to 500 (default 50).
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Jobs, newest first, a page at a time.
#[utoipa::path(get, path = "/api/jobs", tag = "jobs", operation_id = "listJobs", params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = JobPage),
        (status = 400, description = "The query string cannot be read (a filter given twice)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A bad filter", body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let Query(q) = query?;
    let status = q
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            JobStatus::parse(s).ok_or_else(|| {
                let all: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::invalid(
                    "status",
                    format!("unknown status `{s}`; use one of {}", all.join(", ")),
                )
            })
        })
        .transpose()?;
    let (limit, before_id) = page(
        q.limit.as_deref(),
        q.cursor.as_deref(),
        DEFAULT_PAGE,
        MAX_PAGE,
    )?;
    let filter = JobFilter {
        status,
        device: q.device.filter(|d| !d.is_empty()),
        kernel: q.kernel.filter(|k| !k.is_empty()),
        before_id,
        limit,
        owner: (!caller.is_admin()).then(|| caller.owner()).flatten(),
    };
    Ok(Json(state.jobs.list(filter).await?))
}

/// One job, with its progress while it runs and its result once it has finished.
#[utoipa::path(get, path = "/api/jobs/{id}", tag = "jobs", operation_id = "getJob",
    params(("id" = i64, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "The job's record cannot be read; `detail` says why", body = Problem, content_type = "application/problem+json")))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let id = job_id(&id)?;
    Ok(Json(readable_job(&state, &caller, id).await?))
}

/// Cancels a queued job, or stops a running one (its worker is killed and replaced).
#[utoipa::path(delete, path = "/api/jobs/{id}", tag = "jobs", operation_id = "cancelJob",
    params(("id" = i64, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job, now cancelled", body = Job),
        (status = 401, description = "A token is set and missing or wrong", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has already finished", body = Problem, content_type = "application/problem+json")))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let id = job_id(&id)?;
    let job = own_job(&state, &caller, id).await?;
    match state.jobs.cancel(id).await? {
        CancelOutcome::Cancelled(cancelled) => {
            if caller.user.is_some() && job.owner != caller.user {
                let (actor, owner) = (caller.user.clone(), job.owner.clone());
                state
                    .lab
                    .blocking(move |s| {
                        let detail = owner.map(|o| format!("owner {o}"));
                        s.audit(
                            actor.as_deref(),
                            "job_cancelled",
                            &format!("job {id}"),
                            detail.as_deref(),
                        )
                    })
                    .await?;
            }
            Ok(Json(cancelled))
        }
        CancelOutcome::AlreadyFinished(job) => Err(ApiError::Conflict(format!(
            "job {id} has already finished ({}); there is nothing to cancel",
            job.status.as_str()
        ))),
        CancelOutcome::NotFound => Err(no_job(id)),
    }
}

/// The image a job made (the Mandelbrot set's PNG).
#[utoipa::path(get, path = "/api/jobs/{id}/artifact", tag = "jobs", operation_id = "getJobArtifact",
    params(("id" = i64, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The image", content_type = "image/png"),
        (status = 404, description = "No such job, or it made no image", body = Problem, content_type = "application/problem+json")))]
pub async fn artifact(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = job_id(&id)?;
    readable_job(&state, &caller, id).await?;
    match state.jobs.artifact(id).await? {
        Some(a) => Ok(([(header::CONTENT_TYPE, a.content_type)], a.bytes).into_response()),
        None => Err(ApiError::NotFound(format!("job {id} has no artifact"))),
    }
}

/// Shares the job by its link: any signed-in user may then read it, its result, its
/// artifact and (for a `custom` job) its source. Only its owner (or an admin) may.
#[utoipa::path(post, path = "/api/jobs/{id}/share", tag = "jobs", operation_id = "shareJob",
    params(("id" = i64, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job, now shared: `/api/jobs/{id}` is readable by every signed-in user", body = Job),
        (status = 404, description = "No such job (or another user's)", body = Problem, content_type = "application/problem+json")))]
pub async fn share(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    set_shared(state, caller, id, true).await
}

/// Takes a share back: the job is its owner's (and the admins') alone again.
#[utoipa::path(delete, path = "/api/jobs/{id}/share", tag = "jobs", operation_id = "unshareJob",
    params(("id" = i64, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job, no longer shared", body = Job),
        (status = 404, description = "No such job (or another user's)", body = Problem, content_type = "application/problem+json")))]
pub async fn unshare(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    set_shared(state, caller, id, false).await
}

async fn set_shared(
    state: AppState,
    caller: Caller,
    id: String,
    shared: bool,
) -> Result<Json<Job>, ApiError> {
    let id = job_id(&id)?;
    let job = own_job(&state, &caller, id).await?;
    state
        .lab
        .blocking(move |s| s.set_shared(id, shared))
        .await?;
    Ok(Json(job))
}

/// The job `id` if `caller` may change it: their own, or any for an admin. Another user's
/// job is "no such job", so that a user cannot tell which ids exist.
async fn own_job(state: &AppState, caller: &Caller, id: i64) -> Result<Job, ApiError> {
    match state.jobs.get(id).await? {
        Some(job) if caller.may_see(job.owner.as_deref()) => Ok(job),
        _ => Err(no_job(id)),
    }
}

/// The job `id` if `caller` may read it: as [`own_job`], or one its owner shared.
async fn readable_job(state: &AppState, caller: &Caller, id: i64) -> Result<Job, ApiError> {
    match state.jobs.get(id).await? {
        Some(job) if caller.may_see(job.owner.as_deref()) => Ok(job),
        Some(job) if state.lab.blocking(move |s| s.is_shared(id)).await? => Ok(job),
        _ => Err(no_job(id)),
    }
}

/// The ids in the order first given, each once.
fn distinct(ids: Vec<i64>) -> Vec<i64> {
    let mut seen = std::collections::HashSet::new();
    ids.into_iter().filter(|id| seen.insert(*id)).collect()
}

/// A list's `limit` (from 1 to `max`, `default` when absent) and `cursor` (the id to list
/// before: a previous page's `next_cursor`), each refused with the reason.
pub(super) fn page(
    limit: Option<&str>,
    cursor: Option<&str>,
    default: u32,
    max: u32,
) -> Result<(u32, Option<i64>), ApiError> {
    let limit = match limit {
        None | Some("") => default,
        Some(l) => l
            .parse()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    format!("`limit` must be from 1 to {max}, got `{l}`"),
                )
            })?,
    };
    let before_id = match cursor {
        None | Some("") => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| {
            ApiError::invalid(
                "cursor",
                format!("`cursor` must be a `next_cursor` from a previous page, got `{c}`"),
            )
        })?),
    };
    Ok((limit, before_id))
}

fn job_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound(format!("there is no job `{raw}`: job ids are numbers")))
}

fn no_job(id: i64) -> ApiError {
    ApiError::NotFound(format!("there is no job {id}"))
}

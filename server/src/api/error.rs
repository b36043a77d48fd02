//! The API's one error type: every failure is answered as `application/problem+json`.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use gpulab_shared::Problem;
use serde::de::DeserializeOwned;

use crate::jobs::{RequestError, SubmitError};
use crate::store::UnreadableJob;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error the API answers with, its status decided by what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// The token is missing or wrong; `read`: the request only reads, on a server that
    /// protects reads too.
    #[error("authentication required")]
    Unauthorized { read: bool },
    /// Lab mode: no user's credential, or one refused; the words say which.
    #[error("{0}")]
    SignIn(String),
    /// The caller is known but may not do this (not an admin; no CSRF header).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{detail}")]
    Unprocessable {
        field: Option<String>,
        detail: String,
    },
    /// A field over a size limit the server states.
    #[error("{detail}")]
    FieldTooLarge { field: String, detail: String },
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after_s: u32 },
    /// A job that would pass its owner's quota: 429 with what is left and when it renews.
    #[error(transparent)]
    Quota(crate::lab::quota::QuotaExceeded),
    /// The disk (of the job history) is full.
    #[error("{0}")]
    InsufficientStorage(String),
    /// A server this one asks (Prometheus, for the fleet) failed or could not be reached.
    #[error("{0}")]
    BadGateway(String),
    /// A failure of the server itself: logged with its causes, answered without them.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
    /// A rejection from an axum extractor, with the status it chose.
    #[error("{detail}")]
    Rejected { status: StatusCode, detail: String },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::SignIn(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::FieldTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests { .. } | ApiError::Quota(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Rejected { status, .. } => *status,
        }
    }

    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        ApiError::Unprocessable {
            field: Some(field.into()),
            detail: detail.into(),
        }
    }
}

/// The problem document for `status` with `detail`.
pub fn problem_response(status: StatusCode, detail: String, field: Option<String>) -> Response {
    let problem = Problem {
        type_uri: "about:blank".into(),
        title: status.canonical_reason().unwrap_or("Error").into(),
        status: status.as_u16(),
        detail,
        field,
        remaining_seconds: None,
        renews_at: None,
    };
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
        body,
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            // A row of the history that does not parse: the reader is told which and why.
            ApiError::Internal(e) if e.is::<UnreadableJob>() => {
                tracing::error!("{e:#}");
                problem_response(status, e.to_string(), None)
            }
            ApiError::Internal(e) => {
                tracing::error!("internal error: {e:#}");
                problem_response(status, "the server failed; see its log".into(), None)
            }
            ApiError::Unprocessable { field, detail } => problem_response(status, detail, field),
            ApiError::FieldTooLarge { field, detail } => {
                problem_response(status, detail, Some(field))
            }
            ApiError::Unauthorized { read } => {
                let what = if read {
                    "to read this"
                } else {
                    "to change anything"
                };
                let mut r = problem_response(
                    status,
                    format!(
                        "this server needs `Authorization: Bearer <token>` {what}; the token is \
                         in the server's log when the server made it, else ask who started it"
                    ),
                    None,
                );
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
            ApiError::SignIn(detail) => {
                let mut r = problem_response(status, detail, None);
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
            ApiError::TooManyRequests {
                detail,
                retry_after_s,
            } => {
                let mut r = problem_response(status, detail, None);
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
                r
            }
            ApiError::Quota(q) => {
                let problem = Problem {
                    type_uri: "about:blank".into(),
                    title: "Quota exceeded".into(),
                    status: status.as_u16(),
                    detail: q.to_string(),
                    field: Some("timeout_s".into()),
                    remaining_seconds: Some(q.remaining_s),
                    renews_at: Some(q.renews_at),
                };
                let body = serde_json::to_vec(&problem).unwrap_or_default();
                (
                    status,
                    [
                        (header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)),
                        (header::RETRY_AFTER, HeaderValue::from(q.retry_after_s)),
                    ],
                    body,
                )
                    .into_response()
            }
            other => problem_response(status, other.to_string(), None),
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::UnknownDevice(detail) => ApiError::NotFound(detail),
            RequestError::Invalid { field, detail } => ApiError::Unprocessable {
                field: Some(field),
                detail,
            },
            RequestError::TooLarge { field, detail } => ApiError::FieldTooLarge { field, detail },
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Request(r) => r.into(),
            full @ SubmitError::QueueFull { .. } => ApiError::TooManyRequests {
                detail: full.to_string(),
                retry_after_s: 1,
            },
            full @ SubmitError::DiskFull => ApiError::InsufficientStorage(full.to_string()),
            SubmitError::UserLimit(detail) => ApiError::TooManyRequests {
                detail,
                retry_after_s: 5,
            },
            SubmitError::Quota(q) => ApiError::Quota(q),
            SubmitError::Internal(e) => ApiError::Internal(e),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let detail = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than 1 MiB".to_string(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                "send the body as JSON with `Content-Type: application/json`".to_string()
            }
            _ => r.body_text(),
        };
        ApiError::Rejected { status, detail }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(r.body_text())
    }
}

/// `axum::Json`, but a body it cannot read is answered as a problem document.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}

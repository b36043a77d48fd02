//! The only place that talks HTTP: one function per REST call of the gpulab server.
//!
//! The API is served from the same origin as the UI, so every URL is a path. Error answers
//! are `application/problem+json` documents, handed to the caller as [`ApiError::Problem`] so
//! the UI can show `detail` beside the form field that `field` names. Every change (POST,
//! DELETE) carries the API token the user set, for a server started with `--token`; in lab
//! mode, the session's CSRF token instead (the session cookie goes by itself).

use std::fmt;

use gloo_net::http::{Request, RequestBuilder, Response};
use gpulab_shared::diag::{Diagnostic, DiagnosticPage, DiagnosticRequest};
use gpulab_shared::{
    Device, DeviceTelemetry, Health, Job, JobPage, JobRequest, JobStatus, KernelSpec, Problem,
};
use serde::de::DeserializeOwned;

use crate::{session, token};

// The calls of lab mode (accounts, sessions, usage, audit) live in their own file.
mod lab;
pub use lab::*;

/// Why an API call gave no answer the UI can use.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// The server answered with an error status.
    Problem(Problem),
    /// No answer came back, or the answer was not what the API promises.
    Transport(String),
}

impl ApiError {
    /// The problem document, when the server sent one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ApiError::Problem(problem) => Some(problem),
            ApiError::Transport(_) => None,
        }
    }

    /// Whether the server refused the change for want of the right API token (401).
    pub fn is_unauthorized(&self) -> bool {
        self.problem().is_some_and(|p| p.status == 401)
    }
}

/// What to do about a 401, after the server's own words.
pub const UNAUTHORIZED_HINT: &str =
    "Enter the server's API token under “API token” at the top of the page, then try again.";

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Problem(p) if self.is_unauthorized() => {
                write!(f, "{}: {}. {UNAUTHORIZED_HINT}", p.title, p.detail)
            }
            ApiError::Problem(p) => write!(f, "{}: {}", p.title, p.detail),
            ApiError::Transport(message) => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for ApiError {}

impl From<gloo_net::Error> for ApiError {
    fn from(err: gloo_net::Error) -> Self {
        ApiError::Transport(format!("could not reach the gpulab server: {err}"))
    }
}

/// What every call answers.
pub type ApiResult<T> = Result<T, ApiError>;

/// Which jobs `GET /api/jobs` lists; `None` means any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    pub status: Option<JobStatus>,
    pub device: Option<String>,
    pub kernel: Option<String>,
}

impl JobFilter {
    /// Whether `job` belongs in the list this filter asks for, as the server would decide.
    pub fn matches(&self, job: &Job) -> bool {
        self.status.is_none_or(|status| status == job.status)
            && self
                .device
                .as_ref()
                .is_none_or(|device| *device == job.device)
            && self
                .kernel
                .as_ref()
                .is_none_or(|kernel| *kernel == job.kernel)
    }
}

/// `GET /api/health`.
pub async fn health() -> ApiResult<Health> {
    read_json(get("/api/health").send().await?).await
}

/// `GET /api/devices`.
pub async fn devices() -> ApiResult<Vec<Device>> {
    read_json(get("/api/devices").send().await?).await
}

/// `GET /api/devices?format=text`: the plain-text summary, one device per line.
pub async fn devices_text() -> ApiResult<String> {
    let response = get("/api/devices")
        .query([("format", "text")])
        .send()
        .await?;
    if !response.ok() {
        return Err(read_problem(response).await);
    }
    Ok(response.text().await?)
}

/// `GET /api/devices/{id}/telemetry`: the latest sample of a device and its recent history.
pub async fn device_telemetry(id: &str) -> ApiResult<DeviceTelemetry> {
    let id = String::from(js_sys::encode_uri_component(id));
    read_json(get(&format!("/api/devices/{id}/telemetry")).send().await?).await
}

/// `GET /api/devices/{id}`: one device, with its peaks.
pub async fn device(id: &str) -> ApiResult<Device> {
    let id = String::from(js_sys::encode_uri_component(id));
    read_json(get(&format!("/api/devices/{id}")).send().await?).await
}

/// `GET /api/devices/{id}/roofline`: the device's roofline and its finished jobs on it.
pub async fn device_roofline(id: &str) -> ApiResult<gpulab_shared::peaks::Roofline> {
    let id = String::from(js_sys::encode_uri_component(id));
    read_json(get(&format!("/api/devices/{id}/roofline")).send().await?).await
}

/// `GET /api/fleet`: the nodes the server's Prometheus scrapes, or how to give it one.
pub async fn fleet() -> ApiResult<gpulab_shared::fleet::Fleet> {
    read_json(get("/api/fleet").send().await?).await
}

/// `GET /api/kernels`.
pub async fn kernels() -> ApiResult<Vec<KernelSpec>> {
    read_json(get("/api/kernels").send().await?).await
}

/// `POST /api/jobs`: queues a job and answers it as it was accepted.
pub async fn create_job(request: JobRequest) -> ApiResult<Job> {
    read_json(
        authorized(Request::post("/api/jobs"))
            .json(&request)?
            .send()
            .await?,
    )
    .await
}

/// `GET /api/jobs`: one page of jobs, newest first, starting after `cursor`.
pub async fn jobs(filter: JobFilter, cursor: Option<String>, limit: u32) -> ApiResult<JobPage> {
    let mut query = vec![("limit", limit.to_string())];
    if let Some(status) = filter.status {
        query.push(("status", status.as_str().to_owned()));
    }
    if let Some(device) = filter.device {
        query.push(("device", device));
    }
    if let Some(kernel) = filter.kernel {
        query.push(("kernel", kernel));
    }
    if let Some(cursor) = cursor {
        query.push(("cursor", cursor));
    }
    read_json(get("/api/jobs").query(query).send().await?).await
}

/// `GET /api/jobs/{id}`.
pub async fn job(id: i64) -> ApiResult<Job> {
    read_json(get(&format!("/api/jobs/{id}")).send().await?).await
}

/// `DELETE /api/jobs/{id}`: cancels a queued or running job.
pub async fn cancel_job(id: i64) -> ApiResult<Job> {
    read_json(
        authorized(Request::delete(&format!("/api/jobs/{id}")))
            .send()
            .await?,
    )
    .await
}

/// `POST /api/diagnostics`: queues a diagnostic and answers it as it was accepted.
pub async fn create_diagnostic(request: DiagnosticRequest) -> ApiResult<Diagnostic> {
    read_json(
        authorized(Request::post("/api/diagnostics"))
            .json(&request)?
            .send()
            .await?,
    )
    .await
}

/// `GET /api/diagnostics/{id}`.
pub async fn diagnostic(id: i64) -> ApiResult<Diagnostic> {
    read_json(get(&format!("/api/diagnostics/{id}")).send().await?).await
}

/// `GET /api/diagnostics?device=`: one page of a device's diagnostics, newest first,
/// starting after `cursor`.
pub async fn diagnostics(device: String, cursor: Option<String>) -> ApiResult<DiagnosticPage> {
    let mut query = vec![("device", device)];
    if let Some(cursor) = cursor {
        query.push(("cursor", cursor));
    }
    read_json(get("/api/diagnostics").query(query).send().await?).await
}

/// `DELETE /api/diagnostics/{id}`: cancels a queued or running diagnostic.
pub async fn cancel_diagnostic(id: i64) -> ApiResult<Diagnostic> {
    read_json(
        authorized(Request::delete(&format!("/api/diagnostics/{id}")))
            .send()
            .await?,
    )
    .await
}

/// A `GET` of `url` with the user's API token, for a server that protects reads.
fn get(url: &str) -> RequestBuilder {
    authorized(Request::get(url))
}

/// `request` with the user's credentials: in lab mode the session's CSRF token (the cookie
/// goes by itself), else the user's API token, when one is set.
fn authorized(request: RequestBuilder) -> RequestBuilder {
    if let Some(csrf) = session::csrf_token() {
        return request.header(gpulab_shared::lab::CSRF_HEADER, &csrf);
    }
    match token::current() {
        Some(token) => request.header("Authorization", &bearer(&token)),
        None => request,
    }
}

/// The value of the `Authorization` header that carries `token`.
fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Where the image a job produced (the Mandelbrot set) is served.
pub fn artifact_url(id: i64) -> String {
    format!("/api/jobs/{id}/artifact")
}

/// The shell command that makes the `POST /api/jobs` call `request` with curl, against the
/// server at `origin` (such as `http://127.0.0.1:8080`), with the API token when one is set.
pub fn curl_create_job(origin: &str, request: &JobRequest, token: Option<&str>) -> String {
    // JobRequest always serializes.
    let body = serde_json::to_string(request).unwrap_or_default();
    let authorization = token
        .map(|token| {
            format!(
                " -H {}",
                shell_quote(&format!("Authorization: {}", bearer(token)))
            )
        })
        .unwrap_or_default();
    format!(
        "curl -X POST {}{authorization} -H 'content-type: application/json' -d {}",
        shell_word(&format!("{origin}/api/jobs")),
        shell_quote(&body)
    )
}

/// `text` as one word of a POSIX shell, left bare when no character in it is special.
fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_owned()
    } else {
        shell_quote(text)
    }
}

/// `text` in single quotes, in which a shell expands nothing; a `'` inside ends the quotes,
/// adds an escaped `'` and opens them again.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

async fn read_json<T: DeserializeOwned>(response: Response) -> ApiResult<T> {
    if !response.ok() {
        return Err(read_problem(response).await);
    }
    response.json().await.map_err(|err| {
        ApiError::Transport(format!(
            "the answer of {} was not what the API promises: {err}",
            response.url()
        ))
    })
}

/// The problem document of an error answer; a proxy or a crash may answer without one.
async fn read_problem(response: Response) -> ApiError {
    let status = response.status();
    if status == 401 {
        session::server_refused();
    }
    match response.json::<Problem>().await {
        Ok(problem) => ApiError::Problem(problem),
        Err(_) => ApiError::Problem(Problem {
            type_uri: "about:blank".to_owned(),
            title: response.status_text(),
            status,
            detail: format!("the server answered {status} {}", response.status_text()),
            field: None,
            remaining_seconds: None,
            renews_at: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curl_command_posts_the_request_as_json() {
        let request = JobRequest {
            kernel: "saxpy".to_owned(),
            device: "cpu".to_owned(),
            params: Some([("n".to_owned(), serde_json::json!(3000))].into()),
            repetitions: Some(2),
            timeout_s: Some(30.0),
        };
        assert_eq!(
            curl_create_job("http://127.0.0.1:8080", &request, None),
            "curl -X POST http://127.0.0.1:8080/api/jobs -H 'content-type: application/json' \
             -d '{\"kernel\":\"saxpy\",\"device\":\"cpu\",\"params\":{\"n\":3000},\
             \"repetitions\":2,\"timeout_s\":30.0}'"
        );
    }

    #[test]
    fn the_curl_command_carries_the_token_quoted_for_the_shell() {
        let request = JobRequest {
            kernel: "pi".to_owned(),
            device: "cpu".to_owned(),
            params: None,
            repetitions: None,
            timeout_s: None,
        };
        assert!(
            curl_create_job("http://gpu-box:8080", &request, Some("s3cret")).starts_with(
                "curl -X POST http://gpu-box:8080/api/jobs -H 'Authorization: Bearer s3cret' \
                 -H 'content-type: application/json' -d '{\"kernel\":\"pi\","
            )
        );
        // A token with a quote or a `$` stays literal.
        assert!(curl_create_job("http://h", &request, Some("it's $x"))
            .contains(r"-H 'Authorization: Bearer it'\''s $x' "));
    }

    #[test]
    fn a_401_is_told_apart_and_says_what_to_do() {
        let problem = |status| {
            ApiError::Problem(Problem {
                type_uri: "about:blank".to_owned(),
                title: "Unauthorized".to_owned(),
                status,
                detail: "this server needs a token".to_owned(),
                field: None,
                remaining_seconds: None,
                renews_at: None,
            })
        };
        assert!(problem(401).is_unauthorized());
        assert!(problem(401).to_string().ends_with(UNAUTHORIZED_HINT));
        assert!(!problem(403).is_unauthorized());
        assert!(!ApiError::Transport("down".to_owned()).is_unauthorized());
    }

    #[test]
    fn shell_quoting_keeps_every_character_literal() {
        assert_eq!(shell_quote("it's $HOME"), r"'it'\''s $HOME'");
        assert_eq!(
            shell_word("http://gpu-box:8080/api/jobs"),
            "http://gpu-box:8080/api/jobs"
        );
        // Brackets (an IPv6 host) are a glob to the shell.
        assert_eq!(
            shell_word("http://[::1]:8080/api/jobs"),
            "'http://[::1]:8080/api/jobs'"
        );
        assert_eq!(shell_word(""), "''");
    }
}

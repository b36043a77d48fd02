//! `/api/session`: who the browser is, sign-in with name and key (a session cookie), and
//! sign-out.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use gpulab_shared::lab::{LabMode, Session, SignIn, SESSION_COOKIE};
use gpulab_shared::Problem;

use super::error::{ApiError, ApiJson};
use super::users::with_usage;
use super::AppState;
use crate::lab::{keys, Caller, Credential};

/// How long a session lasts from sign-in.
const SESSION_DAYS: i64 = 7;

/// The mode, and the signed-in user with the session's CSRF token. Open to all: it tells
/// the UI whether to show the sign-in page.
#[utoipa::path(get, path = "/api/session", tag = "session", operation_id = "getSession",
    responses((status = 200, description = "The mode; the user and CSRF token when signed in", body = Session)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    credential: Option<Extension<Credential>>,
) -> Result<Json<Session>, ApiError> {
    let mode = state.lab.mode().await?;
    let name = caller.and_then(|Extension(c)| c.user);
    let user = match name {
        Some(name) if mode == LabMode::Lab => {
            match state.lab.blocking(move |s| s.user(&name)).await? {
                Some(row) => Some(with_usage(&state.lab, row).await?),
                None => None,
            }
        }
        _ => None,
    };
    let csrf_token = match credential {
        Some(Extension(Credential::Session { csrf_token, .. })) => Some(csrf_token),
        _ => None,
    };
    Ok(Json(Session {
        mode,
        user,
        csrf_token,
    }))
}

/// Whether the browser reached the server over TLS: a proxy in front that ended it says so
/// with `X-Forwarded-Proto: https` (or `Forwarded: proto=https`). The header is believed
/// from anyone: a client that sends it falsely only gets a cookie that its browser keeps
/// off plain HTTP, which harms nobody but itself.
fn over_tls(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("https")
        });
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split([';', ','])
                .filter_map(|pair| pair.trim().split_once('='))
                .any(|(k, v)| k.eq_ignore_ascii_case("proto") && v.trim_matches('"') == "https")
        });
    forwarded_proto || forwarded
}

fn session_cookie(value: &str, max_age_s: i64, secure: bool) -> Result<HeaderValue, ApiError> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::try_from(format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .map_err(|e| ApiError::Internal(e.into()))
}

/// Signs in with name and API key: sets the `gpulab_session` cookie (HttpOnly,
/// SameSite=Strict, Path=/, Secure behind a TLS proxy) and answers the session with its
/// CSRF token, which every change made with the cookie sends as `X-CSRF-Token`.
#[utoipa::path(post, path = "/api/session", tag = "session", operation_id = "signIn",
    request_body(content = SignIn, example = json!({"name": "ada", "key": "glk_ada_…"})),
    responses(
        (status = 200, description = "Signed in", body = Session,
            headers(("Set-Cookie" = String, description = "The session cookie"))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong name or key, or the account is disabled", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Single mode: there are no accounts", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 1 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "The body is not sent as `Content-Type: application/json`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field missing or unknown", body = Problem, content_type = "application/problem+json"),
        (status = 507, description = "The disk is full", body = Problem, content_type = "application/problem+json")))]
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    if state.lab.mode().await? == LabMode::Single {
        return Err(ApiError::Conflict(
            "this gpulab has no accounts (single mode), so there is nothing to sign in to: add \
             one with `gpulab users add NAME --admin`"
                .into(),
        ));
    }
    let given: SignIn = super::users::from_object(body)?;
    let row = state.lab.sign_in(&given.name, &given.key).await?;
    let id = keys::random_hex();
    let csrf_token = keys::random_hex();
    let expires_at = Utc::now() + chrono::Duration::days(SESSION_DAYS);
    let (id_hash, user, csrf) = (keys::sha256_hex(&id), row.name.clone(), csrf_token.clone());
    state
        .lab
        .blocking(move |s| s.insert_session(&id_hash, &user, &csrf, expires_at))
        .await
        .map_err(|e| {
            if crate::store::is_disk_full(&e) {
                ApiError::InsufficientStorage("the disk is full: no session can be kept".into())
            } else {
                ApiError::Internal(e)
            }
        })?;
    let cookie = session_cookie(&id, SESSION_DAYS * 86_400, over_tls(&headers))?;
    let user = with_usage(&state.lab, row).await?;
    Ok((
        [(header::SET_COOKIE, cookie)],
        Json(Session {
            mode: LabMode::Lab,
            user: Some(user),
            csrf_token: Some(csrf_token),
        }),
    )
        .into_response())
}

/// Signs out: the session ends on the server and the cookie is cleared.
#[utoipa::path(delete, path = "/api/session", tag = "session", operation_id = "signOut",
    responses((status = 204, description = "Signed out; the cookie is cleared",
        headers(("Set-Cookie" = String, description = "The cleared cookie")))))]
pub async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    credential: Option<Extension<Credential>>,
) -> Result<Response, ApiError> {
    if let Some(Extension(Credential::Session { id_hash, .. })) = credential {
        state
            .lab
            .blocking(move |s| s.delete_session(&id_hash))
            .await?;
    }
    let cookie = session_cookie("", 0, over_tls(&headers))?;
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_told_by_the_proxy_headers() {
        let mut headers = HeaderMap::new();
        assert!(!over_tls(&headers));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("HTTPS"));
        assert!(over_tls(&headers));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        assert!(!over_tls(&headers));
        headers.insert(
            header::FORWARDED,
            HeaderValue::from_static("for=1.2.3.4;proto=https;by=5.6.7.8"),
        );
        assert!(over_tls(&headers));
    }
}

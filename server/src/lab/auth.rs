//! The authentication layer of lab mode, in front of every API route.
//!
//! A request's credential is, in this order: `Authorization: Bearer` with the server's
//! token (the operator: an admin without a name) or a user's API key; the
//! [`SESSION_COOKIE`] of a browser that signed in; or, for reads only, the old token
//! cookie. Every request reads its user's row from SQLite (one primary-key read, a few
//! microseconds): a user disabled a moment ago, by the API or by `gpulab users disable`
//! from another process, is refused on their next request, and their open event streams
//! end within [`STREAM_RECHECK`]. Only the slow part, Argon2id, is cached: a verified key
//! is remembered by its SHA-256 together with the hash it matched, and the cache answers
//! only while that hash is still the user's, so a rotated key fails at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gpulab_shared::lab::{LabMode, CSRF_HEADER, SESSION_COOKIE};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use super::keys;
use super::Caller;
use crate::api::error::ApiError;
use crate::api::security::{self, Access, OPEN_READS};
use crate::store::users::UserRow;
use crate::store::JobStore;

/// The path of sign-in (`POST`, open), who-am-I (`GET`, open) and sign-out.
pub const SESSION_PATH: &str = "/api/session";

/// How long a verified key is believed without Argon2id again (while its hash stays).
const KEY_CACHE_TTL: Duration = Duration::from_secs(300);

/// The most verified keys remembered; beyond it the cache starts afresh.
const KEY_CACHE_MAX: usize = 4096;

/// How often an open event stream checks that its user may still read it.
pub const STREAM_RECHECK: Duration = Duration::from_millis(400);

/// How a request proved who it is; kept in its extensions beside the [`Caller`].
#[derive(Debug, Clone)]
pub enum Credential {
    /// The server's token (`--token`): the operator, an admin without a name.
    Token,
    /// A user's API key, which matched `key_hash`.
    Key { name: String, key_hash: String },
    /// A browser's session.
    Session { id_hash: String, csrf_token: String },
}

/// Why a credential was refused; the words a client is told.
#[derive(Debug)]
enum Refusal {
    BadKey,
    Disabled(String),
    SessionEnded,
}

impl Refusal {
    fn into_error(self) -> ApiError {
        ApiError::SignIn(match self {
            Refusal::BadKey => "the API key is wrong, or it was replaced by a newer one (keys \
                                are rotated with POST /api/users/{name}/key or `gpulab users \
                                rotate`)"
                .into(),
            Refusal::Disabled(name) => {
                format!("the account `{name}` is disabled: ask an admin to enable it")
            }
            Refusal::SessionEnded => "the session has ended (signed out, expired, or the \
                                      account's key was rotated): sign in again"
                .into(),
        })
    }
}

struct CachedKey {
    name: String,
    key_hash: String,
    verified: Instant,
}

struct Inner {
    store: JobStore,
    access: Arc<Access>,
    /// Verified keys by the SHA-256 of the key.
    keys: Mutex<HashMap<[u8; 32], CachedKey>>,
    /// Argon2id checks at once: each takes ~50 ms of a core and ~19 MiB.
    verifying: Semaphore,
}

/// Accounts as the server sees them: the store, the token, the cache of verified keys.
/// Cheap to clone.
#[derive(Clone)]
pub struct Lab {
    inner: Arc<Inner>,
}

impl Lab {
    pub fn new(store: JobStore, access: Arc<Access>) -> Self {
        Lab {
            inner: Arc::new(Inner {
                store,
                access,
                keys: Mutex::default(),
                verifying: Semaphore::new(2),
            }),
        }
    }

    pub fn access(&self) -> &Access {
        &self.inner.access
    }

    /// Runs `f` on the store off the async threads.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&JobStore) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| anyhow::anyhow!("a store task failed: {e}"))?
    }

    /// Lab mode once any account exists (read every time: the command line may add the
    /// first one while the server runs).
    pub async fn mode(&self) -> anyhow::Result<LabMode> {
        let any = self.blocking(|s| s.has_users()).await?;
        Ok(if any { LabMode::Lab } else { LabMode::Single })
    }

    /// The user of `key`, checked against their stored hash (or the cache).
    async fn check_key(&self, key: &str) -> anyhow::Result<Result<(UserRow, String), Refusal>> {
        let Some(name) = keys::key_user(key).map(str::to_owned) else {
            return Ok(Err(Refusal::BadKey));
        };
        let Some(found) = self.blocking(move |s| s.credentials(&name)).await? else {
            return Ok(Err(Refusal::BadKey));
        };
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let cached = {
            let cache = self.inner.keys.lock().unwrap_or_else(|p| p.into_inner());
            cache.get(&digest).is_some_and(|c| {
                c.name == found.user.name
                    && c.key_hash == found.key_hash
                    && c.verified.elapsed() < KEY_CACHE_TTL
            })
        };
        if !cached {
            let _permit = self.inner.verifying.acquire().await?;
            let (key, stored) = (key.to_owned(), found.key_hash.clone());
            let ok = tokio::task::spawn_blocking(move || keys::verify_key(&key, &stored)).await?;
            if !ok {
                return Ok(Err(Refusal::BadKey));
            }
            let mut cache = self.inner.keys.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= KEY_CACHE_MAX {
                cache.retain(|_, c| c.verified.elapsed() < KEY_CACHE_TTL);
                if cache.len() >= KEY_CACHE_MAX {
                    cache.clear();
                }
            }
            cache.insert(
                digest,
                CachedKey {
                    name: found.user.name.clone(),
                    key_hash: found.key_hash.clone(),
                    verified: Instant::now(),
                },
            );
        }
        if found.user.disabled {
            return Ok(Err(Refusal::Disabled(found.user.name)));
        }
        Ok(Ok((found.user, found.key_hash)))
    }

    /// Sign-in: the user `name` if `key` is theirs and they are enabled.
    pub async fn sign_in(&self, name: &str, key: &str) -> Result<UserRow, ApiError> {
        if keys::key_user(key) != Some(name) {
            return Err(Refusal::BadKey.into_error());
        }
        match self.check_key(key).await? {
            Ok((user, _)) => Ok(user),
            Err(refusal) => Err(refusal.into_error()),
        }
    }

    /// Who sent `headers`: `None` without any credential.
    async fn identify(
        &self,
        headers: &HeaderMap,
        read: bool,
    ) -> anyhow::Result<Result<Option<(Caller, Credential)>, Refusal>> {
        let token = self.inner.access.token.as_ref();
        if let Some(given) = security::bearer(headers) {
            if token.is_some_and(|t| t.matches(&given)) {
                return Ok(Ok(Some((Caller::anonymous(), Credential::Token))));
            }
            return Ok(self.check_key(&given).await?.map(|(user, key_hash)| {
                Some((
                    Caller::user(&user.name, user.role),
                    Credential::Key {
                        name: user.name,
                        key_hash,
                    },
                ))
            }));
        }
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            let id_hash = keys::sha256_hex(&id);
            let lookup = id_hash.clone();
            return Ok(match self.blocking(move |s| s.session(&lookup)).await? {
                Some(session) if session.user.disabled => Err(Refusal::Disabled(session.user.name)),
                Some(session) => Ok(Some((
                    Caller::user(&session.user.name, session.user.role),
                    Credential::Session {
                        id_hash,
                        csrf_token: session.csrf_token,
                    },
                ))),
                None => Err(Refusal::SessionEnded),
            });
        }
        if read {
            if let Some(given) = cookie(headers, security::TOKEN_COOKIE) {
                if token.is_some_and(|t| t.matches(&given)) {
                    return Ok(Ok(Some((Caller::anonymous(), Credential::Token))));
                }
            }
        }
        Ok(Ok(None))
    }

    /// Whether what `credential` proved still holds: the session is live, the key is still
    /// the user's, the user is not disabled. Open event streams ask this as they go.
    pub async fn still_valid(&self, credential: &Credential) -> bool {
        let answer = match credential.clone() {
            Credential::Token => return true,
            Credential::Key { name, key_hash } => {
                self.blocking(move |s| {
                    Ok(s.credentials(&name)?
                        .is_some_and(|c| !c.user.disabled && c.key_hash == key_hash))
                })
                .await
            }
            Credential::Session { id_hash, .. } => {
                self.blocking(move |s| Ok(s.session(&id_hash)?.is_some_and(|s| !s.user.disabled)))
                    .await
            }
        };
        // A failing read (the disk) does not end a stream: the next check decides.
        answer.unwrap_or(true)
    }
}

/// The value of the cookie `name`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| security::percent_decode(value))
}

/// The one authentication layer. Single mode (no accounts): the token rules as before
/// ([`security::require_token`]). Lab mode: every route but the open ones needs a user
/// (or the token); a change made with the session cookie needs the [`CSRF_HEADER`]
/// matching the session. The [`Caller`] and its [`Credential`] go into the request's
/// extensions.
pub async fn authenticate(State(lab): State<Lab>, mut req: Request, next: Next) -> Response {
    let mode = match lab.mode().await {
        Ok(mode) => mode,
        Err(e) => return ApiError::Internal(e).into_response(),
    };
    if mode == LabMode::Single {
        return security::require_token(lab.access(), req, next).await;
    }
    let method = req.method().clone();
    let read = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let path = req.uri().path();
    let open =
        OPEN_READS.contains(&path) || (path == SESSION_PATH && (read || method == Method::POST));
    let sign_in = path == SESSION_PATH && method == Method::POST;
    let identified = match lab.identify(req.headers(), read).await {
        Ok(identified) => identified,
        Err(e) => return ApiError::Internal(e).into_response(),
    };
    match identified {
        Ok(Some((caller, credential))) => {
            if let Credential::Session { csrf_token, .. } = &credential {
                let given = req
                    .headers()
                    .get(CSRF_HEADER)
                    .map(|v| v.as_bytes().ct_eq(csrf_token.as_bytes()).into());
                if !read && !sign_in && given != Some(true) {
                    return ApiError::Forbidden(format!(
                        "a change made with the session cookie needs the `{CSRF_HEADER}` \
                         header with the session's `csrf_token` (from GET /api/session)"
                    ))
                    .into_response();
                }
            }
            req.extensions_mut().insert(caller);
            req.extensions_mut().insert(credential);
            next.run(req).await
        }
        // A stale cookie does not stand in the way of signing in again.
        _ if open => next.run(req).await,
        Ok(None) => ApiError::SignIn(
            "this gpulab has accounts: send your API key as `Authorization: Bearer <key>`, or \
             sign in (POST /api/session) and send the session cookie"
                .into(),
        )
        .into_response(),
        Err(refusal) => refusal.into_error().into_response(),
    }
}

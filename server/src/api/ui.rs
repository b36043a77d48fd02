//! The UI's `index.html`: served from memory, with the Content-Security-Policy made from its
//! own inline script, both read again when the file changes on disk.
//!
//! A rebuilt UI (`cargo xtask ui` while the server runs) names new assets in a new inline
//! script; a policy made from the old file would have the browser block it, leaving a blank
//! page. Keeping the page in memory also spares every request the file system round trips.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::problem_response;
use super::security;

/// The UI's `index.html`, as last read.
pub struct UiIndex {
    path: PathBuf,
    current: RwLock<Arc<Version>>,
}

/// One reading of the file: `page` is `None` when it could not be read.
struct Version {
    stamp: Option<(SystemTime, u64)>,
    page: Option<Page>,
}

struct Page {
    html: Bytes,
    csp: HeaderValue,
    etag: HeaderValue,
}

impl UiIndex {
    pub fn new(dir: &Path) -> Self {
        let path = dir.join("index.html");
        let version = Version::read(&path);
        UiIndex {
            path,
            current: RwLock::new(Arc::new(version)),
        }
    }

    /// The page as it is on disk now: read again when its time or size changed.
    fn current(&self) -> Arc<Version> {
        // A `stat` of a local file takes microseconds: not worth a trip to the blocking pool.
        let stamp = stamp_of(&self.path);
        let known = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if stamp.is_some() && known.stamp == stamp {
            return known;
        }
        let fresh = Arc::new(Version::read(&self.path));
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        fresh
    }

    /// The answer to a request for the page: 304 where the browser's copy (`If-None-Match`)
    /// is current.
    pub fn respond(&self, request: &HeaderMap) -> Response {
        let version = self.current();
        let Some(page) = &version.page else {
            return problem_response(
                StatusCode::NOT_FOUND,
                format!(
                    "the UI's {} cannot be read: build the UI with `cargo xtask ui`",
                    self.path.display()
                ),
                None,
            );
        };
        let headers = [
            (header::CONTENT_SECURITY_POLICY, page.csp.clone()),
            (header::ETAG, page.etag.clone()),
        ];
        let fresh = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| page.etag == tag.trim() || tag.trim() == "*");
        if fresh {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        (
            headers,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            page.html.clone(),
        )
            .into_response()
    }
}

fn stamp_of(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

impl Version {
    fn read(path: &Path) -> Self {
        // The stamp first: a change while reading makes the next request read again.
        let stamp = stamp_of(path);
        let page = match std::fs::read_to_string(path) {
            Ok(html) => {
                let digest = Sha256::digest(html.as_bytes());
                let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
                Some(Page {
                    csp: security::ResponseHeaders::csp_for(&html),
                    etag: HeaderValue::try_from(format!("\"{hex}\"")).expect("hex is ASCII"),
                    html: Bytes::from(html),
                })
            }
            Err(e) => {
                tracing::warn!("cannot read the UI's {}: {e}", path.display());
                None
            }
        };
        Version { stamp, page }
    }
}

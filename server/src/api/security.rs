//! What keeps a gpulab that a network can reach safe: the API token (for changes, and for
//! reads where they are protected), the `Host` check against DNS rebinding, and the headers
//! every answer carries (no sniffing, a Content-Security-Policy, cache rules).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::{problem_response, ApiError};

/// The cookie in which the UI also keeps the token, so that what a browser fetches by
/// itself (the event stream, images) can be read on a server that protects reads. It is
/// accepted for reads only: a change needs the `Authorization` header, which no other site
/// can make a browser send.
pub const TOKEN_COOKIE: &str = "gpulab_token";

/// The secret that changes (and protected reads) need. Only its SHA-256 digest is kept, and
/// a guess is compared digest to digest in constant time: neither the time an answer takes
/// nor anything else tells how long the token is or how much of a guess was right.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

impl Token {
    pub fn new(secret: &str) -> Self {
        Token {
            digest: Sha256::digest(secret.as_bytes()).into(),
        }
    }

    /// A fresh random token: 24 bytes from the operating system's generator, as 48 hex digits.
    pub fn generate() -> String {
        let bytes: [u8; 24] = rand::random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn matches(&self, given: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        bool::from(digest.ct_eq(&self.digest))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// Who may do what, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// When set, changes need it, and reads too where `protect_reads`.
    pub token: Option<Token>,
    pub protect_reads: bool,
    pub allowed_hosts: AllowedHosts,
}

/// The `Host` names this server answers to besides IP addresses and `localhost`.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    names: Vec<String>,
    any: bool,
}

impl AllowedHosts {
    /// `names` as given to `--allowed-host`; `*` allows every name. A name may carry a port
    /// (`gpu.lab:8080`), which does not matter; anything but a host name is refused, since
    /// it could never match and the server would refuse every request made by that name.
    pub fn new(names: &[String]) -> Result<Self, String> {
        let mut hosts = AllowedHosts::default();
        for given in names {
            let given_name = match given.trim().rsplit_once(':') {
                Some((name, port))
                    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    name
                }
                _ => given.trim(),
            };
            let name = given_name.trim_end_matches('.').to_ascii_lowercase();
            if name == "*" {
                hosts.any = true;
            } else if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                hosts.names.push(name);
            } else {
                return Err(format!(
                    "--allowed-host takes a host name such as gpu.example.org (or `*`), got \
                     `{given}`"
                ));
            }
        }
        Ok(hosts)
    }

    /// Whether a request whose `Host` header is `host` may be answered. A DNS rebinding
    /// attack needs a name the attacker controls that resolves to this machine; an IP
    /// address cannot be rebound, and `localhost` resolves here by definition, so those are
    /// always allowed; any other name must be listed.
    pub fn allows(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let name = strip_port(host).trim_end_matches('.').to_ascii_lowercase();
        if name.parse::<IpAddr>().is_ok() {
            return true;
        }
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        self.names.contains(&name)
    }
}

/// `host` without its `:port`; an IPv6 address loses its brackets.
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((name, _)) if !name.contains(':') => name,
        _ => host,
    }
}

/// Refuses a request whose `Host` the server does not answer to.
pub async fn check_host(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    if let Some(host) = host {
        if !access.allowed_hosts.allows(&host) {
            let name = strip_port(&host);
            return problem_response(
                StatusCode::FORBIDDEN,
                format!(
                    "this server does not answer to the name `{name}` (a guard against DNS \
                     rebinding): open it by IP address or as localhost, or start it with \
                     `--allowed-host {name}`"
                ),
                None,
            );
        }
    }
    next.run(req).await
}

/// The API routes that anyone may read even where reads are protected: a health check
/// (the container's own, a load balancer's) and the API's description.
pub(crate) const OPEN_READS: [&str; 2] = ["/api/health", "/api/openapi.json"];

/// Single mode's rule (no accounts): changes need the token when one is set; reads too
/// where they are protected. The layer in front of the API is
/// [`crate::lab::auth::authenticate`], which applies this rule until an account exists.
pub async fn require_token(access: &Access, req: Request, next: Next) -> Response {
    let Some(token) = &access.token else {
        return next.run(req).await;
    };
    let read = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if read && (!access.protect_reads || OPEN_READS.contains(&req.uri().path())) {
        return next.run(req).await;
    }
    let headers = req.headers();
    let given = bearer(headers).or_else(|| if read { cookie(headers) } else { None });
    if !given.is_some_and(|given| token.matches(&given)) {
        return ApiError::Unauthorized { read }.into_response();
    }
    next.run(req).await
}

/// The token of an `Authorization: Bearer <token>` header; the scheme's case does not
/// matter (RFC 9110, section 11.1).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// The token of the [`TOKEN_COOKIE`] cookie.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE)
        .map(|(_, value)| percent_decode(value))
}

/// `%XX` escapes decoded (the UI writes the cookie with `encodeURIComponent`).
pub(crate) fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The headers every answer carries, decided once at start.
#[derive(Debug, Clone)]
pub struct ResponseHeaders {
    csp: HeaderValue,
}

impl ResponseHeaders {
    /// The policy the UI runs under: its own scripts (the WebAssembly needs
    /// `wasm-unsafe-eval`), plus the inline module script trunk writes into `index.html`,
    /// allowed by its hash; styles may be inline (the components set `style`, the code
    /// editor adds style sheets); images from here and `data:`; connections to here only.
    pub fn for_ui(static_dir: Option<&Path>) -> Self {
        let index = static_dir
            .map(|dir| dir.join("index.html"))
            .and_then(|index| std::fs::read_to_string(index).ok())
            .unwrap_or_default();
        ResponseHeaders {
            csp: Self::csp_for(&index),
        }
    }

    /// The policy for the page `index` (the UI's `index.html`).
    pub fn csp_for(index: &str) -> HeaderValue {
        let hashes: String = inline_scripts(index)
            .map(|script| {
                let digest = Sha256::digest(script.as_bytes());
                format!(
                    " 'sha256-{}'",
                    base64::engine::general_purpose::STANDARD.encode(digest)
                )
            })
            .collect();
        let csp = format!(
            "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'{hashes}; \
             style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; \
             connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; \
             frame-ancestors 'none'"
        );
        HeaderValue::try_from(csp).expect("the policy is ASCII")
    }
}

/// The bodies of the `<script>` elements of `html` that have no `src`.
fn inline_scripts(html: &str) -> impl Iterator<Item = &str> {
    let mut rest = html;
    std::iter::from_fn(move || loop {
        let start = rest.find("<script")?;
        let after_tag = &rest[start..];
        let open_end = after_tag.find('>')?;
        let open = &after_tag[..open_end];
        let body_and_rest = &after_tag[open_end + 1..];
        let close = body_and_rest.find("</script>")?;
        let body = &body_and_rest[..close];
        rest = &body_and_rest[close + "</script>".len()..];
        if !open.contains(" src=") {
            return Some(body);
        }
    })
}

/// Adds the security headers and the cache rules: the UI's hashed assets never change
/// (`immutable`), everything else of the UI is checked every time (`no-cache`), and the
/// API's answers are not stored (`no-store`).
pub async fn add_headers(
    State(headers): State<Arc<ResponseHeaders>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_owned();
    let mut response = next.run(req).await;
    let ok = response.status() == StatusCode::OK;
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The UI's page sets the policy of its own version ([`super::ui`]).
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(header::CONTENT_SECURITY_POLICY, headers.csp.clone());
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        let rule = if path.starts_with("/api/") || path == "/metrics" {
            "no-store"
        } else if ok && names_a_file(&path) && is_hashed_asset(&path) {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(rule));
    }
    response
}

/// A file whose name carries trunk's content hash (`app-0123456789abcdef_bg.wasm`): a new
/// build gives it a new name, so it can be cached for good.
pub fn is_hashed_asset(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.split(['-', '_', '.']).any(|part| {
        part.len() == 16
            && part
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

/// Whether `path` names a file (its last part has an extension) rather than one of the UI's
/// pages: a missing file is a 404, a page is `index.html`.
pub fn names_a_file(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_itself_only() {
        let token = Token::new("s3cret");
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cre"));
        assert!(!token.matches("s3cret "));
        assert!(!token.matches(""));
        let generated = Token::generate();
        assert_eq!(generated.len(), 48);
        assert_ne!(generated, Token::generate());
    }

    #[test]
    fn hosts_by_ip_and_localhost_pass_other_names_must_be_listed() {
        let hosts =
            AllowedHosts::new(&["gpubox.example.org".into(), "gpu.lab:8080".into()]).unwrap();
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "app.localhost",
            "[::1]:8080",
            "10.0.0.7",
            "gpubox.example.org:8080",
            "GPUbox.example.org.",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
        ] {
            assert!(!hosts.allows(refused), "{refused}");
        }
        assert!(hosts.allows("gpu.lab:9000"), "the port does not matter");
        assert!(AllowedHosts::new(&["*".into()])
            .unwrap()
            .allows("anything.example"));
        for bad in ["http://gpu.lab", "gpu.lab/ui", "", "a b"] {
            let e = AllowedHosts::new(&[bad.into()]).unwrap_err();
            assert!(e.contains("--allowed-host"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let mut headers = HeaderMap::new();
        for value in ["Bearer abc", "bearer abc", "BEARER   abc "] {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            assert_eq!(bearer(&headers).as_deref(), Some("abc"), "{value}");
        }
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn the_token_cookie_is_found_among_others_and_decoded() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; gpulab_token=x%2By%3D; b=2"),
        );
        assert_eq!(cookie(&headers).as_deref(), Some("x+y="));
    }

    #[test]
    fn inline_scripts_are_found_and_external_ones_skipped() {
        let html = r#"<html><script src="/a.js"></script><script type="module">init()</script>
            <script>two</script></html>"#;
        assert_eq!(inline_scripts(html).collect::<Vec<_>>(), ["init()", "two"]);
    }

    #[test]
    fn trunk_hashed_names_are_told_apart() {
        assert!(is_hashed_asset("/gpulab-frontend-3f2a9c0d1b4e5f67_bg.wasm"));
        assert!(is_hashed_asset("/style-0123456789abcdef.css"));
        assert!(!is_hashed_asset("/index.html"));
        assert!(!is_hashed_asset("/vendor/codemirror.js"));
        assert!(names_a_file("/app.wasm"));
        assert!(!names_a_file("/jobs/12"));
    }
}

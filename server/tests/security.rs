//! Integration tests of what keeps a reachable gpulab safe: the API token (made up, given,
//! read from a file, or none), protected reads, the `Host` check against DNS rebinding, the
//! security and cache headers, and the settings a server refuses to start with. The real
//! `gpulab` binary, on a real port.

mod support;

use base64::Engine as _;
use gpulab_shared::{Job, JobPage, Problem};
use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};
use support::{serve_fails, spawn_app_with, AppOptions, TestApp};

async fn problem(resp: reqwest::Response, status: StatusCode) -> Problem {
    assert_eq!(resp.status(), status, "{}", resp.url());
    assert_eq!(
        resp.headers()["content-type"],
        "application/problem+json",
        "{}",
        resp.url()
    );
    let p: Problem = resp.json().await.unwrap();
    assert_eq!(p.status, status.as_u16());
    assert!(!p.detail.is_empty());
    p
}

fn small_job() -> serde_json::Value {
    json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 10}})
}

/// A request to `path` with `Authorization: <auth>` and `Cookie: <cookie>` where given.
async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    auth: Option<&str>,
    cookie: Option<&str>,
) -> reqwest::Response {
    let mut req = app.client.request(method.clone(), app.url(path));
    if method == reqwest::Method::POST {
        req = req.json(&small_job());
    }
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    req.send().await.unwrap()
}

/// The token in the log line `… http://127.0.0.1:PORT/?token=T …` of a server on `port`.
fn generated_token(log: &str, port: &str) -> String {
    let prefix = format!("http://127.0.0.1:{port}/?token=");
    let start = log
        .find(&prefix)
        .unwrap_or_else(|| panic!("no {prefix} in the log:\n{log}"))
        + prefix.len();
    let token: String = log[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    assert_eq!(token.len(), 48, "{token}");
    token
}

fn port(app: &TestApp) -> String {
    app.base.rsplit(':').next().unwrap().to_owned()
}

#[tokio::test]
async fn a_server_beyond_loopback_makes_up_a_token_for_changes_and_reads() {
    let app = spawn_app_with(AppOptions {
        addr: Some("0.0.0.0:0".into()),
        capture_log: true,
        ..Default::default()
    })
    .await;
    let log = app.wait_for_log("?token=").await;
    let token = generated_token(&log, &port(&app));
    use reqwest::Method as M;

    // Changes: refused without the token, or with a wrong one of another length or the same.
    let resp = send(&app, M::POST, "/api/jobs", None, None).await;
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let p = problem(resp, StatusCode::UNAUTHORIZED).await;
    assert!(p.detail.contains("to change anything"), "{}", p.detail);
    for wrong in ["bearer x".to_owned(), format!("Bearer {}", "0".repeat(48))] {
        let resp = send(&app, M::POST, "/api/jobs", Some(&wrong), None).await;
        problem(resp, StatusCode::UNAUTHORIZED).await;
    }
    // The cookie is for reads only: another site can make a browser send it.
    let cookie = format!("gpulab_token={token}");
    let resp = send(&app, M::POST, "/api/jobs", None, Some(&cookie)).await;
    problem(resp, StatusCode::UNAUTHORIZED).await;
    // The scheme's case does not matter.
    let auth = format!("bearer {token}");
    let resp = send(&app, M::POST, "/api/jobs", Some(&auth), None).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let job: Job = resp.json().await.unwrap();
    let resp = send(
        &app,
        M::DELETE,
        &format!("/api/jobs/{}", job.id),
        None,
        None,
    )
    .await;
    problem(resp, StatusCode::UNAUTHORIZED).await;

    // Reads are protected too, by the header or the UI's cookie.
    for path in ["/api/jobs", "/api/events", "/api/devices", "/metrics"] {
        let p = problem(
            send(&app, M::GET, path, None, None).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        assert!(p.detail.contains("to read this"), "{path}: {}", p.detail);
        let resp = send(&app, M::GET, path, None, Some("gpulab_token=wrong")).await;
        problem(resp, StatusCode::UNAUTHORIZED).await;
        let resp = send(&app, M::GET, path, Some(&auth), None).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path} with the header");
        let resp = send(&app, M::GET, path, None, Some(&format!("a=1; {cookie}"))).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path} with the cookie");
    }
    let page: JobPage = send(&app, M::GET, "/api/jobs", Some(&auth), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page.jobs.first().map(|j| j.id), Some(job.id));
    // The health check and the API's description stay open, for probes and tools.
    for path in ["/api/health", "/api/openapi.json"] {
        let resp = send(&app, M::GET, path, None, None).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn no_token_on_every_interface_serves_anyone_and_says_so() {
    let app = spawn_app_with(AppOptions {
        addr: Some("0.0.0.0:0".into()),
        args: vec!["--no-token".into()],
        capture_log: true,
        ..Default::default()
    })
    .await;
    let resp = app.post_json("/api/jobs", &small_job()).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let _: JobPage = app.get_json("/api/jobs").await;
    let log = app.wait_for_log("--no-token").await;
    assert!(!log.contains("?token="), "{log}");
}

#[tokio::test]
async fn a_token_file_is_read_and_reads_are_protected_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "  from-the-file\n").unwrap();
    // On loopback, reads stay open unless asked.
    let app = spawn_app_with(AppOptions {
        args: vec!["--token-file".into(), file.display().to_string()],
        ..Default::default()
    })
    .await;
    use reqwest::Method as M;
    let resp = send(&app, M::POST, "/api/jobs", None, None).await;
    problem(resp, StatusCode::UNAUTHORIZED).await;
    let resp = send(
        &app,
        M::POST,
        "/api/jobs",
        Some("Bearer from-the-file"),
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let _: JobPage = app.get_json("/api/jobs").await;
    drop(app);

    let app = spawn_app_with(AppOptions {
        args: vec![
            "--token-file".into(),
            file.display().to_string(),
            "--protect-reads".into(),
        ],
        ..Default::default()
    })
    .await;
    problem(app.get("/api/jobs").await, StatusCode::UNAUTHORIZED).await;
    let resp = send(
        &app,
        M::GET,
        "/api/jobs",
        Some("Bearer from-the-file"),
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);

    let (status, stderr) = serve_fails(
        &[
            "--token-file",
            &dir.path().join("nope").display().to_string(),
        ],
        &[],
    );
    assert!(!status.success());
    assert!(stderr.contains("cannot read the token file"), "{stderr}");
    std::fs::write(&file, " \n").unwrap();
    let (status, stderr) = serve_fails(&["--token-file", &file.display().to_string()], &[]);
    assert!(!status.success());
    assert!(stderr.contains("the token is empty"), "{stderr}");
}

#[tokio::test]
async fn protect_reads_false_leaves_reads_open_beyond_loopback() {
    let app = spawn_app_with(AppOptions {
        addr: Some("0.0.0.0:0".into()),
        env: vec![("GPULAB_TOKEN".into(), "s3cret".into())],
        args: vec!["--protect-reads=false".into()],
        ..Default::default()
    })
    .await;
    let _: JobPage = app.get_json("/api/jobs").await;
    let resp = app.get("/api/events").await;
    assert_eq!(resp.status(), StatusCode::OK);
    drop(resp);
    problem(
        app.post_json("/api/jobs", &small_job()).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let resp = send(
        &app,
        reqwest::Method::POST,
        "/api/jobs",
        Some("Bearer s3cret"),
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
}

async fn get_with_host(app: &TestApp, path: &str, host: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .header("host", host)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_host_must_be_an_address_localhost_or_an_allowed_name() {
    let app = spawn_app_with(AppOptions {
        args: vec!["--allowed-host".into(), "gpu.lab:8080".into()],
        ..Default::default()
    })
    .await;
    let port = port(&app);
    for host in [
        "evil.example",
        &format!("evil.example:{port}"),
        "127.0.0.1.evil.example",
    ] {
        for path in ["/api/health", "/api/jobs", "/"] {
            let p = problem(get_with_host(&app, path, host).await, StatusCode::FORBIDDEN).await;
            assert!(
                p.detail.contains("--allowed-host") && p.detail.contains("evil.example"),
                "{}",
                p.detail
            );
        }
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("gpu.lab:{port}"),
        "GPU.lab".to_owned(),
    ] {
        let resp = get_with_host(&app, "/api/health", &host).await;
        assert_eq!(resp.status(), StatusCode::OK, "{host}");
    }
    drop(app);

    // Without --allowed-host, the name is refused.
    let app = spawn_app_with(AppOptions::default()).await;
    let host = format!("gpu.lab:{}", self::port(&app));
    problem(
        get_with_host(&app, "/api/health", &host).await,
        StatusCode::FORBIDDEN,
    )
    .await;
}

/// The CSP source for an inline script: its SHA-256, in base64.
fn script_hash(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

#[tokio::test]
async fn answers_carry_nosniff_a_csp_with_the_inline_script_and_cache_rules() {
    let dist = tempfile::tempdir().unwrap();
    let script =
        "import init from '/app-0123456789abcdef.js'; init('/app-0123456789abcdef_bg.wasm');";
    std::fs::write(
        dist.path().join("index.html"),
        format!(
            "<!doctype html><title>gpulab</title><script src=\"/vendor.js\"></script>\
             <script type=\"module\">{script}</script>"
        ),
    )
    .unwrap();
    std::fs::write(
        dist.path().join("app-0123456789abcdef_bg.wasm"),
        b"\0asm\x01\0\0\0",
    )
    .unwrap();
    std::fs::write(dist.path().join("app-0123456789abcdef.js"), "export {}").unwrap();
    let app = spawn_app_with(AppOptions {
        static_dir: Some(dist.path().into()),
        ..Default::default()
    })
    .await;

    for path in ["/", "/index.html", "/jobs/5", "/jobs/0123456789abcdef"] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let h = resp.headers();
        assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains(&script_hash(script)), "{path}: {csp}");
        assert!(csp.contains("default-src 'self'"), "{csp}");
        let scripts = csp
            .split(';')
            .find(|d| d.trim_start().starts_with("script-src"))
            .unwrap();
        assert!(!scripts.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        // The page names this build's assets: a browser must ask again each time.
        assert_eq!(h["cache-control"], "no-cache", "{path}");
        assert!(resp.text().await.unwrap().contains(script));
    }
    for path in ["/app-0123456789abcdef_bg.wasm", "/app-0123456789abcdef.js"] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
        assert_eq!(
            resp.headers()["cache-control"],
            "public, max-age=31536000, immutable",
            "{path}"
        );
    }
    for path in ["/api/health", "/api/jobs", "/api/nothing"] {
        let resp = app.get(path).await;
        assert_eq!(resp.headers()["cache-control"], "no-store", "{path}");
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    }
    // A missing file is a 404 (a stale page's asset fails plainly), never the page, and
    // is not cached for good.
    for path in ["/missing.js", "/app-fedcba9876543210.js"] {
        let resp = app.get(path).await;
        assert_eq!(resp.headers()["cache-control"], "no-cache", "{path}");
        let p = problem(resp, StatusCode::NOT_FOUND).await;
        assert!(p.detail.contains(path), "{}", p.detail);
    }
}

#[test]
fn bad_settings_stop_the_server_at_start_saying_which() {
    for (args, env, expected) in [
        (
            &[][..],
            &[("GPULAB_MAX_TIMEOUT_S", "inf")][..],
            "--max-timeout-s",
        ),
        (
            &[][..],
            &[("GPULAB_MAX_TIMEOUT_S", "NaN")][..],
            "--max-timeout-s",
        ),
        (&["--queue-capacity", "0"][..], &[][..], "--queue-capacity"),
        (
            &["--default-timeout-s", "700", "--max-timeout-s", "600"][..],
            &[][..],
            "--default-timeout-s",
        ),
        (
            &["--default-timeout-s", "0.5"][..],
            &[][..],
            "--default-timeout-s",
        ),
        (
            &["--max-connections", "0"][..],
            &[][..],
            "--max-connections",
        ),
        (&["--idle-timeout-s", "5"][..], &[][..], "--idle-timeout-s"),
        (&["--token", " "][..], &[][..], "the token is empty"),
        (&["--token", "a b"][..], &[][..], "blanks"),
        (&["--protect-reads"][..], &[][..], "--protect-reads"),
        (
            &["--allowed-host", "http://gpu.lab"][..],
            &[][..],
            "--allowed-host",
        ),
    ] {
        let (status, stderr) = serve_fails(args, env);
        assert_eq!(status.code(), Some(1), "{args:?} {env:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?} {env:?} should name {expected}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn a_job_timeout_must_be_from_one_second_to_the_servers_limit() {
    let app = spawn_app_with(AppOptions::default()).await;
    for timeout in [json!(1e300), json!(0.001), json!(0), json!(-1), json!(601)] {
        let p = problem(
            app.post_json(
                "/api/jobs",
                &json!({"kernel": "vector_add", "device": "cpu", "timeout_s": timeout}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(p.field.as_deref(), Some("timeout_s"), "{timeout}");
        assert!(
            p.detail.contains("from 1 to 600"),
            "{timeout}: {}",
            p.detail
        );
    }
    let job = app
        .submit(json!({"kernel": "vector_add", "device": "cpu", "timeout_s": 1}))
        .await;
    assert_eq!(job.timeout_s, 1.0);
}

#[tokio::test]
async fn a_rebuilt_ui_is_served_with_a_policy_that_allows_its_new_inline_script() {
    let dist = tempfile::tempdir().unwrap();
    let index = dist.path().join("index.html");
    let page = |script: &str| format!("<!doctype html><script type=\"module\">{script}</script>");
    let old = "import init from '/app-0123456789abcdef.js'; init();";
    std::fs::write(&index, page(old)).unwrap();
    let app = spawn_app_with(AppOptions {
        static_dir: Some(dist.path().into()),
        ..Default::default()
    })
    .await;
    let csp = |resp: &reqwest::Response| {
        resp.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let first = app.get("/").await;
    assert!(csp(&first).contains(&script_hash(old)));

    // `cargo xtask ui` while the server runs: the new page names new assets.
    let new = "import init from '/app-fedcba9876543210.js'; init(); // a longer build";
    std::fs::write(&index, page(new)).unwrap();
    let mut etag = None;
    for path in ["/", "/index.html", "/jobs/7"] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let policy = csp(&resp);
        assert!(policy.contains(&script_hash(new)), "{path}: {policy}");
        assert!(!policy.contains(&script_hash(old)), "{path}: {policy}");
        etag = Some(resp.headers()["etag"].clone());
        assert!(resp.text().await.unwrap().contains(new));
    }
    // The browser's copy is still good: 304, with no body; after a change it is not.
    let etag = etag.unwrap();
    let if_none_match = |etag| {
        app.client
            .get(app.url("/"))
            .header("if-none-match", etag)
            .send()
    };
    let again = if_none_match(etag.clone()).await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert!(again.bytes().await.unwrap().is_empty());
    std::fs::write(&index, page(old)).unwrap();
    let changed = if_none_match(etag.clone()).await.unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(changed.headers()["etag"], etag);
    assert!(csp(&changed).contains(&script_hash(old)));
    let head = app.client.head(app.url("/")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert!(head.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
}

//! Integration tests of lab mode: accounts, keys, sessions, CSRF, privacy between users,
//! disabling and key rotation taking effect at once (even on an open event stream), and
//! the audit log. The real `gpulab` binary on a real port, its accounts added with the real
//! `gpulab users` command line on the same data directory while it runs.

mod support;

use std::time::Duration;

use gpulab_shared::lab::{AuditPage, LabMode, Session, User, UserWithKey};
use gpulab_shared::{Job, JobComparison, JobPage, JobStatus, Problem};
use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{gpulab_exe, spawn_app, spawn_app_with, AppOptions, TestApp};

/// Runs `gpulab users ARGS --data-dir <the app's>`; its stdout, trimmed. It must succeed.
fn users_cli(app: &TestApp, args: &[&str]) -> String {
    let out = std::process::Command::new(gpulab_exe())
        .arg("users")
        .args(args)
        .arg("--data-dir")
        .arg(app.data_dir())
        .env("GPULAB_LOG", "error")
        .output()
        .expect("run gpulab users");
    assert!(
        out.status.success(),
        "gpulab users {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A request as `key` (an API key or the token) where given.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<serde_json::Value>,
) -> reqwest::Response {
    let mut req = app.client.request(method, app.url(path));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

async fn get_as<T: serde::de::DeserializeOwned>(app: &TestApp, path: &str, key: &str) -> T {
    let resp = call(app, Method::GET, path, Some(key), None).await;
    assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
    resp.json().await.unwrap()
}

async fn problem(resp: reqwest::Response, status: StatusCode) -> Problem {
    let url = resp.url().clone();
    assert_eq!(resp.status(), status, "{url}");
    assert_eq!(
        resp.headers()["content-type"],
        "application/problem+json",
        "{url}"
    );
    let p: Problem = resp.json().await.unwrap();
    assert_eq!(p.status, status.as_u16());
    p
}

/// An admin `root` made with the command line, then `alice` and `bob` made by root through
/// the API; their keys.
async fn lab(app: &TestApp) -> (String, String, String) {
    let root = users_cli(app, &["add", "root", "--admin"]);
    assert!(root.starts_with("glk_root_"), "{root}");
    let mut keys = Vec::new();
    for name in ["alice", "bob"] {
        let resp = call(
            app,
            Method::POST,
            "/api/users",
            Some(&root),
            Some(json!({"name": name})),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(resp.headers()["location"], format!("/api/users/{name}"));
        let made: UserWithKey = resp.json().await.unwrap();
        assert_eq!(made.user.name, name);
        assert!(!made.user.disabled);
        keys.push(made.api_key);
    }
    let bob = keys.pop().unwrap();
    let alice = keys.pop().unwrap();
    (root, alice, bob)
}

async fn submit_as(app: &TestApp, key: &str, body: serde_json::Value) -> Job {
    let resp = call(app, Method::POST, "/api/jobs", Some(key), Some(body)).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    resp.json().await.unwrap()
}

async fn wait_finished_as(app: &TestApp, key: &str, id: i64) -> Job {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let job: Job = get_as(app, &format!("/api/jobs/{id}"), key).await;
        if job.status.is_finished() {
            return job;
        }
        assert!(tokio::time::Instant::now() < deadline, "job {id} stuck");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The events of an open stream: `(event, data)` pairs as they come.
struct Events {
    resp: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(app: &TestApp, auth: reqwest::RequestBuilder) -> Self {
        let _ = app;
        let resp = auth.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        Events {
            resp,
            buffer: String::new(),
        }
    }

    /// Reads until the stream ends, which must be within `limit` (events may still come
    /// meanwhile: telemetry comes every second).
    async fn ends_within(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.next(limit)).await {
                Ok(None) => return,
                Ok(Some(_)) => {}
                Err(_) => panic!("the stream is still open {limit:?} later"),
            }
        }
    }

    /// The next event, `None` when the stream has ended; panics after `limit`.
    async fn next(&mut self, limit: Duration) -> Option<(String, String)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(str::to_owned)
                };
                if let (Some(event), Some(data)) = (field("event: "), field("data: ")) {
                    return Some((event, data));
                }
                continue;
            }
            let chunk = tokio::time::timeout(limit, self.resp.chunk())
                .await
                .expect("an event or the stream's end in time")
                .ok()??;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

#[tokio::test]
async fn a_user_sees_only_their_own_jobs_and_events_and_admins_see_all() {
    let app = spawn_app().await;
    let (root, alice, bob) = lab(&app).await;

    let mut bobs_events = Events::open(
        &app,
        app.client.get(app.url("/api/events")).bearer_auth(&bob),
    )
    .await;
    let image = submit_as(
        &app,
        &alice,
        json!({"kernel": "mandelbrot", "device": "cpu",
               "params": {"width": 32, "height": 32, "max_iter": 20}}),
    )
    .await;
    assert_eq!(image.owner.as_deref(), Some("alice"));
    let image = wait_finished_as(&app, &alice, image.id).await;
    assert_eq!(image.status, JobStatus::Succeeded);
    let artifact = format!("/api/jobs/{}/artifact", image.id);
    let resp = call(&app, Method::GET, &artifact, Some(&alice), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "image/png");

    // Bob: 404, as if the job did not exist, wherever he looks.
    let job_path = format!("/api/jobs/{}", image.id);
    for path in [
        job_path.clone(),
        artifact.clone(),
        format!("/api/jobs/compare?ids={}", image.id),
    ] {
        let p = problem(
            call(&app, Method::GET, &path, Some(&bob), None).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        assert!(p.detail.contains("there is no job"), "{path}: {}", p.detail);
    }
    let nowhere = problem(
        call(&app, Method::GET, "/api/jobs/999999", Some(&bob), None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let hidden = problem(
        call(&app, Method::GET, &job_path, Some(&bob), None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(
        hidden.detail.replace(&image.id.to_string(), "N"),
        nowhere.detail.replace("999999", "N"),
        "another's job reads like a job that does not exist"
    );
    for method in [Method::DELETE] {
        problem(
            call(&app, method, &job_path, Some(&bob), None).await,
            StatusCode::NOT_FOUND,
        )
        .await;
    }
    problem(
        call(
            &app,
            Method::POST,
            &format!("{job_path}/share"),
            Some(&bob),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let bobs_list: JobPage = get_as(&app, "/api/jobs", &bob).await;
    assert!(bobs_list.jobs.is_empty(), "{:?}", bobs_list.jobs);

    // Bob's own job: his stream carries it, and none of Alice's events came before it.
    let own = submit_as(
        &app,
        &bob,
        json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 64}}),
    )
    .await;
    let mut bobs_statuses = Vec::new();
    while bobs_statuses.last() != Some(&JobStatus::Succeeded) {
        let (event, data) = bobs_events
            .next(Duration::from_secs(60))
            .await
            .expect("the stream stays open");
        if event == "job" {
            let job: Job = serde_json::from_str(&data).unwrap();
            assert_eq!(job.owner.as_deref(), Some("bob"), "bob saw {data}");
            assert_eq!(job.id, own.id);
            bobs_statuses.push(job.status);
        }
    }
    let bobs_list: JobPage = get_as(&app, "/api/jobs", &bob).await;
    assert_eq!(
        bobs_list.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        [own.id]
    );

    // Alice's list holds hers only; the admin's both.
    let alices: JobPage = get_as(&app, "/api/jobs", &alice).await;
    assert_eq!(
        alices.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        [image.id]
    );
    let all: JobPage = get_as(&app, "/api/jobs", &root).await;
    assert_eq!(
        all.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        [own.id, image.id]
    );
    let compared: JobComparison = get_as(
        &app,
        &format!("/api/jobs/compare?ids={},{}", image.id, own.id),
        &root,
    )
    .await;
    assert_eq!(compared.entries.len(), 2);

    // Shared by its owner, the job (and its image) is readable by Bob; unshared, not.
    let resp = call(
        &app,
        Method::POST,
        &format!("{job_path}/share"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let seen: Job = get_as(&app, &job_path, &bob).await;
    assert_eq!(seen.id, image.id);
    let resp = call(&app, Method::GET, &artifact, Some(&bob), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    problem(
        call(&app, Method::DELETE, &job_path, Some(&bob), None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let resp = call(
        &app,
        Method::DELETE,
        &format!("{job_path}/share"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    problem(
        call(&app, Method::GET, &job_path, Some(&bob), None).await,
        StatusCode::NOT_FOUND,
    )
    .await;

    // Diagnostics: the same rule.
    let resp = call(
        &app,
        Method::POST,
        "/api/diagnostics",
        Some(&alice),
        Some(json!({"level": 1, "device": "cpu", "duration_s": 1})),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let diagnostic: serde_json::Value = resp.json().await.unwrap();
    let diagnostic_path = format!("/api/diagnostics/{}", diagnostic["id"]);
    problem(
        call(&app, Method::GET, &diagnostic_path, Some(&bob), None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let bobs: serde_json::Value = get_as(&app, "/api/diagnostics", &bob).await;
    assert_eq!(bobs["diagnostics"], json!([]));
    let roots: serde_json::Value = get_as(&app, "/api/diagnostics", &root).await;
    assert_eq!(roots["diagnostics"].as_array().unwrap().len(), 1);

    // The admin cancels Alice's job: done, and written to the audit log.
    let hang = submit_as(
        &app,
        &alice,
        json!({"kernel": "_test_fault", "device": "cpu", "params": {"mode": "hang"}}),
    )
    .await;
    // Her diagnostic waits behind the hanging job; Bob cannot cancel it, the admin can.
    let resp = call(
        &app,
        Method::POST,
        "/api/diagnostics",
        Some(&alice),
        Some(json!({"level": 1, "device": "cpu", "duration_s": 1})),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let waiting: serde_json::Value = resp.json().await.unwrap();
    let waiting_path = format!("/api/diagnostics/{}", waiting["id"]);
    problem(
        call(&app, Method::DELETE, &waiting_path, Some(&bob), None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    for path in [waiting_path.clone(), format!("/api/jobs/{}", hang.id)] {
        let resp = call(&app, Method::DELETE, &path, Some(&root), None).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
    let audit: AuditPage = get_as(&app, "/api/audit", &root).await;
    let cancelled: Vec<(&str, Option<&str>, &str, Option<&str>)> = audit.entries[..2]
        .iter()
        .map(|e| {
            let detail = e.detail.as_deref();
            (
                e.action.as_str(),
                e.actor.as_deref(),
                e.target.as_str(),
                detail,
            )
        })
        .collect();
    assert_eq!(
        cancelled,
        [
            (
                "job_cancelled",
                Some("root"),
                format!("job {}", hang.id).as_str(),
                Some("owner alice")
            ),
            (
                "diagnostic_cancelled",
                Some("root"),
                format!("diagnostic {}", waiting["id"]).as_str(),
                Some("owner alice")
            ),
        ]
    );
    // Her own cancellations are not admin actions: not audited.
    let own = submit_as(
        &app,
        &alice,
        json!({"kernel": "_test_fault", "device": "cpu", "params": {"mode": "hang"}}),
    )
    .await;
    let resp = call(
        &app,
        Method::DELETE,
        &format!("/api/jobs/{}", own.id),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let after: AuditPage = get_as(&app, "/api/audit", &root).await;
    assert_eq!(after.entries.len(), audit.entries.len());

    // Metrics and the admin's pages are the admins'.
    for path in ["/metrics", "/api/users", "/api/audit"] {
        problem(
            call(&app, Method::GET, path, Some(&bob), None).await,
            StatusCode::FORBIDDEN,
        )
        .await;
        let resp = call(&app, Method::GET, path, Some(&root), None).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn lab_mode_needs_a_user_for_every_route_but_the_open_ones() {
    let app = spawn_app().await;
    let session: Session = app.get_json("/api/session").await;
    assert_eq!(session.mode, LabMode::Single);
    assert_eq!(app.get("/api/jobs").await.status(), StatusCode::OK);
    let (_root, alice, _bob) = lab(&app).await;

    for path in ["/api/jobs", "/api/devices", "/api/events", "/metrics"] {
        let resp = app.get(path).await;
        assert_eq!(resp.headers()["www-authenticate"], "Bearer", "{path}");
        let p = problem(resp, StatusCode::UNAUTHORIZED).await;
        assert!(p.detail.contains("accounts"), "{path}: {}", p.detail);
    }
    let job = json!({"kernel": "vector_add", "device": "cpu"});
    problem(
        app.post_json("/api/jobs", &job).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    for open in ["/api/health", "/api/openapi.json", "/api/session"] {
        assert_eq!(app.get(open).await.status(), StatusCode::OK, "{open}");
    }
    let session: Session = app.get_json("/api/session").await;
    assert_eq!(session.mode, LabMode::Lab);
    assert_eq!(session.user, None);

    let wrong = format!("{}0", &alice[..alice.len() - 1]);
    let wrong = if wrong == alice {
        format!("{}1", &alice[..alice.len() - 1])
    } else {
        wrong
    };
    for bad in [wrong.as_str(), "glk_nobody_00", "not-a-key"] {
        let p = problem(
            call(&app, Method::GET, "/api/jobs", Some(bad), None).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
        assert!(p.detail.contains("wrong"), "{bad}: {}", p.detail);
    }
    let me: Session = get_as(&app, "/api/session", &alice).await;
    assert_eq!(me.user.unwrap().name, "alice");
    assert_eq!(me.csrf_token, None, "a key needs no CSRF token");
}

#[tokio::test]
async fn keys_are_stored_only_as_argon2id_hashes() {
    let app = spawn_app().await;
    let (root, alice, bob) = lab(&app).await;
    // A session too: its id must not be stored either.
    let resp = app
        .post_json("/api/session", &json!({"name": "bob", "key": bob}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    let session_id = cookie
        .strip_prefix("gpulab_session=")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(session_id.len(), 64);

    let db = rusqlite::Connection::open(app.data_dir().join("gpulab.sqlite3")).unwrap();
    let hashes: Vec<(String, String)> = db
        .prepare("SELECT name, key_hash FROM users ORDER BY name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let names: Vec<&str> = hashes.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["alice", "bob", "root"]);
    for (name, hash) in &hashes {
        assert!(hash.starts_with("$argon2id$v=19$"), "{name}: {hash}");
    }
    drop(db);
    // Every byte the server keeps: the database, its WAL, anything else in the directory.
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(app.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            stored.extend(std::fs::read(&path).unwrap());
        }
    }
    let stored = String::from_utf8_lossy(&stored).into_owned();
    for secret in [&root, &alice, &bob] {
        let secret = &secret[secret.len() - 64..];
        for window in secret.as_bytes().windows(12) {
            let fragment = std::str::from_utf8(window).unwrap();
            assert!(!stored.contains(fragment), "a piece of a key is stored");
        }
    }
    for window in session_id.as_bytes().windows(12) {
        let fragment = std::str::from_utf8(window).unwrap();
        assert!(
            !stored.contains(fragment),
            "a piece of a session id is stored"
        );
    }
}

/// The cookie's `name=value` from a `Set-Cookie` header.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_session_cookie_is_strict_and_changes_need_the_csrf_header() {
    let app = spawn_app().await;
    let (_root, alice, bob) = lab(&app).await;
    let p = problem(
        app.post_json("/api/session", &json!({"name": "alice", "key": bob}))
            .await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert!(p.detail.contains("wrong"), "{}", p.detail);

    let resp = app
        .post_json("/api/session", &json!({"name": "alice", "key": alice}))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(flag), "{set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    let session: Session = resp.json().await.unwrap();
    assert_eq!(session.mode, LabMode::Lab);
    assert_eq!(session.user.unwrap().name, "alice");
    let csrf = session.csrf_token.unwrap();
    let cookie = cookie_pair(&set_cookie);

    // Behind a TLS proxy the cookie is Secure.
    let resp = app
        .client
        .post(app.url("/api/session"))
        .header("x-forwarded-proto", "https")
        .json(&json!({"name": "alice", "key": alice}))
        .send()
        .await
        .unwrap();
    assert!(resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("; Secure"));

    let with_cookie = |method: Method, path: &str| {
        app.client
            .request(method, app.url(path))
            .header("cookie", &cookie)
    };
    let me: Session = with_cookie(Method::GET, "/api/session")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me.csrf_token.as_deref(), Some(csrf.as_str()));
    let resp = with_cookie(Method::GET, "/api/jobs").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "a read needs no CSRF header");

    let job = json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 16}});
    let p = problem(
        with_cookie(Method::POST, "/api/jobs")
            .json(&job)
            .send()
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
    assert!(p.detail.contains("x-csrf-token"), "{}", p.detail);
    problem(
        with_cookie(Method::POST, "/api/jobs")
            .header("x-csrf-token", "0".repeat(64))
            .json(&job)
            .send()
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
    let resp = with_cookie(Method::POST, "/api/jobs")
        .header("x-csrf-token", &csrf)
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let submitted: Job = resp.json().await.unwrap();
    assert_eq!(submitted.owner.as_deref(), Some("alice"));

    // Sign-out: a change too, so it needs the header; then the session is gone.
    problem(
        with_cookie(Method::DELETE, "/api/session")
            .send()
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
    let resp = with_cookie(Method::DELETE, "/api/session")
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(resp.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let p = problem(
        with_cookie(Method::GET, "/api/jobs").send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert!(p.detail.contains("session has ended"), "{}", p.detail);
}

#[tokio::test]
async fn a_disabled_user_is_refused_at_once_even_on_an_open_event_stream() {
    let app = spawn_app().await;
    let (root, alice, bob) = lab(&app).await;

    // Bob with his key, Alice with a session cookie: both streams open.
    let mut bobs = Events::open(
        &app,
        app.client.get(app.url("/api/events")).bearer_auth(&bob),
    )
    .await;
    let resp = app
        .post_json("/api/session", &json!({"name": "alice", "key": alice}))
        .await;
    let cookie = cookie_pair(resp.headers()["set-cookie"].to_str().unwrap());
    let mut alices = Events::open(
        &app,
        app.client
            .get(app.url("/api/events"))
            .header("cookie", &cookie),
    )
    .await;
    let before: JobPage = get_as(&app, "/api/jobs", &bob).await;
    assert!(before.jobs.is_empty());

    // Disabled by the command line, from another process, while the server runs.
    users_cli(&app, &["disable", "bob"]);
    let p = problem(
        call(&app, Method::GET, "/api/jobs", Some(&bob), None).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert!(p.detail.contains("disabled"), "{}", p.detail);
    // The stream ends within a second (a few more for a loaded test machine).
    bobs.ends_within(Duration::from_secs(3)).await;

    // Disabled by an admin through the API: her session's stream ends too.
    let resp = call(
        &app,
        Method::PATCH,
        "/api/users/alice",
        Some(&root),
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let changed: User = resp.json().await.unwrap();
    assert!(changed.disabled);
    alices.ends_within(Duration::from_secs(3)).await;
    let resp = app
        .client
        .get(app.url("/api/jobs"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    problem(resp, StatusCode::UNAUTHORIZED).await;
    let p = problem(
        app.post_json("/api/session", &json!({"name": "alice", "key": alice}))
            .await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert!(p.detail.contains("disabled"), "{}", p.detail);

    // Enabled again, the key works again.
    users_cli(&app, &["enable", "bob"]);
    let _: JobPage = get_as(&app, "/api/jobs", &bob).await;
    let listed = users_cli(&app, &["list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("alice") && l.contains("disabled")),
        "{listed}"
    );

    // The admin's actions, in the audit log; the command line's with no actor.
    let audit: AuditPage = get_as(&app, "/api/audit?limit=3", &root).await;
    let actions: Vec<(&str, Option<&str>, &str)> = audit
        .entries
        .iter()
        .map(|e| (e.action.as_str(), e.actor.as_deref(), e.target.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("user_enabled", None, "bob"),
            ("user_disabled", Some("root"), "alice"),
            ("user_disabled", None, "bob"),
        ]
    );
    let rest: AuditPage = get_as(
        &app,
        &format!("/api/audit?cursor={}", audit.next_cursor.unwrap()),
        &root,
    )
    .await;
    let added: Vec<(&str, Option<&str>)> = rest
        .entries
        .iter()
        .map(|e| (e.target.as_str(), e.actor.as_deref()))
        .collect();
    assert_eq!(
        added,
        [
            ("bob", Some("root")),
            ("alice", Some("root")),
            ("root", None)
        ]
    );
}

#[tokio::test]
async fn a_rotated_key_is_refused_at_once() {
    let app = spawn_app().await;
    let (root, alice, bob) = lab(&app).await;
    // Verified once, so that the next use would come from the cache of verified keys.
    let _: JobPage = get_as(&app, "/api/jobs", &bob).await;
    let _: JobPage = get_as(&app, "/api/jobs", &bob).await;

    // Bob rotates his own key; Alice may not rotate his (404: not hers to know).
    problem(
        call(&app, Method::POST, "/api/users/bob/key", Some(&alice), None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let resp = call(&app, Method::POST, "/api/users/bob/key", Some(&bob), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let rotated: UserWithKey = resp.json().await.unwrap();
    assert_ne!(rotated.api_key, bob);
    let p = problem(
        call(&app, Method::GET, "/api/jobs", Some(&bob), None).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert!(p.detail.contains("replaced"), "{}", p.detail);
    let _: JobPage = get_as(&app, "/api/jobs", &rotated.api_key).await;

    // Rotated again by the command line: the API's key stops too.
    let third = users_cli(&app, &["rotate", "bob"]);
    problem(
        call(&app, Method::GET, "/api/jobs", Some(&rotated.api_key), None).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let _: JobPage = get_as(&app, "/api/jobs", &third).await;

    // Admins: quota and role changes, audited; users cannot.
    problem(
        call(
            &app,
            Method::PATCH,
            "/api/users/alice",
            Some(&third),
            Some(json!({"role": "admin"})),
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let p = problem(
        call(
            &app,
            Method::PATCH,
            "/api/users/alice",
            Some(&root),
            Some(json!({"quota": {"period": "daily", "seconds": -1}})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p.field.as_deref(), Some("quota.seconds"));
    let resp = call(
        &app,
        Method::PATCH,
        "/api/users/alice",
        Some(&root),
        Some(json!({"quota": {"period": "weekly", "seconds": 600}, "role": "admin"})),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let alice_now: User = resp.json().await.unwrap();
    assert_eq!(alice_now.quota.unwrap().seconds, 600.0);
    // A role change counts at the next request: Alice now reads the audit log.
    let audit: AuditPage = get_as(&app, "/api/audit", &alice).await;
    let actions: Vec<&str> = audit.entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        &actions[..4],
        [
            "quota_changed",
            "role_changed",
            "key_rotated",
            "key_rotated"
        ]
    );
    assert_eq!(audit.entries[2].actor, None, "the command line");
    assert_eq!(audit.entries[3].actor.as_deref(), Some("bob"));
    problem(
        call(
            &app,
            Method::PATCH,
            "/api/users/root",
            Some(&root),
            Some(json!({"disabled": true})),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    problem(
        call(
            &app,
            Method::POST,
            "/api/users",
            Some(&root),
            Some(json!({"name": "bob"})),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    let p = problem(
        call(
            &app,
            Method::POST,
            "/api/users",
            Some(&root),
            Some(json!({"name": "Bad Name"})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p.field.as_deref(), Some("name"));
    // serde reads a struct from an array of its fields too; the API takes objects only.
    for (method, path, body) in [
        (Method::PATCH, "/api/users/alice", json!([null, null])),
        (Method::POST, "/api/users", json!(["eve", true])),
        (Method::POST, "/api/session", json!(["alice", alice])),
    ] {
        let p = problem(
            call(&app, method, path, Some(&root), Some(body)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(p.detail.contains("JSON object"), "{path}: {}", p.detail);
    }
}

#[tokio::test]
async fn the_token_stays_an_admin_credential_and_single_mode_is_unchanged() {
    let token = "s3cret-token";
    let app = spawn_app_with(AppOptions {
        token: Some(token.into()),
        test_faults: true,
        ..Default::default()
    })
    .await;
    // Single mode: reads open (loopback), changes need the token, as before.
    let job = json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 8}});
    problem(
        app.post_json("/api/jobs", &job).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let anonymous = submit_as(&app, token, job.clone()).await;
    assert_eq!(anonymous.owner, None);
    let _: JobPage = app.get_json("/api/jobs").await;
    let p = problem(
        call(
            &app,
            Method::POST,
            "/api/session",
            Some(token),
            Some(json!({"name": "a", "key": "b"})),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(p.detail.contains("single mode"), "{}", p.detail);
    let users: Vec<User> = app.get_json("/api/users").await;
    assert!(users.is_empty());

    // The first account, made with the token, turns lab mode on.
    let resp = call(
        &app,
        Method::POST,
        "/api/users",
        Some(token),
        Some(json!({"name": "ada"})),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let ada: UserWithKey = resp.json().await.unwrap();
    problem(app.get("/api/jobs").await, StatusCode::UNAUTHORIZED).await;
    // The token: an admin without a name, for scripts and Prometheus.
    let all: JobPage = get_as(&app, "/api/jobs", token).await;
    assert_eq!(all.jobs[0].id, anonymous.id);
    let resp = call(&app, Method::GET, "/metrics", Some(token), None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let adas: JobPage = get_as(&app, "/api/jobs", &ada.api_key).await;
    assert!(adas.jobs.is_empty(), "jobs of single mode are the admins'");
    problem(
        call(
            &app,
            Method::GET,
            &format!("/api/jobs/{}", anonymous.id),
            Some(&ada.api_key),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let resp = call(
        &app,
        Method::PATCH,
        "/api/users/ada",
        Some(token),
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let audit: AuditPage = get_as(&app, "/api/audit", token).await;
    assert_eq!(audit.entries[0].action, "user_disabled");
    assert_eq!(audit.entries[0].actor, None);
}

#[tokio::test]
async fn a_server_restart_keeps_accounts_and_sessions() {
    let mut app = spawn_app().await;
    let (_root, alice, _bob) = lab(&app).await;
    let resp = app
        .post_json("/api/session", &json!({"name": "alice", "key": alice}))
        .await;
    let cookie = cookie_pair(resp.headers()["set-cookie"].to_str().unwrap());
    let data_dir = app.kill_9();
    let app = spawn_app_with(AppOptions {
        data_dir: Some(data_dir),
        test_faults: true,
        ..Default::default()
    })
    .await;
    let _: JobPage = get_as(&app, "/api/jobs", &alice).await;
    let me: Session = app
        .client
        .get(app.url("/api/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me.user.unwrap().name, "alice");
}

/// A custom kernel's source is in its job, which only its owner (and admins) read, unless
/// the owner shares it. A custom job needs a GPU to run, so this one is written into the
/// server's history as a finished job would be, beside the running server, which reads it
/// from there like any other.
#[tokio::test]
async fn a_custom_kernels_source_is_its_owners_alone_until_shared() {
    let app = spawn_app().await;
    let (root, alice, bob) = lab(&app).await;
    let source = "extern \"C\" __global__ void alices_secret(float *x) { x[0] = 42.0f; }";
    let params = json!({"source": source, "entry": "alices_secret", "n": 1});
    let db = rusqlite::Connection::open(app.data_dir().join("gpulab.sqlite3")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    db.execute(
        "INSERT INTO jobs (kernel, device, params, repetitions, timeout_s, status, created_at,
                           started_at, finished_at, duration_ms, error, owner)
         VALUES ('custom', 'cuda:0', ?1, 1, 60, 'failed', '2026-01-05T10:00:00.000Z',
                 '2026-01-05T10:00:00.000Z', '2026-01-05T10:00:01.000Z', 1000, 'no GPU',
                 'alice')",
        [params.to_string()],
    )
    .unwrap();
    let id = db.last_insert_rowid();
    drop(db);
    let path = format!("/api/jobs/{id}");

    let hers: Job = get_as(&app, &path, &alice).await;
    assert_eq!(hers.params["source"], source);
    let admins: Job = get_as(&app, &path, &root).await;
    assert_eq!(admins.owner.as_deref(), Some("alice"));
    problem(
        call(&app, Method::GET, &path, Some(&bob), None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    for list in ["/api/jobs", "/api/jobs?kernel=custom"] {
        let resp = call(&app, Method::GET, list, Some(&bob), None).await;
        let text = resp.text().await.unwrap();
        assert!(!text.contains("alices_secret"), "{list}: {text}");
    }

    let resp = call(
        &app,
        Method::POST,
        &format!("{path}/share"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let shared: Job = get_as(&app, &path, &bob).await;
    assert_eq!(shared.params["source"], source);
    let bobs: JobPage = get_as(&app, "/api/jobs", &bob).await;
    assert!(
        bobs.jobs.is_empty(),
        "a shared job is read by its link, not listed"
    );
}

//! `GET /api/fleet` against what is not a working Prometheus: no `--prometheus-url`, nothing
//! listening, a web server that is not Prometheus, one that never answers, and settings the
//! server refuses. With a real Prometheus scraping real servers, see end2end/fleet.test.mjs.

mod support;

use std::time::{Duration, Instant};

use gpulab_shared::fleet::Fleet;
use gpulab_shared::Problem;
use reqwest::StatusCode;
use support::{serve_fails, spawn_app, spawn_app_with, AppOptions, TestApp};

async fn hub(prometheus_url: &str) -> TestApp {
    spawn_app_with(AppOptions {
        args: vec!["--prometheus-url".into(), prometheus_url.into()],
        ..Default::default()
    })
    .await
}

async fn bad_gateway(app: &TestApp) -> Problem {
    let resp = app.get("/api/fleet").await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    resp.json().await.unwrap()
}

/// A loopback port on which nothing listens (a moment ago).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn without_a_prometheus_the_answer_says_how_to_set_one() {
    let app = spawn_app().await;
    let resp = app.get("/api/fleet").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let fleet: Fleet = resp.json().await.unwrap();
    assert!(!fleet.configured);
    assert!(fleet.nodes.is_empty());
    let setup = fleet.setup.unwrap();
    assert!(setup.contains("--prometheus-url"), "{setup}");
    assert!(setup.contains("GPULAB_PROMETHEUS_URL"), "{setup}");
}

#[tokio::test]
async fn an_unreachable_prometheus_is_a_502_that_names_it() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let app = hub(&url).await;
    let problem = bad_gateway(&app).await;
    assert!(
        problem
            .detail
            .starts_with(&format!("cannot reach Prometheus at {url}")),
        "{}",
        problem.detail
    );
    assert!(
        problem.detail.contains("Connection refused"),
        "{}",
        problem.detail
    );
}

#[tokio::test]
async fn a_server_that_is_not_prometheus_is_a_502_with_its_answer() {
    // Another gpulab: a real web server, whose /api/v1/query is a 404 problem.
    let other = spawn_app().await;
    let app = hub(&other.base).await;
    let problem = bad_gateway(&app).await;
    assert!(
        problem.detail.contains("404 Not Found"),
        "{}",
        problem.detail
    );
    assert!(
        problem.detail.contains("there is no API route"),
        "the start of its answer: {}",
        problem.detail
    );
}

#[tokio::test]
async fn a_prometheus_that_never_answers_is_a_502_after_the_timeout_and_asked_once() {
    // Accepts connections and reads, but never writes a byte; counts the connections.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    let silent = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            open.push(stream);
        }
    });
    let app = hub(&format!("http://127.0.0.1:{port}")).await;
    let asked = Instant::now();
    // Three browsers at once: the server asks Prometheus once for them all.
    let (a, b, c) = tokio::join!(bad_gateway(&app), bad_gateway(&app), bad_gateway(&app));
    for problem in [a, b, c] {
        assert!(
            problem.detail.contains("did not answer within 5 s"),
            "{}",
            problem.detail
        );
    }
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "the answers came {:?} after the questions",
        asked.elapsed()
    );
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "one connection per fixed query, once"
    );
    silent.abort();
}

#[test]
fn a_prometheus_url_that_cannot_work_stops_the_server() {
    for (url, says) in [
        ("prometheus:9090", "must be an http:// URL"),
        ("https://prometheus:9090", "without TLS"),
        ("http://prometheus:9090/?x", "no query"),
    ] {
        let (status, log) = serve_fails(&["--prometheus-url", url], &[]);
        assert!(!status.success());
        assert!(log.contains(says), "{url}: {log}");
    }
    let (status, log) = serve_fails(
        &[],
        &[
            ("GPULAB_PROMETHEUS_URL", "http://prometheus:9090"),
            ("GPULAB_FLEET_NODE_URL", "{host}"),
        ],
    );
    assert!(!status.success());
    assert!(log.contains("--fleet-node-url"), "{log}");
}

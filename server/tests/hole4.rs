//! Hole 4, memory blow-ups: what one request can make the server hold is bounded, and each
//! bound is refused with a problem naming it. These run without a GPU: a custom job's
//! `params` are checked before its device.

mod support;

use gpulab_shared::{JobComparison, Problem};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::spawn_app;

async fn problem(resp: reqwest::Response, status: StatusCode) -> Problem {
    assert_eq!(resp.status(), status);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert_eq!(ct, "application/problem+json");
    let p: Problem = resp.json().await.unwrap();
    assert_eq!(p.status, status.as_u16());
    p
}

fn custom(params: Value) -> Value {
    json!({"kernel": "custom", "device": "cpu", "params": params})
}

fn vector_add() -> Value {
    let mut p: Value =
        serde_json::from_str(include_str!("../../shared/fixtures/custom_vector_add.json")).unwrap();
    p["source"] = json!("extern \"C\" __global__ void vector_add() {}");
    p
}

#[tokio::test]
async fn hole4_custom_params_are_checked_before_the_device_and_refuse_unknown_keys() {
    let app = spawn_app().await;
    let mut p = vector_add();
    p["args"][1]["colour"] = json!("blue");
    let pr = problem(
        app.post_json("/api/jobs", &custom(p)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(pr.field.as_deref(), Some("args.1"), "{}", pr.detail);
    assert!(pr.detail.contains("colour"), "{}", pr.detail);

    // A scalar with a buffer's field, and a kind that does not exist.
    let mut p = vector_add();
    p["args"][3]["fill"] = json!("ones");
    let pr = problem(
        app.post_json("/api/jobs", &custom(p)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(pr.field.as_deref(), Some("args.3"), "{}", pr.detail);
    let mut p = vector_add();
    p["args"][0]["kind"] = json!("pointer");
    let pr = problem(
        app.post_json("/api/jobs", &custom(p)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(pr.field.as_deref(), Some("args.0"), "{}", pr.detail);

    // Valid params on a CPU: now the device is what is wrong.
    let pr = problem(
        app.post_json("/api/jobs", &custom(vector_add())).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(pr.field.as_deref(), Some("device"), "{}", pr.detail);
}

#[tokio::test]
async fn hole4_custom_sizes_are_bounded_with_413_naming_the_limit() {
    let app = spawn_app().await;
    let mut p = vector_add();
    p["source"] = json!(format!("// {}", "x".repeat(64 * 1024)));
    let pr = problem(
        app.post_json("/api/jobs", &custom(p)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(pr.field.as_deref(), Some("source"));
    assert!(pr.detail.contains("64 KiB"), "{}", pr.detail);

    // 1 MiB of JSON used to become ~16 MiB of values: now 4096 numbers per job at most.
    let mut p = vector_add();
    p["args"][0]["fill"] = json!("values");
    p["args"][0]["values"] = json!(vec![1; 4097]);
    let pr = problem(
        app.post_json("/api/jobs", &custom(p)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert!(pr.detail.contains("4096"), "{}", pr.detail);
}

#[tokio::test]
async fn hole4_compare_collapses_duplicate_ids_and_caps_them() {
    let app = spawn_app().await;
    let job = app
        .submit(
            json!({"kernel": "saxpy", "device": "cpu", "params": {"n": 1024}, "repetitions": 1}),
        )
        .await;
    app.wait_finished(job.id).await;
    let ids = vec![job.id.to_string(); 64].join(",");
    let c: JobComparison = app.get_json(&format!("/api/jobs/compare?ids={ids}")).await;
    assert_eq!(c.entries.len(), 1, "a repeated id is one entry");
    let many: Vec<String> = (1..=65).map(|i| i.to_string()).collect();
    let pr = problem(
        app.get(&format!("/api/jobs/compare?ids={}", many.join(",")))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(pr.detail.contains("64"), "{}", pr.detail);
    // The page size stays bounded.
    problem(
        app.get("/api/jobs?limit=501").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
}

#[tokio::test]
async fn hole4_event_stream_clients_are_capped() {
    let app = spawn_app().await;
    let mut open = Vec::new();
    for _ in 0..64 {
        let resp = app.get("/api/events").await;
        assert_eq!(resp.status(), StatusCode::OK);
        open.push(resp);
    }
    let pr = problem(
        app.get("/api/events").await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert!(pr.detail.contains("64"), "{}", pr.detail);
    // A place frees when a client goes.
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let resp = app.get("/api/events").await;
        if resp.status() == StatusCode::OK {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no place freed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn hole4_a_cpu_job_over_the_available_host_memory_is_refused_before_it_allocates() {
    // bandwidth at 16 GiB copies between two 16 GiB buffers: 32 GiB of host memory.
    let needed: u64 = 32 << 30;
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let available: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .map(|kib| kib.trim().parse::<u64>().unwrap() * 1024)
        .unwrap();
    if available > needed {
        eprintln!("skipped: this host has {available} bytes available, more than {needed}");
        return;
    }
    let app = spawn_app().await;
    let body = json!({"kernel": "bandwidth", "device": "cpu", "params": {"size_mib": 16384}});
    let pr = problem(
        app.post_json("/api/jobs", &body).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(pr.detail.contains("32.00 GiB"), "{}", pr.detail);
    let page: gpulab_shared::JobPage = app.get_json("/api/jobs").await;
    assert!(page.jobs.is_empty(), "nothing was queued");
}

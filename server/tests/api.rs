//! Integration tests: the real `gpulab` binary serving on a random port, with its own data
//! directory, its worker processes and SQLite.

mod support;

use std::time::Duration;

use gpulab_shared::{Device, DeviceKind, Health, Job, JobPage, JobStatus, KernelSpec, Problem};
use reqwest::StatusCode;
use serde_json::json;
use support::{spawn_app, spawn_app_with, AppOptions};

async fn problem(resp: reqwest::Response, status: StatusCode) -> Problem {
    assert_eq!(resp.status(), status);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert_eq!(ct, "application/problem+json");
    let p: Problem = resp.json().await.unwrap();
    assert_eq!(p.status, status.as_u16());
    assert!(!p.detail.is_empty());
    p
}

#[tokio::test]
async fn health_says_whether_cuda_is_usable_and_why_not() {
    let app = spawn_app().await;
    let health: Health = app.get_json("/api/health").await;
    assert_eq!(health.status, "ok");
    assert_eq!(health.version, env!("CARGO_PKG_VERSION"));
    if health.cuda.available {
        assert!(health.cuda.driver_version.is_some());
    } else {
        let reason = health
            .cuda
            .reason
            .expect("a reason when CUDA is unavailable");
        assert!(reason.len() > 10, "{reason}");
    }
    // With or without a GPU: each library is found with a version, or says why not.
    for library in [&health.cuda.libraries.nvrtc, &health.cuda.libraries.cublas] {
        if library.found {
            assert!(library.version.is_some(), "{library:?}");
        } else {
            assert!(
                library
                    .error
                    .as_ref()
                    .is_some_and(|e| e.contains("not found")),
                "{library:?}"
            );
        }
    }
}

#[tokio::test]
async fn devices_list_the_cpu_and_answer_the_original_line() {
    let app = spawn_app().await;
    let devices: Vec<Device> = app.get_json("/api/devices").await;
    let cpu = devices
        .iter()
        .find(|d| d.id == "cpu")
        .expect("the cpu device");
    assert_eq!(cpu.kind, DeviceKind::Cpu);
    let info = cpu.cpu.as_ref().unwrap();
    assert!(info.logical_threads.unwrap() >= 1);
    assert!(cpu.total_memory_bytes.unwrap() > 0);
    assert!(!cpu.name.is_empty());
    let one: Device = app.get_json("/api/devices/cpu").await;
    assert_eq!(&one, cpu);

    let resp = app.get("/api/devices?format=text").await;
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    let gpus = devices
        .iter()
        .filter(|d| d.kind == DeviceKind::Cuda)
        .count();
    assert!(
        text.starts_with(&format!("{gpus} device(s) found.")),
        "{text}"
    );
    assert_eq!(text.matches(", Device #").count(), gpus);

    let p = problem(app.get("/api/devices/cuda:99").await, StatusCode::NOT_FOUND).await;
    assert!(
        p.detail.contains("cpu"),
        "lists the devices there are: {}",
        p.detail
    );
    problem(
        app.get("/api/devices?format=xml").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn the_catalog_describes_every_kernel_with_defaults() {
    let app = spawn_app().await;
    let catalog: Vec<KernelSpec> = app.get_json("/api/kernels").await;
    let names: std::collections::BTreeSet<&str> = catalog.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names.len(), catalog.len(), "names are unique: {names:?}");
    assert!(
        names.contains("matmul") && !names.contains("custom"),
        "{names:?}"
    );
    // The matmul ladder, from the teaching kernels to cuBLAS.
    let matmul = catalog.iter().find(|k| k.name == "matmul").unwrap();
    let variant = matmul.params.iter().find(|p| p.name == "variant").unwrap();
    for choice in ["tiled", "register_tiled", "cublas"] {
        assert!(
            variant
                .choices
                .as_ref()
                .unwrap()
                .iter()
                .any(|c| c == choice),
            "{variant:?}"
        );
    }
    for k in &catalog {
        assert!(k.devices.contains(&DeviceKind::Cpu), "{}", k.name);
        assert!(k.devices.contains(&DeviceKind::Cuda), "{}", k.name);
        assert!(!k.throughput_formula.is_empty(), "{}", k.name);
        assert!(!k.description.is_empty(), "{}", k.name);
        for p in &k.params {
            assert!(!p.default.is_null(), "{}.{} has a default", k.name, p.name);
            assert!(!p.help.is_empty(), "{}.{} has help", k.name, p.name);
        }
    }
}

#[tokio::test]
async fn a_job_goes_through_its_whole_life() {
    let app = spawn_app().await;
    let resp = app
        .post_json(
            "/api/jobs",
            &json!({"kernel": "vector_add", "device": "cpu",
            "params": {"n": 10000}, "repetitions": 5}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let queued: Job = resp.json().await.unwrap();
    assert_eq!(location, format!("/api/jobs/{}", queued.id));
    assert_eq!(queued.status, JobStatus::Queued);
    assert_eq!(queued.params["n"], json!(10000));
    assert_eq!(queued.params["seed"], json!(42), "defaults are filled in");

    let done = app.wait_finished(queued.id).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);
    let result = done.result.as_ref().unwrap();
    assert_eq!(result.timing.repetitions, 5);
    assert!(result.timing.min_ms <= result.timing.median_ms);
    assert!(result.timing.median_ms <= result.timing.max_ms);
    assert!(result.throughput.value > 0.0);
    assert_eq!(result.throughput.unit, "GB/s");
    assert!(result.verification.passed);
    assert!(done.started_at.unwrap() >= done.created_at);
    assert!(done.finished_at.unwrap() >= done.started_at.unwrap());
    assert_eq!(done.progress.map(|p| (p.done, p.total)), Some((5, 5)));

    let page: JobPage = app
        .get_json("/api/jobs?kernel=vector_add&status=succeeded")
        .await;
    assert_eq!(page.jobs.first().map(|j| j.id), Some(queued.id));
    let fetched: Job = app.get_json(&location).await;
    assert_eq!(fetched, done);
    problem(
        app.get(&format!("/api/jobs/{}/artifact", queued.id)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let p = problem(app.delete(&location).await, StatusCode::CONFLICT).await;
    assert!(p.detail.contains("already finished"), "{}", p.detail);
}

/// Small values of the catalog's size parameters, by name, so that every kernel runs in a
/// moment on the CPU.
const SMALL: &[(&str, u64)] = &[
    ("n", 4099),
    ("m", 64),
    ("k", 80),
    ("size_mib", 4),
    ("width", 96),
    ("height", 64),
    ("max_iter", 64),
    ("samples", 200_000),
];

#[tokio::test]
async fn every_cpu_kernel_runs_and_verifies() {
    let app = spawn_app().await;
    let catalog: Vec<KernelSpec> = app.get_json("/api/kernels").await;
    let jobs = support::jobs_of_catalog(&catalog, "cpu", SMALL);
    // Every kernel, and matmul once per variant.
    assert!(jobs.len() >= catalog.len() + 2, "{jobs:?}");
    for body in jobs {
        let job: Job = app
            .post_json("/api/jobs", &body)
            .await
            .json()
            .await
            .unwrap();
        let done = app.wait_finished(job.id).await;
        assert_eq!(
            done.status,
            JobStatus::Succeeded,
            "{}: {:?}",
            job.kernel,
            done.error
        );
        let result = done.result.unwrap();
        assert!(result.verification.passed, "{}", job.kernel);
        assert!(result.verification.max_rel_error <= result.verification.tolerance);
        assert!(result.throughput.value > 0.0, "{}", job.kernel);
        if job.kernel == "mandelbrot" {
            assert!(result.has_artifact);
            let resp = app.get(&format!("/api/jobs/{}/artifact", job.id)).await;
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()["content-type"], "image/png");
            let png = resp.bytes().await.unwrap();
            assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        }
        if job.kernel == "monte_carlo_pi" {
            let pi = result.output["estimate"].as_f64().unwrap();
            assert!((pi - std::f64::consts::PI).abs() < 0.05, "{pi}");
        }
        if job.kernel == "matmul" {
            // The CPU runs one SGEMM for every variant, and says so.
            let ran = result.output["ran"].as_str().unwrap_or_default();
            let variant = body["params"]["variant"].as_str().unwrap_or("cublas");
            assert!(
                ran.contains("matrixmultiply") && ran.contains(variant),
                "{}",
                result.output
            );
        }
    }
}

#[tokio::test]
async fn bad_input_gets_a_problem_naming_what_was_wrong() {
    let app = spawn_app().await;
    let raw = |body: &'static str| {
        app.client
            .post(app.url("/api/jobs"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    problem(raw("{not json").await.unwrap(), StatusCode::BAD_REQUEST).await;
    problem(
        raw(r#"{"device": "cpu"}"#).await.unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let resp = app
        .client
        .post(app.url("/api/jobs"))
        .body("{}")
        .send()
        .await
        .unwrap();
    problem(resp, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    let p = problem(
        app.post_json("/api/jobs", &json!({"kernel": "nope", "device": "cpu"}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p.field.as_deref(), Some("kernel"));
    assert!(
        p.detail.contains("saxpy"),
        "names the catalog: {}",
        p.detail
    );

    let p = problem(
        app.post_json(
            "/api/jobs",
            &json!({"kernel": "saxpy", "device": "cpu", "params": {"n": 0}}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p.field.as_deref(), Some("params.n"));
    assert!(
        p.detail.contains("from 1 to"),
        "names the range: {}",
        p.detail
    );

    let p = problem(
        app.post_json(
            "/api/jobs",
            &json!({"kernel": "saxpy", "device": "cpu", "params": {"m": 3}}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p.field.as_deref(), Some("params.m"));

    let p = problem(
        app.post_json(
            "/api/jobs",
            &json!({"kernel": "saxpy", "device": "cpu", "repetitions": 0}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p.field.as_deref(), Some("repetitions"));

    let p = problem(
        app.post_json(
            "/api/jobs",
            &json!({"kernel": "saxpy", "device": "cpu", "timeout_s": 100000}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p.field.as_deref(), Some("timeout_s"));

    // The largest job of the catalog, a copy of 16 GiB into 16 more, is too big for a host
    // with less memory than that: our build machines. A bigger host (the GPU machine has
    // 128 GiB) would run it, so there the check is left to the GPU tests' too-big custom job.
    let cpu: Device = app.get_json("/api/devices/cpu").await;
    let largest = 2 * (16384u64 << 20);
    if cpu.total_memory_bytes.unwrap() < largest {
        let p = problem(
            app.post_json(
                "/api/jobs",
                &json!({"kernel": "bandwidth", "device": "cpu", "params": {"size_mib": 16384}}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(p.field.as_deref(), Some("params"));
        assert!(p.detail.contains("GiB free"), "{}", p.detail);
    } else {
        eprintln!(
            "skipped the too-big CPU job: this host's {} bytes hold the catalog's largest",
            cpu.total_memory_bytes.unwrap()
        );
    }

    problem(
        app.post_json("/api/jobs", &json!({"kernel": "saxpy", "device": "cuda:7"}))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;

    let big = format!(
        r#"{{"kernel":"saxpy","device":"cpu","params":{{"pad":"{}"}}}}"#,
        "x".repeat(1 << 20)
    );
    let resp = app
        .client
        .post(app.url("/api/jobs"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    problem(resp, StatusCode::PAYLOAD_TOO_LARGE).await;

    for (query, field) in [
        ("status=done", "status"),
        ("limit=0", "limit"),
        ("cursor=abc", "cursor"),
    ] {
        let p = problem(
            app.get(&format!("/api/jobs?{query}")).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(p.field.as_deref(), Some(field));
    }
    problem(app.get("/api/jobs/12345").await, StatusCode::NOT_FOUND).await;
    problem(app.get("/api/jobs/abc").await, StatusCode::NOT_FOUND).await;
    problem(app.delete("/api/jobs/12345").await, StatusCode::NOT_FOUND).await;
    problem(
        app.get("/api/jobs/12345/artifact").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(app.get("/api/nothing-here").await, StatusCode::NOT_FOUND).await;
    problem(
        app.delete("/api/kernels").await,
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;

    // Nothing was stored by any of that.
    let page: JobPage = app.get_json("/api/jobs").await;
    assert!(page.jobs.is_empty(), "{:?}", page.jobs);
}

#[tokio::test]
async fn queued_and_running_jobs_can_be_cancelled() {
    let app = spawn_app().await;
    let hang = app
        .submit(json!({"kernel": "_test_fault", "device": "cpu", "params": {"mode": "hang"}}))
        .await;
    let queued = app
        .submit(json!({"kernel": "vector_add", "device": "cpu"}))
        .await;
    app.wait_status(hang.id, JobStatus::Running).await;

    let resp = app.delete(&format!("/api/jobs/{}", queued.id)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cancelled: Job = resp.json().await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(cancelled.started_at.is_none(), "it never ran");

    let resp = app.delete(&format!("/api/jobs/{}", hang.id)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let stopped: Job = resp.json().await.unwrap();
    assert_eq!(stopped.status, JobStatus::Cancelled);
    assert!(stopped.error.unwrap().contains("worker was killed"));

    let next = app
        .submit(json!({"kernel": "saxpy", "device": "cpu", "params": {"n": 1000}}))
        .await;
    assert_eq!(
        app.wait_finished(next.id).await.status,
        JobStatus::Succeeded
    );
}

#[tokio::test]
async fn a_long_job_shows_progress_and_stops_when_cancelled() {
    let app = spawn_app().await;
    let job = app
        .submit(json!({"kernel": "mandelbrot", "device": "cpu",
            "params": {"width": 64, "height": 64, "max_iter": 200}, "repetitions": 10000}))
        .await;
    let seen = app
        .wait_until(job.id, |j| {
            j.progress.is_some_and(|p| p.done > 0 && p.done < p.total)
        })
        .await;
    assert_eq!(seen.status, JobStatus::Running);
    assert_eq!(seen.progress.unwrap().total, 10000);
    let stopped: Job = app
        .delete(&format!("/api/jobs/{}", job.id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stopped.status, JobStatus::Cancelled);
}

#[tokio::test]
async fn a_hung_worker_times_out_and_the_next_job_runs() {
    let app = spawn_app().await;
    let hang = app
        .submit(json!({"kernel": "_test_fault", "device": "cpu", "params": {"mode": "hang"}, "timeout_s": 1}))
        .await;
    let next = app
        .submit(json!({"kernel": "reduce_sum", "device": "cpu", "params": {"n": 5000}}))
        .await;
    let ended = app.wait_finished(hang.id).await;
    assert_eq!(ended.status, JobStatus::TimedOut);
    assert!(ended.error.unwrap().contains("timeout of 1 s"));
    assert_eq!(
        app.wait_finished(next.id).await.status,
        JobStatus::Succeeded
    );
}

#[tokio::test]
async fn a_crashed_worker_fails_its_job_and_is_replaced() {
    let app = spawn_app().await;
    let crash = app
        .submit(json!({"kernel": "_test_fault", "device": "cpu", "params": {"mode": "crash"}}))
        .await;
    let next = app
        .submit(json!({"kernel": "monte_carlo_pi", "device": "cpu", "params": {"samples": 10000}}))
        .await;
    let ended = app.wait_finished(crash.id).await;
    assert_eq!(ended.status, JobStatus::Failed);
    let error = ended.error.unwrap();
    assert!(
        error.contains("crashed") && error.contains("SIGABRT"),
        "{error}"
    );
    assert_eq!(
        app.wait_finished(next.id).await.status,
        JobStatus::Succeeded
    );
}

#[tokio::test]
async fn test_faults_are_unknown_without_the_hidden_flag() {
    let app = spawn_app_with(AppOptions {
        test_faults: false,
        ..Default::default()
    })
    .await;
    let resp = app
        .post_json(
            "/api/jobs",
            &json!({"kernel": "_test_fault", "device": "cpu"}),
        )
        .await;
    let p = problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(p.field.as_deref(), Some("kernel"));
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let app = spawn_app_with(AppOptions {
        queue_capacity: Some(2),
        test_faults: true,
        ..Default::default()
    })
    .await;
    let hang = app
        .submit(json!({"kernel": "_test_fault", "device": "cpu"}))
        .await;
    app.wait_status(hang.id, JobStatus::Running).await;
    let a = app
        .submit(json!({"kernel": "vector_add", "device": "cpu"}))
        .await;
    let b = app
        .submit(json!({"kernel": "vector_add", "device": "cpu"}))
        .await;
    let resp = app
        .post_json(
            "/api/jobs",
            &json!({"kernel": "vector_add", "device": "cpu"}),
        )
        .await;
    assert_eq!(resp.headers()["retry-after"], "1");
    problem(resp, StatusCode::TOO_MANY_REQUESTS).await;
    for id in [a.id, b.id, hang.id] {
        assert_eq!(
            app.delete(&format!("/api/jobs/{id}")).await.status(),
            StatusCode::OK
        );
    }
    let page: JobPage = app.get_json("/api/jobs?status=cancelled").await;
    assert_eq!(page.jobs.len(), 3, "the refused job was not stored");
}

#[tokio::test]
async fn history_survives_kill_9_and_unfinished_jobs_come_back_interrupted() {
    let mut app = spawn_app().await;
    let done = app
        .submit(json!({"kernel": "saxpy", "device": "cpu", "params": {"n": 2000}}))
        .await;
    let done = app.wait_finished(done.id).await;
    assert_eq!(done.status, JobStatus::Succeeded);
    let running = app
        .submit(json!({"kernel": "_test_fault", "device": "cpu"}))
        .await;
    let queued = app
        .submit(json!({"kernel": "vector_add", "device": "cpu"}))
        .await;
    app.wait_status(running.id, JobStatus::Running).await;

    let data_dir = app.kill_9();
    let app = spawn_app_with(AppOptions {
        data_dir: Some(data_dir),
        test_faults: true,
        ..Default::default()
    })
    .await;
    let after: Job = app.get_json(&format!("/api/jobs/{}", done.id)).await;
    assert_eq!(after, done, "a finished job is kept exactly");
    for id in [running.id, queued.id] {
        let job: Job = app.get_json(&format!("/api/jobs/{id}")).await;
        assert_eq!(job.status, JobStatus::Interrupted);
        assert!(job.finished_at.is_some());
    }
    // The restarted server runs jobs again, and new ids follow the old ones.
    let next = app
        .submit(json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 100}}))
        .await;
    assert!(next.id > queued.id);
    assert_eq!(
        app.wait_finished(next.id).await.status,
        JobStatus::Succeeded
    );
}

#[tokio::test]
async fn jobs_page_newest_first_with_a_cursor() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for n in 1..=5 {
        ids.push(
            app.submit(json!({"kernel": "vector_add", "device": "cpu", "params": {"n": n}}))
                .await
                .id,
        );
    }
    let first: JobPage = app.get_json("/api/jobs?limit=2").await;
    assert_eq!(
        first.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        [ids[4], ids[3]]
    );
    let cursor = first.next_cursor.unwrap();
    let second: JobPage = app
        .get_json(&format!("/api/jobs?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(
        second.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        [ids[2], ids[1]]
    );
    let third: JobPage = app
        .get_json(&format!(
            "/api/jobs?limit=2&cursor={}",
            second.next_cursor.unwrap()
        ))
        .await;
    assert_eq!(
        third.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        [ids[0]]
    );
    assert_eq!(third.next_cursor, None);
    let none: JobPage = app.get_json("/api/jobs?device=cuda:0").await;
    assert!(none.jobs.is_empty());
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app.get_json("/api/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let expected = [
        ("/api/health", "get"),
        ("/api/devices", "get"),
        ("/api/devices/{id}", "get"),
        ("/api/devices/{id}/roofline", "get"),
        ("/api/devices/{id}/telemetry", "get"),
        ("/api/events", "get"),
        ("/metrics", "get"),
        ("/api/kernels", "get"),
        ("/api/jobs", "get"),
        ("/api/jobs", "post"),
        ("/api/jobs/{id}", "get"),
        ("/api/jobs/{id}", "delete"),
        ("/api/jobs/{id}/artifact", "get"),
        ("/api/jobs/compare", "get"),
        ("/api/diagnostics", "get"),
        ("/api/diagnostics", "post"),
        ("/api/diagnostics/{id}", "get"),
        ("/api/diagnostics/{id}", "delete"),
        ("/api/fleet", "get"),
        ("/api/usage", "get"),
        ("/api/openapi.json", "get"),
        ("/api/jobs/{id}/share", "post"),
        ("/api/jobs/{id}/share", "delete"),
        ("/api/session", "get"),
        ("/api/session", "post"),
        ("/api/session", "delete"),
        ("/api/users", "get"),
        ("/api/users", "post"),
        ("/api/users/{name}", "patch"),
        ("/api/users/{name}/key", "post"),
        ("/api/audit", "get"),
    ];
    let paths = doc["paths"].as_object().unwrap();
    let mut listed: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (path.clone(), m.clone()))
        })
        .collect();
    listed.sort();
    let mut expected: Vec<(String, String)> = expected
        .iter()
        .map(|(p, m)| (p.to_string(), m.to_string()))
        .collect();
    expected.sort();
    assert_eq!(listed, expected);
    for schema in [
        "Job",
        "JobRequest",
        "Device",
        "KernelSpec",
        "Problem",
        "Health",
        "CudaLibraries",
        "LibraryStatus",
        "Diagnostic",
        "DiagnosticRequest",
        "DiagnosticPage",
        "CheckResult",
        "LastDiagnostic",
        "Fleet",
        "FleetNode",
        "FleetDevice",
        "UsageReport",
        "UsageRow",
        "UsageTotal",
        "Peak",
        "PeakBasis",
        "FractionOfPeak",
        "RooflinePoint",
        "Roofline",
        "RooflineJob",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema}"
        );
    }
}

/// What Schemathesis (the `api schema` step of `cargo xtask test`) relies on to reach every
/// operation: names that identify operations, links that name them, parameters where the
/// server reads them, and a 202 body described as it is sent.
#[tokio::test]
async fn the_openapi_document_describes_operations_as_the_server_serves_them() {
    let app = spawn_app().await;
    let doc: serde_json::Value = app.get_json("/api/openapi.json").await;
    let mut ids = Vec::new();
    let mut links = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str();
            ids.push(id.unwrap_or_else(|| panic!("{method} {path} has no operationId")));
            // The guards in front of every route: the token, and the `Host` check.
            let open_read = ["/api/health", "/api/openapi.json"].contains(&path.as_str());
            assert_eq!(
                op["responses"].get("401").is_some(),
                !open_read,
                "{method} {path}: 401"
            );
            assert!(op["responses"]["403"].is_object(), "{method} {path}: 403");
            for param in op["parameters"].as_array().into_iter().flatten() {
                let name = param["name"].as_str().unwrap();
                let in_path = path.contains(&format!("{{{name}}}"));
                assert_eq!(
                    param["in"] == "path",
                    in_path,
                    "{method} {path}: parameter {name} is declared in {}",
                    param["in"]
                );
            }
            for response in op["responses"].as_object().unwrap().values() {
                assert!(
                    response.get("links").is_none_or(|l| l.is_object()),
                    "{method} {path}: {response}"
                );
                for link in response["links"]
                    .as_object()
                    .into_iter()
                    .flat_map(|l| l.values())
                {
                    links.push((format!("{method} {path}"), link.clone()));
                }
            }
        }
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "operationIds repeat: {ids:?}");
    assert!(!links.is_empty(), "POST /api/jobs links to its job");
    for (from, link) in links {
        let target = link["operationId"].as_str();
        assert!(
            target.is_some_and(|t| ids.contains(&t)),
            "a link of {from} names no operation: {link}"
        );
    }

    // The 202 body is the job itself, with no wrapper naming the variant.
    let submitted = &doc["components"]["schemas"]["Submitted"]["oneOf"];
    assert_eq!(
        submitted,
        &json!([
            {"$ref": "#/components/schemas/Job"},
            {"$ref": "#/components/schemas/JobGroup"}
        ])
    );
    let resp = app
        .post_json(
            "/api/jobs",
            &json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 16}}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["id"].is_i64(), "{body}");

    // A parameter's default is a number, string or boolean, never an object.
    let default = &doc["components"]["schemas"]["ParamSpec"]["properties"]["default"];
    let types: Vec<&str> = default["oneOf"]
        .as_array()
        .unwrap_or_else(|| panic!("{default}"))
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["number", "string", "boolean"]);
    let kernels: Vec<KernelSpec> = app.get_json("/api/kernels").await;
    for param in kernels.iter().flat_map(|k| &k.params) {
        assert!(
            param.default.is_number() || param.default.is_string() || param.default.is_boolean(),
            "{}: {}",
            param.name,
            param.default
        );
    }
}

#[tokio::test]
async fn a_token_guards_changes_but_not_reads() {
    let app = spawn_app_with(AppOptions {
        token: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    let body = json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 10}});
    let resp = app.post_json("/api/jobs", &body).await;
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    problem(resp, StatusCode::UNAUTHORIZED).await;
    let resp = app
        .client
        .post(app.url("/api/jobs"))
        .bearer_auth("s3cre")
        .json(&body)
        .send()
        .await
        .unwrap();
    problem(resp, StatusCode::UNAUTHORIZED).await;
    let resp = app
        .client
        .post(app.url("/api/jobs"))
        .bearer_auth("s3cret")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let job: Job = resp.json().await.unwrap();
    problem(
        app.delete(&format!("/api/jobs/{}", job.id)).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    // Reads stay open.
    let fetched: Job = app.get_json(&format!("/api/jobs/{}", job.id)).await;
    assert_eq!(fetched.id, job.id);
    let _: Vec<Device> = app.get_json("/api/devices").await;
}

#[tokio::test]
async fn the_ui_is_served_with_a_fallback_for_its_routes() {
    let dist = tempfile::tempdir().unwrap();
    std::fs::write(
        dist.path().join("index.html"),
        "<!doctype html><title>gpulab</title>",
    )
    .unwrap();
    std::fs::write(dist.path().join("app_bg.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(dist.path().join("app.js"), "export {}").unwrap();
    let app = spawn_app_with(AppOptions {
        static_dir: Some(dist.path().into()),
        ..Default::default()
    })
    .await;
    for path in ["/", "/jobs/12", "/launch"] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(resp.text().await.unwrap().contains("<title>gpulab</title>"));
    }
    assert_eq!(
        app.get("/app_bg.wasm").await.headers()["content-type"],
        "application/wasm"
    );
    assert!(app.get("/app.js").await.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("javascript"));
    // An unknown API path is still the API's 404, not the UI.
    problem(app.get("/api/jobs/1/nothing").await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn the_ui_is_compressed_for_a_browser_that_accepts_it() {
    let dist = tempfile::tempdir().unwrap();
    std::fs::write(dist.path().join("index.html"), "<!doctype html>").unwrap();
    // Compressible, as real WebAssembly is.
    let wasm: Vec<u8> = b"\0asm\x01\0\0\0"
        .iter()
        .copied()
        .chain((0..64 * 1024).map(|i| (i % 7) as u8))
        .collect();
    std::fs::write(dist.path().join("app_bg.wasm"), &wasm).unwrap();
    let app = spawn_app_with(AppOptions {
        static_dir: Some(dist.path().into()),
        ..Default::default()
    })
    .await;
    let fetch = |accept: Option<&'static str>| {
        let mut request = app.client.get(app.url("/app_bg.wasm"));
        if let Some(accept) = accept {
            request = request.header("accept-encoding", accept);
        }
        request.send()
    };
    for (accept, encoding) in [("gzip", "gzip"), ("gzip, deflate, br", "br")] {
        let resp = fetch(Some(accept)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-encoding"], encoding, "{accept}");
        let body = resp.bytes().await.unwrap();
        assert!(
            body.len() < wasm.len() / 10,
            "{encoding}: {} bytes",
            body.len()
        );
    }
    // A client that asks for nothing gets the file as it is.
    let plain = fetch(None).await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(plain.bytes().await.unwrap(), wasm);
}

#[tokio::test]
async fn a_copy_compressed_at_build_time_is_sent_instead_of_compressing_again() {
    let dist = tempfile::tempdir().unwrap();
    std::fs::write(dist.path().join("index.html"), "<!doctype html>").unwrap();
    let js = "export const x = 1;\n".repeat(1000);
    std::fs::write(dist.path().join("app.js"), &js).unwrap();
    // Not real brotli or gzip: only the file itself could answer with these bytes.
    std::fs::write(dist.path().join("app.js.br"), b"brotli copy").unwrap();
    std::fs::write(dist.path().join("app.js.gz"), b"gzip copy").unwrap();
    let app = spawn_app_with(AppOptions {
        static_dir: Some(dist.path().into()),
        ..Default::default()
    })
    .await;
    for (accept, encoding, body) in [
        ("gzip, deflate, br", "br", &b"brotli copy"[..]),
        ("gzip", "gzip", &b"gzip copy"[..]),
    ] {
        let resp = app
            .client
            .get(app.url("/app.js"))
            .header("accept-encoding", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-encoding"], encoding, "{accept}");
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript"));
        assert_eq!(resp.bytes().await.unwrap(), body, "{accept}");
    }
    let plain = app.client.get(app.url("/app.js")).send().await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(plain.text().await.unwrap(), js);
}

#[test]
fn the_command_line_runs_a_job_and_prints_devices() {
    let exe = support::gpulab_exe();
    let out = std::process::Command::new(&exe)
        .args([
            "run",
            "saxpy",
            "--device",
            "cpu",
            "--param",
            "n=5000",
            "--repetitions",
            "3",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["result"]["timing"]["repetitions"], 3);
    assert_eq!(body["params"]["n"], 5000);

    let out = std::process::Command::new(&exe)
        .args(["run", "saxpy", "--param", "n=0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("from 1 to"));

    let out = std::process::Command::new(exe)
        .arg("devices")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines().next().unwrap().contains("device(s) found."),
        "{text}"
    );
    assert!(text.contains("cpu"), "{text}");
}

#[tokio::test]
async fn the_event_stream_carries_each_change_of_a_job() {
    let app = spawn_app().await;
    let mut stream = app.get("/api/events").await;
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(stream.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let job = app
        .submit(json!({"kernel": "mandelbrot", "device": "cpu",
            "params": {"width": 32, "height": 32, "max_iter": 50}, "repetitions": 200}))
        .await;
    let mut seen: Vec<JobStatus> = Vec::new();
    let mut progress_events = 0;
    let mut buffer = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.last().is_none_or(|s| !s.is_finished()) {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("the job's events within a minute")
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if !event.contains("event: job\n") {
                continue;
            }
            let data = event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap();
            let update: Job = serde_json::from_str(data).unwrap();
            if update.id != job.id {
                continue;
            }
            if update.status == JobStatus::Running && update.progress.is_some_and(|p| p.done > 0) {
                progress_events += 1;
            }
            if seen.last() != Some(&update.status) {
                seen.push(update.status);
            }
        }
    }
    assert_eq!(
        seen,
        [JobStatus::Queued, JobStatus::Running, JobStatus::Succeeded]
    );
    assert!(
        progress_events > 0,
        "progress is streamed while the job runs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_the_server_even_with_an_event_stream_open() {
    let mut app = spawn_app().await;
    let mut stream = app.get("/api/events").await;
    assert_eq!(stream.status(), StatusCode::OK);
    let exited = tokio::task::block_in_place(|| app.terminate_within(Duration::from_secs(10)));
    assert!(exited, "the server still runs 10 s after SIGTERM");
    // The stream ended with the server rather than being cut mid-event.
    while let Ok(Some(_)) = stream.chunk().await {}
}

#[tokio::test]
async fn custom_kernels_and_all_devices_are_refused_without_a_gpu_saying_why() {
    let app = spawn_app().await;
    let health: Health = app.get_json("/api/health").await;
    let custom = json!({
        "kernel": "custom", "device": "cpu",
        "params": {"source": "extern \"C\" __global__ void k() {}", "entry": "k", "n": 1},
    });
    let p = problem(
        app.post_json("/api/jobs", &custom).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p.field.as_deref(), Some("device"));
    assert!(p.detail.contains("CUDA devices only"), "{}", p.detail);

    let all = json!({"kernel": "saxpy", "device": "all"});
    let resp = app.post_json("/api/jobs", &all).await;
    if health.cuda.available {
        // A GPU host queues one job per GPU: the GPU check covers that.
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        return;
    }
    let p = problem(resp, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(p.field.as_deref(), Some("device"));
    assert!(p.detail.contains("has none"), "{}", p.detail);
    assert!(
        p.detail.contains(&health.cuda.reason.unwrap()),
        "{}",
        p.detail
    );
    // Nothing was queued.
    let page: JobPage = app.get_json("/api/jobs").await;
    assert!(page.jobs.is_empty(), "{:?}", page.jobs);
}

#[tokio::test]
async fn jobs_compare_side_by_side_and_flag_the_slow_ones() {
    let app = spawn_app().await;
    let body = json!({"kernel": "saxpy", "device": "cpu", "params": {"n": 4096}, "repetitions": 2});
    let a = app.submit(body.clone()).await;
    let b = app.submit(body).await;
    app.wait_finished(a.id).await;
    let b = app.wait_finished(b.id).await;
    assert_eq!(b.status, JobStatus::Succeeded);
    let c: gpulab_shared::JobComparison = app
        .get_json(&format!("/api/jobs/compare?ids={},{}", a.id, b.id))
        .await;
    assert!(c.complete);
    assert_eq!(c.unit.as_deref(), Some("GB/s"));
    assert_eq!(c.entries.len(), 2);
    let best = c.best.unwrap();
    for e in &c.entries {
        let slower = e.slower_than_best.unwrap();
        assert!(slower >= 0.0);
        assert_eq!(e.flagged, slower > c.slow_threshold);
        assert!((best / e.throughput.unwrap() - 1.0 - slower).abs() < 1e-9);
    }
    let p = problem(
        app.get("/api/jobs/compare?ids=1,x").await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p.field.as_deref(), Some("ids"));
    problem(
        app.get("/api/jobs/compare?ids=999999").await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

//! Diagnostics through the real server on the CPU device: the API, the queue they share with
//! jobs, cancellation, a dying worker, a restart, the event stream, the history, the
//! device's last verdict and the metrics.

mod support;

use std::time::Duration;

use gpulab_shared::diag::{CheckState, Diagnostic, DiagnosticPage, DiagnosticStatus, Verdict};
use gpulab_shared::{Device, JobStatus, Problem};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{spawn_app_with, AppOptions, TestApp};

/// The memory test covers 16 MiB in these tests: the machines are shared.
const SMALL_MEMORY_TEST: (&str, &str) = ("GPULAB_TEST_MEMORY_TEST_BYTES", "16777216");

async fn app() -> TestApp {
    spawn_app_with(AppOptions {
        test_faults: true,
        env: vec![(SMALL_MEMORY_TEST.0.into(), SMALL_MEMORY_TEST.1.into())],
        ..Default::default()
    })
    .await
}

async fn start(app: &TestApp, body: Value) -> Diagnostic {
    let resp = app.post_json("/api/diagnostics", &body).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "{body}");
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let diagnostic: Diagnostic = resp.json().await.unwrap();
    assert_eq!(location, format!("/api/diagnostics/{}", diagnostic.id));
    diagnostic
}

async fn refused(app: &TestApp, body: Value) -> (StatusCode, Problem) {
    let resp = app.post_json("/api/diagnostics", &body).await;
    let status = resp.status();
    assert_eq!(
        resp.headers()["content-type"],
        "application/problem+json",
        "{body}"
    );
    (status, resp.json().await.unwrap())
}

async fn get(app: &TestApp, id: i64) -> Diagnostic {
    app.get_json(&format!("/api/diagnostics/{id}")).await
}

/// Polls the diagnostic until `done` holds, for at most five minutes.
async fn wait_until(app: &TestApp, id: i64, done: impl Fn(&Diagnostic) -> bool) -> Diagnostic {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let d = get(app, id).await;
        if done(&d) {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "diagnostic {id} stuck: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_ended(app: &TestApp, id: i64) -> Diagnostic {
    wait_until(app, id, |d| d.status.is_terminal()).await
}

/// Waits until a check of the diagnostic runs (the worker has it).
async fn wait_check_running(app: &TestApp, id: i64) -> Diagnostic {
    wait_until(app, id, |d| {
        d.devices[0]
            .checks
            .iter()
            .any(|c| c.state == CheckState::Running)
    })
    .await
}

async fn metrics(app: &TestApp) -> String {
    let resp = app.get("/metrics").await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp.text().await.unwrap()
}

/// The value of the one sample whose name and labels are exactly these.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().unwrap())
}

#[tokio::test]
async fn a_level_2_diagnostic_on_the_cpu_ends_in_a_verdict_with_evidence_and_jobs_wait_for_it() {
    let app = app().await;
    let queued = start(&app, json!({"level": 2, "device": "cpu"})).await;
    // A job sent while the diagnostic holds the queue runs after it.
    let job = app
        .submit(json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 1000}}))
        .await;
    assert_eq!(queued.level, 2);
    assert_eq!(queued.schema_version, 1);
    assert_eq!(queued.devices.len(), 1);
    let planned = &queued.devices[0].checks;
    assert!(planned.len() >= 3, "{planned:?}");
    assert!(planned.iter().all(|c| c.state == CheckState::Waiting));

    let ended = wait_ended(&app, queued.id).await;
    assert_eq!(ended.status, DiagnosticStatus::Finished, "{ended:?}");
    let part = &ended.devices[0];
    assert_eq!(part.status, DiagnosticStatus::Finished);
    let names: Vec<&str> = part.checks.iter().map(|c| c.check.as_str()).collect();
    let planned_names: Vec<&str> = planned.iter().map(|c| c.check.as_str()).collect();
    assert_eq!(names, planned_names, "the checks that were announced ran");
    for check in &part.checks {
        assert_eq!(check.state, CheckState::Done, "{check:?}");
        let verdict = check.verdict.expect("a done check has a verdict");
        if verdict == Verdict::Skip {
            assert!(check.reason.is_some(), "a skip says why: {check:?}");
        } else {
            assert!(!check.evidence.is_empty(), "no evidence: {check:?}");
        }
    }
    let verdict = Verdict::combine(part.checks.iter().filter_map(|c| c.verdict));
    assert_eq!(part.verdict, Some(verdict));
    assert_eq!(ended.verdict, Some(verdict));
    assert!(
        part.checks.iter().any(|c| c.verdict == Some(Verdict::Pass)),
        "{part:?}"
    );

    let job = app.wait_finished(job.id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    let part_finished = part.finished_at.unwrap();
    assert!(
        job.started_at.unwrap() >= part_finished,
        "the job started at {:?}, before the diagnostic ended at {part_finished}",
        job.started_at
    );

    // The device shows its last verdict, in the list and alone.
    let cpu: Device = app.get_json("/api/devices/cpu").await;
    let last = cpu.last_diagnostic.expect("the CPU has a last diagnostic");
    assert_eq!((last.id, last.level, last.verdict), (ended.id, 2, verdict));
    assert_eq!(last.finished_at, part_finished);
    let devices: Vec<Device> = app.get_json("/api/devices").await;
    let listed = devices.iter().find(|d| d.id == "cpu").unwrap();
    assert_eq!(listed.last_diagnostic.as_ref(), Some(&last));

    // And in the metrics: each judged check, the verdict and when.
    let text = metrics(&app).await;
    let code = |v: Verdict| f64::from(v.metric_value().unwrap());
    assert_eq!(
        sample(
            &text,
            "gpulab_diagnostic_verdict",
            r#"device="cpu",level="2""#
        ),
        Some(code(verdict)),
        "{text}"
    );
    for check in &part.checks {
        let labels = format!(r#"device="cpu",level="2",check="{}""#, check.check);
        let value = sample(&text, "gpulab_diagnostic_result", &labels);
        assert_eq!(value, check.verdict.unwrap().metric_value().map(f64::from));
    }
    let at = sample(
        &text,
        "gpulab_diagnostic_last_run_timestamp_seconds",
        r#"device="cpu",level="2""#,
    )
    .unwrap();
    assert_eq!(at, part_finished.timestamp_millis() as f64 / 1e3);
    assert!(text.contains("# TYPE gpulab_diagnostic_result gauge\n"));
}

#[tokio::test]
async fn an_injected_fault_fails_the_check_with_its_evidence_in_the_api_and_the_metrics() {
    let app = app().await;
    let started = start(
        &app,
        json!({"level": 2, "device": "cpu", "inject": ["memory_bit_flip"]}),
    )
    .await;
    let ended = wait_ended(&app, started.id).await;
    assert_eq!(ended.status, DiagnosticStatus::Finished, "{ended:?}");
    assert_eq!(ended.verdict, Some(Verdict::Fail));
    let part = &ended.devices[0];
    let failed: Vec<_> = part
        .checks
        .iter()
        .filter(|c| c.verdict == Some(Verdict::Fail))
        .collect();
    assert_eq!(failed.len(), 1, "only the memory test fails: {part:?}");
    let memory = failed[0];
    assert!(memory.check.contains("memory"), "{memory:?}");
    assert!(memory.reason.is_some(), "{memory:?}");
    assert!(
        memory.evidence.iter().any(|e| e.verdict == Verdict::Fail),
        "the failing figure is in the evidence: {memory:?}"
    );

    let text = metrics(&app).await;
    let labels = format!(r#"device="cpu",level="2",check="{}""#, memory.check);
    assert_eq!(
        sample(&text, "gpulab_diagnostic_result", &labels),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "gpulab_diagnostic_verdict",
            r#"device="cpu",level="2""#
        ),
        Some(2.0)
    );
    let cpu: Device = app.get_json("/api/devices/cpu").await;
    assert_eq!(cpu.last_diagnostic.unwrap().verdict, Verdict::Fail);
}

#[tokio::test]
async fn bad_requests_are_refused_saying_why_and_inject_needs_test_faults() {
    let app = spawn_app_with(AppOptions::default()).await;
    let (status, problem) = refused(&app, json!({"level": 4, "device": "cpu"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem.field.as_deref(), Some("level"));
    let (status, problem) = refused(&app, json!({"level": 1, "device": "cuda:7"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(problem.detail.contains("cuda:7"), "{problem:?}");
    for duration in [0.5, 601.0, -1.0] {
        let (status, problem) = refused(
            &app,
            json!({"level": 3, "device": "cpu", "duration_s": duration}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem.field.as_deref(), Some("duration_s"), "{problem:?}");
    }
    let (status, problem) = refused(
        &app,
        json!({"level": 1, "device": "cpu", "inject": ["gemm_mismatch"]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem.field.as_deref(), Some("inject"));
    assert!(
        problem.detail.contains("--enable-test-faults"),
        "{problem:?}"
    );
    let (status, _) = refused(
        &app,
        json!({"level": 1, "device": "cpu", "inject": ["no_such_fault"]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, problem) = refused(&app, json!({"level": 1, "device": "cpu", "levl": 2})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem.detail.contains("levl"), "{problem:?}");
    // Nothing was stored.
    let page: DiagnosticPage = app.get_json("/api/diagnostics").await;
    assert!(page.diagnostics.is_empty(), "{page:?}");
    for path in ["/api/diagnostics/99", "/api/diagnostics/x"] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // Below level 3 the stress time is ignored; at level 3 it defaults to 600 s.
    let d = start(&app, json!({"level": 1, "device": "all", "duration_s": 5})).await;
    assert_eq!(d.duration_s, None);
    assert_eq!(d.device, "all");
    let on: Vec<&str> = d.devices.iter().map(|p| p.device.as_str()).collect();
    assert_eq!(on, ["cpu"], "`all` is the CPU on a host without a GPU");
    let d3 = start(&app, json!({"level": 3, "device": "cpu"})).await;
    assert_eq!(d3.duration_s, Some(600.0));
    let resp = app.delete(&format!("/api/diagnostics/{}", d3.id)).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_token_guards_diagnostics_as_it_guards_jobs() {
    let app = spawn_app_with(AppOptions {
        token: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    let resp = app
        .post_json("/api/diagnostics", &json!({"level": 1, "device": "cpu"}))
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = app
        .client
        .post(app.url("/api/diagnostics"))
        .bearer_auth("s3cret")
        .json(&json!({"level": 1, "device": "cpu"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let d: Diagnostic = resp.json().await.unwrap();
    let resp = app.delete(&format!("/api/diagnostics/{}", d.id)).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_diagnostic_is_cancelled_queued_or_running_and_the_next_job_runs() {
    let app = app().await;
    // A job that hangs holds the CPU: the diagnostic waits behind it.
    let hang = app
        .submit(
            json!({"kernel": "_test_fault", "device": "cpu", "params": {"mode": "hang"},
            "timeout_s": 60}),
        )
        .await;
    app.wait_status(hang.id, JobStatus::Running).await;
    let waiting = start(&app, json!({"level": 1, "device": "cpu"})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(&app, waiting.id).await.status, DiagnosticStatus::Queued);
    let resp = app
        .delete(&format!("/api/diagnostics/{}", waiting.id))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cancelled: Diagnostic = resp.json().await.unwrap();
    assert_eq!(cancelled.status, DiagnosticStatus::Cancelled);
    assert_eq!(cancelled.verdict, None);
    assert_eq!(
        cancelled.devices[0].error.as_deref(),
        Some("cancelled before it started")
    );
    let resp = app
        .delete(&format!("/api/diagnostics/{}", waiting.id))
        .await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    app.delete(&format!("/api/jobs/{}", hang.id)).await;

    // A running one: its worker is killed.
    let running = start(
        &app,
        json!({"level": 3, "device": "cpu", "duration_s": 120}),
    )
    .await;
    wait_check_running(&app, running.id).await;
    let resp = app
        .delete(&format!("/api/diagnostics/{}", running.id))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cancelled: Diagnostic = resp.json().await.unwrap();
    assert_eq!(cancelled.status, DiagnosticStatus::Cancelled);
    let error = cancelled.devices[0].error.as_deref().unwrap();
    assert!(error.contains("cancelled while running"), "{error}");
    assert!(
        cancelled.devices[0]
            .checks
            .iter()
            .all(|c| c.state != CheckState::Running),
        "no check is left running: {cancelled:?}"
    );
    let job = app
        .submit(json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 100}}))
        .await;
    assert_eq!(app.wait_finished(job.id).await.status, JobStatus::Succeeded);
}

/// The server's live child processes (its workers).
fn workers(server: u32) -> Vec<u32> {
    support::workers_of(server)
        .into_iter()
        .filter(|pid| support::is_alive(*pid))
        .collect()
}

#[tokio::test]
async fn a_worker_killed_during_a_diagnostic_fails_it_saying_so_and_the_next_job_runs() {
    let app = app().await;
    let d = start(
        &app,
        json!({"level": 3, "device": "cpu", "duration_s": 120}),
    )
    .await;
    let job = app
        .submit(json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 100}}))
        .await;
    wait_check_running(&app, d.id).await;
    let pids = workers(app.pid());
    assert_eq!(pids.len(), 1, "{pids:?}");
    // SAFETY: kill(2) on the worker's pid; it touches no memory of ours.
    let killed = unsafe { libc::kill(pids[0] as libc::pid_t, libc::SIGKILL) };
    assert_eq!(killed, 0);
    let ended = wait_ended(&app, d.id).await;
    assert_eq!(ended.status, DiagnosticStatus::Failed, "{ended:?}");
    assert_eq!(ended.verdict, None);
    let error = ended.devices[0].error.as_deref().unwrap();
    assert!(
        error.contains("crashed while running this diagnostic") && error.contains("SIGKILL"),
        "{error}"
    );
    assert!(
        ended.error.as_deref().unwrap().starts_with("cpu: "),
        "{ended:?}"
    );
    assert_eq!(app.wait_finished(job.id).await.status, JobStatus::Succeeded);
}

#[tokio::test]
async fn a_diagnostic_past_its_time_limit_fails_saying_so_and_the_next_job_runs() {
    let app = spawn_app_with(AppOptions {
        test_faults: true,
        env: vec![(SMALL_MEMORY_TEST.0.into(), SMALL_MEMORY_TEST.1.into())],
        args: vec!["--test-diagnostic-timeout-s".into(), "3".into()],
        ..Default::default()
    })
    .await;
    let d = start(
        &app,
        json!({"level": 3, "device": "cpu", "duration_s": 120}),
    )
    .await;
    let job = app
        .submit(json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 100}}))
        .await;
    let ended = wait_ended(&app, d.id).await;
    assert_eq!(ended.status, DiagnosticStatus::Failed, "{ended:?}");
    let error = ended.devices[0].error.as_deref().unwrap();
    assert!(
        error.contains("ran past its time limit of 3 s for level 3"),
        "{error}"
    );
    assert_eq!(app.wait_finished(job.id).await.status, JobStatus::Succeeded);
}

#[tokio::test]
async fn a_diagnostic_left_running_by_a_server_that_died_comes_back_interrupted() {
    let mut app = app().await;
    let d = start(
        &app,
        json!({"level": 3, "device": "cpu", "duration_s": 120}),
    )
    .await;
    wait_check_running(&app, d.id).await;
    let data_dir = app.kill_9();
    let app = spawn_app_with(AppOptions {
        data_dir: Some(data_dir),
        test_faults: true,
        ..Default::default()
    })
    .await;
    let after = get(&app, d.id).await;
    assert_eq!(after.status, DiagnosticStatus::Interrupted, "{after:?}");
    assert!(after.finished_at.is_some());
    assert_eq!(after.devices[0].status, DiagnosticStatus::Interrupted);
    assert!(
        after
            .error
            .as_deref()
            .unwrap()
            .contains("the server stopped"),
        "{after:?}"
    );
    // The device's queue is free again.
    let job = app
        .submit(json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 100}}))
        .await;
    assert_eq!(app.wait_finished(job.id).await.status, JobStatus::Succeeded);
}

#[tokio::test]
async fn the_event_stream_carries_each_change_of_a_diagnostic() {
    let app = app().await;
    let mut stream = app.get("/api/events").await;
    assert_eq!(stream.status(), StatusCode::OK);
    let d = start(&app, json!({"level": 1, "device": "cpu"})).await;
    let mut seen: Vec<Diagnostic> = Vec::new();
    let mut buffer = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while seen.last().is_none_or(|d| !d.status.is_terminal()) {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .expect("the diagnostic's events within two minutes")
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if !event.contains("event: diagnostic\n") {
                continue;
            }
            let data = event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap();
            let update: Diagnostic = serde_json::from_str(data).unwrap();
            if update.id == d.id {
                seen.push(update);
            }
        }
    }
    let statuses: Vec<DiagnosticStatus> = seen.iter().map(|d| d.status).collect();
    assert_eq!(statuses.first(), Some(&DiagnosticStatus::Queued));
    assert!(
        statuses.contains(&DiagnosticStatus::Running),
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&DiagnosticStatus::Finished));
    // Each check is seen running, then done, before the end.
    let checks = &seen.last().unwrap().devices[0].checks;
    for check in checks {
        let states: Vec<CheckState> = seen
            .iter()
            .filter_map(|d| d.devices[0].checks.iter().find(|c| c.check == check.check))
            .map(|c| c.state)
            .collect();
        assert!(
            states.contains(&CheckState::Running),
            "{}: {states:?}",
            check.check
        );
    }
    assert_eq!(seen.last().unwrap(), &get(&app, d.id).await);
}

#[tokio::test]
async fn the_history_pages_newest_first_and_filters_by_device() {
    let app = app().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let d = start(&app, json!({"level": 1, "device": "cpu"})).await;
        ids.push(d.id);
    }
    wait_ended(&app, ids[2]).await;
    let page: DiagnosticPage = app.get_json("/api/diagnostics?limit=2").await;
    let got: Vec<i64> = page.diagnostics.iter().map(|d| d.id).collect();
    assert_eq!(got, [ids[2], ids[1]]);
    let cursor = page.next_cursor.expect("a next page");
    let rest: DiagnosticPage = app
        .get_json(&format!("/api/diagnostics?limit=2&cursor={cursor}"))
        .await;
    let got: Vec<i64> = rest.diagnostics.iter().map(|d| d.id).collect();
    assert_eq!(got, [ids[0]]);
    assert_eq!(rest.next_cursor, None);
    let cpu: DiagnosticPage = app.get_json("/api/diagnostics?device=cpu").await;
    assert_eq!(cpu.diagnostics.len(), 3);
    let none: DiagnosticPage = app.get_json("/api/diagnostics?device=cuda:0").await;
    assert!(none.diagnostics.is_empty());
    for bad in ["limit=0", "limit=101", "cursor=abc"] {
        let resp = app.get(&format!("/api/diagnostics?{bad}")).await;
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    // The last finished one is the device's.
    let cpu: Device = app.get_json("/api/devices/cpu").await;
    assert_eq!(cpu.last_diagnostic.unwrap().id, ids[2]);
}

/// The evidence `name` of the CPU's part.
fn figure(d: &Diagnostic, name: &str) -> gpulab_shared::diag::Evidence {
    d.devices[0]
        .checks
        .iter()
        .flat_map(|c| &c.evidence)
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no evidence {name:?} in {d:?}"))
        .clone()
}

#[tokio::test]
async fn the_cpu_is_judged_against_its_own_history_and_never_against_an_injected_run() {
    let app = app().await;
    let run = |body: Value| {
        let app = &app;
        async move {
            let d = start(app, body).await;
            let d = wait_ended(app, d.id).await;
            assert_eq!(d.status, DiagnosticStatus::Finished, "{d:?}");
            d
        }
    };
    let slow = run(json!({"level": 2, "device": "cpu", "inject": ["slow_throughput"]})).await;
    assert!(figure(&slow, "copy bandwidth").expected.is_none());
    let first = run(json!({"level": 2, "device": "cpu"})).await;
    let copy = figure(&first, "copy bandwidth");
    assert_eq!(
        copy.expected, None,
        "the injected run is no baseline: {copy:?}"
    );
    assert!(copy.source.as_deref().unwrap().contains("no history yet"));
    let second = run(json!({"level": 2, "device": "cpu"})).await;
    let judged = figure(&second, "copy bandwidth");
    let expected = 0.75 * copy.measured.unwrap();
    assert!(
        (judged.expected.unwrap() - expected).abs() <= 1e-9 * expected,
        "{judged:?} against the first run's {copy:?}"
    );
    assert!(
        judged.source.as_deref().unwrap().contains("history"),
        "{judged:?}"
    );
}

#[tokio::test]
async fn sigterm_with_a_diagnostic_running_exits_in_time_and_leaves_it_interrupted() {
    let mut app = app().await;
    let d = start(
        &app,
        json!({"level": 3, "device": "cpu", "duration_s": 120}),
    )
    .await;
    wait_check_running(&app, d.id).await;
    let status = app
        .terminate(Duration::from_secs(10))
        .expect("the server exits within 10 s of SIGTERM");
    assert!(status.success(), "{status:?}");
    let stopped_at = chrono::Utc::now();
    // Read the history the stopped server left, through a new one.
    let app = spawn_app_with(AppOptions {
        data_dir: Some(app.take_data_dir()),
        ..Default::default()
    })
    .await;
    let after = get(&app, d.id).await;
    assert_eq!(after.status, DiagnosticStatus::Interrupted, "{after:?}");
    assert_eq!(
        after.devices[0].error.as_deref(),
        Some("the server stopped while this part was running")
    );
    assert!(
        after.finished_at.unwrap() <= stopped_at,
        "ended by the stopping server, not at the next start: {after:?}"
    );
}

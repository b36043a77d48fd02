//! Fair share, per-user limits, metering and quotas through the real server, with real
//! workers on the CPU device. Users are named by the test-only `x-gpulab-test-user`
//! header (`--enable-test-faults`), as the sign-in of lab mode would name them.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use gpulab_shared::lab::UsageReport;
use gpulab_shared::{Job, JobPage, Problem};
use reqwest::StatusCode;
use serde_json::json;
use support::{spawn_app, spawn_app_with, AppOptions, TestApp};

/// A tiny job: most of its time is the round trip to the worker.
fn tiny() -> serde_json::Value {
    json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 1000}, "repetitions": 1})
}

/// A job that holds the device until its timeout kills its worker.
fn hang(timeout_s: f64) -> serde_json::Value {
    json!({"kernel": "_test_fault", "device": "cpu", "params": {"mode": "hang"},
           "timeout_s": timeout_s})
}

async fn post_as(
    app: &TestApp,
    user: &str,
    admin: bool,
    body: &serde_json::Value,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url("/api/jobs"))
        .header("x-gpulab-test-user", user)
        .json(body);
    if admin {
        req = req.header("x-gpulab-test-role", "admin");
    }
    req.send().await.unwrap()
}

async fn submit_as(app: &TestApp, user: &str, body: &serde_json::Value) -> Job {
    let resp = post_as(app, user, false, body).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "{user}: {body}");
    let job: Job = resp.json().await.unwrap();
    assert_eq!(job.owner.as_deref(), Some(user));
    job
}

async fn get_as<T: serde::de::DeserializeOwned>(app: &TestApp, user: &str, path: &str) -> T {
    let resp = app
        .client
        .get(app.url(path))
        .header("x-gpulab-test-user", user)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "GET {path} as {user}");
    resp.json().await.unwrap()
}

/// Every job in the history (as single mode's anonymous user, who sees all).
async fn all_jobs(app: &TestApp) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: JobPage = app
            .get_json(&format!("/api/jobs?limit=500&cursor={cursor}"))
            .await;
        jobs.extend(page.jobs);
        match page.next_cursor {
            Some(next) => cursor = next,
            None => return jobs,
        }
    }
}

async fn wait_all_finished(app: &TestApp, ids: &[i64]) -> Vec<Job> {
    let mut out = Vec::with_capacity(ids.len());
    for &id in ids {
        out.push(app.wait_finished(id).await);
    }
    out
}

/// The jobs in the order the device ran them. Jobs run one at a time, so a job starts at
/// or after its predecessor's end: at equal (millisecond) starts, the one that ended first
/// ran first.
fn run_order(mut jobs: Vec<Job>) -> Vec<Job> {
    jobs.sort_by_key(|j| (j.started_at.unwrap(), j.finished_at.unwrap(), j.id));
    jobs
}

fn run_seconds(job: &Job) -> f64 {
    (job.finished_at.unwrap() - job.started_at.unwrap()).num_milliseconds() as f64 / 1000.0
}

#[tokio::test]
async fn a_heavy_users_backlog_delays_each_newcomer_by_at_most_one_job_per_other_user() {
    let app = spawn_app().await;
    // The heavy user's first job holds the device while their backlog and the newcomers
    // queue, so that the backlog is whole when the newcomers come.
    let blocker = submit_as(&app, "heavy", &hang(2.0)).await;
    app.wait_status(blocker.id, gpulab_shared::JobStatus::Running)
        .await;
    let mut heavy = Vec::new();
    for _ in 0..100 {
        heavy.push(submit_as(&app, "heavy", &tiny()).await.id);
    }
    let mut light = Vec::new();
    for user in ["ann", "bob", "cy", "dee"] {
        light.push(submit_as(&app, user, &tiny()).await);
    }
    let mut ids = heavy.clone();
    ids.extend(light.iter().map(|j| j.id));
    let jobs = run_order(wait_all_finished(&app, &ids).await);
    for newcomer in &light {
        let pos = jobs.iter().position(|j| j.id == newcomer.id).unwrap();
        let heavy_before = jobs[..pos]
            .iter()
            .filter(|j| j.owner.as_deref() == Some("heavy"))
            .count();
        println!(
            "{} started after {heavy_before} of the heavy user's 100 jobs",
            newcomer.owner.as_deref().unwrap()
        );
        assert!(
            heavy_before <= 4,
            "{:?} waited for {heavy_before} of the heavy user's jobs",
            newcomer.owner
        );
    }
    // The backlog was there: most of the heavy user's jobs ran after every newcomer.
    let last_light = jobs
        .iter()
        .rposition(|j| j.owner.as_deref() != Some("heavy"))
        .unwrap();
    assert!(jobs.len() - last_light > 90, "the heavy backlog ran last");
}

fn jain(shares: &[f64]) -> f64 {
    let sum: f64 = shares.iter().sum();
    let squares: f64 = shares.iter().map(|x| x * x).sum();
    sum * sum / (shares.len() as f64 * squares)
}

/// Equally demanding users who queue their work one user after another: while all of
/// them have work waiting, each gets the same device time (Jain's index ≥ 0.95), where a
/// FIFO would have served the first user's whole backlog first. Then the metering agrees
/// with the jobs' own run times, in `/api/usage` and in `/metrics`.
#[tokio::test]
async fn equally_demanding_users_share_the_device_time_and_metering_agrees_with_the_jobs() {
    let app = spawn_app().await;
    let users = ["u1", "u2", "u3", "u4"];
    let blocker = submit_as(&app, "u1", &hang(1.0)).await;
    app.wait_status(blocker.id, gpulab_shared::JobStatus::Running)
        .await;
    let mut ids = vec![blocker.id];
    for user in users {
        // The same mix for everyone: tiny jobs and ones 100 times their size.
        for i in 0..20 {
            let n = if i % 4 == 3 { 100_000 } else { 1000 };
            let body = json!({"kernel": "vector_add", "device": "cpu",
                              "params": {"n": n}, "repetitions": 1});
            ids.push(submit_as(&app, user, &body).await.id);
        }
    }
    let jobs = wait_all_finished(&app, &ids).await;
    let order = run_order(
        jobs.iter()
            .filter(|j| j.id != blocker.id)
            .cloned()
            .collect(),
    );
    // The window in which every user had work waiting: until the first user's last job
    // started.
    let mut last_start: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
    for j in &order {
        last_start.insert(j.owner.as_deref().unwrap(), j.started_at.unwrap());
    }
    let window_end = *last_start.values().min().unwrap();
    let mut shares: BTreeMap<&str, f64> = users.iter().map(|u| (*u, 0.0)).collect();
    for j in order.iter().filter(|j| j.started_at.unwrap() < window_end) {
        *shares.get_mut(j.owner.as_deref().unwrap()).unwrap() += run_seconds(j);
    }
    let values: Vec<f64> = shares.values().copied().collect();
    let index = jain(&values);
    println!("device seconds while all four were waiting: {shares:?}; Jain's index {index:.4}");
    assert!(index >= 0.95, "Jain's index {index:.4} < 0.95: {shares:?}");

    // Metering: the usage report and the metrics against the jobs' recorded run times.
    let all = all_jobs(&app).await;
    let recorded: f64 = all
        .iter()
        .filter(|j| j.started_at.is_some())
        .map(run_seconds)
        .sum();
    let today = Utc::now().date_naive();
    let usage: UsageReport = app
        .get_json(&format!("/api/usage?from={today}&to={today}"))
        .await;
    let metered: f64 = usage
        .totals
        .iter()
        .map(|t| t.cpu_seconds + t.gpu_seconds)
        .sum();
    println!("metered {metered:.3} s, the jobs' recorded run times sum to {recorded:.3} s");
    assert!(recorded > 0.0);
    assert!(
        (metered - recorded).abs() <= 0.01 * recorded,
        "metered {metered} s vs recorded {recorded} s"
    );
    assert_eq!(
        usage.totals.iter().map(|t| t.jobs).sum::<u64>(),
        ids.len() as u64
    );
    assert!(
        usage.totals.iter().all(|t| t.gpu_seconds == 0.0),
        "the CPU's time is CPU time"
    );
    for user in users {
        let own: f64 = all
            .iter()
            .filter(|j| j.owner.as_deref() == Some(user))
            .map(run_seconds)
            .sum();
        let total = usage
            .totals
            .iter()
            .find(|t| t.user.as_deref() == Some(user))
            .unwrap();
        assert!((total.cpu_seconds - own).abs() <= 0.01 * own, "{user}");
    }
    let text = app.get("/metrics").await.text().await.unwrap();
    let scraped: f64 = text
        .lines()
        .filter(|l| l.starts_with("gpulab_user_device_seconds_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(
        (scraped - recorded).abs() <= 0.01 * recorded,
        "/metrics says {scraped} s, the jobs {recorded} s:\n{text}"
    );
    assert!(text.contains("gpulab_user_device_seconds_total{user=\"u2\",device=\"cpu\"}"));

    // A user sees their own usage only; the CSV has a header row.
    let mine: UsageReport = get_as(&app, "u2", "/api/usage").await;
    assert!(!mine.rows.is_empty());
    assert!(mine.rows.iter().all(|r| r.user.as_deref() == Some("u2")));
    let others = app
        .client
        .get(app.url("/api/usage?user=u3"))
        .header("x-gpulab-test-user", "u2")
        .send()
        .await
        .unwrap();
    assert_eq!(others.status(), StatusCode::FORBIDDEN);
    let csv = app.get("/api/usage?format=csv").await;
    assert_eq!(csv.status(), StatusCode::OK);
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = csv.text().await.unwrap();
    let mut lines = csv.split("\r\n");
    assert_eq!(
        lines.next(),
        Some("day,user,device,kernel,jobs,gpu_seconds,cpu_seconds")
    );
    assert!(csv.contains(&format!("{today},u3,cpu,vector_add,20,0.000,")));
    let bad = app.get("/api/usage?from=2026-13-01").await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Problem = bad.json().await.unwrap();
    assert_eq!(problem.field.as_deref(), Some("from"));
}

#[tokio::test]
async fn a_users_limits_refuse_saying_which_and_spare_admins() {
    let app = spawn_app_with(AppOptions {
        test_faults: true,
        args: ["--user-max-queued", "3", "--user-max-timeout-s", "5"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    })
    .await;
    let blocker = submit_as(&app, "amy", &hang(3.0)).await;
    app.wait_status(blocker.id, gpulab_shared::JobStatus::Running)
        .await;
    for _ in 0..3 {
        submit_as(&app, "amy", &tiny()).await;
    }
    let refused = post_as(&app, "amy", false, &tiny()).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    let problem: Problem = refused.json().await.unwrap();
    assert!(
        problem.detail.contains("--user-max-queued"),
        "{}",
        problem.detail
    );
    // Another user, and an admin, are not held by amy's limit.
    submit_as(&app, "ben", &tiny()).await;
    assert_eq!(
        post_as(&app, "root", true, &tiny()).await.status(),
        StatusCode::ACCEPTED
    );
    let long = json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 1000},
                      "timeout_s": 6});
    let refused = post_as(&app, "ben", false, &long).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Problem = refused.json().await.unwrap();
    assert_eq!(problem.field.as_deref(), Some("timeout_s"));
    assert!(
        problem.detail.contains("--user-max-timeout-s"),
        "{}",
        problem.detail
    );
    assert_eq!(
        post_as(&app, "root", true, &long).await.status(),
        StatusCode::ACCEPTED
    );
    // A user's job that names no timeout gets the default (60 s) cut to the user's 5 s.
    let job = submit_as(&app, "ben", &tiny()).await;
    assert_eq!(job.timeout_s, 5.0);
}

fn next_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    (now.date_naive() + chrono::Duration::days(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
}

/// A daily quota of 2.5 device seconds: jobs count at their timeout until they end, then
/// at what they took; a job that would pass the quota is refused with what is left and
/// when it renews, and is accepted once the day has turned.
#[tokio::test]
async fn a_quota_refuses_the_job_that_would_pass_it_and_renews_at_midnight() {
    let app = spawn_app().await;
    let set = app
        .post_json(
            "/api/test/quota/quinn",
            &json!({"quota": {"period": "daily", "seconds": 2.5}}),
        )
        .await;
    assert_eq!(set.status(), StatusCode::NO_CONTENT);
    let with_timeout = |t: f64| json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 1000}, "timeout_s": t});
    // 1 s (the hang's worst case) + 1 s held: 2 s of 2.5 — fits; a third second does not.
    let first = submit_as(&app, "quinn", &hang(1.0)).await;
    let second = submit_as(&app, "quinn", &with_timeout(1.0)).await;
    let refused = post_as(&app, "quinn", false, &with_timeout(1.0)).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let problem: Problem = refused.json().await.unwrap();
    assert!(problem.remaining_seconds.unwrap() < 1.0, "{problem:?}");
    // Someone else has no quota.
    submit_as(&app, "rita", &with_timeout(1.0)).await;

    // Once both ended, only what they took counts.
    let ended = wait_all_finished(&app, &[first.id, second.id]).await;
    let used: f64 = ended.iter().map(run_seconds).sum();
    assert!(used >= 1.0, "the hang ran to its timeout: {used} s");
    let third = submit_as(&app, "quinn", &with_timeout(1.0)).await;
    let used = used + run_seconds(&app.wait_finished(third.id).await);
    let left = 2.5 - used;
    let ask = left + 0.25;
    let refused = post_as(&app, "quinn", false, &with_timeout(ask.max(1.0))).await;
    let before = Utc::now();
    assert_eq!(
        refused.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "{used} s used"
    );
    let retry_after: i64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let problem: Problem = refused.json().await.unwrap();
    println!("refused with {used:.3} s used: {}", problem.detail);
    let remaining = problem.remaining_seconds.unwrap();
    assert!(
        (remaining - left).abs() < 0.002,
        "remaining_seconds {remaining} vs 2.5 − {used}"
    );
    let renews = problem.renews_at.unwrap();
    assert_eq!(renews, next_midnight(before));
    assert!(((renews - before).num_seconds() - retry_after).abs() <= 2);
    assert!(problem.detail.contains("renews at"), "{}", problem.detail);
    // What is left still fits.
    if left >= 1.0 {
        let fits = submit_as(&app, "quinn", &with_timeout(1.0)).await;
        app.wait_finished(fits.id).await;
    }

    // A second after midnight (the quotas' clock moved, not waited for): renewed.
    let offset = (renews - Utc::now()).num_milliseconds() as f64 / 1000.0 + 1.0;
    let moved = app
        .post_json("/api/test/clock", &json!({"offset_s": offset}))
        .await;
    assert_eq!(moved.status(), StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let job = submit_as(&app, "quinn", &with_timeout(2.0)).await;
    app.wait_finished(job.id).await;
}

/// A diagnostic's part is metered too, under the kernel `diagnostic`, for its owner.
#[tokio::test]
async fn a_diagnostic_part_is_metered_for_its_owner() {
    let app = spawn_app_with(AppOptions {
        test_faults: true,
        env: vec![("GPULAB_TEST_MEMORY_TEST_BYTES".into(), "16777216".into())],
        ..Default::default()
    })
    .await;
    let resp = app
        .client
        .post(app.url("/api/diagnostics"))
        .header("x-gpulab-test-user", "dina")
        .json(&json!({"level": 1, "device": "cpu"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let started: gpulab_shared::diag::Diagnostic = resp.json().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let ended = loop {
        let d: gpulab_shared::diag::Diagnostic = app
            .get_json(&format!("/api/diagnostics/{}", started.id))
            .await;
        if d.finished_at.is_some() {
            break d;
        }
        assert!(tokio::time::Instant::now() < deadline, "{d:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let part = &ended.devices[0];
    let took =
        (part.finished_at.unwrap() - part.started_at.unwrap()).num_milliseconds() as f64 / 1000.0;
    let usage: UsageReport = get_as(&app, "dina", "/api/usage").await;
    assert_eq!(usage.rows.len(), 1, "{usage:?}");
    let row = &usage.rows[0];
    assert_eq!(
        (row.kernel.as_str(), row.device.as_str(), row.jobs),
        ("diagnostic", "cpu", 1)
    );
    assert!(
        (row.cpu_seconds - took).abs() <= 0.001 + 0.01 * took,
        "metered {} s, the part took {took} s",
        row.cpu_seconds
    );
}

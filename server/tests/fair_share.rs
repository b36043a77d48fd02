//! Fair share, per-user limits, metering and quotas through the real server in lab mode,
//! with real workers on the CPU device: users made by an admin (`root`, made with the
//! `gpulab users` command line), each sending their API key as a bearer token.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use gpulab_shared::lab::{UsageReport, UserWithKey};
use gpulab_shared::{Job, JobPage, JobStatus, Problem};
use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{gpulab_exe, spawn_app, spawn_app_with, AppOptions, TestApp};

/// The tests that read the order and the times of jobs run one at a time: each runs a
/// server and a worker of its own, which would otherwise take the CPU from each other.
static TIMED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A tiny job: most of its time is the round trip to the worker.
fn tiny() -> serde_json::Value {
    json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 1000}, "repetitions": 1})
}

/// A job that holds the device until its timeout kills its worker.
fn hang(timeout_s: f64) -> serde_json::Value {
    json!({"kernel": "_test_fault", "device": "cpu", "params": {"mode": "hang"},
           "timeout_s": timeout_s})
}

/// The accounts of a test: the admin `root`'s key and each user's.
struct Lab {
    root: String,
    keys: BTreeMap<String, String>,
}

impl Lab {
    /// `root` made with the command line, then `users` made by root through the API.
    async fn new(app: &TestApp, users: &[&str]) -> Lab {
        let out = std::process::Command::new(gpulab_exe())
            .args(["users", "add", "root", "--admin", "--data-dir"])
            .arg(app.data_dir())
            .env("GPULAB_LOG", "error")
            .output()
            .expect("run gpulab users");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let root = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let mut keys = BTreeMap::new();
        for name in users {
            let resp = call(
                app,
                Method::POST,
                "/api/users",
                &root,
                Some(json!({"name": name})),
            )
            .await;
            assert_eq!(resp.status(), StatusCode::CREATED);
            let made: UserWithKey = resp.json().await.unwrap();
            keys.insert(name.to_string(), made.api_key);
        }
        // Each key's first use runs Argon2id (slow in a debug build); the server then
        // remembers it. Done here, so that no user's first job comes late for it.
        for key in keys.values().chain([&root]) {
            let resp = call(app, Method::GET, "/api/jobs?limit=1", key, None).await;
            assert_eq!(resp.status(), StatusCode::OK);
        }
        Lab { root, keys }
    }

    fn key(&self, user: &str) -> &str {
        &self.keys[user]
    }
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    key: &str,
    body: Option<serde_json::Value>,
) -> reqwest::Response {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    req.send().await.unwrap()
}

async fn post_as(app: &TestApp, key: &str, body: &serde_json::Value) -> reqwest::Response {
    call(app, Method::POST, "/api/jobs", key, Some(body.clone())).await
}

async fn submit_as(app: &TestApp, lab: &Lab, user: &str, body: &serde_json::Value) -> Job {
    let resp = post_as(app, lab.key(user), body).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "{user}: {body}");
    let job: Job = resp.json().await.unwrap();
    assert_eq!(job.owner.as_deref(), Some(user));
    job
}

async fn get_as<T: serde::de::DeserializeOwned>(app: &TestApp, key: &str, path: &str) -> T {
    let resp = call(app, Method::GET, path, key, None).await;
    assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
    resp.json().await.unwrap()
}

/// Polls the job (as root) until `done` holds, for at most a minute.
async fn wait_until(app: &TestApp, lab: &Lab, id: i64, done: impl Fn(&Job) -> bool) -> Job {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let job: Job = get_as(app, &lab.root, &format!("/api/jobs/{id}")).await;
        if done(&job) {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} stuck: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_finished(app: &TestApp, lab: &Lab, id: i64) -> Job {
    wait_until(app, lab, id, |j| j.status.is_finished()).await
}

async fn wait_running(app: &TestApp, lab: &Lab, id: i64) -> Job {
    wait_until(app, lab, id, |j| j.status == JobStatus::Running).await
}

/// Every job in the history, as root sees it (all of them).
async fn all_jobs(app: &TestApp, lab: &Lab) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut cursor = String::new();
    loop {
        let page: JobPage = get_as(
            app,
            &lab.root,
            &format!("/api/jobs?limit=500&cursor={cursor}"),
        )
        .await;
        jobs.extend(page.jobs);
        match page.next_cursor {
            Some(next) => cursor = next,
            None => return jobs,
        }
    }
}

async fn wait_all_finished(app: &TestApp, lab: &Lab, ids: &[i64]) -> Vec<Job> {
    let mut out = Vec::with_capacity(ids.len());
    for &id in ids {
        out.push(wait_finished(app, lab, id).await);
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
    let _one_at_a_time = TIMED.lock().await;
    let app = spawn_app().await;
    let lab = Lab::new(&app, &["heavy", "ann", "bob", "cy", "dee"]).await;
    // The heavy user's first job holds the device while their backlog and the newcomers
    // queue, so that the backlog is whole when the newcomers come.
    let blocker = submit_as(&app, &lab, "heavy", &hang(3.0)).await;
    wait_running(&app, &lab, blocker.id).await;
    let mut heavy = Vec::new();
    for _ in 0..100 {
        heavy.push(submit_as(&app, &lab, "heavy", &tiny()).await.id);
    }
    let mut light = Vec::new();
    for user in ["ann", "bob", "cy", "dee"] {
        light.push(submit_as(&app, &lab, user, &tiny()).await);
    }
    let mut ids = heavy.clone();
    ids.extend(light.iter().map(|j| j.id));
    let jobs = run_order(wait_all_finished(&app, &lab, &ids).await);
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
    let _one_at_a_time = TIMED.lock().await;
    let app = spawn_app().await;
    let users = ["u1", "u2", "u3", "u4"];
    let lab = Lab::new(&app, &users).await;
    // The blocker holds the device while everyone queues, so that the users' lines start
    // together: round k runs every user's k-th job.
    let blocker = submit_as(&app, &lab, "u1", &hang(3.0)).await;
    wait_running(&app, &lab, blocker.id).await;
    let mut ids = vec![blocker.id];
    for user in users {
        // The same mix for everyone: jobs of two sizes, ten times apart, big enough that a
        // hiccup of this shared machine is small beside a user's share.
        for i in 0..16 {
            let n = if i % 2 == 1 { 1_000_000 } else { 100_000 };
            let body = json!({"kernel": "vector_add", "device": "cpu",
                              "params": {"n": n}, "repetitions": 1});
            ids.push(submit_as(&app, &lab, user, &body).await.id);
        }
    }
    let jobs = wait_all_finished(&app, &lab, &ids).await;
    let order = run_order(
        jobs.iter()
            .filter(|j| j.id != blocker.id)
            .cloned()
            .collect(),
    );
    // The window in which every user had work waiting: from the last user's first
    // submission (the blocker holds the device while they submit, but a slow machine may
    // outlast it) until the first user's last job started.
    let window_start = order.iter().map(|j| j.created_at).max().unwrap();
    let window_start = users
        .iter()
        .map(|u| {
            order
                .iter()
                .filter(|j| j.owner.as_deref() == Some(u))
                .map(|j| j.created_at)
                .min()
                .unwrap()
        })
        .max()
        .unwrap()
        .min(window_start);
    let mut last_start: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
    for j in &order {
        last_start.insert(j.owner.as_deref().unwrap(), j.started_at.unwrap());
    }
    let window_end = *last_start.values().min().unwrap();
    let mut shares: BTreeMap<&str, f64> = users.iter().map(|u| (*u, 0.0)).collect();
    let mut counted = 0;
    for j in order
        .iter()
        .filter(|j| (window_start..window_end).contains(&j.started_at.unwrap()))
    {
        *shares.get_mut(j.owner.as_deref().unwrap()).unwrap() += run_seconds(j);
        counted += 1;
    }
    assert!(
        counted >= 40,
        "only {counted} jobs ran while all four were waiting"
    );
    let values: Vec<f64> = shares.values().copied().collect();
    let index = jain(&values);
    println!("device seconds while all four were waiting: {shares:?}; Jain's index {index:.4}");
    assert!(index >= 0.95, "Jain's index {index:.4} < 0.95: {shares:?}");

    // Metering: the usage report and the metrics against the jobs' recorded run times.
    let all = all_jobs(&app, &lab).await;
    let recorded: f64 = all
        .iter()
        .filter(|j| j.started_at.is_some())
        .map(run_seconds)
        .sum();
    let today = Utc::now().date_naive();
    let usage: UsageReport = get_as(
        &app,
        &lab.root,
        &format!("/api/usage?from={today}&to={today}"),
    )
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
    let text = call(&app, Method::GET, "/metrics", &lab.root, None)
        .await
        .text()
        .await
        .unwrap();
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
    let mine: UsageReport = get_as(&app, lab.key("u2"), "/api/usage").await;
    assert!(!mine.rows.is_empty());
    assert!(mine.rows.iter().all(|r| r.user.as_deref() == Some("u2")));
    let others = call(&app, Method::GET, "/api/usage?user=u3", lab.key("u2"), None).await;
    assert_eq!(others.status(), StatusCode::FORBIDDEN);
    let csv = call(&app, Method::GET, "/api/usage?format=csv", &lab.root, None).await;
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
    assert!(csv.contains(&format!("{today},u3,cpu,vector_add,16,0.000,")));
    let bad = call(
        &app,
        Method::GET,
        "/api/usage?from=2026-13-01",
        &lab.root,
        None,
    )
    .await;
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
    let lab = Lab::new(&app, &["amy", "ben"]).await;
    let blocker = submit_as(&app, &lab, "amy", &hang(3.0)).await;
    wait_running(&app, &lab, blocker.id).await;
    // Eight at once: the limit admits exactly three, however they interleave.
    let sends: Vec<_> = (0..8)
        .map(|_| {
            let req = app
                .client
                .post(app.url("/api/jobs"))
                .bearer_auth(lab.key("amy"))
                .json(&tiny());
            tokio::spawn(async move { req.send().await.unwrap().status() })
        })
        .collect();
    let mut statuses = Vec::new();
    for send in sends {
        statuses.push(send.await.unwrap());
    }
    let accepted = statuses
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count();
    assert_eq!(accepted, 3, "{statuses:?}");
    assert!(statuses
        .iter()
        .all(|s| *s == StatusCode::ACCEPTED || *s == StatusCode::TOO_MANY_REQUESTS));
    let refused = post_as(&app, lab.key("amy"), &tiny()).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    let problem: Problem = refused.json().await.unwrap();
    assert!(
        problem.detail.contains("--user-max-queued"),
        "{}",
        problem.detail
    );
    // Another user, and an admin, are not held by amy's limit.
    submit_as(&app, &lab, "ben", &tiny()).await;
    assert_eq!(
        post_as(&app, &lab.root, &tiny()).await.status(),
        StatusCode::ACCEPTED
    );
    let long = json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 1000},
                      "timeout_s": 6});
    let refused = post_as(&app, lab.key("ben"), &long).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Problem = refused.json().await.unwrap();
    assert_eq!(problem.field.as_deref(), Some("timeout_s"));
    assert!(
        problem.detail.contains("--user-max-timeout-s"),
        "{}",
        problem.detail
    );
    assert_eq!(
        post_as(&app, &lab.root, &long).await.status(),
        StatusCode::ACCEPTED
    );
    // A user's job that names no timeout gets the default (60 s) cut to the user's 5 s.
    let job = submit_as(&app, &lab, "ben", &tiny()).await;
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
    let lab = Lab::new(&app, &["quinn", "rita"]).await;
    let set = call(
        &app,
        Method::PATCH,
        "/api/users/quinn",
        &lab.root,
        Some(json!({"quota": {"period": "daily", "seconds": 2.5}})),
    )
    .await;
    assert_eq!(set.status(), StatusCode::OK);
    let with_timeout = |t: f64| json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 1000}, "timeout_s": t});
    // 1 s (the hang's worst case) + 1 s held: 2 s of 2.5 — fits; a third second does not.
    let first = submit_as(&app, &lab, "quinn", &hang(1.0)).await;
    let second = submit_as(&app, &lab, "quinn", &with_timeout(1.0)).await;
    let refused = post_as(&app, lab.key("quinn"), &with_timeout(1.0)).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let problem: Problem = refused.json().await.unwrap();
    assert!(problem.remaining_seconds.unwrap() < 1.0, "{problem:?}");
    // Someone else has no quota.
    submit_as(&app, &lab, "rita", &with_timeout(1.0)).await;

    // Once both ended, only what they took counts.
    let ended = wait_all_finished(&app, &lab, &[first.id, second.id]).await;
    let used: f64 = ended.iter().map(run_seconds).sum();
    assert!(used >= 1.0, "the hang ran to its timeout: {used} s");
    let third = submit_as(&app, &lab, "quinn", &with_timeout(1.0)).await;
    let used = used + run_seconds(&wait_finished(&app, &lab, third.id).await);
    let left = 2.5 - used;
    let ask = left + 0.25;
    let refused = post_as(&app, lab.key("quinn"), &with_timeout(ask.max(1.0))).await;
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
        let fits = submit_as(&app, &lab, "quinn", &with_timeout(1.0)).await;
        wait_finished(&app, &lab, fits.id).await;
    }

    // A second after midnight (the quotas' clock moved, not waited for): renewed.
    let offset = (renews - Utc::now()).num_milliseconds() as f64 / 1000.0 + 1.0;
    let moved = call(
        &app,
        Method::POST,
        "/api/test/clock",
        &lab.root,
        Some(json!({"offset_s": offset})),
    )
    .await;
    assert_eq!(moved.status(), StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let job = submit_as(&app, &lab, "quinn", &with_timeout(2.0)).await;
    wait_finished(&app, &lab, job.id).await;
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
    let lab = Lab::new(&app, &["dina"]).await;
    let resp = call(
        &app,
        Method::POST,
        "/api/diagnostics",
        lab.key("dina"),
        Some(json!({"level": 1, "device": "cpu"})),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let started: gpulab_shared::diag::Diagnostic = resp.json().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let ended = loop {
        let d: gpulab_shared::diag::Diagnostic =
            get_as(&app, &lab.root, &format!("/api/diagnostics/{}", started.id)).await;
        if d.finished_at.is_some() {
            break d;
        }
        assert!(tokio::time::Instant::now() < deadline, "{d:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let part = &ended.devices[0];
    let took =
        (part.finished_at.unwrap() - part.started_at.unwrap()).num_milliseconds() as f64 / 1000.0;
    let usage: UsageReport = get_as(&app, lab.key("dina"), "/api/usage").await;
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

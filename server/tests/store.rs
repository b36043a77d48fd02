//! The job history on disk, against the real server: rows it cannot read, retention, a
//! full disk, and databases from other versions.

mod support;

use std::time::Duration;

use gpulab_shared::{Job, JobPage, JobStatus, Problem};
use prometheus_parse::{Scrape, Value};
use reqwest::StatusCode;
use rusqlite::Connection;
use serde_json::json;
use support::{serve_fails_in, spawn_app, spawn_app_with, AppOptions, TestApp};

const DB_FILE: &str = "gpulab.sqlite3";

fn saxpy() -> serde_json::Value {
    json!({"kernel": "saxpy", "device": "cpu", "params": {"n": 1000}, "repetitions": 1})
}

#[tokio::test]
async fn a_corrupt_row_is_left_out_of_the_list_and_reading_it_is_a_problem() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let job = app.submit(saxpy()).await;
        app.wait_finished(job.id).await;
        ids.push(job.id);
    }
    // Another program (or a bad disk) wrote what this gpulab cannot read.
    let db = Connection::open(app.data_dir().join(DB_FILE)).unwrap();
    db.execute(
        "UPDATE jobs SET status = 'exploded' WHERE id = ?1",
        [ids[0]],
    )
    .unwrap();
    db.execute("UPDATE jobs SET result = '{broken' WHERE id = ?1", [ids[1]])
        .unwrap();

    let resp = app.get("/api/jobs").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let page: JobPage = resp.json().await.unwrap();
    assert_eq!(
        page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[2]]
    );
    for (id, why) in [(ids[0], "exploded"), (ids[1], "result")] {
        let resp = app.get(&format!("/api/jobs/{id}")).await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let problem: Problem = resp.json().await.unwrap();
        assert!(
            problem
                .detail
                .contains(&format!("job {id} cannot be read from the job history"))
                && problem.detail.contains(why),
            "{}",
            problem.detail
        );
    }
    let good: Job = app.get_json(&format!("/api/jobs/{}", ids[2])).await;
    assert_eq!(good.status, JobStatus::Succeeded);
    assert_eq!(app.get("/metrics").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn jobs_past_the_retention_are_deleted_and_still_counted_in_the_metrics() {
    let mut app = spawn_app().await;
    let old = app.submit(saxpy()).await;
    app.wait_finished(old.id).await;
    let recent = app.submit(saxpy()).await;
    app.wait_finished(recent.id).await;
    let data_dir = app.kill_9();
    Connection::open(data_dir.path().join(DB_FILE))
        .unwrap()
        .execute(
            "UPDATE jobs SET created_at = '2020-01-01T00:00:00.000Z',
                             started_at = '2020-01-01T00:00:00.000Z',
                             finished_at = '2020-01-01T00:00:01.000Z'
             WHERE id = ?1",
            [old.id],
        )
        .unwrap();

    let app = spawn_app_with(AppOptions {
        data_dir: Some(data_dir),
        args: vec!["--retention-days".into(), "30".into()],
        ..Default::default()
    })
    .await;
    // The retention runs at start, in the background.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.get(&format!("/api/jobs/{}", old.id)).await.status() != StatusCode::NOT_FOUND {
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {} was never deleted",
            old.id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page: JobPage = app.get_json("/api/jobs").await;
    assert_eq!(
        page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![recent.id]
    );
    let scrape = scrape(&app).await;
    assert_eq!(value(&scrape, "gpulab_jobs_pruned_total", &[]), Some(1.0));
    let labels = [
        ("kernel", "saxpy"),
        ("device", "cpu"),
        ("status", "succeeded"),
    ];
    assert_eq!(
        value(&scrape, "gpulab_jobs_total", &labels),
        Some(2.0),
        "the deleted job still counts: the counter never goes down"
    );
}

#[tokio::test]
async fn a_full_disk_fails_the_job_that_hit_it_and_reads_still_answer() {
    // A new history takes 10 pages of 4 KiB: room for a few rows more, not for an image of
    // some 28 kB.
    let app = spawn_app_with(AppOptions {
        args: vec!["--test-max-db-pages".into(), "13".into()],
        ..Default::default()
    })
    .await;
    let image = json!({"kernel": "mandelbrot", "device": "cpu", "repetitions": 1,
               "params": {"width": 256, "height": 256, "max_iter": 64}});
    let job = app.submit(image).await;
    let ended = app.wait_finished(job.id).await;
    assert_eq!(ended.status, JobStatus::Failed, "{ended:?}");
    let error = ended.error.unwrap();
    assert!(error.starts_with("the disk is full: "), "{error}");

    let resp = app.get("/api/jobs").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let page: JobPage = resp.json().await.unwrap();
    assert_eq!(page.jobs[0].id, job.id);
    assert_eq!(app.get("/metrics").await.status(), StatusCode::OK);
    assert_eq!(app.get("/api/health").await.status(), StatusCode::OK);
    let resp = app.get(&format!("/api/jobs/{}/artifact", job.id)).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Submissions that no longer fit are refused with the reason, never left half-made.
    let mut refused = None;
    for _ in 0..200 {
        let resp = app.post_json("/api/jobs", &saxpy()).await;
        if resp.status() == StatusCode::ACCEPTED {
            let job: Job = resp.json().await.unwrap();
            app.wait_finished(job.id).await;
            continue;
        }
        refused = Some(resp);
        break;
    }
    let resp = refused.expect("the history never filled up");
    assert_eq!(resp.status(), StatusCode::INSUFFICIENT_STORAGE);
    let problem: Problem = resp.json().await.unwrap();
    assert!(
        problem.detail.starts_with("the disk is full: "),
        "{}",
        problem.detail
    );
    assert_eq!(app.get("/api/jobs").await.status(), StatusCode::OK);
}

#[test]
fn bad_retention_settings_are_refused_naming_the_setting() {
    for (args, env, expected) in [
        (
            &["--retention-days", "36501"][..],
            None,
            "--retention-days must be from 0",
        ),
        (
            &["--retention-days", "-1"][..],
            None,
            "for '--retention-days",
        ),
        (
            &[][..],
            Some(("GPULAB_RETENTION_DAYS", "a month")),
            "for '--retention-days",
        ),
        (
            &["--retention-max-mb", "2000000"][..],
            None,
            "--retention-max-mb must be from 0",
        ),
        (
            &[][..],
            Some(("GPULAB_RETENTION_MAX_MB", "1.5")),
            "for '--retention-max-mb",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let env: Vec<(&str, &str)> = env.into_iter().collect();
        let (status, stderr) = serve_fails_in(dir.path(), args, &env);
        assert!(!status.success(), "{stderr}");
        assert!(stderr.contains(expected), "{args:?} {env:?}: {stderr}");
    }
}

#[test]
fn a_history_from_a_newer_gpulab_stops_the_server_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    Connection::open(dir.path().join(DB_FILE))
        .unwrap()
        .pragma_update(None, "user_version", 999)
        .unwrap();
    let (status, stderr) = serve_fails_in(dir.path(), &[], &[]);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("schema version 999, written by a newer gpulab"),
        "{stderr}"
    );
}

async fn scrape(app: &TestApp) -> Scrape {
    let resp = app.get("/metrics").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of the one series of `name` with exactly `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{s:?}"),
        })
        .collect();
    assert!(found.len() <= 1, "{name}: {found:?}");
    found.first().copied()
}

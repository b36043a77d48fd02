//! Integration tests that the server stays alive and leaves nothing behind: clients that
//! vanish mid-submission, SIGTERM with a job running, running as PID 1 of a container, and
//! `kill -9` of the server. The real `gpulab` binary, its workers and SQLite.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use gpulab_shared::{Job, JobPage, JobStatus};
use reqwest::StatusCode;
use serde_json::json;
use support::{is_alive, spawn_app, spawn_app_with, workers_of, AppOptions, TestApp};

/// Sends `body` as a job and resets the connection at once (SO_LINGER 0: the close sends
/// RST, not FIN), after `pause`, without reading the answer.
fn submit_and_reset(addr: &str, body: &str, pause: Duration) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let request = format!(
        "POST /api/jobs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a pointer to a live `linger` and its size.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    if !pause.is_zero() {
        std::thread::sleep(pause);
    }
    drop(stream);
}

async fn jobs_with(app: &TestApp, status: &str) -> Vec<Job> {
    let page: JobPage = app
        .get_json(&format!("/api/jobs?status={status}&limit=500"))
        .await;
    page.jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_reset_mid_submission_leave_no_job_queued_for_good() {
    let app = spawn_app_with(AppOptions {
        queue_capacity: Some(64),
        test_faults: true,
        ..Default::default()
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let body =
        json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 1000}, "repetitions": 1})
            .to_string();
    // 400 clients from 8 threads, each resetting after 0 to 3 ms: the reset reaches the
    // server at every step of the submission, the stored job and the queue's place among them.
    tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let (addr, body) = (&addr, &body);
                s.spawn(move || {
                    for i in 0..50u64 {
                        let pause = Duration::from_micros(((t * 50 + i) % 7) * 500);
                        submit_and_reset(addr, body, pause);
                    }
                });
            }
        })
    })
    .await
    .unwrap();

    // Once the device has drained its queue, no job may stay queued (nor running).
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = loop {
        let all: JobPage = app.get_json("/api/jobs?limit=500").await;
        let waiting = all.jobs.iter().filter(|j| !j.status.is_finished()).count();
        if waiting == 0 {
            break all.jobs;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} job(s) still queued or running 30 s after their clients left: {:?}",
            all.jobs
                .iter()
                .filter(|j| !j.status.is_finished())
                .map(|j| (j.id, j.status))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The resets did reach the submissions: some jobs were stored and ran.
    assert!(
        !stored.is_empty(),
        "no submission got through: the test proved nothing"
    );
    assert!(
        stored.iter().all(|j| j.status == JobStatus::Succeeded),
        "{:?}",
        stored
            .iter()
            .map(|j| (j.id, j.status, j.error.clone()))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "{} of the 400 reset submissions were stored and ran",
        stored.len()
    );
    assert!(jobs_with(&app, "queued").await.is_empty());
    // Every place in the queue came back: it takes as many jobs as its capacity again.
    let hang = app
        .submit(json!({"kernel": "_test_fault", "device": "cpu", "params": {"mode": "hang"}}))
        .await;
    app.wait_status(hang.id, JobStatus::Running).await;
    for _ in 0..64 {
        let resp = app
            .post_json(
                "/api/jobs",
                &json!({"kernel": "vector_add", "device": "cpu"}),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }
    let resp = app
        .post_json(
            "/api/jobs",
            &json!({"kernel": "vector_add", "device": "cpu"}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_a_job_running_exits_cleanly_and_the_job_ends_interrupted() {
    let mut app = spawn_app_with(AppOptions {
        test_faults: true,
        capture_log: true,
        ..Default::default()
    })
    .await;
    let running = app
        .submit(json!({"kernel": "_test_fault", "device": "cpu", "params": {"mode": "hang"}}))
        .await;
    let queued = app
        .submit(json!({"kernel": "vector_add", "device": "cpu"}))
        .await;
    app.wait_status(running.id, JobStatus::Running).await;
    let workers = workers_of(app.server_pid());
    assert_eq!(workers.len(), 1, "one CPU worker: {workers:?}");

    let start = Instant::now();
    let status = tokio::task::block_in_place(|| app.terminate(Duration::from_secs(10)))
        .expect("the server still runs 10 s after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", app.log());
    eprintln!("stopped {:?} after SIGTERM", start.elapsed());
    let log = app.log();
    assert!(
        log.contains("2 queued or running job(s) ended `interrupted` by the stop"),
        "{log}"
    );
    assert_no_survivors(&workers).await;

    let app = spawn_app_with(AppOptions {
        data_dir: Some(app.take_data_dir()),
        capture_log: true,
        ..Default::default()
    })
    .await;
    for id in [running.id, queued.id] {
        let job: Job = app.get_json(&format!("/api/jobs/{id}")).await;
        assert_eq!(job.status, JobStatus::Interrupted, "{job:?}");
        let error = job.error.unwrap();
        assert!(error.contains("the server stopped"), "{error}");
    }
    // The stop marked them, not the next start.
    let _ = app.get("/api/health").await;
    assert!(!app.log().contains("left unfinished"), "{}", app.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_server_takes_its_workers_with_it() {
    let mut app = spawn_app().await;
    let hang = app
        .submit(json!({"kernel": "_test_fault", "device": "cpu", "params": {"mode": "hang"}}))
        .await;
    app.wait_status(hang.id, JobStatus::Running).await;
    let workers = workers_of(app.server_pid());
    assert_eq!(workers.len(), 1, "{workers:?}");
    app.kill_9();
    assert_no_survivors(&workers).await;
}

async fn assert_no_survivors(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|&p| is_alive(p)) {
        assert!(
            Instant::now() < deadline,
            "workers {pids:?} outlived their server by 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server that is PID 1 of its own PID namespace, as in a container; `None` (and a note)
/// where this machine cannot make one (not root, no user namespaces).
async fn spawn_as_pid_1(test_faults: bool) -> Option<TestApp> {
    let probe = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        other => {
            eprintln!("skipped: `unshare --pid --fork --mount-proc` cannot run here: {other:?}");
            return None;
        }
    }
    let app = spawn_app_with(AppOptions {
        test_faults,
        wrapper: ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    })
    .await;
    let pid = app.server_pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ns_pid = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .expect("NSpid in /proc/PID/status");
    assert_eq!(
        ns_pid.split_whitespace().last(),
        Some("1"),
        "the server is PID 1 in its namespace: {ns_pid}"
    );
    Some(app)
}

#[tokio::test(flavor = "multi_thread")]
async fn as_pid_1_the_server_runs_jobs_stops_on_sigterm_and_takes_its_workers_on_kill_9() {
    let Some(mut app) = spawn_as_pid_1(true).await else {
        return;
    };
    // Its workers know their server although their parent is PID 1.
    let job = app
        .submit(json!({"kernel": "saxpy", "device": "cpu", "params": {"n": 1000}}))
        .await;
    let done = app.wait_finished(job.id).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);
    let start = Instant::now();
    let status = tokio::task::block_in_place(|| app.terminate(Duration::from_secs(10)))
        .expect("PID 1 still runs 10 s after SIGTERM");
    assert!(status.success(), "{status:?}");
    eprintln!("PID 1 stopped {:?} after SIGTERM", start.elapsed());

    let mut app = spawn_as_pid_1(true).await.unwrap();
    let hang = app
        .submit(json!({"kernel": "_test_fault", "device": "cpu", "params": {"mode": "hang"}}))
        .await;
    app.wait_status(hang.id, JobStatus::Running).await;
    let workers = workers_of(app.server_pid());
    assert_eq!(workers.len(), 1, "{workers:?}");
    app.kill_9();
    assert_no_survivors(&workers).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_server_after_its_grace_even_with_a_request_left_open() {
    let mut app = spawn_app_with(AppOptions {
        capture_log: true,
        ..Default::default()
    })
    .await;
    // A client that promised a body and sends half of it: its request stays open.
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stalled = TcpStream::connect(&addr).unwrap();
    write!(
        stalled,
        "POST /api/jobs HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"kernel\": "
    )
    .unwrap();
    let _: JobPage = app.get_json("/api/jobs").await;
    let start = Instant::now();
    let status = tokio::task::block_in_place(|| app.terminate(Duration::from_secs(10)))
        .expect("the server still runs 10 s after SIGTERM, a request being open");
    let took = start.elapsed();
    assert!(status.success(), "{status:?}\n{}", app.log());
    // It waited for the request, but not for ever.
    assert!(took >= Duration::from_secs(4), "{took:?}");
    let log = app.log();
    assert!(log.contains("requests were still open"), "{log}");
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_connections_cannot_hold_every_place_for_good() {
    let app = spawn_app_with(AppOptions {
        args: ["--max-connections", "2", "--idle-timeout-s", "20"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // Two clients connect and say nothing: every place is taken.
    let silent: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let start = Instant::now();
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap()
        .get(app.url("/api/health"))
        .send()
        .await
        .expect("a silent connection is closed after the idle timeout, making room");
    assert_eq!(resp.status(), StatusCode::OK);
    let waited = start.elapsed();
    assert!(waited >= Duration::from_secs(15), "{waited:?}");
    eprintln!("answered after {waited:?}, when the silent connections were closed");
    drop(silent);
}

/// A cancel while the job's worker is still starting (slowly, as one making a CUDA context
/// can: up to a minute) is answered at once, and the job ends `cancelled`; it used to wait
/// for the start.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_while_the_worker_starts_is_answered_at_once() {
    const START_DELAY: Duration = Duration::from_secs(8);
    let app = spawn_app_with(AppOptions {
        test_faults: true,
        env: vec![(
            "GPULAB_TEST_WORKER_START_DELAY_MS".into(),
            START_DELAY.as_millis().to_string(),
        )],
        ..Default::default()
    })
    .await;
    // A crash leaves the device without a worker: the next job starts a new one.
    let crash = app
        .submit(json!({"kernel": "_test_fault", "device": "cpu", "params": {"mode": "crash"}}))
        .await;
    let crashed = app.wait_finished(crash.id).await;
    assert_eq!(crashed.status, JobStatus::Failed, "{crashed:?}");
    let job = app
        .submit(json!({"kernel": "vector_add", "device": "cpu"}))
        .await;
    app.wait_status(job.id, JobStatus::Running).await;

    let asked = Instant::now();
    let resp = app.delete(&format!("/api/jobs/{}", job.id)).await;
    let took = asked.elapsed();
    assert!(resp.status().is_success(), "{}", resp.status());
    let cancelled: Job = resp.json().await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled, "{cancelled:?}");
    assert!(
        took < START_DELAY / 2,
        "the cancel waited {took:?} for a worker that takes {START_DELAY:?} to start"
    );
    // The device still runs jobs once its worker is up.
    let next = app
        .submit(json!({"kernel": "vector_add", "device": "cpu"}))
        .await;
    assert_eq!(
        app.wait_finished(next.id).await.status,
        JobStatus::Succeeded
    );
}

//! The worker processes as the server supervises them: what a hostile job can do to the
//! protocol (hole 2), what a worker inherits (hole 3), and that dead workers and runners
//! are replaced and reaped (liveness). CPU jobs only: the `_test_fault` kernel plays the
//! hostile kernel.

mod support;

use std::time::Duration;

use gpulab_shared::JobStatus;
use serde_json::json;
use support::{spawn_app, spawn_app_with, AppOptions, TestApp};

/// A process's parent and state (`S`, `R`, `Z`…), from /proc/PID/stat; `None` once gone.
fn parent_and_state(pid: u32) -> Option<(u32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything: read after the last one.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((parent, state))
}

/// The server's child processes with their states.
fn children(server: u32) -> Vec<(u32, char)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (parent, state) = parent_and_state(pid)?;
            (parent == server).then_some((pid, state))
        })
        .collect()
}

/// The pid of the server's one live worker, waiting up to 10 s for it to be there.
async fn worker_pid(app: &TestApp) -> u32 {
    for _ in 0..1000 {
        let live: Vec<u32> = children(app.pid())
            .into_iter()
            .filter(|(pid, state)| *state != 'Z' && support::is_worker(*pid))
            .map(|(pid, _)| pid)
            .collect();
        if let [pid] = live[..] {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server has no single worker: {:?}", children(app.pid()));
}

/// Waits up to 5 s for the server to have reaped every child that ended.
async fn assert_no_zombies(app: &TestApp) {
    for _ in 0..500 {
        if children(app.pid()).iter().all(|(_, state)| *state != 'Z') {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the server left <defunct> children: {:?}",
        children(app.pid())
    );
}

fn kill_9(pid: u32) {
    // SAFETY: kill(2) on a process id; it touches no memory of ours.
    let done = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    assert_eq!(done, 0, "kill -9 {pid}");
}

/// Peak resident memory of a process in KiB (VmHWM).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

async fn vector_add_succeeds(app: &TestApp) {
    let job = app
        .submit(json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 1000}}))
        .await;
    let ended = app.wait_finished(job.id).await;
    assert_eq!(ended.status, JobStatus::Succeeded, "{:?}", ended.error);
}

async fn fault(app: &TestApp, mode: &str) -> gpulab_shared::Job {
    let job = app
        .submit(json!({"kernel": "_test_fault", "device": "cpu", "params": {"mode": mode}}))
        .await;
    app.wait_finished(job.id).await
}

#[tokio::test]
async fn hole2_a_forged_finished_event_and_endless_stdout_are_only_output() {
    let app = spawn_app().await;
    let worker = worker_pid(&app).await;
    vector_add_succeeds(&app).await;
    let before = peak_rss_kib(app.pid());
    let ended = fault(&app, "stdout_flood").await;
    // The forged `finished` (a success) was printed first; the job's real answer is the
    // failure the worker sent on its channel.
    assert_eq!(ended.status, JobStatus::Failed, "{ended:?}");
    assert!(ended.result.is_none(), "{ended:?}");
    let error = ended.error.unwrap();
    assert!(error.contains("wrote a forged"), "{error}");
    let grown_mib = (peak_rss_kib(app.pid()) - before) / 1024;
    assert!(
        grown_mib < 32,
        "100 MiB printed without a newline grew the server by {grown_mib} MiB"
    );
    // Nothing it printed is left to fail the next job, and printing costs no worker.
    vector_add_succeeds(&app).await;
    assert_eq!(worker_pid(&app).await, worker);
}

#[tokio::test]
async fn hole2_an_event_with_a_wrong_nonce_fails_the_job_and_replaces_the_worker() {
    let app = spawn_app().await;
    let worker = worker_pid(&app).await;
    let ended = fault(&app, "bad_nonce").await;
    assert_eq!(ended.status, JobStatus::Failed);
    let error = ended.error.unwrap();
    assert!(
        error.contains("wrong job or nonce") && error.contains("replaced"),
        "{error}"
    );
    vector_add_succeeds(&app).await;
    assert_ne!(worker_pid(&app).await, worker, "the worker was replaced");
    assert_no_zombies(&app).await;
}

#[tokio::test]
async fn hole2_a_frame_over_the_cap_fails_the_job_and_replaces_the_worker() {
    let app = spawn_app().await;
    let worker = worker_pid(&app).await;
    let before = peak_rss_kib(app.pid());
    let ended = fault(&app, "oversized_frame").await;
    assert_eq!(ended.status, JobStatus::Failed);
    let error = ended.error.unwrap();
    assert!(
        error.contains("longer than the limit") && error.contains("replaced"),
        "{error}"
    );
    assert!((peak_rss_kib(app.pid()) - before) / 1024 < 32);
    vector_add_succeeds(&app).await;
    assert_ne!(worker_pid(&app).await, worker, "the worker was replaced");
}

#[tokio::test]
async fn hole3_a_worker_gets_no_token_no_core_dumps_and_not_the_data_dir() {
    let app = spawn_app_with(AppOptions {
        token: Some("s3cret-token-for-the-worker-test".into()),
        test_faults: true,
        ..Default::default()
    })
    .await;
    let worker = worker_pid(&app).await;
    let environ = std::fs::read(format!("/proc/{worker}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(!environ.contains("GPULAB_TOKEN"), "{environ}");
    assert!(!environ.contains("s3cret"), "{environ}");
    let server_env = std::fs::read(format!("/proc/{}/environ", app.pid())).unwrap();
    assert!(
        String::from_utf8_lossy(&server_env).contains("GPULAB_TOKEN"),
        "the test gives the server a token to keep from its workers"
    );

    let limits = std::fs::read_to_string(format!("/proc/{worker}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let numbers: Vec<&str> = core.split_whitespace().skip(4).take(2).collect();
    assert_eq!(numbers, ["0", "0"], "{core}");

    let cwd = std::fs::read_link(format!("/proc/{worker}/cwd")).unwrap();
    assert_eq!(cwd, std::path::Path::new("/"));

    // The protocol is on fd 3, a socket; stdout and stderr are something else.
    let fd = |n: u32| std::fs::read_link(format!("/proc/{worker}/fd/{n}")).unwrap();
    assert!(
        fd(3).to_string_lossy().starts_with("socket:"),
        "{:?}",
        fd(3)
    );
    assert_ne!(fd(1), fd(3));
    assert_ne!(fd(2), fd(3));
}

#[tokio::test]
async fn liveness_an_idle_worker_killed_with_sigkill_is_replaced_before_the_next_job() {
    let app = spawn_app().await;
    let worker = worker_pid(&app).await;
    kill_9(worker);
    // The next job comes at once: it must not be sent to the dead worker.
    vector_add_succeeds(&app).await;
    let replacement = worker_pid(&app).await;
    assert_ne!(replacement, worker);
    // And again, with the job already waiting when the worker dies.
    kill_9(replacement);
    vector_add_succeeds(&app).await;
    assert_no_zombies(&app).await;
}

#[tokio::test]
async fn liveness_a_panicking_runner_fails_its_job_and_is_restarted() {
    let app = spawn_app().await;
    let ended = fault(&app, "panic_runner").await;
    assert_eq!(ended.status, JobStatus::Failed);
    let error = ended.error.unwrap();
    assert!(
        error.contains("runner") && error.contains("restarted"),
        "{error}"
    );
    vector_add_succeeds(&app).await;
    vector_add_succeeds(&app).await;
    assert_no_zombies(&app).await;
}

#[tokio::test]
async fn liveness_no_zombies_after_crashes_timeouts_cancels_and_kills() {
    let app = spawn_app().await;
    let crash = fault(&app, "crash").await;
    assert_eq!(crash.status, JobStatus::Failed);
    let hang = app
        .submit(json!({"kernel": "_test_fault", "device": "cpu",
                       "params": {"mode": "hang"}, "timeout_s": 1}))
        .await;
    assert_eq!(app.wait_finished(hang.id).await.status, JobStatus::TimedOut);
    let hang = app
        .submit(json!({"kernel": "_test_fault", "device": "cpu", "params": {"mode": "hang"}}))
        .await;
    app.wait_status(hang.id, JobStatus::Running).await;
    let resp = app.delete(&format!("/api/jobs/{}", hang.id)).await;
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    // An idle worker that dies is reaped at once, not when the next job comes.
    kill_9(worker_pid(&app).await);
    assert_no_zombies(&app).await;
    vector_add_succeeds(&app).await;
    assert_no_zombies(&app).await;
    assert_eq!(
        children(app.pid()).len(),
        1,
        "one worker, nothing else: {:?}",
        children(app.pid())
    );
}

#[test]
fn hole2_a_worker_started_by_hand_without_its_channel_says_so() {
    let out = std::process::Command::new(support::gpulab_exe())
        .args(["worker", "--device", "cpu", "--server-pid"])
        .arg(std::process::id().to_string())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("file descriptor 3 is not the server's channel"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout: {:?}", out.stdout);
}

/// Whether this kernel has Landlock (asks for its ABI version, as the worker does).
fn landlock_abi() -> Option<i64> {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) reads no
    // memory of ours and returns the ABI version or -1.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    (abi > 0).then_some(abi)
}

async fn read_in_worker(app: &TestApp, path: &std::path::Path) -> String {
    let job = app
        .submit(json!({"kernel": "_test_fault", "device": "cpu",
                       "params": {"mode": "read_path", "path": path}}))
        .await;
    let ended = app.wait_finished(job.id).await;
    assert_eq!(ended.status, JobStatus::Failed, "{ended:?}");
    ended.error.unwrap()
}

#[tokio::test]
async fn hole3_a_worker_cannot_read_the_data_dir_but_reads_elsewhere_and_runs_jobs() {
    let Some(abi) = landlock_abi() else {
        eprintln!("note: this kernel has no Landlock: workers run unconfined, nothing to test");
        return;
    };
    // Made before the server starts, outside its data directory.
    let mut outside = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut outside, b"twelve bytes").unwrap();
    let token_file = tempfile::NamedTempFile::new().unwrap();
    let token = "token-in-a-file-for-the-landlock-test";
    std::fs::write(token_file.path(), token).unwrap();
    let mut app = spawn_app_with(AppOptions {
        test_faults: true,
        capture_log: true,
        env: vec![("GPULAB_LOG".into(), "info".into())],
        args: vec![
            "--token-file".into(),
            token_file.path().display().to_string(),
        ],
        ..Default::default()
    })
    .await;
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    app.client = reqwest::Client::builder()
        .default_headers(auth)
        .build()
        .unwrap();
    app.wait_for_log("confined by Landlock").await;
    let db = app.data_dir().join("gpulab.sqlite3");
    assert!(db.is_file(), "the history is at {}", db.display());

    let error = read_in_worker(&app, &db).await;
    assert!(
        error.contains("Permission denied"),
        "Landlock ABI {abi}, yet the worker read the history: {error}"
    );
    // Through /proc too: the server's open database is the same file.
    let via_proc = std::path::PathBuf::from(format!("/proc/{}/root", app.pid()))
        .join(db.canonicalize().unwrap().strip_prefix("/").unwrap());
    let error = read_in_worker(&app, &via_proc).await;
    assert!(error.contains("Permission denied"), "{error}");
    // And through the server's open descriptor of it.
    let canonical = db.canonicalize().unwrap();
    let open_fd = std::fs::read_dir(format!("/proc/{}/fd", app.pid()))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|fd| std::fs::read_link(fd).ok().as_ref() == Some(&canonical))
        .expect("the server holds the history open");
    let error = read_in_worker(&app, &open_fd).await;
    assert!(error.contains("Permission denied"), "{open_fd:?}: {error}");
    let error = read_in_worker(&app, token_file.path()).await;
    assert!(error.contains("Permission denied"), "{error}");
    let error = read_in_worker(&app, outside.path()).await;
    assert!(error.contains("read 12 bytes"), "{error}");
    vector_add_succeeds(&app).await;
}

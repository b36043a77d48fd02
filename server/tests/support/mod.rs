//! Starts the real `gpulab` binary on a random port with its own data directory.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use std::time::Duration;

use gpulab_shared::{Job, JobStatus};
use serde::de::DeserializeOwned;

#[derive(Default)]
pub struct AppOptions {
    /// Reuse a data directory (after a restart); a fresh one otherwise.
    pub data_dir: Option<tempfile::TempDir>,
    pub static_dir: Option<PathBuf>,
    pub token: Option<String>,
    pub queue_capacity: Option<usize>,
    /// `_test_fault` jobs are accepted unless this is explicitly false.
    pub test_faults: bool,
    /// More arguments for `gpulab serve`.
    pub args: Vec<String>,
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    child: Child,
    data_dir: Option<tempfile::TempDir>,
}

/// A server with test faults on.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions {
        test_faults: true,
        ..Default::default()
    })
    .await
}

/// The `gpulab` binary: cargo's, or the one GPULAB_BIN names (the GPU check runs these
/// tests on a machine without the build tree).
pub fn gpulab_exe() -> PathBuf {
    std::env::var_os("GPULAB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_gpulab")))
}

pub async fn spawn_app_with(opts: AppOptions) -> TestApp {
    let data_dir = opts
        .data_dir
        .unwrap_or_else(|| tempfile::tempdir().unwrap());
    let static_dir = opts
        .static_dir
        .unwrap_or_else(|| data_dir.path().join("no-ui"));
    let mut cmd = Command::new(gpulab_exe());
    cmd.args(["serve", "--addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir.path())
        .arg("--static-dir")
        .arg(&static_dir)
        .env_remove("GPULAB_TOKEN")
        .env(
            "GPULAB_LOG",
            std::env::var("GPULAB_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if opts.test_faults {
        cmd.arg("--enable-test-faults");
    }
    if let Some(token) = &opts.token {
        cmd.env("GPULAB_TOKEN", token);
    }
    if let Some(cap) = opts.queue_capacity {
        cmd.arg("--queue-capacity").arg(cap.to_string());
    }
    cmd.args(&opts.args);
    let mut child = cmd.spawn().expect("start gpulab");
    let stdout = child.stdout.take().unwrap();
    let base = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.next().expect("gpulab printed nothing").unwrap();
        let url = line
            .strip_prefix("gpulab listening on ")
            .expect(&line)
            .to_string();
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        url
    })
    .await
    .unwrap();
    TestApp {
        base,
        client: reqwest::Client::new(),
        child,
        data_dir: Some(data_dir),
    }
}

impl TestApp {
    /// The server's data directory, where the job history is.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.as_ref().unwrap().path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client.delete(self.url(path)).send().await.unwrap()
    }

    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> T {
        let resp = self.get(path).await;
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json().await.unwrap()
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Queues a job, which must be accepted.
    pub async fn submit(&self, body: serde_json::Value) -> Job {
        let resp = self.post_json("/api/jobs", &body).await;
        assert_eq!(resp.status(), reqwest::StatusCode::ACCEPTED, "{body}");
        resp.json().await.unwrap()
    }

    /// Polls the job until `done` holds, for at most a minute.
    pub async fn wait_until(&self, id: i64, done: impl Fn(&Job) -> bool) -> Job {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let job: Job = self.get_json(&format!("/api/jobs/{id}")).await;
            if done(&job) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} stuck: {job:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn wait_finished(&self, id: i64) -> Job {
        self.wait_until(id, |j| j.status.is_finished()).await
    }

    pub async fn wait_status(&self, id: i64, status: JobStatus) -> Job {
        self.wait_until(id, |j| j.status == status).await
    }

    /// Sends SIGTERM and waits up to `limit` for the server to exit; true when it did.
    pub fn terminate_within(&mut self, limit: std::time::Duration) -> bool {
        // SAFETY: kill(2) on our own child's pid; it touches no memory of ours.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }

    /// Kills the server with SIGKILL (no chance to clean up) and hands back its data.
    pub fn kill_9(&mut self) -> tempfile::TempDir {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.data_dir.take().unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

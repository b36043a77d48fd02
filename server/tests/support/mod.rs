//! Starts the real `gpulab` binary on a random port with its own data directory.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

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
    /// The `--addr` to listen on; `127.0.0.1:0` when not set.
    pub addr: Option<String>,
    /// More command-line arguments for `gpulab serve`.
    pub args: Vec<String>,
    /// More environment variables for the server.
    pub env: Vec<(String, String)>,
    /// Keep the server's log (at `warn` and above unless GPULAB_LOG says otherwise) in
    /// [`TestApp::log`] instead of passing it through.
    pub capture_log: bool,
    /// A command that runs the server (`unshare --pid --fork …`): the server is its child.
    pub wrapper: Vec<String>,
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    child: Child,
    data_dir: Option<tempfile::TempDir>,
    /// The server's log so far, where `capture_log` asked for it.
    log: Arc<Mutex<String>>,
    wrapped: bool,
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
    let mut cmd = match opts.wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(gpulab_exe());
            cmd
        }
        None => Command::new(gpulab_exe()),
    };
    let addr = opts.addr.as_deref().unwrap_or("127.0.0.1:0");
    let default_log = if opts.capture_log { "warn" } else { "error" };
    cmd.args(["serve", "--addr", addr])
        .args(&opts.args)
        .arg("--data-dir")
        .arg(data_dir.path())
        .arg("--static-dir")
        .arg(&static_dir)
        .env_remove("GPULAB_TOKEN")
        .env(
            "GPULAB_LOG",
            std::env::var("GPULAB_LOG").unwrap_or_else(|_| default_log.into()),
        )
        .envs(opts.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(if opts.capture_log {
            Stdio::piped()
        } else {
            Stdio::inherit()
        });
    if opts.test_faults {
        cmd.arg("--enable-test-faults");
    }
    if let Some(token) = &opts.token {
        cmd.env("GPULAB_TOKEN", token);
    }
    if let Some(cap) = opts.queue_capacity {
        cmd.arg("--queue-capacity").arg(cap.to_string());
    }
    let mut child = cmd.spawn().expect("start gpulab");
    let log = Arc::new(Mutex::new(String::new()));
    if let Some(mut stderr) = child.stderr.take() {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                log.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    let stdout = child.stdout.take().unwrap();
    let base = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.next().expect("gpulab printed nothing").unwrap();
        // A server on every interface is reached through loopback.
        let url = line
            .strip_prefix("gpulab listening on ")
            .expect(&line)
            .replace("0.0.0.0", "127.0.0.1");
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
        log,
        wrapped: !opts.wrapper.is_empty(),
    }
}

/// Runs `gpulab serve` with `args` (and `env`), which must fail within 20 s; returns its
/// exit status and everything it wrote to stderr.
pub fn serve_fails(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    serve_fails_in(tempfile::tempdir().unwrap().path(), args, env)
}

/// [`serve_fails`] with the history in `data_dir`.
pub fn serve_fails_in(
    data_dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (ExitStatus, String) {
    let mut child = Command::new(gpulab_exe())
        .args(["serve", "--addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("GPULAB_TOKEN")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gpulab");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gpulab serve {args:?} {env:?} still runs after 20 s instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap())
}

/// The processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The worker processes among the children of `pid` (`gpulab worker …`): the server also
/// starts short-lived helpers (`gpulab cuda-libraries`, `gpulab measure-bandwidth`).
pub fn workers_of(pid: u32) -> Vec<u32> {
    children_of(pid)
        .into_iter()
        .filter(|child| is_worker(*child))
        .collect()
}

/// Whether `pid` is a `gpulab worker` process.
pub fn is_worker(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).nth(1) == Some(b"worker".as_slice()))
}

/// Whether `pid` still runs (a zombie waiting to be reaped does not).
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
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
        self.terminate(limit).is_some()
    }

    /// Sends SIGTERM to the server and waits up to `limit` for it to exit; its exit status
    /// (a wrapper's, which passes the server's on), or `None` when it still runs.
    pub fn terminate(&mut self, limit: std::time::Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }

    /// The server's process id, as this machine sees it (not the wrapper's).
    pub fn server_pid(&self) -> u32 {
        self.try_server_pid()
            .expect("the wrapper should have one child, the server")
    }

    fn try_server_pid(&self) -> Option<u32> {
        if !self.wrapped {
            return Some(self.child.id());
        }
        match children_of(self.child.id())[..] {
            [pid] => Some(pid),
            _ => None,
        }
    }

    /// Sends `signal` to the server itself.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on the server's pid; it touches no memory of ours.
        unsafe {
            libc::kill(self.server_pid() as libc::pid_t, signal);
        }
    }

    /// The server's log so far (with `capture_log`).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to 10 s for the log to contain `text`; the log then.
    pub async fn wait_for_log(&self, text: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.contains(text) {
                return log;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the log never said {text:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The data directory, to start another server on it after this one has stopped.
    pub fn take_data_dir(&mut self) -> tempfile::TempDir {
        self.data_dir.take().unwrap()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server with SIGKILL (no chance to clean up) and hands back its data.
    pub fn kill_9(&mut self) -> tempfile::TempDir {
        if self.wrapped {
            self.signal(libc::SIGKILL);
        }
        let _ = self.child.kill();
        self.child.wait().unwrap();
        self.data_dir.take().unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if self.wrapped {
            if let Some(pid) = self.try_server_pid() {
                // SAFETY: kill(2) on the server's pid; it touches no memory of ours.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One job per kernel of `catalog` on `device`, and one more per other choice of each of its
/// enum parameters (matmul's variants), with the integer parameters other than `seed` taken
/// from `sizes` by name and the rest at their defaults. The kernels come from the catalog, so
/// a new one is run without a test naming it; one with an integer parameter missing from
/// `sizes` fails, asking for a size. Choices that depend on the device (`choices_by_device`:
/// matmul's dtype) stay at their default: tests/gemm_dtypes.rs runs each device's own.
pub fn jobs_of_catalog(
    catalog: &[gpulab_shared::KernelSpec],
    device: &str,
    sizes: &[(&str, u64)],
) -> Vec<serde_json::Value> {
    use serde_json::json;
    let mut jobs = Vec::new();
    for k in catalog {
        let mut params = serde_json::Map::new();
        for p in &k.params {
            if p.ty == gpulab_shared::ParamType::Integer && p.name != "seed" {
                let (_, size) = sizes
                    .iter()
                    .find(|(name, _)| *name == p.name)
                    .unwrap_or_else(|| panic!("give {}.{} a size in the test", k.name, p.name));
                params.insert(p.name.clone(), json!(size));
            }
        }
        jobs.push(json!({"kernel": k.name, "device": device, "params": params}));
        for p in k
            .params
            .iter()
            .filter(|p| p.choices.is_some() && p.choices_by_device.is_none())
        {
            for choice in p.choices.as_deref().unwrap_or_default() {
                if p.default != json!(choice) {
                    let mut params = params.clone();
                    params.insert(p.name.clone(), json!(choice));
                    jobs.push(json!({"kernel": k.name, "device": device, "params": params}));
                }
            }
        }
    }
    jobs
}

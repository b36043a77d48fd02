//! The gpulab benchmark: starts the release server on a random port and prints
//! - the end-to-end latency of the smallest job on a warm worker (POST → succeeded),
//! - `GET /api/devices` requests per second with 32 concurrent connections,
//! - CPU `saxpy` and `reduce_sum` GB/s beside a plain memory copy (`bandwidth`),
//! - the server's CPU use while idle, with the telemetry sampler running,
//! - `GET /index.html` requests per second beside nginx serving the same folder (`wrk`).
//!
//! Run it with `cargo xtask bench` (or `cargo bench -p gpulab-server --bench e2e`). It prints
//! figures; it asserts nothing about speed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gpulab_shared::{Job, JobStatus};
use serde_json::json;

const LATENCY_JOBS: usize = 300;
const CONNECTIONS: usize = 32;
const RPS_SECONDS: u64 = 5;
const IDLE_SECONDS: u64 = 30;

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let data = tempfile::tempdir().unwrap();
    let ui = UiFolder::find_or_make();
    let mut server = Command::new(env!("CARGO_BIN_EXE_gpulab"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--queue-capacity",
            "100000",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .arg("--static-dir")
        .arg(ui.path())
        .env("GPULAB_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start gpulab");
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let base = lines
        .next()
        .unwrap()
        .unwrap()
        .replace("gpulab listening on ", "");
    std::thread::spawn(move || for _ in lines {});

    let client = reqwest::Client::new();
    let devices: serde_json::Value = client
        .get(format!("{base}/api/devices"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cpu = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "cpu")
        .unwrap();
    println!(
        "gpulab benchmark on {} ({} logical threads)",
        cpu["name"], cpu["cpu"]["logical_threads"]
    );
    println!();

    idle_cost(server.id()).await;
    latency(&client, &base).await;
    requests_per_second(&base).await;
    static_files_beside_nginx(&base, &ui);
    throughput(&client, &base).await;

    let _ = server.kill();
    let _ = server.wait();
}

/// CPU time of all the server's threads (not its idle worker child), from the scheduler's
/// per-thread run time in nanoseconds.
fn server_cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The cost of the telemetry sampler (and anything else running) with no client connected.
async fn idle_cost(pid: u32) {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (t0, c0) = (Instant::now(), server_cpu_ns(pid));
    tokio::time::sleep(Duration::from_secs(IDLE_SECONDS)).await;
    let (secs, ns) = (t0.elapsed().as_secs_f64(), server_cpu_ns(pid) - c0);
    println!("idle server, telemetry sampler running, no client, {IDLE_SECONDS} s");
    println!(
        "  {:.4} % of one core ({:.1} ms of CPU)   (target ≤ 1 %)",
        100.0 * ns as f64 / 1e9 / secs,
        ns as f64 / 1e6
    );
    println!();
}

async fn submit(client: &reqwest::Client, base: &str, body: serde_json::Value) -> Job {
    let resp = client
        .post(format!("{base}/api/jobs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{body}");
    resp.json().await.unwrap()
}

/// Polls until the job has finished, `pause` apart: none when measuring latency, long enough
/// not to steal a core from the kernel when measuring throughput.
async fn wait(client: &reqwest::Client, base: &str, id: i64, pause: Duration) -> Job {
    loop {
        let job: Job = client
            .get(format!("{base}/api/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job.status.is_finished() {
            return job;
        }
        if !pause.is_zero() {
            // A zero sleep would still wait for the timer's next millisecond tick.
            tokio::time::sleep(pause).await;
        }
    }
}

async fn latency(client: &reqwest::Client, base: &str) {
    let smallest =
        json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 1}, "repetitions": 1});
    for _ in 0..20 {
        let job = submit(client, base, smallest.clone()).await;
        wait(client, base, job.id, Duration::ZERO).await;
    }
    let mut ms = Vec::with_capacity(LATENCY_JOBS);
    for _ in 0..LATENCY_JOBS {
        let start = Instant::now();
        let job = submit(client, base, smallest.clone()).await;
        let done = wait(client, base, job.id, Duration::ZERO).await;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);
    }
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    println!("smallest job end to end (vector_add n=1, 1 repetition, warm CPU worker, POST → succeeded, polled)");
    println!(
        "  {} jobs: p50 {:.2} ms, p99 {:.2} ms, min {:.2} ms, max {:.2} ms   (target p50 ≤ 3 ms)",
        ms.len(),
        pct(0.5),
        pct(0.99),
        ms[0],
        ms[ms.len() - 1]
    );
    println!();
}

async fn requests_per_second(base: &str) {
    let count = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let url = format!("{base}/api/devices");
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        // One client per task: its own keep-alive connection.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        let (count, stop, url) = (count.clone(), stop.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let resp = client.get(&url).send().await.unwrap();
                assert!(resp.status().is_success());
                resp.bytes().await.unwrap();
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(RPS_SECONDS)).await;
    stop.store(true, Ordering::Relaxed);
    let n = count.load(Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    for t in tasks {
        t.await.unwrap();
    }
    println!("GET /api/devices, {CONNECTIONS} concurrent keep-alive connections, {RPS_SECONDS} s (client on the same machine)");
    println!("  {:.0} requests/s   (target ≥ 20000)", n as f64 / secs);
    println!();
}

async fn throughput(client: &reqwest::Client, base: &str) {
    // 2 GiB per buffer: far beyond the last-level cache (480 MiB on some of our hosts), so
    // that all three measure memory, not cache.
    let runs = [
        ("bandwidth", json!({"size_mib": 2048})),
        ("saxpy", json!({"n": 1 << 29})),
        ("reduce_sum", json!({"n": 1 << 29})),
    ];
    println!("CPU memory-bound kernels, 2 GiB per buffer (median of 10 repetitions)");
    let mut copy = None;
    for (kernel, params) in runs {
        let job = submit(
            client,
            base,
            json!({"kernel": kernel, "device": "cpu", "params": params, "repetitions": 10}),
        )
        .await;
        let done = wait(client, base, job.id, Duration::from_millis(100)).await;
        assert_eq!(
            done.status,
            JobStatus::Succeeded,
            "{kernel}: {:?}",
            done.error
        );
        let r = done.result.unwrap();
        let gbs = r.throughput.value;
        let versus = match copy {
            None => {
                copy = Some(gbs);
                "(the copy: read + write bytes)".to_string()
            }
            Some(c) => format!("{:.0} % of the copy", 100.0 * gbs / c),
        };
        println!(
            "  {kernel:<11} {gbs:>7.2} {}  median {:.2} ms  {versus}",
            r.throughput.unit, r.timing.median_ms
        );
    }
    println!("  (target: saxpy ≥ 70 % of the copy)");
}

/// The UI the servers are measured on: the built one (`dist/` of the workspace), or else a
/// folder with an `index.html` of a realistic size (2 KiB, as trunk writes it).
struct UiFolder {
    dist: Option<std::path::PathBuf>,
    made: Option<tempfile::TempDir>,
}

impl UiFolder {
    fn find_or_make() -> Self {
        let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist");
        if dist.join("index.html").is_file() {
            return UiFolder {
                dist: Some(dist),
                made: None,
            };
        }
        let made = tempfile::tempdir().unwrap();
        let preload: String = (0..12)
            .map(|i| {
                format!(
                    "<link rel=\"modulepreload\" href=\"/gpulab-frontend-0123456789abcd{i:02x}.js\" \
                     crossorigin=\"anonymous\" integrity=\"sha384-{}\">\n",
                    "A".repeat(64)
                )
            })
            .collect();
        let html = format!(
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>gpulab</title>\n{preload}<script type=\"module\">import init, * as bindings \
             from '/gpulab-frontend-0123456789abcdef.js'; const wasm = await init({{ module_or_path: \
             '/gpulab-frontend-0123456789abcdef_bg.wasm' }}); window.wasmBindings = bindings;\
             </script></head><body></body></html>\n"
        );
        std::fs::write(made.path().join("index.html"), html).unwrap();
        UiFolder {
            dist: None,
            made: Some(made),
        }
    }

    fn path(&self) -> &std::path::Path {
        match (&self.dist, &self.made) {
            (Some(dist), _) => dist,
            (None, Some(made)) => made.path(),
            (None, None) => unreachable!("a folder is found or made"),
        }
    }
}

/// `wrk -t1 -c32 -d5s` on `/index.html` of gpulab and of nginx serving the same folder; a
/// note instead where wrk or nginx is missing and cannot be installed.
fn static_files_beside_nginx(base: &str, ui: &UiFolder) {
    let size = std::fs::metadata(ui.path().join("index.html"))
        .unwrap()
        .len();
    let which = if ui.dist.is_some() {
        "the built UI"
    } else {
        "no UI built: a 2 KiB stand-in"
    };
    println!(
        "GET /index.html ({:.1} KiB, {which}), wrk -t1 -c{CONNECTIONS} -d{RPS_SECONDS}s, gpulab beside nginx",
        size as f64 / 1024.0
    );
    if !installed("wrk", &["--version"]) {
        println!("  skipped: wrk is missing (apt-get install wrk)");
        println!();
        return;
    }
    let gpulab = wrk(&format!("{base}/index.html"));
    let nginx = match Nginx::start(ui.path()) {
        Ok(nginx) => wrk(&format!("http://{}/index.html", nginx.addr)),
        Err(why) => {
            println!("  gpulab {:>9.0} requests/s", gpulab);
            println!("  nginx: skipped, {why}");
            println!();
            return;
        }
    };
    println!("  gpulab {gpulab:>9.0} requests/s");
    println!("  nginx  {nginx:>9.0} requests/s");
    println!("  gpulab / nginx = {:.2}   (target ≥ 0.5)", gpulab / nginx);
    println!();
}

/// Whether `program` runs.
fn installed(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Requests per second that `wrk` measured on `url`; every answer must have been a success.
fn wrk(url: &str) -> f64 {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{RPS_SECONDS}s"),
            url,
        ])
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk {url}: {text}");
    assert!(!text.contains("Non-2xx"), "wrk {url}: {text}");
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output: {text}"))
}

/// Debian's nginx serving `root` on a free port of loopback, with a generated minimal
/// configuration: one worker per core, as gpulab's runtime has, and no access log.
struct Nginx {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(root: &std::path::Path) -> Result<Self, String> {
        let exe = ["/usr/sbin/nginx", "nginx"]
            .into_iter()
            .find(|exe| installed(exe, &["-v"]));
        // SAFETY: geteuid has no preconditions.
        let root_user = unsafe { libc::geteuid() } == 0;
        let exe = match exe {
            Some(exe) => exe,
            None if root_user => {
                println!("  (installing nginx: apt-get install -y nginx)");
                let ok = Command::new("apt-get")
                    .args(["install", "-y", "-q", "nginx"])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    return Err("nginx is missing and apt-get could not install it".into());
                }
                "/usr/sbin/nginx"
            }
            None => return Err("nginx is missing (apt-get install nginx)".into()),
        };
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?;
        let d = dir.path().display();
        let mime = if std::path::Path::new("/etc/nginx/mime.types").is_file() {
            "include /etc/nginx/mime.types;"
        } else {
            ""
        };
        // Run as root, nginx's workers would otherwise be `nobody`, who cannot read a
        // private temporary folder.
        let user = if root_user { "user root;" } else { "" };
        let config = format!(
            "{user}\ndaemon off;\nworker_processes auto;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 1024; }}\n\
             http {{\n  {mime}\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n\
             tcp_nodelay on;\n  keepalive_requests 1000000;\n\
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n\
             server {{ listen {addr}; root {}; location / {{ try_files $uri /index.html; }} }}\n}}\n",
            root.display()
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config).map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start nginx: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
                return Err(format!("nginx exited ({status}): {log}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("nginx did not listen within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Nginx {
            child,
            addr,
            _dir: dir,
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: nginx's graceful stop, which takes its workers along.
        // SAFETY: kill(2) on our own child's pid; it touches no memory of ours.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGQUIT);
        }
        let _ = self.child.wait();
    }
}

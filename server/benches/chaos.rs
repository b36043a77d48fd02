//! Load and chaos: 30 s of mixed traffic from `wrk` at 64 connections (job submissions, job
//! reads, lists, `/metrics`) and a few `/api/events` streams held open with `curl`, while a
//! chaos loop `kill -9`s a worker process every 3 s and, once mid-run, the server itself
//! (restarted at once on the same data directory and port).
//!
//! It prints requests/s, errors (non-2xx, 429 and socket errors apart), p99 latency and the
//! server's RSS; it asserts nothing about speed. It exits non-zero if a job that was answered
//! 202 is lost (absent afterwards) or stuck (still queued or running 60 s after the load).
//!
//! Run it with `cargo xtask bench` (or `cargo bench -p gpulab-server --bench chaos`). To run it
//! against the debug server, which builds far faster: `cargo test -p gpulab-server --bench
//! chaos`; `GPULAB_BIN=path/to/gpulab` runs it against any binary.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpulab_shared::{Job, JobPage};

const CONNECTIONS: usize = 64;
const SECONDS: u64 = 30;
const EVENT_CLIENTS: usize = 4;
const WORKER_KILL_EVERY: Duration = Duration::from_secs(3);
const SERVER_KILL_AT: Duration = Duration::from_secs(15);
const SETTLE: Duration = Duration::from_secs(60);

/// The wrk script: 30 % submissions, 30 % reads of one of the thread's 50 latest ids, 20 %
/// lists, 20 % `/metrics`. Every id answered 202 goes to `ids-<thread>.txt` in the folder.
const LUA: &str = r#"
local threads = {}
local body = '{"kernel":"vector_add","device":"cpu","params":{"n":1024},"repetitions":1}'
local json = { ["Content-Type"] = "application/json" }

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  ids_file = io.open(IDS_DIR .. "/ids-" .. tid .. ".txt", "w")
  ids, counter = {}, 0
  s202, s429, s2xx, other, no_id = 0, 0, 0, 0, 0
end

function request()
  counter = counter + 1
  local k = counter % 10
  if k < 3 then
    return wrk.format("POST", "/api/jobs", json, body)
  elseif k < 6 and #ids > 0 then
    return wrk.format("GET", "/api/jobs/" .. ids[math.random(math.max(1, #ids - 49), #ids)])
  elseif k < 8 then
    return wrk.format("GET", "/api/jobs?limit=50")
  else
    return wrk.format("GET", "/metrics")
  end
end

function response(status, headers, body)
  if status == 202 then
    s202 = s202 + 1
    local id = body:match('^{"id":(%d+),')
    if id then
      ids_file:write(id, "\n")
      ids_file:flush()
      ids[#ids + 1] = id
    else
      no_id = no_id + 1
    end
  elseif status == 429 then
    s429 = s429 + 1
  elseif status >= 200 and status < 300 then
    s2xx = s2xx + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local t = { s202 = 0, s429 = 0, s2xx = 0, other = 0, no_id = 0 }
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do
      t[k] = t[k] + thread:get(k)
    end
  end
  io.write(string.format("counts: 202 %d 429 %d other-2xx %d other %d 202-without-id %d\n",
    t.s202, t.s429, t.s2xx, t.other, t.no_id))
end
"#;

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let bin = std::env::var_os("GPULAB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_gpulab")));
    if Command::new("wrk")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        println!("load and chaos: skipped, wrk is missing (apt-get install wrk)");
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(bin))
}

/// The server under test, started on `addr` (port 0 the first time) with `data` kept across
/// restarts.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(bin: &Path, data: &Path, log: &Path, addr: &str) -> Result<Server, String> {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| e.to_string())?;
        let mut child = Command::new(bin)
            .args(["serve", "--addr", addr])
            .arg("--data-dir")
            .arg(data)
            .env("GPULAB_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok);
        std::thread::spawn(move || for _ in lines {});
        match first.and_then(|l| l.strip_prefix("gpulab listening on ").map(String::from)) {
            Some(base) => Ok(Server { child, base }),
            None => {
                let status = child.wait().map_err(|e| e.to_string())?;
                Err(format!("the server exited ({status}) before listening"))
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    /// Stops the server even when the bench panics; its workers die with it.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process in KiB (`VmRSS`), or `None` once it is gone.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The `gpulab worker` children of `pid`.
fn workers(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .filter(|child| {
            std::fs::read(format!("/proc/{child}/cmdline"))
                .map(|c| c.split(|&b| b == 0).any(|arg| arg == b"worker"))
                .unwrap_or(false)
        })
        .collect()
}

/// The scheduler state of a process (`R` running, `S` sleeping, …) from `/proc/<pid>/stat`.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may hold spaces; the state follows its `)`.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn kill9(pid: u32) {
    // SAFETY: kill(2) on a pid; it touches no memory of ours.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

async fn run(bin: PathBuf) -> ExitCode {
    let data = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let log = scratch.path().join("server.log");
    let first = Server::start(&bin, data.path(), &log, "127.0.0.1:0").expect("start gpulab");
    let base = first.base.clone();
    let addr = base.trim_start_matches("http://").to_string();
    let client = reqwest::Client::new();

    // Warm: the CPU worker has answered one job before the load starts.
    let warm: Job = client
        .post(format!("{base}/api/jobs"))
        .json(&serde_json::json!({"kernel":"vector_add","device":"cpu","params":{"n":1024},"repetitions":1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !job(&client, &base, warm.id)
        .await
        .is_some_and(|j| j.status.is_finished())
    {
        assert!(Instant::now() < deadline, "the warm-up job did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_before = rss_kib(first.pid()).unwrap_or(0);
    println!(
        "load and chaos: {} ({}), wrk -t2 -c{CONNECTIONS} -d{SECONDS}s mixed traffic, \
         {EVENT_CLIENTS} event streams, a worker kill -9 every {} s, the server kill -9 at {} s",
        bin.display(),
        if bin.to_string_lossy().contains("/debug/") {
            "debug build"
        } else {
            "release build"
        },
        WORKER_KILL_EVERY.as_secs(),
        SERVER_KILL_AT.as_secs()
    );

    let server = Arc::new(Mutex::new(first));
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_before));

    // RSS sampler: the peak of whichever server is running.
    let sampler = {
        let (server, stop, peak) = (server.clone(), stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let pid = server.lock().unwrap().pid();
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // Event streams, each reconnecting when its connection ends (as it does at the restart).
    let events = Arc::new(AtomicU64::new(0));
    let connects = Arc::new(AtomicU64::new(0));
    let streams: Vec<_> = (0..EVENT_CLIENTS)
        .map(|_| {
            let (stop, events, connects) = (stop.clone(), events.clone(), connects.clone());
            let url = format!("{base}/api/events");
            std::thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(SECONDS);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    let left = end.saturating_duration_since(Instant::now()).as_secs() + 1;
                    let Ok(mut curl) = Command::new("curl")
                        .args(["-sN", "--max-time", &left.to_string(), &url])
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null())
                        .spawn()
                    else {
                        return;
                    };
                    connects.fetch_add(1, Ordering::Relaxed);
                    for line in BufReader::new(curl.stdout.take().unwrap()).lines() {
                        match line {
                            Ok(l) if l.starts_with("data:") => {
                                events.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                    let _ = curl.wait();
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        })
        .collect();

    // The load.
    let script = scratch.path().join("mixed.lua");
    std::fs::write(
        &script,
        format!(
            "IDS_DIR = {:?}\n{LUA}",
            scratch.path().display().to_string()
        ),
    )
    .unwrap();
    let wrk = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{CONNECTIONS}"),
            &format!("-d{SECONDS}s"),
            "--latency",
            "-s",
        ])
        .arg(&script)
        .arg(&base)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wrk");

    // The chaos.
    let start = Instant::now();
    let (mut worker_kills, mut worker_kills_running) = (0, 0);
    let mut restart_gap = None;
    let mut rss_first_at_kill = 0;
    let mut next_worker_kill = start + WORKER_KILL_EVERY;
    while start.elapsed() < Duration::from_secs(SECONDS) {
        if restart_gap.is_none() && start.elapsed() >= SERVER_KILL_AT {
            let mut s = server.lock().unwrap();
            rss_first_at_kill = rss_kib(s.pid()).unwrap_or(0);
            kill9(s.pid());
            let _ = s.child.wait();
            let down = Instant::now();
            // The port may take a moment to be free again.
            let restarted = loop {
                match Server::start(&bin, data.path(), &log, &addr) {
                    Ok(restarted) => break restarted,
                    Err(why) if down.elapsed() < Duration::from_secs(10) => {
                        eprintln!("restart: {why}; again");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(why) => panic!("the server did not come back: {why}"),
                }
            };
            *s = restarted;
            restart_gap = Some(down.elapsed());
        }
        if Instant::now() >= next_worker_kill {
            // Prefer the moment the worker is on a CPU (most likely mid-job): wait up to 1 s
            // for it, then kill it whatever it is doing.
            let pid = server.lock().unwrap().pid();
            if let Some(&worker) = workers(pid).first() {
                let running = state(worker) == Some('R');
                if running || Instant::now() >= next_worker_kill + Duration::from_secs(1) {
                    kill9(worker);
                    worker_kills += 1;
                    worker_kills_running += u32::from(running);
                    next_worker_kill += WORKER_KILL_EVERY;
                }
            } else {
                next_worker_kill += WORKER_KILL_EVERY;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = wrk.wait_with_output().expect("wrk");
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    for s in streams {
        s.join().unwrap();
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "wrk: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // What wrk saw.
    let field = |prefix: &str| -> Option<String> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(|s| s.trim().to_string())
    };
    let total = text
        .lines()
        .find(|l| l.contains("requests in"))
        .unwrap_or("")
        .trim()
        .to_string();
    println!("  {total}");
    println!(
        "  {} requests/s, latency p50 {}, p99 {}",
        field("Requests/sec:").unwrap_or_default(),
        field("50%").unwrap_or_default(),
        field("99%").unwrap_or_default()
    );
    println!(
        "  socket errors: {}",
        field("Socket errors:").unwrap_or_else(|| "none".into())
    );
    println!(
        "  non-2xx answers (429 included): {}",
        field("Non-2xx or 3xx responses:").unwrap_or_else(|| "0".into())
    );
    println!(
        "  answers by status: {}",
        field("counts:").unwrap_or_default()
    );
    println!(
        "  chaos: {worker_kills} workers killed ({worker_kills_running} of them on a CPU), the server killed at {} s and listening again after {:.0} ms",
        SERVER_KILL_AT.as_secs(),
        restart_gap.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    );
    println!(
        "  event streams: {} connections, {} events",
        connects.load(Ordering::Relaxed),
        events.load(Ordering::Relaxed)
    );

    // Every id answered 202 must exist and be final.
    let mut accepted = BTreeSet::new();
    for entry in std::fs::read_dir(scratch.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("ids-"))
        {
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                accepted.insert(line.parse::<i64>().expect("an id"));
            }
        }
    }
    let base = server.lock().unwrap().base.clone();
    let settle = Instant::now();
    let (statuses, lost, stuck) = loop {
        let all = list_all(&client, &base).await;
        let lost: Vec<i64> = accepted
            .iter()
            .filter(|id| !all.contains_key(id))
            .copied()
            .collect();
        let stuck: Vec<i64> = all
            .iter()
            .filter(|(_, j)| !j.status.is_finished())
            .map(|(id, _)| *id)
            .collect();
        let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
        for j in all.values() {
            *statuses.entry(format!("{:?}", j.status)).or_default() += 1;
        }
        if stuck.is_empty() || settle.elapsed() > SETTLE {
            break (statuses, lost, stuck);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let rss_after = rss_kib(server.lock().unwrap().pid()).unwrap_or(0);
    println!(
        "  server RSS: {:.1} MiB before, {:.1} MiB at its kill, peak {:.1} MiB (either process), \
         restarted server {:.1} MiB after",
        rss_before as f64 / 1024.0,
        rss_first_at_kill as f64 / 1024.0,
        peak.load(Ordering::Relaxed) as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    println!(
        "  {} jobs answered 202; afterwards, {:.1} s after the load, the store holds {} jobs: {statuses:?}",
        accepted.len(),
        settle.elapsed().as_secs_f64(),
        statuses.values().sum::<usize>()
    );
    // The server's warnings and errors, without their time stamps, each with its count.
    let mut logged: BTreeMap<String, usize> = BTreeMap::new();
    for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
        let text = line.split_once(' ').map_or(line, |(_, rest)| rest.trim());
        *logged.entry(text.to_string()).or_default() += 1;
    }
    println!("  server log (warn and above):");
    for (text, n) in &logged {
        println!("    {n:>3} × {text}");
    }

    drop(server);
    let mut failed = false;
    if !lost.is_empty() {
        println!(
            "  DEFECT: {} jobs answered 202 are not in the store: {:?}",
            lost.len(),
            &lost[..lost.len().min(20)]
        );
        failed = true;
    }
    if !stuck.is_empty() {
        println!(
            "  DEFECT: {} jobs still queued or running {} s after the load: {:?}",
            stuck.len(),
            SETTLE.as_secs(),
            &stuck[..stuck.len().min(20)]
        );
        failed = true;
    }
    println!();
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn job(client: &reqwest::Client, base: &str, id: i64) -> Option<Job> {
    client
        .get(format!("{base}/api/jobs/{id}"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Every job in the store, by id, through the list's pages.
async fn list_all(client: &reqwest::Client, base: &str) -> BTreeMap<i64, Job> {
    let mut all = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/jobs?limit=500");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: JobPage = client.get(&url).send().await.unwrap().json().await.unwrap();
        for j in page.jobs {
            all.insert(j.id, j);
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return all,
        }
    }
}

//! Supervision of one device's worker process: starts it, feeds it the device's jobs and
//! diagnostic parts one at a time, and kills and replaces it when a job times out, is
//! cancelled or crashes it, when it dies while idle, and after every custom job and every
//! diagnostic part.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use gpulab_shared::diag::DiagnosticStatus;
use gpulab_shared::{Job, JobResult, JobStatus, Progress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::{Child, Command};
use tokio::sync::broadcast;

use super::diagnostics::{DiagnosticLedger, PartEnd};
use super::queue::{CancelRequest, DeviceQueue, QueuedJob, QueuedPart, Work, WorkId};
use crate::cuda::{custom, panic_message};
use crate::kernels::Artifact;
use crate::store::{Ending, JobStore};
use crate::worker::protocol::{self, Event, FrameError, Request, CHANNEL_FD};
use crate::worker::TEST_FAULT_KERNEL;

/// How long a new worker may take to say it is ready (CUDA start-up can be slow).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The most of a worker's standard output that the server keeps for a job: a kernel's
/// `printf` can write without end.
pub const OUTPUT_TAIL_BYTES: usize = 64 * 1024;

/// The longest line of a worker's standard error that is passed on to the server's log.
const MAX_LOG_LINE: usize = 4096;

/// The environment variables a worker keeps; every other one (the token first of all) is
/// cleared. The CUDA ones decide which GPUs the worker sees and in what order, so they
/// must be the server's.
const WORKER_ENV: &[&str] = &[
    "PATH",
    "LD_LIBRARY_PATH",
    "TMPDIR",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "CUDA_CACHE_PATH",
    "CUDA_CACHE_DISABLE",
    "CUDA_MODULE_LOADING",
    "GPULAB_LOG",
    "RUST_LOG",
    "RUST_BACKTRACE",
];

/// How the server starts workers.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    /// The `gpulab` binary.
    pub exe: PathBuf,
    pub test_faults: bool,
    /// What workers are kept out of (the data directory, the token file), where Landlock
    /// allows.
    pub deny: Vec<PathBuf>,
}

/// The last bytes a worker wrote to one of its output streams.
#[derive(Debug, Default)]
struct OutputTail {
    kept: VecDeque<u8>,
    /// Bytes written before the kept ones, which are gone.
    dropped: u64,
}

impl OutputTail {
    fn push(&mut self, bytes: &[u8]) {
        let skip = bytes.len().saturating_sub(OUTPUT_TAIL_BYTES);
        let bytes = &bytes[skip..];
        let over = (self.kept.len() + bytes.len()).saturating_sub(OUTPUT_TAIL_BYTES);
        self.kept.drain(..over);
        self.dropped += (skip + over) as u64;
        self.kept.extend(bytes);
    }

    /// What was kept (as text) and how much was dropped since the last take.
    fn take(&mut self) -> (String, u64) {
        let kept: Vec<u8> = self.kept.drain(..).collect();
        let dropped = std::mem::take(&mut self.dropped);
        (String::from_utf8_lossy(&kept).into_owned(), dropped)
    }
}

/// Reads a worker's standard output, where the kernels' `printf` goes, to its end, keeping
/// only its tail (logged when its job ends).
async fn drain(mut stream: impl AsyncRead + Unpin, tail: Arc<Mutex<OutputTail>>) {
    let mut chunk = vec![0u8; 8192];
    while let Ok(n @ 1..) = stream.read(&mut chunk).await {
        tail.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(&chunk[..n]);
    }
}

/// Reads a worker's standard error, its own log, to its end and passes each line (cut at
/// [`MAX_LOG_LINE`]) on to the server's log.
async fn forward_log(mut stream: impl AsyncRead + Unpin, device: String) {
    let mut chunk = vec![0u8; 8192];
    let mut line = Vec::new();
    while let Ok(n @ 1..) = stream.read(&mut chunk).await {
        for piece in chunk[..n].split_inclusive(|&b| b == b'\n') {
            let room = MAX_LOG_LINE.saturating_sub(line.len());
            line.extend_from_slice(&piece[..piece.len().min(room)]);
            if piece.ends_with(b"\n") {
                let text = String::from_utf8_lossy(&line);
                tracing::info!(%device, "worker: {}", text.trim_end());
                line.clear();
            }
        }
    }
}

/// A running worker process.
struct WorkerProcess {
    child: Child,
    requests: OwnedWriteHalf,
    events: BufReader<OwnedReadHalf>,
    stdout: Arc<Mutex<OutputTail>>,
    /// Jobs sent to it: a custom job only runs in a worker that has run nothing before.
    jobs_run: u32,
}

impl WorkerProcess {
    /// Starts a worker with the channel as its fd 3, stdout read into a bounded tail and
    /// stderr into the log line by line, a cleared environment, no core dumps and `/` as its directory, and waits for
    /// it to be ready.
    async fn spawn(cmd: &WorkerCommand, device: &str) -> anyhow::Result<Self> {
        let started = Instant::now();
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .context("cannot create the channel to a worker")?;
        let mut command = Command::new(&cmd.exe);
        command
            .arg("worker")
            .arg("--device")
            .arg(device)
            .arg("--server-pid")
            .arg(std::process::id().to_string());
        if cmd.test_faults {
            command.arg("--enable-test-faults");
        }
        for path in &cmd.deny {
            command.arg("--deny-dir").arg(path);
        }
        command.env_clear();
        for name in WORKER_ENV {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        if cmd.test_faults {
            for var in [
                crate::worker::SLOW_START_VAR,
                crate::worker::MEMORY_TEST_BYTES_VAR,
            ] {
                if let Some(value) = std::env::var_os(var) {
                    command.env(var, value);
                }
            }
        }
        let theirs_fd = theirs.as_raw_fd();
        // SAFETY: the closure runs in the child between fork and exec, so it may only make
        // async-signal-safe calls: it makes dup2, fcntl and setrlimit, on integers it holds
        // by value, and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                if theirs_fd == CHANNEL_FD {
                    // dup2 onto itself would keep close-on-exec; clear it instead.
                    if libc::fcntl(CHANNEL_FD, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(theirs_fd, CHANNEL_FD) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                // A crashing worker must not write its memory (the jobs' data, the
                // kernels' sources) to a core file.
                let none = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::setrlimit(libc::RLIMIT_CORE, &none) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start the worker {}", cmd.exe.display()))?;
        drop(theirs);
        let stdout_tail = Arc::new(Mutex::new(OutputTail::default()));
        let stdout = child.stdout.take().context("worker has no stdout")?;
        tokio::spawn(drain(stdout, stdout_tail.clone()));
        let stderr = child.stderr.take().context("worker has no stderr")?;
        tokio::spawn(forward_log(stderr, device.to_owned()));
        ours.set_nonblocking(true)?;
        let (events, requests) = tokio::net::UnixStream::from_std(ours)?.into_split();
        let mut worker = WorkerProcess {
            child,
            requests,
            events: BufReader::new(events),
            stdout: stdout_tail,
            jobs_run: 0,
        };
        let problem = match tokio::time::timeout(READY_TIMEOUT, worker.next_event()).await {
            Ok(Ok(Some(Event::Ready { .. }))) => {
                tracing::debug!(
                    %device,
                    ready_ms = started.elapsed().as_secs_f64() * 1e3,
                    "worker ready"
                );
                return Ok(worker);
            }
            Ok(Ok(None)) => "it exited".to_owned(),
            Ok(Ok(Some(other))) => format!("it answered out of turn: {other:?}"),
            Ok(Err(e)) => format!("it broke the protocol: {e}"),
            Err(_) => format!("it was not ready in {READY_TIMEOUT:?}"),
        };
        let status = worker.kill().await;
        anyhow::bail!(
            "the worker for {device} did not start ({problem}; {})",
            describe_exit(status)
        )
    }

    async fn send(&mut self, request: &Request) -> std::io::Result<()> {
        self.requests.write_all(&protocol::encode(request)).await
    }

    /// The next event, or `None` when the worker closed the channel (it exited).
    async fn next_event(&mut self) -> Result<Option<Event>, FrameError> {
        protocol::read(&mut self.events).await
    }

    /// Logs, at debug level, what the worker printed to stdout since the last call.
    fn log_output(&self, device: &str, job: i64) {
        let (text, dropped) = self.stdout.lock().unwrap_or_else(|p| p.into_inner()).take();
        if !text.is_empty() {
            tracing::debug!(%device, job, dropped, "the worker printed: {text}");
        }
    }

    /// Kills the process (if it still runs) and reaps it.
    async fn kill(mut self) -> Option<ExitStatus> {
        let _ = self.child.start_kill();
        self.child.wait().await.ok()
    }
}

fn describe_exit(status: Option<ExitStatus>) -> String {
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}{}", signal_name(sig)),
            _ => "unknown exit".to_string(),
        },
        None => "exit status unknown".to_string(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        4 => " (SIGILL)",
        6 => " (SIGABRT)",
        7 => " (SIGBUS)",
        8 => " (SIGFPE)",
        9 => " (SIGKILL)",
        11 => " (SIGSEGV)",
        15 => " (SIGTERM)",
        _ => "",
    }
}

/// How a job on a worker ended, before it is written down.
struct Ended {
    status: JobStatus,
    result: Option<JobResult>,
    error: Option<String>,
    artifact: Option<Artifact>,
    /// The worker is dead or must be replaced.
    worker_lost: bool,
    /// The worker died before it said it had the job: the job never ran.
    undelivered: bool,
    /// Who asked to cancel, waiting for the end to be stored.
    cancelled_by: Option<CancelRequest>,
}

impl Ended {
    fn failed(error: String, worker_lost: bool) -> Self {
        Ended {
            status: JobStatus::Failed,
            result: None,
            error: Some(error),
            artifact: None,
            worker_lost,
            undelivered: false,
            cancelled_by: None,
        }
    }

    fn undelivered(error: String) -> Self {
        Ended {
            undelivered: true,
            ..Ended::failed(error, true)
        }
    }
}

/// Runs one device's jobs forever: the task the server starts for each device. Should the
/// runner panic, its job fails and a new runner takes over the queue. Each result is
/// judged against `peaks` before it is stored (`result.fraction_of_peak`, `roofline`).
#[allow(clippy::too_many_arguments)]
pub async fn run_device(
    device: String,
    queue: Arc<DeviceQueue>,
    store: JobStore,
    events: broadcast::Sender<Job>,
    diagnostics: DiagnosticLedger,
    cmd: WorkerCommand,
    start_eagerly: bool,
    peaks: crate::peaks::DevicePeaks,
) {
    loop {
        let runner = tokio::spawn(run_jobs(
            device.clone(),
            queue.clone(),
            store.clone(),
            events.clone(),
            diagnostics.clone(),
            cmd.clone(),
            start_eagerly,
            peaks.clone(),
        ));
        let panic = match runner.await {
            Err(e) if e.is_panic() => panic_message(e.into_panic().as_ref()),
            // Ended or cancelled: the runtime is shutting down.
            _ => return,
        };
        tracing::error!(%device, "the device's runner panicked ({panic}); starting another");
        // Its worker was dropped with it: kill_on_drop kills it and tokio reaps it.
        let running = queue.take_running();
        if let Some(WorkId::Diagnostic(id)) = running {
            let end = PartEnd {
                status: DiagnosticStatus::Failed,
                checks: None,
                error: Some(format!(
                    "the server's runner for {device} failed while running this diagnostic \
                     ({panic}); it was restarted"
                )),
            };
            diagnostics.end_part(id, &device, end).await;
        } else if let Some(WorkId::Job(id)) = running {
            let error = format!(
                "the server's runner for {device} failed while running this job ({panic}); \
                 it was restarted"
            );
            let stored = blocking(&store, move |s| {
                s.finish(
                    id,
                    Ending {
                        status: JobStatus::Failed,
                        result: None,
                        error: Some(&error),
                        artifact: None,
                    },
                )
            })
            .await;
            match stored {
                Ok(Some(job)) => {
                    let _ = events.send(job);
                }
                Ok(None) => {}
                Err(e) => tracing::error!(job = id, "cannot store the end of the job: {e:#}"),
            }
        }
        // A runner that panics at once must not spin.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the runner waited for while its worker was idle.
enum Idle {
    Job(Work, tokio::sync::oneshot::Receiver<CancelRequest>),
    WorkerExited(Option<ExitStatus>),
}

#[allow(clippy::too_many_arguments)]
async fn run_jobs(
    device: String,
    queue: Arc<DeviceQueue>,
    store: JobStore,
    events: broadcast::Sender<Job>,
    diagnostics: DiagnosticLedger,
    cmd: WorkerCommand,
    start_eagerly: bool,
    peaks: crate::peaks::DevicePeaks,
) {
    let mut worker = None;
    if start_eagerly {
        worker = spawn_logged(&cmd, &device).await;
    }
    let mut last_idle_exit: Option<Instant> = None;
    loop {
        let idle = match worker.as_mut() {
            Some(w) => tokio::select! {
                (job, cancel_rx) = queue.next() => Idle::Job(job, cancel_rx),
                status = w.child.wait() => Idle::WorkerExited(status.ok()),
            },
            None => {
                let (job, cancel_rx) = queue.next().await;
                Idle::Job(job, cancel_rx)
            }
        };
        let (job, cancel_rx) = match idle {
            Idle::Job(Work::Job(job), cancel_rx) => (job, cancel_rx),
            Idle::Job(Work::Diagnostic(part), cancel_rx) => {
                worker = run_part(
                    worker,
                    &device,
                    *part,
                    cancel_rx,
                    &queue,
                    &cmd,
                    &diagnostics,
                )
                .await;
                continue;
            }
            Idle::WorkerExited(status) => {
                // Reaped already by the wait. Replaced now, so that the next job does not
                // fail on a dead worker; but not over and over for one that keeps dying.
                worker = None;
                let again = last_idle_exit.is_some_and(|t| t.elapsed() < Duration::from_secs(5));
                last_idle_exit = Some(Instant::now());
                tracing::warn!(%device, "the idle worker exited ({})", describe_exit(status));
                if !again {
                    worker = spawn_logged(&cmd, &device).await;
                }
                continue;
            }
        };
        let id = job.id;
        match blocking(&store, move |s| s.mark_running(id, job.repetitions.max(1))).await {
            Ok(true) => publish(&store, &events, id).await,
            Ok(false) => {
                // Cancelled between the queue and here.
                queue.finish_running();
                continue;
            }
            Err(e) => tracing::error!(job = id, "cannot mark the job running: {e:#}"),
        }
        if cmd.test_faults
            && job.kernel == TEST_FAULT_KERNEL
            && job.params.get("mode").and_then(|m| m.as_str()) == Some("panic_runner")
        {
            panic!("test fault: the device's runner panics");
        }
        if let Some(w) = worker.as_mut() {
            if let Ok(Some(status)) = w.child.try_wait() {
                tracing::warn!(%device, "the idle worker exited ({})", describe_exit(Some(status)));
                worker = None;
            }
        }
        // A custom kernel is the user's code: it runs in a process of its own, whose CUDA
        // context, module cache and memory pool no earlier job has used and no later job
        // will.
        let custom = job.kernel == custom::KERNEL;
        if custom && worker.as_ref().is_some_and(|w| w.jobs_run > 0) {
            if let Some(w) = worker.take() {
                w.kill().await;
            }
        }
        let mut cancel_rx = cancel_rx;
        // A worker can take long to start (a CUDA context, up to READY_TIMEOUT): a cancel
        // meanwhile is answered at once, not after the start (a dropped start is killed).
        let mut cancelled_at_start = None;
        if worker.is_none() {
            tokio::select! {
                spawned = spawn_logged(&cmd, &device) => worker = spawned,
                request = &mut cancel_rx => {
                    cancelled_at_start = Some(Ended {
                        status: JobStatus::Cancelled,
                        result: None,
                        error: Some("cancelled while its worker was starting".into()),
                        artifact: None,
                        worker_lost: false,
                        undelivered: false,
                        cancelled_by: request.ok(),
                    });
                }
            }
        }
        let mut tries = 0;
        let ended = if let Some(ended) = cancelled_at_start {
            ended
        } else {
            loop {
                let ended = match worker.as_mut() {
                    None => Ended::failed(
                        format!("the worker process for {device} could not start"),
                        false,
                    ),
                    Some(w) => {
                        let ended = run_one(w, &job, &mut cancel_rx, &store, &events).await;
                        w.log_output(&device, id);
                        ended
                    }
                };
                tries += 1;
                if !ended.undelivered || tries == 2 {
                    break ended;
                }
                // The worker died before it had the job (killed while idle, just now): the job
                // goes to a new one.
                if let Some(w) = worker.take() {
                    let status = w.kill().await;
                    tracing::warn!(%device, job = id, "the worker died before the job reached it ({})", describe_exit(status));
                }
                worker = spawn_logged(&cmd, &device).await;
            }
        };
        let retire = ended.worker_lost || custom;
        if retire {
            if let Some(w) = worker.take() {
                let status = w.kill().await;
                if ended.worker_lost {
                    tracing::warn!(%device, job = id, "worker replaced ({})", describe_exit(status));
                }
            }
        }
        let Ended {
            status,
            result,
            error,
            artifact,
            cancelled_by,
            worker_lost: _,
            undelivered: _,
        } = ended;
        let mut result = result;
        if let Some(result) = result.as_mut() {
            crate::peaks::annotate(result, &job.kernel, &job.params, &peaks.now());
        }
        let stored = blocking(&store, move |s| {
            s.finish(
                id,
                Ending {
                    status,
                    result: result.as_ref(),
                    error: error.as_deref(),
                    artifact: artifact.as_ref(),
                },
            )
        })
        .await;
        queue.finish_running();
        match stored {
            Ok(Some(job)) => {
                let _ = events.send(job.clone());
                if let Some(reply) = cancelled_by {
                    let _ = reply.send(());
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(job = id, "cannot store the end of the job: {e:#}"),
        }
        if retire {
            // Start the replacement now, so that the next job finds a warm worker.
            worker = spawn_logged(&cmd, &device).await;
        }
    }
}

async fn spawn_logged(cmd: &WorkerCommand, device: &str) -> Option<WorkerProcess> {
    match WorkerProcess::spawn(cmd, device).await {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(%device, "cannot start a worker: {e:#}");
            None
        }
    }
}

/// Sends one job to the worker and waits for its end, its timeout or its cancellation.
async fn run_one(
    worker: &mut WorkerProcess,
    job: &QueuedJob,
    cancel_rx: &mut tokio::sync::oneshot::Receiver<CancelRequest>,
    store: &JobStore,
    events: &broadcast::Sender<Job>,
) -> Ended {
    let nonce: u64 = rand::random();
    let request = Request::Run {
        job_id: job.id,
        nonce,
        kernel: job.kernel.clone(),
        params: job.params.clone(),
        repetitions: job.repetitions,
    };
    worker.jobs_run += 1;
    if let Err(e) = worker.send(&request).await {
        return Ended::undelivered(format!(
            "the worker process died before the job reached it ({e})"
        ));
    }
    let mut started = false;
    let deadline = tokio::time::sleep(Duration::from_secs_f64(job.timeout_s));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            event = worker.next_event() => match event {
                Ok(Some(event)) if event.job() != Some((job.id, nonce)) => {
                    let error = match event.job() {
                        Some(_) => "the worker sent an event with a wrong job or nonce, so \
                                    nothing it says can be trusted; the job failed and the \
                                    worker was replaced".to_owned(),
                        None => format!("the worker answered out of turn ({event:?}); it was replaced"),
                    };
                    return Ended::failed(error, true);
                }
                Ok(Some(Event::Started { .. })) => started = true,
                Ok(Some(Event::Progress { job_id, done, total, .. })) => {
                    let progress = Progress { done, total };
                    match blocking(store, move |s| s.set_progress(job_id, progress)).await {
                        Ok(()) => publish(store, events, job_id).await,
                        Err(e) => tracing::warn!(job = job_id, "cannot store progress: {e:#}"),
                    }
                }
                Ok(Some(Event::Finished { result, artifact, .. })) => {
                    let artifact = match artifact.map(Artifact::try_from).transpose() {
                        Ok(a) => a,
                        Err(e) => return Ended::failed(format!("the worker sent a broken artifact: {e}"), true),
                    };
                    return finished(result, artifact);
                }
                Ok(Some(Event::Failed { error, fatal, .. })) => {
                    // A fault leaves the worker's CUDA context unusable: it exits, and the
                    // next job gets a fresh one.
                    let error = if fatal {
                        format!("{error}; the worker's CUDA context is lost after this, so the worker was replaced")
                    } else {
                        error
                    };
                    return Ended::failed(error, fatal);
                }
                Ok(Some(Event::Ready { .. })) => {
                    return Ended::failed("the worker said it was ready in the middle of a job; it was replaced".into(), true);
                }
                Ok(Some(_)) => unreachable!("events of no job are refused above"),
                Ok(None) => {
                    // The worker closed the channel: it exited in the middle of the job.
                    let status = tokio::time::timeout(Duration::from_secs(5), worker.child.wait()).await;
                    let how = describe_exit(status.ok().and_then(Result::ok));
                    if !started {
                        return Ended::undelivered(format!("the worker process died before the job reached it ({how})"));
                    }
                    return Ended::failed(format!("the worker process crashed while running this job ({how}); it was replaced"), true);
                }
                Err(e) => return Ended::failed(format!("the worker broke the protocol ({e}); the job failed and the worker was replaced"), true),
            },
            () = &mut deadline => {
                return Ended {
                    status: JobStatus::TimedOut,
                    result: None,
                    error: Some(format!("the job ran past its timeout of {} s; its worker was killed and replaced", job.timeout_s)),
                    artifact: None,
                    worker_lost: true,
                    undelivered: false,
                    cancelled_by: None,
                };
            }
            request = &mut *cancel_rx => {
                return Ended {
                    status: JobStatus::Cancelled,
                    result: None,
                    error: Some("cancelled while running; its worker was killed and replaced".into()),
                    artifact: None,
                    worker_lost: true,
                    undelivered: false,
                    cancelled_by: request.ok(),
                };
            }
        }
    }
}

/// Runs one device's part of a diagnostic in the device's worker (started when there is
/// none) and stores its end. Whatever happens, the worker is retired after it: the checks
/// took the device's memory and ran it at full load, and the next job gets a fresh one.
/// Returns the replacement.
async fn run_part(
    mut worker: Option<WorkerProcess>,
    device: &str,
    part: QueuedPart,
    mut cancel_rx: tokio::sync::oneshot::Receiver<CancelRequest>,
    queue: &DeviceQueue,
    cmd: &WorkerCommand,
    ledger: &DiagnosticLedger,
) -> Option<WorkerProcess> {
    let id = part.diag_id;
    if !ledger.start_part(id, device).await {
        // Cancelled between the queue and here.
        queue.finish_running();
        return worker;
    }
    if let Some(w) = worker.as_mut() {
        if let Ok(Some(status)) = w.child.try_wait() {
            tracing::warn!(%device, "the idle worker exited ({})", describe_exit(Some(status)));
            worker = None;
        }
    }
    let baseline = ledger.baseline(device).await;
    let mut tries = 0;
    let (end, cancelled_by) = loop {
        if worker.is_none() {
            tokio::select! {
                spawned = spawn_logged(cmd, device) => worker = spawned,
                request = &mut cancel_rx => {
                    let end = PartEnd {
                        status: DiagnosticStatus::Cancelled,
                        checks: None,
                        error: Some("cancelled while its worker was starting".into()),
                    };
                    break (end, request.ok());
                }
            }
        }
        let Some(w) = worker.as_mut() else {
            let end = PartEnd {
                status: DiagnosticStatus::Failed,
                checks: None,
                error: Some(format!("the worker process for {device} could not start")),
            };
            break (end, None);
        };
        let ended = diagnose_one(w, &part, baseline.clone(), &mut cancel_rx, ledger, device).await;
        w.log_output(device, id);
        tries += 1;
        if !ended.undelivered || tries == 2 {
            break (ended.end, ended.cancelled_by);
        }
        // The worker died before it had the part (killed while idle, just now): a new one
        // takes it.
        if let Some(w) = worker.take() {
            let status = w.kill().await;
            tracing::warn!(%device, diagnostic = id, "the worker died before the diagnostic reached it ({})", describe_exit(status));
        }
    };
    if let Some(w) = worker.take() {
        let status = w.kill().await;
        if end.status != DiagnosticStatus::Finished {
            tracing::warn!(%device, diagnostic = id, "worker replaced ({})", describe_exit(status));
        }
    }
    ledger.end_part(id, device, end).await;
    queue.finish_running();
    if let Some(reply) = cancelled_by {
        let _ = reply.send(());
    }
    spawn_logged(cmd, device).await
}

/// How a part on a worker ended, before it is written down.
struct PartEnded {
    end: PartEnd,
    /// The worker died before it said it had the part: the part never ran.
    undelivered: bool,
    cancelled_by: Option<CancelRequest>,
}

impl PartEnded {
    fn failed(error: String) -> Self {
        PartEnded {
            end: PartEnd {
                status: DiagnosticStatus::Failed,
                checks: None,
                error: Some(error),
            },
            undelivered: false,
            cancelled_by: None,
        }
    }
}

/// Sends one part to the worker and waits for its end, its time limit or its
/// cancellation, storing each check as the worker reports it.
async fn diagnose_one(
    worker: &mut WorkerProcess,
    part: &QueuedPart,
    baseline: Vec<protocol::PastFigures>,
    cancel_rx: &mut tokio::sync::oneshot::Receiver<CancelRequest>,
    ledger: &DiagnosticLedger,
    device: &str,
) -> PartEnded {
    let id = part.diag_id;
    let nonce: u64 = rand::random();
    let request = Request::Diagnose {
        diag_id: id,
        nonce,
        device: Box::new(part.device.clone()),
        level: part.level,
        duration_s: part.duration_s,
        faults: part.faults.clone(),
        baseline,
    };
    worker.jobs_run += 1;
    if let Err(e) = worker.send(&request).await {
        return PartEnded {
            undelivered: true,
            ..PartEnded::failed(format!(
                "the worker process died before the diagnostic reached it ({e})"
            ))
        };
    }
    let mut started = false;
    let deadline = tokio::time::sleep(Duration::from_secs_f64(part.timeout_s));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            event = worker.next_event() => match event {
                Ok(Some(event)) if event.diagnostic() != Some((id, nonce)) => {
                    return PartEnded::failed(match event.diagnostic() {
                        Some(_) => "the worker sent an event with a wrong diagnostic or nonce, so \
                                    nothing it says can be trusted; the part failed and the \
                                    worker was replaced".to_owned(),
                        None => format!("the worker answered out of turn ({event:?}); it was replaced"),
                    });
                }
                Ok(Some(Event::DiagnosticStarted { .. })) => started = true,
                Ok(Some(Event::DiagnosticCheck { check, .. })) => {
                    ledger.update_check(id, device, *check).await;
                }
                Ok(Some(Event::DiagnosticFinished { checks, .. })) => {
                    return PartEnded {
                        end: PartEnd {
                            status: DiagnosticStatus::Finished,
                            checks: Some(checks),
                            error: None,
                        },
                        undelivered: false,
                        cancelled_by: None,
                    };
                }
                Ok(Some(Event::DiagnosticFailed { error, .. })) => return PartEnded::failed(error),
                Ok(Some(_)) => unreachable!("events of no diagnostic are refused above"),
                Ok(None) => {
                    // The worker closed the channel: it exited in the middle of the part.
                    let status = tokio::time::timeout(Duration::from_secs(5), worker.child.wait()).await;
                    let how = describe_exit(status.ok().and_then(Result::ok));
                    if !started {
                        return PartEnded {
                            undelivered: true,
                            ..PartEnded::failed(format!("the worker process died before the diagnostic reached it ({how})"))
                        };
                    }
                    return PartEnded::failed(format!("the worker process crashed while running this diagnostic ({how}); it was replaced"));
                }
                Err(e) => return PartEnded::failed(format!("the worker broke the protocol ({e}); the part failed and the worker was replaced")),
            },
            () = &mut deadline => {
                return PartEnded::failed(format!(
                    "the diagnostic ran past its time limit of {} s for level {}; its worker \
                     was killed and replaced",
                    part.timeout_s, part.level
                ));
            }
            request = &mut *cancel_rx => {
                return PartEnded {
                    end: PartEnd {
                        status: DiagnosticStatus::Cancelled,
                        checks: None,
                        error: Some("cancelled while running; its worker was killed and replaced".into()),
                    },
                    undelivered: false,
                    cancelled_by: request.ok(),
                };
            }
        }
    }
}

/// How a job whose worker ran it to the end ended: its verification decides.
fn finished(result: JobResult, artifact: Option<Artifact>) -> Ended {
    let v = &result.verification;
    let (status, error) = if v.passed {
        (JobStatus::Succeeded, None)
    } else {
        (
            JobStatus::Failed,
            Some(format!(
                "verification failed: max relative error {:.3e} exceeds the tolerance {:.3e} ({})",
                v.max_rel_error, v.tolerance, v.method
            )),
        )
    };
    Ended {
        status,
        result: Some(result),
        error,
        artifact,
        worker_lost: false,
        undelivered: false,
        cancelled_by: None,
    }
}

/// Sends the job as stored now to the event stream, when anyone listens.
async fn publish(store: &JobStore, events: &broadcast::Sender<Job>, id: i64) {
    if events.receiver_count() == 0 {
        return;
    }
    match blocking(store, move |s| s.get(id)).await {
        Ok(Some(job)) => {
            let _ = events.send(job);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(job = id, "cannot read the job for its event: {e:#}"),
    }
}

/// Runs a store call on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    store: &JobStore,
    f: impl FnOnce(&JobStore) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .context("store task panicked")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hole2_worker_output_keeps_only_its_last_64_kib() {
        let mut tail = OutputTail::default();
        // 100 MiB without a newline, as a kernel's printf could write it.
        let chunk = vec![b'x'; 8192];
        for _ in 0..(100 << 20) / chunk.len() {
            tail.push(&chunk);
        }
        tail.push(b"end");
        assert_eq!(tail.kept.len(), OUTPUT_TAIL_BYTES);
        assert!(tail.kept.capacity() <= 2 * OUTPUT_TAIL_BYTES + chunk.len());
        let (text, dropped) = tail.take();
        assert!(text.ends_with("xend"), "the newest bytes are kept");
        assert_eq!(dropped, (100 << 20) + 3 - OUTPUT_TAIL_BYTES as u64);
        tail.push(&vec![b'y'; 3 * OUTPUT_TAIL_BYTES]);
        assert_eq!(tail.take().0.len(), OUTPUT_TAIL_BYTES, "one huge write too");
        assert_eq!(tail.take(), (String::new(), 0));
    }

    #[tokio::test]
    async fn hole2_stdout_is_drained_to_its_end_without_growing() {
        let (mut writer, reader) = tokio::io::duplex(64 * 1024);
        let tail = Arc::new(Mutex::new(OutputTail::default()));
        let draining = tokio::spawn(drain(reader, tail.clone()));
        let chunk = vec![b'z'; 1 << 20];
        for _ in 0..20 {
            writer.write_all(&chunk).await.unwrap();
        }
        drop(writer);
        draining.await.unwrap();
        let (text, dropped) = tail.lock().unwrap().take();
        assert_eq!(text.len(), OUTPUT_TAIL_BYTES);
        assert_eq!(dropped, (20 << 20) - OUTPUT_TAIL_BYTES as u64);
    }
}

//! Supervision of one device's worker process: starts it, feeds it the device's jobs one at
//! a time, and kills and replaces it when a job times out, is cancelled or crashes it.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gpulab_shared::{Job, JobResult, JobStatus, Progress};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::broadcast;

use super::queue::{DeviceQueue, QueuedJob};
use crate::kernels::Artifact;
use crate::store::{Ending, JobStore};
use crate::worker::protocol::{Event, Request};

/// How long a new worker may take to say it is ready (CUDA start-up can be slow).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How the server starts workers.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    /// The `gpulab` binary.
    pub exe: PathBuf,
    pub test_faults: bool,
}

/// A running worker process.
struct WorkerProcess {
    child: Child,
    stdin: ChildStdin,
    events: Lines<BufReader<ChildStdout>>,
}

impl WorkerProcess {
    async fn spawn(cmd: &WorkerCommand, device: &str) -> anyhow::Result<Self> {
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
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start the worker {}", cmd.exe.display()))?;
        let stdin = child.stdin.take().context("worker has no stdin")?;
        let stdout = child.stdout.take().context("worker has no stdout")?;
        let mut worker = WorkerProcess {
            child,
            stdin,
            events: BufReader::new(stdout).lines(),
        };
        match tokio::time::timeout(READY_TIMEOUT, worker.next_event()).await {
            Ok(Ok(Some(Event::Ready { .. }))) => Ok(worker),
            Ok(Ok(other)) => {
                let status = worker.kill().await;
                anyhow::bail!(
                    "the worker for {device} did not start ({}): {other:?}",
                    describe_exit(status)
                )
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                worker.kill().await;
                anyhow::bail!("the worker for {device} did not get ready in {READY_TIMEOUT:?}")
            }
        }
    }

    async fn send(&mut self, request: &Request) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// The next event, or `None` when the worker closed its stdout (it exited).
    async fn next_event(&mut self) -> anyhow::Result<Option<Event>> {
        match self.events.next_line().await? {
            Some(line) => Ok(Some(serde_json::from_str(&line).with_context(|| {
                format!("the worker said something unreadable: {line}")
            })?)),
            None => Ok(None),
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
    /// Who asked to cancel, waiting for the final job.
    cancelled_by: Option<super::queue::CancelRequest>,
}

impl Ended {
    fn failed(error: String, worker_lost: bool) -> Self {
        Ended {
            status: JobStatus::Failed,
            result: None,
            error: Some(error),
            artifact: None,
            worker_lost,
            cancelled_by: None,
        }
    }
}

/// Runs one device's jobs forever: the task the server starts for each device.
pub async fn run_device(
    device: String,
    queue: Arc<DeviceQueue>,
    store: JobStore,
    events: broadcast::Sender<Job>,
    cmd: WorkerCommand,
    start_eagerly: bool,
) {
    let mut worker = None;
    if start_eagerly {
        worker = spawn_logged(&cmd, &device).await;
    }
    loop {
        let (job, cancel_rx) = queue.next().await;
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
        if worker.is_none() {
            worker = spawn_logged(&cmd, &device).await;
        }
        let ended = match worker.as_mut() {
            None => Ended::failed(
                format!("the worker process for {device} could not start"),
                false,
            ),
            Some(w) => run_one(w, &job, cancel_rx, &store, &events).await,
        };
        if ended.worker_lost {
            if let Some(w) = worker.take() {
                let status = w.kill().await;
                tracing::warn!(%device, job = id, "worker replaced ({})", describe_exit(status));
            }
        }
        let Ended {
            status,
            result,
            error,
            artifact,
            cancelled_by,
            worker_lost,
        } = ended;
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
                    let _ = reply.send(job);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(job = id, "cannot store the end of the job: {e:#}"),
        }
        if worker_lost {
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
    mut cancel_rx: tokio::sync::oneshot::Receiver<super::queue::CancelRequest>,
    store: &JobStore,
    events: &broadcast::Sender<Job>,
) -> Ended {
    let request = Request::Run {
        job_id: job.id,
        kernel: job.kernel.clone(),
        params: job.params.clone(),
        repetitions: job.repetitions,
    };
    if let Err(e) = worker.send(&request).await {
        return Ended::failed(
            format!("the worker process crashed before the job: {e}"),
            true,
        );
    }
    let deadline = tokio::time::sleep(Duration::from_secs_f64(job.timeout_s));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            event = worker.next_event() => match event {
                Ok(Some(Event::Progress { job_id, done, total })) if job_id == job.id => {
                    let progress = Progress { done, total };
                    match blocking(store, move |s| s.set_progress(job_id, progress)).await {
                        Ok(()) => publish(store, events, job_id).await,
                        Err(e) => tracing::warn!(job = job_id, "cannot store progress: {e:#}"),
                    }
                }
                Ok(Some(Event::Finished { job_id, result, artifact })) if job_id == job.id => {
                    let artifact = match artifact.map(Artifact::try_from).transpose() {
                        Ok(a) => a,
                        Err(e) => return Ended::failed(format!("the worker sent a broken artifact: {e}"), true),
                    };
                    let v = &result.verification;
                    let (status, error) = if v.passed {
                        (JobStatus::Succeeded, None)
                    } else {
                        (JobStatus::Failed, Some(format!(
                            "verification failed: max relative error {:.3e} exceeds the tolerance {:.3e} ({})",
                            v.max_rel_error, v.tolerance, v.method
                        )))
                    };
                    return Ended { status, result: Some(result), error, artifact, worker_lost: false, cancelled_by: None };
                }
                Ok(Some(Event::Failed { job_id, error, fatal })) if job_id == job.id => {
                    // A fault leaves the worker's CUDA context unusable: it exits, and the
                    // next job gets a fresh one.
                    let error = if fatal {
                        format!("{error}; the worker's CUDA context is lost after this, so the worker was replaced")
                    } else {
                        error
                    };
                    return Ended::failed(error, fatal);
                }
                Ok(Some(other)) => {
                    return Ended::failed(format!("the worker answered out of turn: {other:?}"), true);
                }
                Ok(None) => {
                    // The worker closed stdout: it exited in the middle of the job.
                    let status = tokio::time::timeout(Duration::from_secs(5), worker.child.wait()).await;
                    let how = describe_exit(status.ok().and_then(Result::ok));
                    return Ended::failed(format!("the worker process crashed while running this job ({how}); it was replaced"), true);
                }
                Err(e) => return Ended::failed(format!("lost contact with the worker: {e:#}"), true),
            },
            () = &mut deadline => {
                return Ended {
                    status: JobStatus::TimedOut,
                    result: None,
                    error: Some(format!("the job ran past its timeout of {} s; its worker was killed and replaced", job.timeout_s)),
                    artifact: None,
                    worker_lost: true,
                    cancelled_by: None,
                };
            }
            request = &mut cancel_rx => {
                return Ended {
                    status: JobStatus::Cancelled,
                    result: None,
                    error: Some("cancelled while running; its worker was killed and replaced".into()),
                    artifact: None,
                    worker_lost: true,
                    cancelled_by: request.ok(),
                };
            }
        }
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

//! Jobs: checked requests become queued jobs, one FIFO queue per device, each drained by a
//! runner that feeds a supervised worker process. Different devices run at the same time.

mod queue;
mod request;
mod supervisor;

use std::collections::BTreeMap;
use std::sync::Arc;

use gpulab_shared::{Job, JobPage, JobRequest, KernelSpec};
use tokio::sync::broadcast;

use crate::devices::DeviceInventory;
use crate::kernels::Artifact;
use crate::store::{Ending, JobFilter, JobStore};
use queue::{Cancel, DeviceQueue, QueuedJob};
pub use request::{RequestError, TEST_FAULT_SPEC};
use supervisor::blocking;
pub use supervisor::WorkerCommand;

/// Limits of the job service, from the command line.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub worker: WorkerCommand,
    /// Jobs waiting per device before a submission gets 429.
    pub queue_capacity: usize,
    pub default_timeout_s: f64,
    /// The largest `timeout_s` a job may ask for.
    pub max_timeout_s: f64,
}

/// Why a submission was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("the queue of {device} is full ({capacity} jobs waiting); try again later")]
    QueueFull { device: String, capacity: usize },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// What happened to a job that was asked to stop.
#[derive(Debug)]
pub enum CancelOutcome {
    Cancelled(Job),
    /// It had already ended: nothing to cancel.
    AlreadyFinished(Job),
    NotFound,
}

/// The job service: the queues, their runners and the history. Cheap to clone.
#[derive(Clone)]
pub struct JobService {
    inner: Arc<Inner>,
}

struct Inner {
    store: JobStore,
    /// Every change of a job, for the event stream.
    events: broadcast::Sender<Job>,
    inventory: Arc<DeviceInventory>,
    queues: BTreeMap<String, Arc<DeviceQueue>>,
    settings: JobSettings,
}

impl JobService {
    /// Marks the jobs a previous server left unfinished as `interrupted`, then starts one
    /// runner per device (the CPU's worker at once; a GPU's on its first job).
    pub async fn start(
        store: JobStore,
        inventory: Arc<DeviceInventory>,
        settings: JobSettings,
    ) -> anyhow::Result<Self> {
        let interrupted = blocking(&store, |s| s.interrupt_unfinished()).await?;
        if interrupted > 0 {
            tracing::warn!(
                "{interrupted} job(s) left unfinished by the last server are now interrupted"
            );
        }
        let (events, _) = broadcast::channel(1024);
        let mut queues = BTreeMap::new();
        for device in &inventory.devices {
            let queue = Arc::new(DeviceQueue::new(settings.queue_capacity));
            queues.insert(device.id.clone(), queue.clone());
            tokio::spawn(supervisor::run_device(
                device.id.clone(),
                queue,
                store.clone(),
                events.clone(),
                settings.worker.clone(),
                device.kind == gpulab_shared::DeviceKind::Cpu,
            ));
        }
        Ok(JobService {
            inner: Arc::new(Inner {
                store,
                events,
                inventory,
                queues,
                settings,
            }),
        })
    }

    /// The public catalog.
    pub fn catalog(&self) -> Vec<KernelSpec> {
        request::catalog_specs(false)
    }

    /// The job history, for readers such as the metrics (call it through `spawn_blocking`).
    pub fn store(&self) -> &JobStore {
        &self.inner.store
    }

    /// Every change of a job from now on: queued, started, progressed, ended.
    pub fn subscribe(&self) -> broadcast::Receiver<Job> {
        self.inner.events.subscribe()
    }

    /// Checks a request and queues it.
    pub async fn submit(&self, req: JobRequest) -> Result<Job, SubmitError> {
        let inner = &self.inner;
        let new = request::check(&req, &inner.inventory, &inner.settings)?;
        let queue = inner
            .queues
            .get(&new.device)
            .ok_or_else(|| RequestError::unknown_device(&new.device, &inner.inventory))?;
        if !queue.reserve() {
            return Err(SubmitError::QueueFull {
                device: new.device,
                capacity: inner.settings.queue_capacity,
            });
        }
        let job = match blocking(&inner.store, move |s| s.insert(new)).await {
            Ok(job) => job,
            Err(e) => {
                queue.unreserve();
                return Err(e.into());
            }
        };
        queue.push_reserved(QueuedJob {
            id: job.id,
            kernel: job.kernel.clone(),
            params: job.params.clone(),
            repetitions: job.repetitions,
            timeout_s: job.timeout_s,
        });
        let _ = inner.events.send(job.clone());
        Ok(job)
    }

    pub async fn get(&self, id: i64) -> anyhow::Result<Option<Job>> {
        blocking(&self.inner.store, move |s| s.get(id)).await
    }

    pub async fn list(&self, filter: JobFilter) -> anyhow::Result<JobPage> {
        blocking(&self.inner.store, move |s| s.list(&filter)).await
    }

    pub async fn artifact(&self, id: i64) -> anyhow::Result<Option<Artifact>> {
        blocking(&self.inner.store, move |s| s.artifact(id)).await
    }

    /// Cancels a queued job, or stops a running one by killing its worker.
    pub async fn cancel(&self, id: i64) -> anyhow::Result<CancelOutcome> {
        let Some(job) = self.get(id).await? else {
            return Ok(CancelOutcome::NotFound);
        };
        if job.status.is_finished() {
            return Ok(CancelOutcome::AlreadyFinished(job));
        }
        let Some(queue) = self.inner.queues.get(&job.device) else {
            anyhow::bail!("job {id} is on {}, which has no queue", job.device);
        };
        match queue.cancel(id) {
            Cancel::Dequeued => {
                let ending = || Ending {
                    status: gpulab_shared::JobStatus::Cancelled,
                    result: None,
                    error: Some("cancelled before it started"),
                    artifact: None,
                };
                match blocking(&self.inner.store, move |s| s.finish(id, ending())).await? {
                    Some(job) => {
                        let _ = self.inner.events.send(job.clone());
                        Ok(CancelOutcome::Cancelled(job))
                    }
                    None => self.finished_meanwhile(id).await,
                }
            }
            Cancel::Running(line) => {
                let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
                if line.send(reply_tx).is_ok() {
                    if let Ok(job) = reply_rx.await {
                        return Ok(CancelOutcome::Cancelled(job));
                    }
                }
                self.finished_meanwhile(id).await
            }
            Cancel::NotHere => self.finished_meanwhile(id).await,
        }
    }

    /// The job ended on its own while it was being cancelled.
    async fn finished_meanwhile(&self, id: i64) -> anyhow::Result<CancelOutcome> {
        // The runner stores the end before it leaves the queue; wait for it briefly.
        for _ in 0..100 {
            match self.get(id).await? {
                Some(job) if job.status.is_finished() => {
                    return Ok(CancelOutcome::AlreadyFinished(job))
                }
                Some(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                None => return Ok(CancelOutcome::NotFound),
            }
        }
        anyhow::bail!("job {id} neither ended nor could be cancelled")
    }
}

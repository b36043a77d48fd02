//! Jobs: checked requests become queued jobs, one queue per device (owners take turns,
//! see [`queue`]), each drained by a runner that feeds a supervised worker process.
//! Different devices run at the same time. In lab mode a user's submissions are held to
//! [`UserLimits`] and to their quota ([`crate::lab::quota`]).

pub mod compare;
mod diagnostics;
mod queue;
mod request;
mod supervisor;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use gpulab_shared::lab::{Quota, UsageReport};

use gpulab_shared::{Job, JobPage, JobRequest, KernelSpec};
use tokio::sync::broadcast;

use crate::devices::DeviceInventory;
use crate::kernels::Artifact;
use crate::lab::quota::{self, QuotaExceeded};
use crate::lab::Caller;
use crate::store::stats::JobStats;
use crate::store::usage::UsageScope;
use crate::store::{Ending, JobFilter, JobStore, NewJob};
pub use diagnostics::DiagnosticCancel;
use diagnostics::DiagnosticLedger;
use queue::{Cancel, DeviceQueue, Holding, QueuedJob, RunningLimit, Work, WorkId};
pub use request::RequestError;
use supervisor::blocking;
pub use supervisor::WorkerCommand;

/// The shortest timeout a job may have: a worker starts in about that time, and a shorter
/// one would only kill and restart workers.
pub const MIN_TIMEOUT_S: f64 = 1.0;
/// The longest timeout the server may allow (`--max-timeout-s`): one day.
pub const MAX_TIMEOUT_LIMIT_S: f64 = 86_400.0;
/// The most jobs a device's queue may hold (`--queue-capacity`).
pub const MAX_QUEUE_CAPACITY: usize = 100_000;
/// How often the retention deletes what is past it, besides after each write that takes the
/// history over its size.
pub const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Limits of the job service, from the command line.
#[derive(Debug, Clone)]
pub struct JobSettings {
    pub worker: WorkerCommand,
    /// Jobs waiting per device before a submission gets 429.
    pub queue_capacity: usize,
    pub default_timeout_s: f64,
    /// The largest `timeout_s` a job may ask for.
    pub max_timeout_s: f64,
    /// How long any diagnostic part may run, instead of its level's limit. Tests only.
    pub diagnostic_timeout_s: Option<f64>,
    /// What one user of lab mode may hold (admins are exempt).
    pub user_limits: UserLimits,
}

/// The limits on one user of lab mode (not on admins, nor on single mode's anonymous user).
#[derive(Debug, Clone, PartialEq)]
pub struct UserLimits {
    /// Jobs waiting over all devices (`--user-max-queued`).
    pub max_queued: usize,
    /// Jobs running at once over all devices (`--user-max-running`); `None`: as many as
    /// there are devices, that is no cap beyond one per device.
    pub max_running: Option<usize>,
    /// The largest `timeout_s` (`--user-max-timeout-s`); `None`: `--max-timeout-s`. A job
    /// that names no timeout gets the default, cut to this.
    pub max_timeout_s: Option<f64>,
}

impl Default for UserLimits {
    fn default() -> Self {
        UserLimits {
            max_queued: 100,
            max_running: None,
            max_timeout_s: None,
        }
    }
}

/// Why a submission was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("the queue of {device} is full ({capacity} jobs waiting); try again later")]
    QueueFull { device: String, capacity: usize },
    /// A per-user limit (`--user-max-queued`).
    #[error("{0}")]
    UserLimit(String),
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    #[error(
        "the disk is full: the job history cannot take another job; free space in the data \
         directory or lower --retention-max-mb / --retention-days"
    )]
    DiskFull,
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
    /// Where the runners write what diagnostics do.
    diagnostics: DiagnosticLedger,
    /// The free memory of a device now, where something measures it (the telemetry).
    free_memory: std::sync::OnceLock<FreeMemory>,
    /// Lab users' submissions one at a time, so that two cannot both pass a limit that
    /// has room for one.
    admission: tokio::sync::Mutex<()>,
    /// Added to the clock the quotas read (`POST /api/test/clock`, with test faults only).
    clock_offset_ms: AtomicI64,
}

/// Reads a device's free memory in bytes now, or `None` where it is not known.
pub type FreeMemory = Box<dyn Fn(&str) -> Option<u64> + Send + Sync>;

impl JobSettings {
    /// Checks the limits the command line gave, with what is wrong in words.
    pub fn validate(&self) -> anyhow::Result<()> {
        let (min, limit) = (MIN_TIMEOUT_S, MAX_TIMEOUT_LIMIT_S);
        anyhow::ensure!(
            (1..=MAX_QUEUE_CAPACITY).contains(&self.queue_capacity),
            "--queue-capacity must be from 1 to {MAX_QUEUE_CAPACITY}, got {}",
            self.queue_capacity
        );
        anyhow::ensure!(
            self.max_timeout_s.is_finite() && (min..=limit).contains(&self.max_timeout_s),
            "--max-timeout-s must be a number of seconds from {min} to {limit}, got {}",
            self.max_timeout_s
        );
        let user = &self.user_limits;
        anyhow::ensure!(
            (1..=MAX_QUEUE_CAPACITY).contains(&user.max_queued),
            "--user-max-queued must be from 1 to {MAX_QUEUE_CAPACITY}, got {}",
            user.max_queued
        );
        anyhow::ensure!(
            user.max_running != Some(0),
            "--user-max-running must be 1 or more"
        );
        if let Some(t) = user.max_timeout_s {
            anyhow::ensure!(
                t.is_finite() && (min..=self.max_timeout_s).contains(&t),
                "--user-max-timeout-s must be a number of seconds from {min} to --max-timeout-s \
                 ({}), got {t}",
                self.max_timeout_s
            );
        }
        anyhow::ensure!(
            self.default_timeout_s.is_finite()
                && (min..=self.max_timeout_s).contains(&self.default_timeout_s),
            "--default-timeout-s must be a number of seconds from {min} to --max-timeout-s ({}), got {}",
            self.max_timeout_s,
            self.default_timeout_s
        );
        Ok(())
    }
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
        let interrupted = blocking(&store, |s| s.interrupt_unfinished_diagnostics()).await?;
        if interrupted > 0 {
            tracing::warn!(
                "{interrupted} diagnostic(s) left unfinished by the last server are now \
                 interrupted"
            );
        }
        let diagnostics = DiagnosticLedger::new(store.clone());
        tokio::spawn(prune_forever(store.clone()));
        let (events, _) = broadcast::channel(1024);
        let mut queues = BTreeMap::new();
        let max_running = (settings.user_limits.max_running).unwrap_or(inventory.devices.len());
        let limit = Arc::new(RunningLimit::new(max_running));
        for device in &inventory.devices {
            let queue = Arc::new(DeviceQueue::with_limit(
                settings.queue_capacity,
                limit.clone(),
            ));
            queues.insert(device.id.clone(), queue.clone());
            tokio::spawn(supervisor::run_device(
                device.id.clone(),
                queue,
                store.clone(),
                events.clone(),
                diagnostics.clone(),
                settings.worker.clone(),
                device.kind == gpulab_shared::DeviceKind::Cpu,
                crate::peaks::DevicePeaks::of(device),
            ));
        }
        Ok(JobService {
            inner: Arc::new(Inner {
                store,
                events,
                inventory,
                queues,
                settings,
                diagnostics,
                free_memory: std::sync::OnceLock::new(),
                admission: tokio::sync::Mutex::new(()),
                clock_offset_ms: AtomicI64::new(0),
            }),
        })
    }

    /// Sizes are checked against what `free` reads from now on, rather than against the
    /// free memory the inventory saw at start. Only the first call counts.
    pub fn watch_free_memory(&self, free: FreeMemory) {
        let _ = self.inner.free_memory.set(free);
    }

    fn free_memory_of(&self, device: &str) -> Option<u64> {
        self.inner.free_memory.get().and_then(|free| free(device))
    }

    /// The public catalog.
    pub fn catalog(&self) -> Vec<KernelSpec> {
        request::catalog_specs(&self.inner.inventory.devices, false)
    }

    /// The aggregates of the job history, for the metrics.
    pub async fn stats(&self, bucket_bounds_s: &'static [f64]) -> anyhow::Result<JobStats> {
        blocking(&self.inner.store, move |s| s.job_stats(bucket_bounds_s)).await
    }

    /// Every change of a job from now on: queued, started, progressed, ended.
    pub fn subscribe(&self) -> broadcast::Receiver<Job> {
        self.inner.events.subscribe()
    }

    /// Checks a request and queues it.
    ///
    /// The work runs in a task of its own: the API handler's future is dropped when its
    /// client goes away, and a drop between taking a place in the queue and pushing the
    /// stored job would leave the job `queued` and the place taken for good.
    pub async fn submit(&self, req: JobRequest, caller: &Caller) -> Result<Job, SubmitError> {
        let this = self.clone();
        let caller = caller.clone();
        tokio::spawn(async move { this.submit_whole(req, caller).await })
            .await
            .map_err(|e| SubmitError::Internal(anyhow::anyhow!("the submission failed: {e}")))?
    }

    async fn submit_whole(&self, req: JobRequest, caller: Caller) -> Result<Job, SubmitError> {
        let inner = &self.inner;
        let free = self.free_memory_of(&req.device);
        let mut new = request::check(&req, &inner.inventory, &inner.settings, free)?;
        new.owner = caller.owner();
        let _admitted = match limited(&caller) {
            Some(user) => {
                let admitted = inner.admission.lock().await;
                self.admit(user, &req, std::slice::from_mut(&mut new))
                    .await?;
                Some(admitted)
            }
            None => None,
        };
        let queue = self.reserve(&new.device)?;
        self.insert_reserved(queue, new, &caller).await
    }

    /// Holds a lab user's jobs about to be queued to the user's limits and quota: cuts the
    /// default timeout to the user's largest, refuses a larger one (422), more queued jobs
    /// than `--user-max-queued` (429) and what would pass the quota (429).
    async fn admit(
        &self,
        user: &str,
        req: &JobRequest,
        news: &mut [NewJob],
    ) -> Result<(), SubmitError> {
        let settings = &self.inner.settings;
        let max_timeout_s = settings
            .user_limits
            .max_timeout_s
            .unwrap_or(settings.max_timeout_s);
        for new in news.iter_mut() {
            if new.timeout_s > max_timeout_s {
                if req.timeout_s.is_some() {
                    return Err(RequestError::Invalid {
                        field: "timeout_s".into(),
                        detail: format!(
                            "`timeout_s` is {} s, and a user's jobs may ask for at most {} s \
                             (--user-max-timeout-s)",
                            new.timeout_s, max_timeout_s
                        ),
                    }
                    .into());
                }
                new.timeout_s = max_timeout_s;
            }
        }
        let held = self.holding(Some(user));
        let max_queued = settings.user_limits.max_queued;
        if held.waiting + news.len() > max_queued {
            return Err(SubmitError::UserLimit(format!(
                "you have {} job(s) queued, and a user may have at most {max_queued} queued over \
                 all devices (--user-max-queued); wait for some to start, or cancel some",
                held.waiting
            )));
        }
        let name = user.to_owned();
        let quota = blocking(&self.inner.store, move |s| s.quota_of(&name)).await?;
        if let Some(quota) = quota.and_then(|user| user.quota) {
            let now = self.now();
            let (used, _) = self.used_in_period(user, &quota, now).await?;
            let asked: f64 = news.iter().map(|n| n.timeout_s).sum();
            quota::check(&quota, used, held.timeout_s, asked, now)?;
        }
        Ok(())
    }

    /// What `owner` has waiting and running over every device.
    fn holding(&self, owner: Option<&str>) -> Holding {
        self.inner
            .queues
            .values()
            .map(|q| q.holding(owner))
            .fold(Holding::default(), |a, b| Holding {
                waiting: a.waiting + b.waiting,
                running: a.running + b.running,
                timeout_s: a.timeout_s + b.timeout_s,
            })
    }

    /// The clock the quotas read: now, moved by the tests' offset.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now()
            + chrono::Duration::milliseconds(self.inner.clock_offset_ms.load(Ordering::Relaxed))
    }

    /// Moves the quotas' clock `offset_ms` from the real one. Tests only (the route that
    /// calls it exists with `--enable-test-faults` alone).
    pub fn set_clock_offset(&self, offset_ms: i64) {
        self.inner
            .clock_offset_ms
            .store(offset_ms, Ordering::Relaxed);
    }

    /// Whether the server runs with test faults (`--enable-test-faults`).
    pub fn test_faults(&self) -> bool {
        self.inner.settings.worker.test_faults
    }

    /// Device seconds `user` used in the quota period that holds `now`, and when it began.
    async fn used_in_period(
        &self,
        user: &str,
        quota: &Quota,
        now: DateTime<Utc>,
    ) -> anyhow::Result<(f64, DateTime<Utc>)> {
        let since = quota::period_start(quota.period, now);
        let user = user.to_owned();
        let used = blocking(&self.inner.store, move |s| {
            s.used_seconds_since(Some(&user), since)
        })
        .await?;
        Ok((used, since))
    }

    /// The metered device time of `scope` from `from` to `to` (UTC days, both included).
    pub async fn usage(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        scope: UsageScope,
    ) -> anyhow::Result<UsageReport> {
        blocking(&self.inner.store, move |s| s.usage(from, to, &scope)).await
    }

    /// `device: "all"`: checks the request for every CUDA device and queues it on each, or
    /// on none when any check fails or any queue is full. In a task of its own, as
    /// [`JobService::submit`].
    pub async fn submit_all(
        &self,
        req: JobRequest,
        caller: &Caller,
    ) -> Result<Vec<Job>, SubmitError> {
        let this = self.clone();
        let caller = caller.clone();
        tokio::spawn(async move { this.submit_all_whole(req, caller).await })
            .await
            .map_err(|e| SubmitError::Internal(anyhow::anyhow!("the submission failed: {e}")))?
    }

    async fn submit_all_whole(
        &self,
        req: JobRequest,
        caller: Caller,
    ) -> Result<Vec<Job>, SubmitError> {
        let owner = caller.owner();
        let inner = &self.inner;
        let gpus: Vec<&str> = inner
            .inventory
            .devices
            .iter()
            .filter(|d| d.kind == gpulab_shared::DeviceKind::Cuda)
            .map(|d| d.id.as_str())
            .collect();
        if gpus.is_empty() {
            return Err(RequestError::Invalid {
                field: "device".into(),
                detail: format!(
                    "`all` runs the job on every CUDA device, and this host has none: {}",
                    inner
                        .inventory
                        .cuda
                        .reason
                        .as_deref()
                        .unwrap_or("no GPU was found")
                ),
            }
            .into());
        }
        let news = gpus
            .iter()
            .map(|id| {
                let one = JobRequest {
                    device: (*id).to_owned(),
                    ..req.clone()
                };
                let free = self.free_memory_of(id);
                let mut new = request::check(&one, &inner.inventory, &inner.settings, free)?;
                new.owner = owner.clone();
                Ok::<_, RequestError>(new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut news = news;
        let _admitted = match limited(&caller) {
            Some(user) => {
                let admitted = inner.admission.lock().await;
                self.admit(user, &req, &mut news).await?;
                Some(admitted)
            }
            None => None,
        };
        let mut queues = Vec::with_capacity(news.len());
        for new in &news {
            match self.reserve(&new.device) {
                Ok(queue) => queues.push(queue),
                Err(e) => {
                    queues.iter().for_each(|q| q.unreserve());
                    return Err(e);
                }
            }
        }
        let mut jobs = Vec::with_capacity(news.len());
        let mut pairs = queues.into_iter().zip(news);
        while let Some((queue, new)) = pairs.next() {
            match self.insert_reserved(queue, new, &caller).await {
                Ok(job) => jobs.push(job),
                Err(e) => {
                    pairs.for_each(|(q, _)| q.unreserve());
                    return Err(e);
                }
            }
        }
        Ok(jobs)
    }

    /// A place in `device`'s queue, or why there is none.
    fn reserve(&self, device: &str) -> Result<Arc<DeviceQueue>, SubmitError> {
        let inner = &self.inner;
        let queue = inner
            .queues
            .get(device)
            .ok_or_else(|| RequestError::unknown_device(device, &inner.inventory))?;
        if !queue.reserve() {
            return Err(SubmitError::QueueFull {
                device: device.to_owned(),
                capacity: inner.settings.queue_capacity,
            });
        }
        Ok(queue.clone())
    }

    /// Stores a checked job and queues it in the place reserved for it.
    async fn insert_reserved(
        &self,
        queue: Arc<DeviceQueue>,
        new: NewJob,
        caller: &Caller,
    ) -> Result<Job, SubmitError> {
        let inner = &self.inner;
        let job = match blocking(&inner.store, move |s| s.insert(new)).await {
            Ok(job) => job,
            Err(e) => {
                queue.unreserve();
                if crate::store::is_disk_full(&e) {
                    tracing::error!("a job was refused: {e:#}");
                    return Err(SubmitError::DiskFull);
                }
                return Err(e.into());
            }
        };
        let work = Work::Job(QueuedJob {
            id: job.id,
            kernel: job.kernel.clone(),
            params: job.params.clone(),
            repetitions: job.repetitions,
            timeout_s: job.timeout_s,
            owner: job.owner.clone(),
        });
        if caller.is_admin() {
            queue.push_reserved_exempt(work);
        } else {
            queue.push_reserved(work);
        }
        let _ = inner.events.send(job.clone());
        Ok(job)
    }

    /// At shutdown: every job and diagnostic still queued or running ends `interrupted`
    /// (their workers die with the server). Returns how many jobs there were.
    pub async fn interrupt_unfinished(&self) -> anyhow::Result<usize> {
        let diagnostics =
            blocking(&self.inner.store, |s| s.interrupt_unfinished_diagnostics()).await?;
        if diagnostics > 0 {
            tracing::warn!("{diagnostics} diagnostic(s) ended `interrupted` by the stop");
        }
        blocking(&self.inner.store, |s| s.interrupt_unfinished()).await
    }

    pub async fn get(&self, id: i64) -> anyhow::Result<Option<Job>> {
        blocking(&self.inner.store, move |s| s.get(id)).await
    }

    pub async fn list(&self, filter: JobFilter) -> anyhow::Result<JobPage> {
        blocking(&self.inner.store, move |s| s.list(&filter)).await
    }

    /// The newest `limit` succeeded jobs of `device` that have a roofline point.
    pub async fn roofline_jobs(&self, device: String, limit: u32) -> anyhow::Result<Vec<Job>> {
        blocking(&self.inner.store, move |s| s.roofline_jobs(&device, limit)).await
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
        match queue.cancel(WorkId::Job(id)) {
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
                if line.send(reply_tx).is_ok() && reply_rx.await.is_ok() {
                    match self.get(id).await? {
                        Some(job) if job.status == gpulab_shared::JobStatus::Cancelled => {
                            return Ok(CancelOutcome::Cancelled(job))
                        }
                        _ => {}
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

/// The user whose submissions the per-user limits and quotas hold: a lab user who is not
/// an admin.
fn limited(caller: &Caller) -> Option<&str> {
    caller.user.as_deref().filter(|_| !caller.is_admin())
}

/// Applies the retention now and then every [`PRUNE_EVERY`], for as long as the server runs.
async fn prune_forever(store: JobStore) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match blocking(&store, |s| s.prune()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("the retention deleted {n} old job(s)"),
            Err(e) => tracing::warn!("cannot apply the retention to the job history: {e:#}"),
        }
    }
}

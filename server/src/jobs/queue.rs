//! The FIFO queue of one device: jobs and diagnostic parts waiting, and the one running
//! with its cancel line. A diagnostic's part holds the device like a job: what is queued
//! after it waits for it, and it waits for what runs before it.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use gpulab_shared::diag::Fault;
use gpulab_shared::{Device, Params};
use tokio::sync::{oneshot, Notify};

/// A job waiting for its device.
#[derive(Debug, Clone)]
pub struct QueuedJob {
    pub id: i64,
    pub kernel: String,
    pub params: Params,
    pub repetitions: u32,
    pub timeout_s: f64,
    /// Who submitted it (lab mode); `None` in single mode.
    pub owner: Option<String>,
}

/// One device's part of a diagnostic, waiting for its device.
#[derive(Debug, Clone)]
pub struct QueuedPart {
    pub diag_id: i64,
    pub device: Device,
    pub level: u8,
    /// Level 3's stress time.
    pub duration_s: f64,
    pub faults: Vec<Fault>,
    /// How long the part may run before its worker is killed.
    pub timeout_s: f64,
    /// Who asked for it (lab mode); `None` in single mode.
    pub owner: Option<String>,
}

/// What waits in a device's queue.
#[derive(Debug, Clone)]
pub enum Work {
    Job(QueuedJob),
    Diagnostic(Box<QueuedPart>),
}

/// What a queue entry is: jobs and diagnostics number their ids apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkId {
    Job(i64),
    Diagnostic(i64),
}

impl Work {
    pub fn id(&self) -> WorkId {
        match self {
            Work::Job(job) => WorkId::Job(job.id),
            Work::Diagnostic(part) => WorkId::Diagnostic(part.diag_id),
        }
    }
}

/// Asks the device's runner to end the running work; the runner answers once it has
/// stored the end and its worker is gone.
pub type CancelRequest = oneshot::Sender<()>;

struct RunningJob {
    id: WorkId,
    cancel: Option<oneshot::Sender<CancelRequest>>,
}

#[derive(Default)]
struct State {
    pending: VecDeque<Work>,
    /// Places taken by submissions that are being written to the history.
    reserved: usize,
    running: Option<RunningJob>,
}

/// What [`DeviceQueue::cancel`] found.
pub enum Cancel {
    /// The job was waiting and is out of the queue now.
    Dequeued,
    /// The job is running: send on this to have the runner stop it.
    Running(oneshot::Sender<CancelRequest>),
    /// The job is not in this queue (it has ended, or its runner is ending it).
    NotHere,
}

/// One device's queue, shared by the API (which pushes and cancels) and the device's
/// runner (which pops).
pub struct DeviceQueue {
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
}

impl DeviceQueue {
    pub fn new(capacity: usize) -> Self {
        DeviceQueue {
            state: Mutex::default(),
            notify: Notify::new(),
            capacity,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place in the queue for a job about to be stored; false when it is full.
    pub fn reserve(&self) -> bool {
        let mut s = self.state();
        if s.pending.len() + s.reserved >= self.capacity {
            return false;
        }
        s.reserved += 1;
        true
    }

    /// Gives back a place taken by [`DeviceQueue::reserve`] without pushing.
    pub fn unreserve(&self) {
        let mut s = self.state();
        s.reserved = s.reserved.saturating_sub(1);
    }

    /// Puts a job or part that holds a reservation at the back of the queue.
    pub fn push_reserved(&self, job: Work) {
        {
            let mut s = self.state();
            s.reserved = s.reserved.saturating_sub(1);
            s.pending.push_back(job);
        }
        self.notify.notify_one();
    }

    /// Waits for the next job and marks it running; returns it with the line on which a
    /// cancel request arrives.
    pub async fn next(&self) -> (Work, oneshot::Receiver<CancelRequest>) {
        loop {
            {
                let mut s = self.state();
                if let Some(job) = s.pending.pop_front() {
                    let (tx, rx) = oneshot::channel();
                    s.running = Some(RunningJob {
                        id: job.id(),
                        cancel: Some(tx),
                    });
                    return (job, rx);
                }
            }
            self.notify.notified().await;
        }
    }

    /// The runner is done with its job.
    pub fn finish_running(&self) {
        self.state().running = None;
    }

    /// The runner died in the middle of a job: the job it ran, which no one will finish
    /// now, and the device is free again.
    pub fn take_running(&self) -> Option<WorkId> {
        self.state().running.take().map(|r| r.id)
    }

    pub fn cancel(&self, id: WorkId) -> Cancel {
        let mut s = self.state();
        if let Some(pos) = s.pending.iter().position(|j| j.id() == id) {
            s.pending.remove(pos);
            return Cancel::Dequeued;
        }
        match &mut s.running {
            Some(running) if running.id == id => match running.cancel.take() {
                Some(tx) => Cancel::Running(tx),
                None => Cancel::NotHere,
            },
            _ => Cancel::NotHere,
        }
    }

    /// Jobs waiting (not counting the running one).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.state().pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: i64) -> Work {
        Work::Job(QueuedJob {
            id,
            kernel: "k".into(),
            params: Params::new(),
            repetitions: 1,
            timeout_s: 1.0,
            owner: None,
        })
    }

    fn part(diag_id: i64) -> Work {
        Work::Diagnostic(Box::new(QueuedPart {
            diag_id,
            device: Device {
                id: "cpu".into(),
                kind: gpulab_shared::DeviceKind::Cpu,
                name: "CPU".into(),
                total_memory_bytes: None,
                free_memory_bytes: None,
                cuda: None,
                cpu: None,
                last_diagnostic: None,
                peaks: Vec::new(),
            },
            level: 1,
            duration_s: 0.0,
            faults: Vec::new(),
            timeout_s: 60.0,
            owner: None,
        }))
    }

    #[tokio::test]
    async fn a_diagnostic_part_waits_in_line_and_is_told_from_a_job_of_the_same_id() {
        let q = DeviceQueue::new(4);
        for work in [job(1), part(1), job(2)] {
            assert!(q.reserve());
            q.push_reserved(work);
        }
        let (first, _rx) = q.next().await;
        assert_eq!(first.id(), WorkId::Job(1));
        q.finish_running();
        let (second, _rx) = q.next().await;
        assert_eq!(
            second.id(),
            WorkId::Diagnostic(1),
            "jobs queued after it wait"
        );
        assert!(matches!(q.cancel(WorkId::Job(1)), Cancel::NotHere));
        assert!(matches!(
            q.cancel(WorkId::Diagnostic(1)),
            Cancel::Running(_)
        ));
        assert!(matches!(q.cancel(WorkId::Job(2)), Cancel::Dequeued));
    }

    #[tokio::test]
    async fn jobs_come_out_in_order_and_capacity_holds() {
        let q = DeviceQueue::new(2);
        assert!(q.reserve());
        q.push_reserved(job(1));
        assert!(q.reserve());
        assert!(!q.reserve(), "a reservation counts against the capacity");
        q.push_reserved(job(2));
        assert!(!q.reserve());
        let (first, _rx) = q.next().await;
        assert_eq!(first.id(), WorkId::Job(1));
        assert!(q.reserve(), "the running job leaves its place");
        q.unreserve();
        assert!(matches!(q.cancel(WorkId::Job(2)), Cancel::Dequeued));
        assert_eq!(q.waiting(), 0);
        assert!(matches!(q.cancel(WorkId::Job(1)), Cancel::Running(_)));
        assert!(
            matches!(q.cancel(WorkId::Job(1)), Cancel::NotHere),
            "a cancel line is used once"
        );
        q.finish_running();
        assert!(matches!(q.cancel(WorkId::Job(1)), Cancel::NotHere));
    }
}

//! The queue of one device: jobs and diagnostic parts waiting, and the one running with its
//! cancel line. A diagnostic's part holds the device like a job.
//!
//! # Fair share: owners take turns
//!
//! Each owner (a user of lab mode; single mode's anonymous user is the owner `None`) has a
//! line of their own, first come first served, and the owners with work waiting take turns
//! round-robin: the device runs the first entry of the owner whose turn it is, and that
//! owner goes to the back of the turns if they have more waiting. An owner whose line was
//! empty joins at the back. So a newcomer waits, besides the work running now, for at most
//! one entry of each other owner with work waiting, however much those owners queued: one
//! user's 200 queued jobs delay another's next job by at most one job per other active
//! user. Single mode has one owner, whose line is the old FIFO.
//!
//! Round-robin rather than weighted fair queuing by used device time: the bound it gives
//! is in jobs, which is what a waiting user sees, and it holds from the first job, without
//! a window to tune or a history to read at every pop; time is kept fair by the per-user
//! limit on a job's timeout, and by quotas.
//!
//! Nobody takes precedence: an admin's jobs and diagnostic parts take their owner's turn
//! like anyone's (a diagnostic part keeps its place in its owner's line, and holds the
//! device while it runs), so that the bound holds for everyone, including whoever checks
//! the device. An admin who needs the device at once cancels what is queued.
//!
//! A running limit ([`RunningLimit`]) shared by every device's queue caps how many entries
//! one owner runs at once across devices: an owner at the cap is passed over (keeping
//! their turn) until one of theirs ends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

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

/// Who owns a queue entry: a user's name, or `None` for single mode's anonymous user.
type Owner = Option<String>;

impl Work {
    pub fn owner(&self) -> Option<&str> {
        match self {
            Work::Job(job) => job.owner.as_deref(),
            Work::Diagnostic(part) => part.owner.as_deref(),
        }
    }

    /// The longest the entry may hold the device, in seconds.
    pub fn timeout_s(&self) -> f64 {
        match self {
            Work::Job(job) => job.timeout_s,
            Work::Diagnostic(part) => part.timeout_s,
        }
    }
}

/// The cap on entries one owner runs at once, over every device (`--user-max-running`).
/// Shared by the queues of all devices.
pub struct RunningLimit {
    max: usize,
    running: Mutex<HashMap<String, usize>>,
    /// Woken when a capped owner's entry ends, so that a queue passing them over looks
    /// again.
    freed: Notify,
}

impl RunningLimit {
    pub fn new(max: usize) -> Self {
        RunningLimit {
            max: max.max(1),
            running: Mutex::default(),
            freed: Notify::new(),
        }
    }

    fn counts(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn has_room(&self, owner: &str) -> bool {
        self.counts().get(owner).copied().unwrap_or(0) < self.max
    }

    fn take(&self, owner: &str) {
        *self.counts().entry(owner.to_owned()).or_default() += 1;
    }

    fn give_back(&self, owner: &str) {
        {
            let mut counts = self.counts();
            if let Some(n) = counts.get_mut(owner) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(owner);
                }
            }
        }
        self.freed.notify_waiters();
    }

    /// Entries `owner` runs now, over every device.
    #[cfg(test)]
    pub fn running_of(&self, owner: &str) -> usize {
        self.counts().get(owner).copied().unwrap_or(0)
    }
}

struct RunningJob {
    id: WorkId,
    cancel: Option<oneshot::Sender<CancelRequest>>,
    owner: Owner,
    timeout_s: f64,
    /// The owner whose place under the running limit it takes, if it counts.
    capped: Option<String>,
}

/// A waiting entry, and whether the running limit applies to it (lab users; not admins).
struct Entry {
    work: Work,
    capped: bool,
}

#[derive(Default)]
struct State {
    /// Each owner's waiting entries, in the order they came.
    lines: HashMap<Owner, VecDeque<Entry>>,
    /// The owners with entries waiting, in the order their turns come.
    turns: VecDeque<Owner>,
    /// Places taken by submissions that are being written to the history.
    reserved: usize,
    running: Option<RunningJob>,
}

impl State {
    fn waiting(&self) -> usize {
        self.lines.values().map(VecDeque::len).sum()
    }

    /// Takes the first entry of the first owner in turn that may run now, and moves that
    /// owner to the back of the turns (or out of them, with nothing left).
    fn pop_next(&mut self, limit: &RunningLimit) -> Option<Entry> {
        let pos = self.turns.iter().position(|owner| {
            let first = self.lines.get(owner).and_then(VecDeque::front);
            match (owner, first) {
                (Some(name), Some(entry)) if entry.capped => limit.has_room(name),
                (_, first) => first.is_some(),
            }
        })?;
        let owner = self.turns.remove(pos)?;
        let line = self.lines.get_mut(&owner)?;
        let entry = line.pop_front()?;
        if line.is_empty() {
            self.lines.remove(&owner);
        } else {
            self.turns.push_back(owner);
        }
        Some(entry)
    }

    fn push(&mut self, entry: Entry) {
        let owner: Owner = entry.work.owner().map(str::to_owned);
        let line = self.lines.entry(owner.clone()).or_default();
        if line.is_empty() {
            self.turns.push_back(owner);
        }
        line.push_back(entry);
    }

    fn remove(&mut self, id: WorkId) -> bool {
        let Some((owner, pos)) = self.lines.iter().find_map(|(owner, line)| {
            line.iter()
                .position(|e| e.work.id() == id)
                .map(|pos| (owner.clone(), pos))
        }) else {
            return false;
        };
        let line = self.lines.get_mut(&owner).expect("found above");
        line.remove(pos);
        if line.is_empty() {
            self.lines.remove(&owner);
            self.turns.retain(|o| *o != owner);
        }
        true
    }
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

/// One owner's share of a queue: what waits and what runs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Holding {
    pub waiting: usize,
    pub running: usize,
    /// The timeouts of what waits and runs, summed: the most device time it may still take.
    pub timeout_s: f64,
}

/// One device's queue, shared by the API (which pushes and cancels) and the device's
/// runner (which pops).
pub struct DeviceQueue {
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
    limit: Arc<RunningLimit>,
}

impl DeviceQueue {
    #[cfg(test)]
    pub fn new(capacity: usize) -> Self {
        Self::with_limit(capacity, Arc::new(RunningLimit::new(usize::MAX)))
    }

    /// A queue whose owners share `limit` with the other devices' queues.
    pub fn with_limit(capacity: usize, limit: Arc<RunningLimit>) -> Self {
        DeviceQueue {
            state: Mutex::default(),
            notify: Notify::new(),
            capacity,
            limit,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place in the queue for a job about to be stored; false when it is full.
    pub fn reserve(&self) -> bool {
        let mut s = self.state();
        if s.waiting() + s.reserved >= self.capacity {
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

    /// Puts a job or part that holds a reservation at the back of its owner's line; the
    /// running limit applies to it where it has an owner.
    pub fn push_reserved(&self, job: Work) {
        let capped = job.owner().is_some();
        self.push_entry(Entry { work: job, capped });
    }

    /// As [`DeviceQueue::push_reserved`], exempt from the running limit (an admin's).
    pub fn push_reserved_exempt(&self, job: Work) {
        self.push_entry(Entry {
            work: job,
            capped: false,
        });
    }

    fn push_entry(&self, entry: Entry) {
        {
            let mut s = self.state();
            s.reserved = s.reserved.saturating_sub(1);
            s.push(entry);
        }
        self.notify.notify_one();
    }

    /// Waits for the next job (the first of the owner whose turn it is) and marks it
    /// running; returns it with the line on which a cancel request arrives.
    pub async fn next(&self) -> (Work, oneshot::Receiver<CancelRequest>) {
        loop {
            // Registered before the look, so that an owner's end elsewhere is not missed.
            let freed = self.limit.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut s = self.state();
                if let Some(entry) = s.pop_next(&self.limit) {
                    let owner: Owner = entry.work.owner().map(str::to_owned);
                    let capped = owner.clone().filter(|_| entry.capped);
                    if let Some(name) = &capped {
                        self.limit.take(name);
                    }
                    let (tx, rx) = oneshot::channel();
                    s.running = Some(RunningJob {
                        id: entry.work.id(),
                        cancel: Some(tx),
                        owner,
                        timeout_s: entry.work.timeout_s(),
                        capped,
                    });
                    return (entry.work, rx);
                }
            }
            tokio::select! {
                () = self.notify.notified() => {}
                () = freed => {}
            }
        }
    }

    /// The runner is done with its job.
    pub fn finish_running(&self) {
        self.take_running();
    }

    /// The runner died in the middle of a job: the job it ran, which no one will finish
    /// now, and the device is free again.
    pub fn take_running(&self) -> Option<WorkId> {
        let running = self.state().running.take()?;
        if let Some(name) = &running.capped {
            self.limit.give_back(name);
        }
        Some(running.id)
    }

    pub fn cancel(&self, id: WorkId) -> Cancel {
        let mut s = self.state();
        if s.remove(id) {
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

    /// What `owner` has waiting and running on this device.
    pub fn holding(&self, owner: Option<&str>) -> Holding {
        let s = self.state();
        let key: Owner = owner.map(str::to_owned);
        let mut held = Holding::default();
        if let Some(line) = s.lines.get(&key) {
            held.waiting = line.len();
            held.timeout_s = line.iter().map(|e| e.work.timeout_s()).sum();
        }
        if let Some(r) = s.running.as_ref().filter(|r| r.owner == key) {
            held.running = 1;
            held.timeout_s += r.timeout_s;
        }
        held
    }

    /// Jobs waiting (not counting the running one).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.state().waiting()
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

    fn owned(id: i64, owner: Option<&str>) -> Work {
        Work::Job(QueuedJob {
            id,
            kernel: "k".into(),
            params: Params::new(),
            repetitions: 1,
            timeout_s: 1.0,
            owner: owner.map(str::to_owned),
        })
    }

    fn push(q: &DeviceQueue, work: Work) {
        assert!(q.reserve());
        q.push_reserved(work);
    }

    /// Pops the next entry without waiting (the queue must have one that may run).
    fn pop(q: &DeviceQueue) -> Work {
        let mut next = std::pin::pin!(q.next());
        let waker = std::task::Waker::noop();
        match next
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
        {
            std::task::Poll::Ready((work, _rx)) => work,
            std::task::Poll::Pending => panic!("nothing may run"),
        }
    }

    use std::future::Future;

    #[test]
    fn owners_take_turns_and_a_newcomer_waits_for_one_job_of_each_other() {
        let q = DeviceQueue::new(1000);
        for id in 1..=200 {
            push(&q, owned(id, Some("heavy")));
        }
        assert_eq!(pop(&q).id(), WorkId::Job(1));
        for (id, user) in [(1001, "b"), (1002, "c"), (1003, "d"), (1004, "e")] {
            push(&q, owned(id, Some(user)));
        }
        q.finish_running();
        let order: Vec<WorkId> = (0..6)
            .map(|_| {
                let w = pop(&q);
                q.finish_running();
                w.id()
            })
            .collect();
        assert_eq!(
            order,
            [2, 1001, 1002, 1003, 1004, 3].map(WorkId::Job),
            "the heavy user's next job, then each newcomer's, then the heavy user again"
        );
    }

    #[test]
    fn single_mode_stays_first_come_first_served() {
        let q = DeviceQueue::new(1000);
        for id in 1..=50 {
            push(&q, if id % 7 == 0 { part(id) } else { job(id) });
        }
        assert!(matches!(q.cancel(WorkId::Job(10)), Cancel::Dequeued));
        let mut order = Vec::new();
        while q.waiting() > 0 {
            order.push(pop(&q).id());
            q.finish_running();
        }
        let expected: Vec<WorkId> = (1..=50)
            .filter(|&id| id != 10)
            .map(|id| {
                if id % 7 == 0 {
                    WorkId::Diagnostic(id)
                } else {
                    WorkId::Job(id)
                }
            })
            .collect();
        assert_eq!(order, expected);
    }

    /// Random arrivals, cancels and runs, seeded: an entry that is the k-th of its owner's
    /// line when it arrives starts after at most k entries of each other owner (the
    /// issue's bound is k = 1: a user's next job waits for at most one job per other
    /// active user, however many they queued).
    #[test]
    fn random_arrivals_keep_the_bound_of_one_entry_per_other_owner() {
        use rand::{Rng, SeedableRng};
        for seed in 0..200u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let q = DeviceQueue::new(100_000);
            let owners = ["a", "b", "c", "d", "e", "f"];
            // For each waiting job: its owner, its place in its owner's line at arrival,
            // and how many entries of each owner started since it arrived.
            let mut waiting: HashMap<i64, (usize, usize, [usize; 6])> = HashMap::new();
            let mut next_id = 0;
            let mut started = 0;
            for _step in 0..400 {
                if rng.random_bool(0.6) {
                    let o = rng.random_range(0..owners.len());
                    // Bursts: sometimes one owner queues many at once.
                    let burst = if rng.random_bool(0.1) {
                        rng.random_range(5..40)
                    } else {
                        1
                    };
                    for _ in 0..burst {
                        next_id += 1;
                        let place = q.holding(Some(owners[o])).waiting + 1;
                        push(&q, owned(next_id, Some(owners[o])));
                        waiting.insert(next_id, (o, place, [0; 6]));
                    }
                }
                if rng.random_bool(0.05) && !waiting.is_empty() {
                    let ids: Vec<i64> = waiting.keys().copied().collect();
                    let id = ids[rng.random_range(0..ids.len())];
                    assert!(matches!(q.cancel(WorkId::Job(id)), Cancel::Dequeued));
                    waiting.remove(&id);
                }
                if rng.random_bool(0.5) && q.waiting() > 0 {
                    let WorkId::Job(id) = pop(&q).id() else {
                        unreachable!()
                    };
                    q.finish_running();
                    started += 1;
                    let (o, place, others) = waiting.remove(&id).expect("a waiting job ran");
                    for (other, &n) in others.iter().enumerate() {
                        assert!(
                            other == o || n <= place,
                            "seed {seed}: job {id} of {} (place {place} in its line) started \
                             after {n} jobs of {}",
                            owners[o],
                            owners[other]
                        );
                    }
                    for (_, _, others) in waiting.values_mut() {
                        others[o] += 1;
                    }
                }
            }
            assert!(started > 50, "seed {seed}: the run exercised the queue");
        }
    }

    #[tokio::test]
    async fn the_running_limit_holds_across_devices_and_frees_when_one_ends() {
        let limit = Arc::new(RunningLimit::new(1));
        let gpu0 = DeviceQueue::with_limit(10, limit.clone());
        let gpu1 = DeviceQueue::with_limit(10, limit.clone());
        push(&gpu0, owned(1, Some("a")));
        push(&gpu1, owned(2, Some("a")));
        push(&gpu1, owned(3, Some("b")));
        assert_eq!(pop(&gpu0).id(), WorkId::Job(1));
        assert_eq!(limit.running_of("a"), 1);
        assert_eq!(
            pop(&gpu1).id(),
            WorkId::Job(3),
            "a is at the limit: b runs, a keeps its turn"
        );
        gpu1.finish_running();
        let waiting = tokio::spawn(async move {
            let (work, _rx) = gpu1.next().await;
            work.id()
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a still runs on gpu0");
        gpu0.finish_running();
        let id = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the end on gpu0 wakes gpu1")
            .unwrap();
        assert_eq!(id, WorkId::Job(2));
    }

    #[test]
    fn an_admins_work_is_exempt_from_the_running_limit() {
        let limit = Arc::new(RunningLimit::new(1));
        let gpu0 = DeviceQueue::with_limit(10, limit.clone());
        let gpu1 = DeviceQueue::with_limit(10, limit.clone());
        for (q, id) in [(&gpu0, 1), (&gpu1, 2)] {
            assert!(q.reserve());
            q.push_reserved_exempt(owned(id, Some("root")));
        }
        assert_eq!(pop(&gpu0).id(), WorkId::Job(1));
        assert_eq!(pop(&gpu1).id(), WorkId::Job(2));
        assert_eq!(limit.running_of("root"), 0);
    }

    #[test]
    fn holding_counts_an_owners_waiting_and_running_timeouts() {
        let q = DeviceQueue::new(10);
        push(&q, owned(1, Some("a")));
        push(&q, owned(2, Some("a")));
        push(&q, owned(3, Some("b")));
        pop(&q);
        let a = q.holding(Some("a"));
        assert_eq!((a.waiting, a.running, a.timeout_s), (1, 1, 2.0));
        assert_eq!(q.holding(Some("b")).waiting, 1);
        assert_eq!(q.holding(None), Holding::default());
    }
}

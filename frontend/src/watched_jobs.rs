//! Jobs a page launched and follows to their end: the compare page's one per device, the
//! editor's one at a time.
//!
//! The event stream ([`crate::live`]) pushes every change of a job. It opens when the app
//! starts, before any job is launched, so a job's events reach it from the first; only
//! while the stream is down does a page have to ask, and then it asks every half second.

use std::collections::BTreeMap;
use std::time::Duration;

use gpulab_shared::Job;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api;
use crate::live::{fresher, use_live_events, Connection, LiveEvents};

/// How often a job is fetched while the event stream is down.
const POLL_PERIOD: Duration = Duration::from_millis(500);

/// The jobs a page follows, each as it is now. Cheap to copy.
#[derive(Debug, Clone, Copy)]
pub struct WatchedJobs {
    /// The latest version of each job from the page's own requests.
    fetched: RwSignal<BTreeMap<i64, Job>>,
    live: LiveEvents,
}

impl WatchedJobs {
    /// Follows jobs for as long as the calling component lives.
    pub fn new() -> Self {
        let watched = WatchedJobs {
            fetched: RwSignal::new(BTreeMap::new()),
            live: use_live_events(),
        };
        match set_interval_with_handle(
            move || {
                if watched.live.connection().get_untracked() != Connection::Live {
                    watched.refresh();
                }
            },
            POLL_PERIOD,
        ) {
            Ok(handle) => on_cleanup(move || handle.clear()),
            Err(err) => {
                leptos::logging::warn!("jobs are followed only through the event stream: {err:?}")
            }
        }
        // A stream that opens again may have missed events while it was down.
        Effect::new(move |previous: Option<Option<u64>>| {
            let sync = watched.live.sync();
            if previous.is_some_and(|previous| previous != sync) {
                watched.refresh();
            }
            sync
        });
        watched
    }

    /// Follows `job`, as the server answered its launch.
    pub fn watch(&self, job: Job) {
        self.fetched.update(|jobs| record(jobs, job));
    }

    /// Job `id` as it is now, if it is followed (tracked).
    pub fn get(&self, id: i64) -> Option<Job> {
        let fetched = self.fetched.with(|jobs| jobs.get(&id).cloned())?;
        Some(match self.live.job(id) {
            Some(pushed) => fresher(fetched, pushed),
            None => fetched,
        })
    }

    /// Fetches every followed job that has not ended.
    fn refresh(&self) {
        let ids: Vec<i64> = self
            .fetched
            .with_untracked(|jobs| jobs.keys().copied().collect());
        let fetched = self.fetched;
        for id in ids {
            let unfinished = untrack(|| self.get(id)).is_some_and(|job| !job.status.is_finished());
            if unfinished {
                spawn_local(async move {
                    if let Ok(job) = api::job(id).await {
                        fetched.try_update(|jobs| record(jobs, job));
                    }
                });
            }
        }
    }
}

/// Keeps the later of the known and the new version of a job.
fn record(jobs: &mut BTreeMap<i64, Job>, job: Job) {
    let latest = match jobs.remove(&job.id) {
        Some(known) => fresher(known, job),
        None => job,
    };
    jobs.insert(latest.id, latest);
}

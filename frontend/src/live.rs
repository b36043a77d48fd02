//! What the server pushes: one `EventSource` on `GET /api/events` for the whole app, turned
//! into signals that pages read through context ([`use_live_events`]).
//!
//! The stream lives here rather than in `api.rs` because it is not a request with an answer
//! but a subscription that runs as long as the page: `api.rs` keeps the calls, this module
//! keeps the state they would otherwise poll for.
//!
//! Events can be missed before the stream listens and while it is down (the server
//! restarts, the network drops). A page's resource reads [`LiveEvents::sync`], which holds
//! its first fetch until the stream listens and fetches again each time the stream comes
//! back, so the page misses nothing and fetches only once while the stream stays up.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use gpulab_shared::diag::Diagnostic;
use gpulab_shared::{events, Job, JobStatus, TelemetrySample};
use leptos::prelude::*;
use serde::de::DeserializeOwned;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::{EventSource, MessageEvent};

/// Where the server sends its events.
const EVENTS_URL: &str = "/api/events";
/// How many jobs the stream remembers; past it the lowest ids go, which pages show from
/// their own fetch anyway.
const REMEMBERED_JOBS: usize = 1000;
/// Likewise for diagnostics, which are fewer and larger (a stress check's samples).
const REMEMBERED_DIAGNOSTICS: usize = 100;
/// How much telemetry history a device keeps: the sparklines show the last five minutes.
const TELEMETRY_WINDOW: Duration = Duration::from_secs(5 * 60);
/// A cap on the samples kept per device, whatever the server's sampling interval.
const MAX_SAMPLES: usize = 600;
/// How long pages wait for the stream to open before they fetch without it: a proxy that
/// buffers the stream would otherwise keep them loading.
const FIRST_OPEN_WAIT: Duration = Duration::from_secs(2);
/// The first and the longest wait before opening a stream the browser gave up on.
const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The state of the event stream, for the indicator in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// Not open yet since the page loaded.
    Connecting,
    /// Open: what the pages show is current.
    Live,
    /// Lost; the browser (or this module) is opening it again.
    Reconnecting,
}

/// The server's pushed state, shared by every page. Cheap to copy.
#[derive(Debug, Clone, Copy)]
pub struct LiveEvents {
    connection: RwSignal<Connection>,
    /// See [`LiveEvents::sync`].
    sync: RwSignal<Option<u64>>,
    jobs: RwSignal<BTreeMap<i64, Job>>,
    diagnostics: RwSignal<BTreeMap<i64, Diagnostic>>,
    telemetry: StoredValue<HashMap<String, ArcRwSignal<TelemetryTrack>>>,
}

/// Opens the event stream and shares it with every component below the caller.
pub fn provide_live_events() {
    let live = LiveEvents {
        connection: RwSignal::new(Connection::Connecting),
        sync: RwSignal::new(None),
        jobs: RwSignal::new(BTreeMap::new()),
        diagnostics: RwSignal::new(BTreeMap::new()),
        telemetry: StoredValue::new(HashMap::new()),
    };
    // The stream carries what the browser's user may see: it opens once the session is
    // known, and afresh (forgetting the last user's jobs) for each user who signs in.
    let session = crate::session::use_session();
    let identity = Memo::new(move |_| session.get().identity());
    let slot: StreamSlot = Rc::new(RefCell::new(None));
    Effect::new(move |_| {
        let identity = identity.get();
        // Dropping the stream closes it.
        slot.borrow_mut().take();
        live.forget();
        if identity.is_some() {
            EventStream::open(live, slot.clone(), RETRY_FIRST);
            set_timeout(move || live.give_up_waiting(), FIRST_OPEN_WAIT);
        }
    });
    provide_context(live);
}

/// The event stream that [`provide_live_events`] opened.
pub fn use_live_events() -> LiveEvents {
    expect_context::<LiveEvents>()
}

impl LiveEvents {
    /// Whether the stream is open now.
    pub fn connection(&self) -> ReadSignal<Connection> {
        self.connection.read_only()
    }

    /// When a page may fetch what the stream keeps up to date (tracked): `None` until the
    /// stream first opens (or fails, or is slow to), then a number that changes each time
    /// it opens again.
    ///
    /// A resource that fetches only once this is `Some` sees every change after its answer
    /// through the stream; and since it reads this, it fetches again after a reconnection,
    /// catching up on what the stream missed while it was down.
    pub fn sync(&self) -> Option<u64> {
        self.sync.get()
    }

    /// The latest version of job `id` the stream has pushed, if any (tracked).
    pub fn job(&self, id: i64) -> Option<Job> {
        self.jobs.with(|jobs| jobs.get(&id).cloned())
    }

    /// Reads every job the stream has pushed, by id (tracked).
    pub fn with_jobs<R>(&self, f: impl FnOnce(&BTreeMap<i64, Job>) -> R) -> R {
        self.jobs.with(f)
    }

    /// The latest version of diagnostic `id` the stream has pushed, if any (tracked).
    pub fn diagnostic(&self, id: i64) -> Option<Diagnostic> {
        self.diagnostics.with(|d| d.get(&id).cloned())
    }

    /// Reads every diagnostic the stream has pushed, by id (tracked).
    pub fn with_diagnostics<R>(&self, f: impl FnOnce(&BTreeMap<i64, Diagnostic>) -> R) -> R {
        self.diagnostics.with(f)
    }

    /// The recent samples of `device`: those the stream pushed, and whatever a page merges in
    /// with [`TelemetryTrack::merge`] from `GET /api/devices/{id}/telemetry`.
    pub fn telemetry(&self, device: &str) -> RwSignal<TelemetryTrack> {
        self.track(device).into()
    }

    fn track(&self, device: &str) -> ArcRwSignal<TelemetryTrack> {
        // Kept outside the reactive owner tree (Arc signals), so a device's history outlives
        // the page that first asked for it.
        self.telemetry
            .try_update_value(|tracks| {
                tracks
                    .entry(device.to_owned())
                    .or_insert_with(|| ArcRwSignal::new(TelemetryTrack::default()))
                    .clone()
            })
            .unwrap_or_else(|| ArcRwSignal::new(TelemetryTrack::default()))
    }

    /// Back to the state of a page just loaded, for another user's stream.
    fn forget(&self) {
        self.connection.set(Connection::Connecting);
        self.sync.set(None);
        self.jobs.set(BTreeMap::new());
        self.diagnostics.set(BTreeMap::new());
        self.telemetry.set_value(HashMap::new());
    }

    fn opened(&self) {
        self.connection.set(Connection::Live);
        self.sync
            .update(|sync| *sync = Some(sync.map_or(1, |n| n + 1)));
    }

    /// Lets pages fetch without the stream, if it has not opened yet.
    fn give_up_waiting(&self) {
        if self.sync.get_untracked().is_none() {
            self.sync.set(Some(0));
        }
    }

    fn record_job(&self, job: Job) {
        self.jobs.update(|jobs| {
            let latest = match jobs.remove(&job.id) {
                Some(known) => fresher(known, job),
                None => job,
            };
            jobs.insert(latest.id, latest);
            while jobs.len() > REMEMBERED_JOBS {
                jobs.pop_first();
            }
        });
    }

    fn record_diagnostic(&self, diagnostic: Diagnostic) {
        self.diagnostics.update(|diagnostics| {
            let latest = match diagnostics.remove(&diagnostic.id) {
                Some(known) => crate::diag::fresher(known, diagnostic),
                None => diagnostic,
            };
            diagnostics.insert(latest.id, latest);
            while diagnostics.len() > REMEMBERED_DIAGNOSTICS {
                diagnostics.pop_first();
            }
        });
    }

    fn record_sample(&self, sample: TelemetrySample) {
        self.track(&sample.device)
            .update(|track| track.push(sample));
    }
}

/// The later of two versions of one job, whichever way each came (a fetch, the stream, the
/// answer to a cancel). A job only moves forward (queued, running with growing progress,
/// ended), so its stage orders them; on a tie `b` wins.
pub fn fresher(a: Job, b: Job) -> Job {
    // The same id with another creation time is another job: a server started afresh.
    if a.created_at != b.created_at {
        return if a.created_at > b.created_at { a } else { b };
    }
    if stage(&a) > stage(&b) {
        a
    } else {
        b
    }
}

fn stage(job: &Job) -> (u8, u32) {
    match job.status {
        JobStatus::Queued => (0, 0),
        JobStatus::Running => (1, job.progress.map_or(0, |p| p.done)),
        _ => (2, 0),
    }
}

/// The recent telemetry samples of one device, oldest first, at most
/// [`TELEMETRY_WINDOW`] apart from the latest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryTrack {
    samples: VecDeque<TelemetrySample>,
}

impl TelemetryTrack {
    /// The newest sample.
    pub fn latest(&self) -> Option<&TelemetrySample> {
        self.samples.back()
    }

    /// Oldest first.
    pub fn samples(&self) -> impl Iterator<Item = &TelemetrySample> {
        self.samples.iter()
    }

    /// Adds samples fetched from the server's history to those pushed, in time order.
    pub fn merge(&mut self, history: Vec<TelemetrySample>) {
        let mut all: Vec<_> = self.samples.drain(..).chain(history).collect();
        all.sort_by_key(|s| s.at);
        all.dedup_by_key(|s| s.at);
        self.samples = all.into();
        self.trim();
    }

    fn push(&mut self, sample: TelemetrySample) {
        match self.samples.back() {
            Some(last) if last.at >= sample.at => self.merge(vec![sample]),
            _ => {
                self.samples.push_back(sample);
                self.trim();
            }
        }
    }

    fn trim(&mut self) {
        let Some(latest) = self.latest().map(|s| s.at) else {
            return;
        };
        let window = chrono::Duration::from_std(TELEMETRY_WINDOW).unwrap_or_default();
        let oldest: DateTime<Utc> = latest - window;
        while self.samples.len() > MAX_SAMPLES
            || self.samples.front().is_some_and(|s| s.at < oldest)
        {
            self.samples.pop_front();
        }
    }
}

/// One `EventSource` with the handlers that feed [`LiveEvents`]; replaced by a new one when
/// the browser gives up on it.
struct EventStream {
    source: EventSource,
    _handlers: Vec<Closure<dyn FnMut(web_sys::Event)>>,
}

/// The stream now open, if any: its handlers must live as long as it does.
type StreamSlot = Rc<RefCell<Option<EventStream>>>;

impl EventStream {
    /// Opens a stream into `slot`. Should the browser give up on it before it ever opens,
    /// the next one starts after `retry`.
    fn open(live: LiveEvents, slot: StreamSlot, retry: Duration) {
        let source = match EventSource::new(EVENTS_URL) {
            Ok(source) => source,
            Err(err) => {
                leptos::logging::warn!("live updates are off: no EventSource: {err:?}");
                return;
            }
        };
        let opened = Rc::new(Cell::new(false));
        let on_open = {
            let opened = opened.clone();
            Closure::<dyn FnMut(_)>::new(move |_: web_sys::Event| {
                opened.set(true);
                live.opened();
            })
        };
        let on_job = Closure::<dyn FnMut(_)>::new(move |event: web_sys::Event| {
            if let Some(job) = message::<Job>(&event) {
                live.record_job(job);
            }
        });
        let on_diagnostic = Closure::<dyn FnMut(_)>::new(move |event: web_sys::Event| {
            if let Some(diagnostic) = message::<Diagnostic>(&event) {
                live.record_diagnostic(diagnostic);
            }
        });
        let on_telemetry = Closure::<dyn FnMut(_)>::new(move |event: web_sys::Event| {
            if let Some(sample) = message::<TelemetrySample>(&event) {
                live.record_sample(sample);
            }
        });
        let on_error = {
            let source = source.clone();
            let slot = slot.clone();
            Closure::<dyn FnMut(_)>::new(move |_: web_sys::Event| {
                live.connection.set(Connection::Reconnecting);
                live.give_up_waiting();
                // The browser retries a dropped connection by itself, but gives up for good
                // on an answer that is not an event stream, such as a proxy's 502 while the
                // server restarts. Then start a new one, waiting longer each time.
                if source.ready_state() == EventSource::CLOSED {
                    let slot = slot.clone();
                    let wait = if opened.get() { RETRY_FIRST } else { retry };
                    let next = (wait * 2).min(RETRY_MAX);
                    set_timeout(
                        move || {
                            // Dropping the old handlers here is safe: none of them is running.
                            slot.borrow_mut().take();
                            EventStream::open(live, slot, next);
                        },
                        wait,
                    );
                }
            })
        };
        let handlers = [
            ("open", on_open),
            ("error", on_error),
            (events::JOB, on_job),
            (events::TELEMETRY, on_telemetry),
            (events::DIAGNOSTIC, on_diagnostic),
        ];
        for (name, handler) in &handlers {
            if let Err(err) =
                source.add_event_listener_with_callback(name, handler.as_ref().unchecked_ref())
            {
                leptos::logging::warn!("cannot listen to {name} events: {err:?}");
            }
        }
        *slot.borrow_mut() = Some(EventStream {
            source,
            _handlers: handlers.into_iter().map(|(_, handler)| handler).collect(),
        });
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.source.close();
    }
}

/// The JSON `data` of a server-sent event, or `None` (with a warning) when it is not `T`.
fn message<T: DeserializeOwned>(event: &web_sys::Event) -> Option<T> {
    let data = event.dyn_ref::<MessageEvent>()?.data().as_string()?;
    serde_json::from_str(&data)
        .inspect_err(|err| {
            leptos::logging::warn!("ignoring a malformed {} event: {err}", event.type_())
        })
        .ok()
}

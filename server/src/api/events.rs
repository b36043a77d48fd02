//! `GET /api/events`: server-sent events of job and diagnostic changes and telemetry
//! samples.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use gpulab_shared::events;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

use super::error::ApiError;
use super::AppState;
use crate::lab::auth::STREAM_RECHECK;
use crate::lab::{Caller, Credential};
use axum::Extension;

/// Streams open at once. Each holds a connection and, while it catches up, its clones of
/// the events; the broadcast ring behind them is one for all clients.
pub const MAX_CLIENTS: usize = 64;

/// The count of open event streams, shared by every clone of the state.
#[derive(Debug, Clone, Default)]
pub struct EventClients(Arc<AtomicUsize>);

/// One place among [`MAX_CLIENTS`], given back when its stream is dropped.
struct Place(Arc<AtomicUsize>);

impl EventClients {
    fn take(&self) -> Option<Place> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < MAX_CLIENTS).then_some(open + 1)
            })
            .ok()
            .map(|_| Place(self.0.clone()))
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream of `job` events (the whole job, at each change: queued, started, progress,
/// ended), `diagnostic` events (the whole diagnostic, at each change of a check or a part)
/// and `telemetry` events (each device's new sample, once a second). A client that
/// falls behind skips what it missed; `EventSource` reconnects by itself after a restart.
/// The stream ends when the server shuts down. At most 64 streams are open at once.
/// In lab mode a user's stream carries only their own jobs and diagnostics (an admin's,
/// everyone's) and the telemetry, and it ends within a second once the user is disabled,
/// signs out or has their key rotated.
#[utoipa::path(get, path = "/api/events", tag = "events", operation_id = "streamEvents",
    responses((status = 200, description = "`text/event-stream` of `job` events (data: Job), \
        `diagnostic` events (data: Diagnostic) and `telemetry` events (data: TelemetrySample)",
        content_type = "text/event-stream"),
        (status = 503, description = "64 streams are open already", body = gpulab_shared::Problem, content_type = "application/problem+json")))]
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    credential: Option<Extension<Credential>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let place = state
        .event_clients
        .take()
        .ok_or_else(|| ApiError::Rejected {
            status: StatusCode::SERVICE_UNAVAILABLE,
            detail: format!(
                "{MAX_CLIENTS} event streams are open already, the most this server keeps; close \
             one (another tab of the UI) or try again later"
            ),
        })?;
    let job_caller = caller.clone();
    let jobs = BroadcastStream::new(state.jobs.subscribe())
        .filter_map(|job| job.ok())
        .filter(move |job| job_caller.may_see(job.owner.as_deref()))
        .filter_map(|job| Event::default().event(events::JOB).json_data(job).ok());
    let diagnostics = BroadcastStream::new(state.jobs.subscribe_diagnostics())
        .filter_map(|d| d.ok())
        .filter(move |d| caller.may_see(d.owner.as_deref()))
        .filter_map(|d| Event::default().event(events::DIAGNOSTIC).json_data(d).ok());
    let samples = BroadcastStream::new(state.telemetry.subscribe())
        .filter_map(|sample| sample.ok())
        .filter_map(|sample| {
            Event::default()
                .event(events::TELEMETRY)
                .json_data(sample)
                .ok()
        });
    let mut shutdown = state.shutdown.clone();
    // The place goes with the stream: it is given back when the client disconnects.
    let events = jobs.merge(diagnostics).merge(samples).map(move |event| {
        let _held = &place;
        Ok(event)
    });
    let lab = state.lab.clone();
    let stream = futures_util::StreamExt::take_until(events, async move {
        let revoked = async {
            match credential {
                Some(Extension(credential)) => {
                    let mut every = tokio::time::interval(STREAM_RECHECK);
                    loop {
                        every.tick().await;
                        if !lab.still_valid(&credential).await {
                            return;
                        }
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.wait_for(|down| *down) => {}
            () = revoked => {}
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

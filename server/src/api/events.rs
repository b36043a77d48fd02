//! `GET /api/events`: server-sent events of job changes and telemetry samples.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use gpulab_shared::events;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

use super::AppState;

/// A stream of `job` events (the whole job, at each change: queued, started, progress,
/// ended) and `telemetry` events (each device's new sample, once a second). A client that
/// falls behind skips what it missed; `EventSource` reconnects by itself after a restart.
/// The stream ends when the server shuts down.
#[utoipa::path(get, path = "/api/events", tag = "events", operation_id = "streamEvents",
    responses((status = 200, description = "`text/event-stream` of `job` events (data: Job) \
        and `telemetry` events (data: TelemetrySample)", content_type = "text/event-stream")))]
pub async fn stream(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let jobs = BroadcastStream::new(state.jobs.subscribe())
        .filter_map(|job| job.ok())
        .filter_map(|job| Event::default().event(events::JOB).json_data(job).ok());
    let samples = BroadcastStream::new(state.telemetry.subscribe())
        .filter_map(|sample| sample.ok())
        .filter_map(|sample| {
            Event::default()
                .event(events::TELEMETRY)
                .json_data(sample)
                .ok()
        });
    let mut shutdown = state.shutdown.clone();
    let stream = futures_util::StreamExt::take_until(jobs.merge(samples).map(Ok), async move {
        let _ = shutdown.wait_for(|down| *down).await;
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

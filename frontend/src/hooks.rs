//! Behaviour shared by the pages: the document title and polling.

use std::time::Duration;

use leptos::prelude::*;

/// Keeps `document.title` at `"<title> · gpulab"` while the calling page is shown.
pub fn use_title(title: impl Fn() -> String + 'static) {
    Effect::new(move |_| document().set_title(&format!("{} · gpulab", title())));
}

/// Calls `tick` every `period` until the calling component is unmounted.
///
/// Pages poll by bumping a signal that their resource reads, so the resource refetches.
pub fn use_interval(period: Duration, tick: impl Fn() + 'static) {
    match set_interval_with_handle(tick, period) {
        Ok(handle) => on_cleanup(move || handle.clear()),
        Err(err) => leptos::logging::warn!("live updates are off: no browser timer: {err:?}"),
    }
}

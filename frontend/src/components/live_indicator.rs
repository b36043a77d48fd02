use leptos::prelude::*;

use crate::live::{use_live_events, Connection};

/// Whether the pages are being kept up to date: a dot and a word in the header.
#[component]
pub fn LiveIndicator() -> impl IntoView {
    let connection = use_live_events().connection();
    let state = move || match connection.get() {
        Connection::Connecting => (
            "connecting",
            "Connecting…",
            "Live updates: connecting to the server",
        ),
        Connection::Live => (
            "live",
            "Live",
            "Live updates: connected; pages update by themselves",
        ),
        Connection::Reconnecting => (
            "reconnecting",
            "Reconnecting…",
            "Live updates: connection lost, reconnecting; pages may be out of date",
        ),
    };
    view! {
        <p
            class="live-indicator"
            data-testid="live-status"
            data-state=move || state().0
            role="status"
            aria-label=move || state().2
            title=move || state().2
        >
            <span class="dot" aria-hidden="true"></span>
            {move || state().1}
        </p>
    }
}

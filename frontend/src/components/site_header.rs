use leptos::prelude::*;
use leptos_router::components::A;

use super::LiveIndicator;

/// The header on every page: the name, the main navigation and whether updates are live.
#[component]
pub fn SiteHeader() -> impl IntoView {
    view! {
        <header class="site-header">
            <a class="brand" href="/">
                "gpulab"
            </a>
            <nav aria-label="Main">
                <A href="/" exact=true>
                    "Devices"
                </A>
                <A href="/launch">"Launch"</A>
                <A href="/jobs">"Jobs"</A>
                <A href="/compare">"Compare"</A>
                <A href="/editor">"Editor"</A>
            </nav>
            <LiveIndicator />
        </header>
    }
}

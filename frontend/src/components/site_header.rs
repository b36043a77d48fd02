use leptos::prelude::*;
use leptos_router::components::A;

/// The header on every page: the name and the main navigation.
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
            </nav>
        </header>
    }
}

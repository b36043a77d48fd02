//! The shell of the UI: the header and the routes.

use leptos::prelude::*;
use leptos_router::components::{Route, Router, Routes};
use leptos_router::path;

use crate::components::SiteHeader;
use crate::pages::{DevicesPage, JobPage, JobsPage, LaunchPage, NotFoundPage};

/// The whole UI: the header on every page, and below it the page the path names.
#[component]
pub fn App() -> impl IntoView {
    view! {
        <Router>
            <SiteHeader />
            <main id="main">
                <Routes fallback=NotFoundPage>
                    <Route path=path!("/") view=DevicesPage />
                    <Route path=path!("/launch") view=LaunchPage />
                    <Route path=path!("/jobs") view=JobsPage />
                    <Route path=path!("/jobs/:id") view=JobPage />
                </Routes>
            </main>
        </Router>
    }
}

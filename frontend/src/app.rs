//! The shell of the UI: the header, the routes and the live event stream they share.

use leptos::prelude::*;
use leptos_router::components::{Route, Router, Routes};
use leptos_router::path;

use crate::components::SiteHeader;
use crate::live::provide_live_events;
use crate::pages::{AccountPage, AdminUsersPage, SignInPage, UsagePage};
use crate::pages::{
    ComparePage, DevicesPage, DiagnosticPage, DiagnosticsPage, EditorPage, FleetPage, JobPage,
    JobsPage, LaunchPage, NotFoundPage, RooflinePage,
};
use crate::session::{provide_session, SessionGate};
use crate::token::provide_api_token;

/// The whole UI: the header on every page, and below it the page the path names. Every page
/// shares the one stream of server events and the API token. In lab mode the pages wait
/// for a signed-in user (the [`SessionGate`]).
#[component]
pub fn App() -> impl IntoView {
    provide_session();
    provide_live_events();
    provide_api_token();
    view! {
        <Router>
            <SiteHeader />
            <SessionGate>
                <Routes fallback=NotFoundPage>
                    <Route path=path!("/") view=DevicesPage />
                    <Route path=path!("/launch") view=LaunchPage />
                    <Route path=path!("/jobs") view=JobsPage />
                    <Route path=path!("/jobs/:id") view=JobPage />
                    <Route path=path!("/compare") view=ComparePage />
                    <Route path=path!("/signin") view=SignInPage />
                    <Route path=path!("/usage") view=UsagePage />
                    <Route path=path!("/admin/users") view=AdminUsersPage />
                    <Route path=path!("/account") view=AccountPage />
                    <Route path=path!("/editor") view=EditorPage />
                    <Route path=path!("/diagnostics") view=DiagnosticsPage />
                    <Route path=path!("/diagnostics/:id") view=DiagnosticPage />
                    <Route path=path!("/fleet") view=FleetPage />
                    <Route path=path!("/devices/:id/roofline") view=RooflinePage />
                </Routes>
            </SessionGate>
        </Router>
    }
}

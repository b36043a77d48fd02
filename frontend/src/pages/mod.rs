//! One component per route.

mod account;
mod admin;
mod compare;
mod devices;
mod diagnostic;
mod diagnostics;
mod editor;
mod fleet;
mod job;
mod jobs;
mod launch;
mod not_found;
mod roofline;
mod sign_in;
mod usage;

pub use account::AccountPage;
pub use admin::AdminUsersPage;
pub use compare::ComparePage;
pub use devices::DevicesPage;
pub use diagnostic::DiagnosticPage;
pub use diagnostics::DiagnosticsPage;
pub use editor::EditorPage;
pub use fleet::FleetPage;
pub use job::JobPage;
pub use jobs::JobsPage;
pub use launch::LaunchPage;
pub use not_found::NotFoundPage;
pub use roofline::RooflinePage;
pub use sign_in::SignInPage;
pub use usage::UsagePage;

//! One component per route.

mod devices;
mod job;
mod jobs;
mod launch;
mod not_found;

pub use devices::DevicesPage;
pub use job::JobPage;
pub use jobs::JobsPage;
pub use launch::LaunchPage;
pub use not_found::NotFoundPage;

use gpulab_shared::JobStatus;
use leptos::prelude::*;

/// A job's status as a coloured label; the class carries the status for the style sheet.
#[component]
pub fn StatusBadge(status: JobStatus) -> impl IntoView {
    view! { <span class=format!("badge status-{}", status.as_str())>{status.as_str()}</span> }
}

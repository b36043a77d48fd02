use gpulab_shared::diag::{CheckState, DiagnosticStatus, Verdict};
use gpulab_shared::JobStatus;
use leptos::prelude::*;

use crate::diag;

/// A job's status as a coloured label; the class carries the status for the style sheet.
#[component]
pub fn StatusBadge(status: JobStatus) -> impl IntoView {
    view! { <span class=format!("badge status-{}", status.as_str())>{status.as_str()}</span> }
}

/// A diagnostic's status, or its verdict once finished, as a label that reads without its
/// colour ("✗ fail"); `data-verdict` carries the verdict for tests and the style sheet.
#[component]
pub fn DiagnosticBadge(status: DiagnosticStatus, verdict: Option<Verdict>) -> impl IntoView {
    let verdict = verdict.filter(|_| status == DiagnosticStatus::Finished);
    view! {
        <span
            class=diag::badge_class(status, verdict)
            data-status=diag::status_name(status)
            data-verdict=verdict.map(Verdict::as_str)
        >
            {diag::status_text(status, verdict)}
        </span>
    }
}

/// A check's state: waiting, running (with its share done), its verdict, or unfinished
/// when its diagnostic `ended` without it.
#[component]
pub fn CheckBadge(
    state: CheckState,
    verdict: Option<Verdict>,
    progress: Option<f64>,
    ended: bool,
) -> impl IntoView {
    let (class, name, text) = diag::check_badge(state, verdict, progress, ended);
    view! {
        <span class=class data-state=name data-testid="check-state">
            {text}
        </span>
    }
}

/// A verdict alone, as in an evidence table.
#[component]
pub fn VerdictBadge(verdict: Verdict) -> impl IntoView {
    view! {
        <span class=format!("badge verdict-{}", verdict.as_str()) data-verdict=verdict.as_str()>
            {diag::verdict_text(verdict)}
        </span>
    }
}

use gpulab_shared::diag::{CheckState, Diagnostic, DiagnosticStatus, Verdict};
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::api::{self, ApiError, ApiResult};
use crate::components::{CheckBadge, DiagnosticBadge, ErrorNotice, StressCharts, VerdictBadge};
use crate::diag::{self, fresher};
use crate::format;
use crate::hooks::use_title;
use crate::live::use_live_events;

/// `/diagnostics/:id`: one diagnostic, each check of each device followed live through the
/// server's `diagnostic` events from waiting to its verdict, with its evidence.
#[component]
pub fn DiagnosticPage() -> impl IntoView {
    let live = use_live_events();
    let params = use_params_map();
    let id = Memo::new(move |_| params.with(|p| p.get("id").and_then(|id| id.parse::<i64>().ok())));
    // One fetch once the event stream listens, and one more each time it reopens.
    let fetched = LocalResource::new(move || {
        let synced = live.sync().is_some();
        let id = id.get();
        async move {
            match id {
                Some(id) if synced => Some(api::diagnostic(id).await),
                _ => None,
            }
        }
    });
    let cancel = Action::new_local(|id: &i64| api::cancel_diagnostic(*id));
    // The latest version from wherever it came: the fetch, the stream, the answer to a
    // cancel, or what was shown before (so a failed refetch does not blank the page).
    let diagnostic = Memo::new(move |shown: Option<&Option<Diagnostic>>| {
        let id = id.get()?;
        let of_this = |d: &Diagnostic| d.id == id;
        let shown = shown.cloned().flatten().filter(of_this);
        let fetched = fetched.with(|f| match f {
            Some(Some(Ok(d))) if of_this(d) => Some(d.clone()),
            _ => None,
        });
        let cancelled = cancel.value().with(|c| match c {
            Some(Ok(d)) if of_this(d) => Some(d.clone()),
            _ => None,
        });
        [shown, fetched, live.diagnostic(id), cancelled]
            .into_iter()
            .flatten()
            .reduce(fresher)
    });
    let state = Memo::new(move |_| {
        let Some(id) = id.get() else {
            return Shown::NotANumber;
        };
        if diagnostic.with(Option::is_some) {
            return Shown::Diagnostic;
        }
        match fetched.get() {
            Some(Some(Err(error))) => Shown::Failed(id, error),
            _ => Shown::Loading,
        }
    });
    use_title(move || {
        let shown = diagnostic.with(|d| d.as_ref().map(|d| diag::status_text(d.status, d.verdict)));
        match (id.get(), shown) {
            (Some(id), Some(status)) => format!("Diagnostic {id} ({status})"),
            (Some(id), None) => format!("Diagnostic {id}"),
            (None, _) => "Diagnostic".to_owned(),
        }
    });

    view! {
        {move || match state.get() {
            Shown::Loading => view! { <p class="loading">"Loading the diagnostic…"</p> }.into_any(),
            Shown::NotANumber => view! {
                <h1>"No such diagnostic"</h1>
                <p>"That is not a diagnostic number. " <a href="/diagnostics">"See the diagnostics"</a> "."</p>
            }
            .into_any(),
            Shown::Failed(id, error) => view! {
                <h1>{format!("Diagnostic {id}")}</h1>
                <ErrorNotice error />
                <p><a href="/diagnostics">"Back to the diagnostics"</a></p>
            }
            .into_any(),
            Shown::Diagnostic => {
                let Some(first) = diagnostic.get_untracked() else {
                    return view! { <p class="loading">"Loading the diagnostic…"</p> }.into_any();
                };
                let current = Memo::new(move |_| diagnostic.get().unwrap_or_else(|| first.clone()));
                view! {
                    <DiagnosticDetails
                        diagnostic=current
                        cancel=cancel_error(cancel)
                        on_cancel=Callback::new(move |id| {
                            cancel.dispatch(id);
                        })
                    />
                }
                .into_any()
            }
        }}
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Shown {
    Loading,
    NotANumber,
    Failed(i64, ApiError),
    Diagnostic,
}

fn cancel_error(cancel: Action<i64, ApiResult<Diagnostic>>) -> Signal<Option<ApiError>> {
    Signal::derive(move || cancel.value().get().and_then(Result::err))
}

/// The diagnostic as it is now; only what changes is drawn again as it changes.
#[component]
fn DiagnosticDetails(
    diagnostic: Memo<Diagnostic>,
    #[prop(into)] cancel: Signal<Option<ApiError>>,
    on_cancel: Callback<i64>,
) -> impl IntoView {
    let Diagnostic {
        id,
        level,
        device,
        duration_s,
        created_at,
        ..
    } = diagnostic.get_untracked();
    let status = Memo::new(move |_| diagnostic.with(|d| (d.status, d.verdict)));
    let error = Memo::new(move |_| diagnostic.with(|d| d.error.clone()));
    let started = Memo::new(move |_| diagnostic.with(|d| d.started_at));
    let finished = Memo::new(move |_| diagnostic.with(|d| d.finished_at));
    let took = move || match (started.get(), finished.get()) {
        (Some(start), Some(end)) => format::elapsed(&start, &end),
        _ => format::UNKNOWN.to_owned(),
    };
    let on = if device == "all" {
        "all devices".to_owned()
    } else {
        device.clone()
    };
    // The devices and their checks are listed from the start; should a server list them
    // only as they begin, the sections are drawn again when their number changes.
    let device_count = Memo::new(move |_| diagnostic.with(|d| d.devices.len()));
    let sections = move || {
        (0..device_count.get())
            .map(|index| view! { <DeviceSection diagnostic index /> })
            .collect_view()
    };
    view! {
        <header class="job-header">
            <h1>{format!("Diagnostic {id}")}</h1>
            <p class="job-status" data-testid="diagnostic-status" role="status">
                {move || {
                    let (status, verdict) = status.get();
                    view! { <DiagnosticBadge status verdict /> }
                }}
            </p>
            <Show when=move || !status.get().0.is_terminal()>
                <button
                    type="button"
                    class="danger"
                    data-testid="diagnostic-cancel"
                    on:click=move |_| on_cancel.run(id)
                >
                    "Cancel"
                </button>
            </Show>
        </header>
        {move || cancel.get().map(|error| view! { <ErrorNotice error /> })}
        <Show when=move || status.get().0 == DiagnosticStatus::Queued>
            <p class="help">"Waiting for the device's running job: a diagnostic holds the device alone."</p>
        </Show>
        {move || {
            error
                .get()
                .map(|error| view! { <div class="notice error" role="alert" data-testid="diagnostic-error">{error}</div> })
        }}
        <dl class="facts diagnostic-facts">
            <dt>"Level"</dt>
            <dd>{diag::level_title(level)}</dd>
            <dt>"On"</dt>
            <dd>{on}</dd>
            {duration_s.map(|s| view! { <dt>"Stress time"</dt> <dd>{format!("{} per device", format::span(s))}</dd> })}
            <dt>"Created"</dt>
            <dd>{format::local_time(&created_at)}</dd>
            <dt>"Finished"</dt>
            <dd>{move || format::or_dash(finished.get().as_ref().map(format::local_time))}</dd>
            <dt>"Took"</dt>
            <dd>{took}</dd>
        </dl>
        {sections}
        <p><a href="/diagnostics">"All diagnostics"</a></p>
    }
}

/// One device's part: its verdict and every check in the order they run.
#[component]
fn DeviceSection(diagnostic: Memo<Diagnostic>, index: usize) -> impl IntoView {
    let part = Memo::new(move |_| diagnostic.with(|d| d.devices.get(index).cloned()));
    let first = part.get_untracked()?;
    let status = Memo::new(move |_| part.with(|p| p.as_ref().map(|p| (p.status, p.verdict))));
    let done = Memo::new(move |_| part.with(|p| p.as_ref().map(|p| diag::checks_done(&p.checks))));
    let error = Memo::new(move |_| part.with(|p| p.as_ref().and_then(|p| p.error.clone())));
    let heading_id = format!("diag-device-{index}");
    let labelled_by = heading_id.clone();
    let check_count = Memo::new(move |_| part.with(|p| p.as_ref().map_or(0, |p| p.checks.len())));
    let checks = move || {
        (0..check_count.get())
            .map(|check| view! { <CheckView part check /> })
            .collect_view()
    };
    Some(view! {
        <section
            class="card diag-device"
            data-testid=format!("diag-device-{}", first.device)
            aria-labelledby=labelled_by
        >
            <header class="card-header">
                <h2 id=heading_id>
                    {first.name.clone()} " " <code>{first.device.clone()}</code>
                </h2>
                {move || status.get().map(|(status, verdict)| view! { <DiagnosticBadge status verdict /> })}
            </header>
            {first.uuid.clone().map(|uuid| view! { <p class="device-id">{uuid}</p> })}
            <p class="help checks-done">{move || done.get()}</p>
            {move || error.get().map(|error| view! { <div class="notice error" role="alert">{error}</div> })}
            <ol class="checks">{checks}</ol>
        </section>
    })
}

/// One check: where it is, its verdict and why, the figures behind it, and a stress run's
/// charts.
#[component]
fn CheckView(
    part: Memo<Option<gpulab_shared::diag::DeviceDiagnostic>>,
    check: usize,
) -> impl IntoView {
    let result =
        Memo::new(move |_| part.with(|p| p.as_ref().and_then(|p| p.checks.get(check).cloned())));
    let first = result.get_untracked()?;
    let ended =
        Memo::new(move |_| part.with(|p| p.as_ref().is_some_and(|p| p.status.is_terminal())));
    let state =
        Memo::new(move |_| result.with(|r| r.as_ref().map(|r| (r.state, r.verdict, r.progress))));
    let summary = Memo::new(move |_| {
        result.with(|r| {
            r.as_ref()
                .filter(|r| diag::summary_adds(&r.summary, r.reason.as_deref()))
                .map(|r| r.summary.clone())
        })
    });
    let reason = Memo::new(move |_| {
        result.with(|r| {
            r.as_ref()
                .and_then(|r| r.reason.clone().map(|reason| (r.verdict, reason)))
        })
    });
    let evidence = Memo::new(move |_| {
        result.with(|r| r.as_ref().map(|r| r.evidence.clone()).unwrap_or_default())
    });
    let series = Memo::new(move |_| {
        result.with(|r| r.as_ref().map(|r| r.series.clone()).unwrap_or_default())
    });
    let took = Memo::new(move |_| result.with(|r| r.as_ref().and_then(|r| r.duration_s)));
    let heading_id = format!("check-{}-{}", first.check, check);
    let labelled_by = heading_id.clone();
    let title = first.title.clone();
    let check_id = first.check.clone();
    Some(view! {
        <li
            class="check"
            data-testid="check"
            data-check=first.check.clone()
            data-state=move || state.get().map(|(s, _, _)| state_name(s))
            data-verdict=move || state.get().and_then(|(_, v, _)| v).map(Verdict::as_str)
            aria-labelledby=labelled_by
        >
            <div class="check-header">
                <h3 id=heading_id>{first.title.clone()}</h3>
                {move || state.get().map(|(state, verdict, progress)| view! { <CheckBadge state verdict progress ended=ended.get() /> })}
                <span class="help">{move || took.get().map(diag::seconds)}</span>
            </div>
            {move || {
                state
                    .get()
                    .and_then(|(s, _, p)| (s == CheckState::Running && !ended.get()).then_some(p).flatten())
                    .map(|share| view! {
                        <progress
                            class="check-progress"
                            max="1"
                            value=share.to_string()
                            aria-label=format!("{title}: {}", format::percent(share))
                        ></progress>
                    })
            }}
            {move || summary.get().map(|s| view! { <p class="check-summary">{s}</p> })}
            {move || reason.get().map(|(verdict, reason)| {
                let class = match verdict {
                    Some(Verdict::Fail) => "notice error",
                    Some(Verdict::Warn) | Some(Verdict::Skip) => "notice warn",
                    _ => "notice",
                };
                let why = match verdict {
                    Some(Verdict::Skip) => "Skipped: ",
                    Some(Verdict::Fail) => "Failed: ",
                    Some(Verdict::Warn) => "Warning: ",
                    _ => "Why: ",
                };
                view! {
                    <p class=format!("{class} check-reason") data-testid="check-reason">
                        <strong>{why}</strong>
                        {reason}
                    </p>
                }
            })}
            <Show when=move || evidence.with(|e| !e.is_empty())>
                <EvidenceTable evidence />
            </Show>
            <Show when=move || series.with(|s| !s.is_empty())>
                <StressCharts check=check_id.clone() series />
            </Show>
        </li>
    })
}

fn state_name(state: CheckState) -> &'static str {
    match state {
        CheckState::Waiting => "waiting",
        CheckState::Running => "running",
        CheckState::Done => "done",
    }
}

/// The figures behind a verdict: what was measured, against what and why that.
#[component]
fn EvidenceTable(evidence: Memo<Vec<gpulab_shared::diag::Evidence>>) -> impl IntoView {
    view! {
        <div class="table-scroll">
            <table class="evidence" data-testid="evidence">
                <thead>
                    <tr>
                        <th scope="col">"Figure"</th>
                        <th scope="col" class="num">"Measured"</th>
                        <th scope="col" class="num">"Expected"</th>
                        <th scope="col">"Bound"</th>
                        <th scope="col">"Source"</th>
                        <th scope="col">"Verdict"</th>
                    </tr>
                </thead>
                <tbody>
                    {move || {
                        evidence
                            .get()
                            .into_iter()
                            .map(|e| view! {
                                <tr data-testid="evidence-row" data-verdict=e.verdict.as_str()>
                                    <th scope="row">{e.name.clone()}</th>
                                    <td class=figure_class(e.measured_text.is_some()) data-label="Measured">
                                        {diag::measured(&e)}
                                    </td>
                                    <td class=figure_class(e.expected_text.is_some()) data-label="Expected">
                                        {diag::expected(&e)}
                                    </td>
                                    <td data-label="Bound">{diag::bound_text(e.bound)}</td>
                                    <td class="source" data-label="Source">{format::or_dash(e.source.clone())}</td>
                                    <td data-label="Verdict"><VerdictBadge verdict=e.verdict /></td>
                                </tr>
                            })
                            .collect_view()
                    }}
                </tbody>
            </table>
        </div>
    }
}

/// A figure's cell: numbers line up on the right; a text (a version, a mode) wraps.
fn figure_class(is_text: bool) -> &'static str {
    if is_text {
        "text"
    } else {
        "num"
    }
}

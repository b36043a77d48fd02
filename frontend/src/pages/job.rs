use gpulab_shared::{Job, JobRequest, JobStatus};
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::api::{self, ApiError, ApiResult};
use crate::components::{CopyAsCurl, ErrorNotice, JobResultView, StatusBadge};
use crate::custom_kernel::annotate::{annotate, Segment, SourceLine};
use crate::custom_kernel::compile_log::{self, CompileDiagnostic, Severity};
use crate::custom_kernel::KERNEL as CUSTOM_KERNEL;
use crate::format;
use crate::hooks::use_title;
use crate::live::{fresher, use_live_events};
use crate::token::use_api_token;

/// `/jobs/:id`: one job, followed live through the server's `job` events until it ends.
#[component]
pub fn JobPage() -> impl IntoView {
    let live = use_live_events();
    let params = use_params_map();
    let id = Memo::new(move |_| params.with(|p| p.get("id").and_then(|id| id.parse::<i64>().ok())));
    // One fetch once the event stream listens, and one more each time it reopens, for the
    // events it missed while it was down.
    let fetched = LocalResource::new(move || {
        let synced = live.sync().is_some();
        let id = id.get();
        async move {
            match id {
                Some(id) if synced => Some(api::job(id).await),
                _ => None,
            }
        }
    });
    let cancel = Action::new_local(|id: &i64| api::cancel_job(*id));
    // The latest version from wherever it came: the fetch, the stream, the answer to a
    // cancel, or what was shown before (so a failed refetch does not blank the page).
    let job = Memo::new(move |shown: Option<&Option<Job>>| {
        let id = id.get()?;
        let of_this = |job: &Job| job.id == id;
        let shown = shown.cloned().flatten().filter(of_this);
        let fetched = fetched.with(|f| match f {
            Some(Some(Ok(job))) if of_this(job) => Some(job.clone()),
            _ => None,
        });
        let cancelled = cancel.value().with(|c| match c {
            Some(Ok(job)) if of_this(job) => Some(job.clone()),
            _ => None,
        });
        [shown, fetched, live.job(id), cancelled]
            .into_iter()
            .flatten()
            .reduce(fresher)
    });
    let state = Memo::new(move |_| {
        let Some(id) = id.get() else {
            return Shown::NotAJobNumber;
        };
        if job.with(Option::is_some) {
            return Shown::Job(id);
        }
        match fetched.get() {
            Some(Some(Err(error))) => Shown::Failed(id, error),
            _ => Shown::Loading,
        }
    });

    use_title(
        move || match (id.get(), job.with(|j| j.as_ref().map(|j| j.status))) {
            (Some(id), Some(status)) => format!("Job {id} ({})", status.as_str()),
            (Some(id), None) => format!("Job {id}"),
            (None, _) => "Job".to_owned(),
        },
    );

    view! {
        {move || match state.get() {
            Shown::Loading => view! { <p class="loading">"Loading the job…"</p> }.into_any(),
            Shown::NotAJobNumber => view! {
                <h1>"No such job"</h1>
                <p>"That is not a job number. " <a href="/jobs">"See all jobs"</a> "."</p>
            }
            .into_any(),
            Shown::Failed(id, error) => view! {
                <h1>{format!("Job {id}")}</h1>
                <ErrorNotice error />
            }
            .into_any(),
            Shown::Job(_) => {
                let Some(first) = job.get_untracked() else {
                    return view! { <p class="loading">"Loading the job…"</p> }.into_any();
                };
                let current = Memo::new(move |_| job.get().unwrap_or_else(|| first.clone()));
                view! {
                    <JobDetails
                        job=current
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

/// What the page shows.
#[derive(Debug, Clone, PartialEq)]
enum Shown {
    Loading,
    NotAJobNumber,
    Failed(i64, ApiError),
    Job(i64),
}

/// What went wrong with the last cancel, to show beside the button.
fn cancel_error(cancel: Action<i64, ApiResult<Job>>) -> Signal<Option<ApiError>> {
    Signal::derive(move || cancel.value().get().and_then(Result::err))
}

/// The job as it is now. Only what changes is drawn again as it changes, so a progress
/// event does not rebuild the page (or take the keyboard focus off the Cancel button).
#[component]
fn JobDetails(
    job: Memo<Job>,
    #[prop(into)] cancel: Signal<Option<ApiError>>,
    on_cancel: Callback<i64>,
) -> impl IntoView {
    let Job {
        id,
        kernel,
        device,
        params,
        repetitions,
        timeout_s,
        created_at,
        ..
    } = job.get_untracked();
    let status = Memo::new(move |_| job.with(|j| j.status));
    let progress =
        Memo::new(move |_| job.with(|j| j.progress.filter(|_| j.status == JobStatus::Running)));
    let error = Memo::new(move |_| job.with(|j| j.error.clone()));
    let result = Memo::new(move |_| job.with(|j| j.result.clone()));
    let started = Memo::new(move |_| job.with(|j| j.started_at));
    let finished = Memo::new(move |_| job.with(|j| j.finished_at));
    let took = move || match (started.get(), finished.get()) {
        (Some(start), Some(end)) => format::elapsed(&start, &end),
        _ => format::UNKNOWN.to_owned(),
    };
    // The same job again, from a shell: what it ran with, defaults filled in, and the API
    // token once one is set.
    let token = use_api_token();
    let origin = window().location().origin().unwrap_or_default();
    let request = JobRequest {
        kernel: kernel.clone(),
        device: device.clone(),
        params: Some(params.clone()),
        repetitions: Some(repetitions),
        timeout_s: Some(timeout_s),
    };
    let curl =
        Signal::derive(move || api::curl_create_job(&origin, &request, token.get().as_deref()));
    // A custom kernel's source is shown in a card of its own, with the compiler's messages.
    let source = (kernel == CUSTOM_KERNEL)
        .then(|| params.get("source")?.as_str().map(str::to_owned))
        .flatten();
    let params = params
        .iter()
        .map(|(name, value)| {
            let shown = match (name.as_str(), &source) {
                ("source", Some(source)) => match source.lines().count() {
                    1 => "1 line, shown below".to_owned(),
                    n => format!("{n} lines, shown below"),
                },
                _ => format::json_value(value),
            };
            view! {
                <dt>{name.clone()}</dt>
                <dd>{shown}</dd>
            }
        })
        .collect_view();
    let waiting_for = device.clone();
    view! {
        <header class="job-header">
            <h1>{format!("Job {id}")}</h1>
            <p class="job-status" data-testid="job-status" role="status">
                {move || view! { <StatusBadge status=status.get() /> }}
            </p>
            <Show when=move || !status.get().is_finished()>
                <button
                    type="button"
                    class="danger"
                    data-testid="job-cancel"
                    on:click=move |_| on_cancel.run(id)
                >
                    "Cancel"
                </button>
            </Show>
        </header>
        {move || cancel.get().map(|error| view! { <ErrorNotice error /> })}
        <Show when=move || status.get() == JobStatus::Queued>
            <p class="help">
                {format!("Waiting for {waiting_for}, which runs one job at a time.")}
            </p>
        </Show>
        <Show when=move || progress.with(Option::is_some)>
            <div class="progress" data-testid="job-progress">
                <label for="job-progress">
                    {move || {
                        progress
                            .get()
                            .map(|p| {
                                let share = f64::from(p.done) / f64::from(p.total.max(1));
                                format!("{} of {} runs ({})", p.done, p.total, format::percent(share))
                            })
                    }}
                </label>
                <progress
                    id="job-progress"
                    max=move || progress.get().map(|p| p.total.to_string())
                    value=move || progress.get().map(|p| p.done.to_string())
                ></progress>
            </div>
        </Show>
        {move || {
            error
                .get()
                .map(|error| {
                    view! {
                        <div class="notice error" data-testid="job-error" role="alert">
                            <ErrorText text=error />
                        </div>
                    }
                })
        }}
        <div class="cards">
            <section class="card" aria-labelledby="job-heading">
                <h2 id="job-heading">{format!("{kernel} on {device}")}</h2>
                <dl class="facts">
                    {params}
                    <dt>"Repetitions"</dt>
                    <dd>{repetitions}</dd>
                    <dt>"Time limit"</dt>
                    <dd>{format!("{timeout_s} s")}</dd>
                    <dt>"Created"</dt>
                    <dd>{format::local_time(&created_at)}</dd>
                    <dt>"Started"</dt>
                    <dd>{move || format::or_dash(started.get().as_ref().map(format::local_time))}</dd>
                    <dt>"Finished"</dt>
                    <dd>{move || format::or_dash(finished.get().as_ref().map(format::local_time))}</dd>
                    <dt>"Took"</dt>
                    <dd>{took}</dd>
                </dl>
                <CopyAsCurl command=curl />
            </section>
            {move || {
                let device = device.clone();
                result.get().map(|result| view! { <JobResultView job_id=id result device /> })
            }}
        </div>
        {source.map(|source| view! { <SourceListing source error /> })}
    }
}

/// A custom kernel's source with line numbers, each compiler message of the job's error
/// under the line it is about, the column it names marked.
#[component]
fn SourceListing(source: String, #[prop(into)] error: Signal<Option<String>>) -> impl IntoView {
    let annotated = Memo::new(move |_| {
        let diagnostics = error.with(|e| e.as_deref().map(compile_log::parse).unwrap_or_default());
        annotate(&source, &diagnostics)
    });
    let summary = move || {
        let (errors, warnings) = annotated.with(|a| a.counts());
        let count = |n: usize, what: &str| match n {
            1 => format!("1 {what}"),
            n => format!("{n} {what}s"),
        };
        let reported = match (errors, warnings) {
            (0, 0) => return None,
            (e, 0) => count(e, "error"),
            (0, w) => count(w, "warning"),
            (e, w) => format!("{} and {}", count(e, "error"), count(w, "warning")),
        };
        Some(format!("The compiler reported {reported}."))
    };
    view! {
        <section class="card source-card" aria-labelledby="source-heading" data-testid="job-source">
            <h2 id="source-heading">"Source"</h2>
            {move || summary().map(|text| view! { <p class="help" data-testid="source-summary">{text}</p> })}
            <div class="source-listing" role="group" aria-label="The kernel's source, line by line">
                {move || annotated.with(|a| a.lines.iter().map(source_line).collect_view())}
            </div>
            {move || {
                let elsewhere = annotated.with(|a| a.elsewhere.clone());
                (!elsewhere.is_empty()).then(|| view! {
                    <p class="help">"About no line of this source:"</p>
                    <ul class="source-elsewhere" data-testid="source-elsewhere">
                        {elsewhere.into_iter().map(|d| view! { <li>{elsewhere_text(&d)}</li> }).collect_view()}
                    </ul>
                })
            }}
        </section>
    }
}

/// One line of the listing and the messages under it.
fn source_line(line: &SourceLine) -> impl IntoView {
    let number = line.number;
    let severity = line.severity().map(severity_name);
    let segments = line
        .segments
        .iter()
        .map(|Segment { text, mark }| match mark {
            Some(severity) => view! {
                <mark class="src-at" data-severity=severity_name(*severity)>{text.clone()}</mark>
            }
            .into_any(),
            None => text.clone().into_any(),
        })
        .collect_view();
    let notes = line
        .notes
        .iter()
        .map(|note| {
            let name = severity_name(note.severity);
            let at = note
                .column
                .map(|c| format!("line {number}, column {c}"))
                .unwrap_or_else(|| format!("line {number}"));
            view! {
                <div
                    class="src-note"
                    data-severity=name
                    data-testid="source-note"
                    data-line=number
                    data-column=note.column
                >
                    <span class="src-gutter" aria-hidden="true">
                        {if note.severity == Severity::Error { "✖" } else { "⚠" }}
                    </span>
                    <span class="src-message">
                        <strong>{name}</strong>
                        <span class="src-where">{format!(" ({at}): ")}</span>
                        {note.message.clone()}
                    </span>
                </div>
            }
        })
        .collect_view();
    view! {
        <div class="src-line" data-line=number data-severity=severity>
            <span class="src-gutter">{number}</span>
            <code class="src-text">{segments}</code>
        </div>
        {notes}
    }
}

fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// A message about no line of the source, as the compiler put it.
fn elsewhere_text(d: &CompileDiagnostic) -> String {
    let at = match d.column {
        Some(column) => format!("{}({}, {column})", d.file, d.line),
        None => format!("{}({})", d.file, d.line),
    };
    format!("{at}: {}: {}", severity_name(d.severity), d.message)
}

/// Why a job failed, line for line as the server wrote it (a compiler's log keeps its
/// layout), with the compiler's `file(line): error: …` lines marked out from the source
/// lines and carets it echoes.
#[component]
fn ErrorText(text: String) -> impl IntoView {
    let lines = text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let newline = if i == 0 { "" } else { "\n" };
            let line = line.to_owned();
            if is_compiler_message(&line) {
                view! { {newline} <strong class="diagnostic">{line}</strong> }.into_any()
            } else {
                view! { {newline} {line} }.into_any()
            }
        })
        .collect_view();
    view! { <pre class="error-text">{lines}</pre> }
}

/// Whether `line` is a message such as NVRTC writes:
/// `kernel.cu(12): error: identifier "x" is undefined`.
fn is_compiler_message(line: &str) -> bool {
    ["): error", "): catastrophic error", "): warning"]
        .iter()
        .any(|marker| line.contains(marker))
}

use std::collections::BTreeMap;

use gpulab_shared::{Job, JobPage, JobStatus};
use leptos::prelude::*;

use crate::api::{self, ApiError, JobFilter};
use crate::components::{ErrorNotice, StatusBadge};
use crate::format;
use crate::hooks::use_title;
use crate::live::{fresher, use_live_events};

/// How many jobs one page of the table shows.
const PAGE_SIZE: u32 = 25;

/// `/jobs`: recent jobs, newest first, filtered and paged, kept up to date by the server's
/// `job` events: rows change as their jobs do, and new jobs join the first page.
#[component]
pub fn JobsPage() -> impl IntoView {
    use_title(|| "Jobs".to_owned());
    let live = use_live_events();
    let filter = RwSignal::new(JobFilter::default());
    // The cursors of the pages before the current one, for "Newer", and the current one.
    let newer = RwSignal::new(Vec::<Option<String>>::new());
    let cursor = RwSignal::new(None::<String>);

    // Fetched once the event stream listens, and again when it reopens.
    let page = LocalResource::new(move || {
        let synced = live.sync().is_some();
        let (filter, cursor) = (filter.get(), cursor.get());
        async move {
            if synced {
                Some(api::jobs(filter, cursor, PAGE_SIZE).await)
            } else {
                None
            }
        }
    });
    let loaded = Memo::new(move |_| {
        page.with(|page| match page {
            None | Some(None) => Loaded::Not,
            Some(Some(Err(error))) => Loaded::Failed(error.clone()),
            Some(Some(Ok(_))) => Loaded::Yes,
        })
    });
    let rows = Memo::new(move |_| {
        page.with(|page| match page {
            Some(Some(Ok(page))) => live.with_jobs(|pushed| {
                filter.with(|filter| live_rows(page, pushed, filter, cursor.with(Option::is_none)))
            }),
            _ => Vec::new(),
        })
    });
    let older = Memo::new(move |_| {
        page.with(|page| match page {
            Some(Some(Ok(page))) => page.next_cursor.clone(),
            _ => None,
        })
    });
    // Filters come from the catalog and the inventory; without them the selects offer "any".
    let kernels = LocalResource::new(api::kernels);
    let devices = LocalResource::new(api::devices);

    let set_filter = move |change: &dyn Fn(&mut JobFilter)| {
        filter.update(|f| change(f));
        newer.set(Vec::new());
        cursor.set(None);
    };
    let go_older = move |next: String| {
        newer.update(|stack| stack.push(cursor.get_untracked()));
        cursor.set(Some(next));
    };
    let go_newer = move || {
        let previous = newer.try_update(|stack| stack.pop()).flatten().flatten();
        cursor.set(previous);
    };
    let kernel_names = move || {
        kernels
            .get()
            .and_then(Result::ok)
            .unwrap_or_default()
            .into_iter()
            .map(|k| k.name)
            .collect::<Vec<_>>()
    };
    let device_ids = move || {
        devices
            .get()
            .and_then(Result::ok)
            .unwrap_or_default()
            .into_iter()
            .map(|d| d.id)
            .collect::<Vec<_>>()
    };

    view! {
        <h1>"Jobs"</h1>
        <form class="filters" aria-label="Filter jobs" on:submit=|ev| ev.prevent_default()>
            <FilterSelect
                name="status"
                label="Status"
                options=Signal::derive(|| JobStatus::ALL.iter().map(|s| s.as_str().to_owned()).collect())
                on_change=Callback::new(move |v: Option<String>| {
                    set_filter(&|f| f.status = v.as_deref().and_then(JobStatus::parse))
                })
            />
            <FilterSelect
                name="device"
                label="Device"
                options=Signal::derive(device_ids)
                on_change=Callback::new(move |v: Option<String>| set_filter(&|f| f.device = v.clone()))
            />
            <FilterSelect
                name="kernel"
                label="Kernel"
                options=Signal::derive(kernel_names)
                on_change=Callback::new(move |v: Option<String>| set_filter(&|f| f.kernel = v.clone()))
            />
        </form>
        {move || match loaded.get() {
            Loaded::Not => view! { <p class="loading">"Loading jobs…"</p> }.into_any(),
            Loaded::Failed(error) => view! { <ErrorNotice error /> }.into_any(),
            Loaded::Yes => view! {
                <Show
                    when=move || rows.with(|rows| !rows.is_empty())
                    fallback=move || {
                        if filter.with(|f| *f == JobFilter::default()) && cursor.with(Option::is_none) {
                            view! {
                                <p class="empty">"No jobs yet. " <a href="/launch">"Launch one"</a> "."</p>
                            }
                            .into_any()
                        } else {
                            view! { <p class="empty">"No jobs match these filters."</p> }.into_any()
                        }
                    }
                >
                    <JobTable rows />
                </Show>
                <nav class="pager" aria-label="Pages of jobs">
                    <span class="help" data-testid="jobs-page">
                        {move || format!("Page {}", newer.with(Vec::len) + 1)}
                    </span>
                    <button
                        type="button"
                        data-testid="jobs-newer"
                        disabled=move || newer.with(Vec::is_empty)
                        on:click=move |_| go_newer()
                    >
                        "← Newer"
                    </button>
                    <button
                        type="button"
                        data-testid="jobs-older"
                        disabled=move || older.with(Option::is_none)
                        on:click=move |_| {
                            if let Some(next) = older.get_untracked() {
                                go_older(next);
                            }
                        }
                    >
                        "Older →"
                    </button>
                </nav>
            }
            .into_any(),
        }}
    }
}

/// Where the fetch of the current page stands.
#[derive(Debug, Clone, PartialEq)]
enum Loaded {
    Not,
    Failed(ApiError),
    Yes,
}

/// The page as the server answered it, brought up to date with the jobs the stream pushed
/// since: rows take the later version of their job, rows whose job no longer matches the
/// filters leave, and jobs that now match join in their place by id; on the first page,
/// new jobs join at the top. Newest first.
fn live_rows(
    page: &JobPage,
    pushed: &BTreeMap<i64, Job>,
    filter: &JobFilter,
    first_page: bool,
) -> Vec<Job> {
    let ids = || page.jobs.iter().map(|job| job.id);
    // The ids this page covers: from its oldest row (all older ones when it is the last
    // page) to its newest (or any newer when it is the first).
    let oldest = if page.next_cursor.is_some() {
        ids().min().unwrap_or(i64::MIN)
    } else {
        i64::MIN
    };
    let newest = if first_page {
        i64::MAX
    } else {
        ids().max().unwrap_or(i64::MIN)
    };
    let mut rows: BTreeMap<i64, Job> = page.jobs.iter().map(|j| (j.id, j.clone())).collect();
    if oldest <= newest {
        for (&id, job) in pushed.range(oldest..=newest) {
            let latest = match rows.remove(&id) {
                Some(fetched) => fresher(fetched, job.clone()),
                None => job.clone(),
            };
            rows.insert(id, latest);
        }
    }
    rows.into_values()
        .rev()
        .filter(|job| filter.matches(job))
        .collect()
}

/// A select of "any" or one value, reporting `None` for "any".
#[component]
fn FilterSelect(
    name: &'static str,
    label: &'static str,
    #[prop(into)] options: Signal<Vec<String>>,
    on_change: Callback<Option<String>>,
) -> impl IntoView {
    let id = format!("filter-{name}");
    view! {
        <div class="field inline">
            <label for=id.clone()>{label}</label>
            <select
                id=id
                name=name
                on:change=move |ev| {
                    let value = event_target_value(&ev);
                    on_change.run((!value.is_empty()).then_some(value));
                }
            >
                <option value="">"any"</option>
                {move || {
                    options
                        .get()
                        .into_iter()
                        .map(|o| view! { <option value=o.clone()>{o.clone()}</option> })
                        .collect_view()
                }}
            </select>
        </div>
    }
}

#[component]
fn JobTable(rows: Memo<Vec<Job>>) -> impl IntoView {
    view! {
        <div class="table-scroll">
            <table class="jobs">
                <thead>
                    <tr>
                        <th scope="col">"Job"</th>
                        <th scope="col">"Status"</th>
                        <th scope="col">"Kernel"</th>
                        <th scope="col">"Device"</th>
                        <th scope="col" class="num">"Duration"</th>
                        <th scope="col" class="num">"Throughput"</th>
                        <th scope="col">"Verification"</th>
                        <th scope="col">"Created"</th>
                    </tr>
                </thead>
                <tbody>
                    // A row is drawn again only when its job moves on.
                    <For
                        each=move || rows.get()
                        key=|job| (job.id, job.status, job.progress.map(|p| p.done))
                        children=|job| view! { <JobRow job /> }
                    />
                </tbody>
            </table>
        </div>
    }
}

#[component]
fn JobRow(job: Job) -> impl IntoView {
    let took = match (&job.started_at, &job.finished_at) {
        (Some(start), Some(end)) => format::elapsed(start, end),
        _ => match job.progress {
            Some(p) if job.status == JobStatus::Running => format!("{}/{} runs", p.done, p.total),
            _ => format::UNKNOWN.to_owned(),
        },
    };
    let throughput = format::or_dash(job.result.as_ref().map(|r| {
        format!(
            "{} {}",
            format::number(r.throughput.value),
            r.throughput.unit
        )
    }));
    let verification = match job.result.as_ref().map(|r| r.verification.passed) {
        Some(true) => view! { <span class="verdict passed">"✓ passed"</span> }.into_any(),
        Some(false) => view! { <span class="verdict failed">"✗ failed"</span> }.into_any(),
        None => format::UNKNOWN.into_any(),
    };
    view! {
        <tr data-testid="job-row" data-job-id=job.id.to_string() data-status=job.status.as_str()>
            <td>
                <a href=format!("/jobs/{}", job.id)>{format!("#{}", job.id)}</a>
            </td>
            <td>
                <StatusBadge status=job.status />
            </td>
            <td>{job.kernel}</td>
            <td>
                <code>{job.device}</code>
            </td>
            // The labels head the cells where a phone shows each row as a block.
            <td class="num" data-label="Duration">{took}</td>
            <td class="num" data-label="Throughput">{throughput}</td>
            <td data-label="Verification">{verification}</td>
            <td class="created" data-label="Created">{format::local_time(&job.created_at)}</td>
        </tr>
    }
}

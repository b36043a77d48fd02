use std::time::Duration;

use gpulab_shared::{Job, JobStatus};
use leptos::prelude::*;

use crate::api::{self, JobFilter};
use crate::components::{ErrorNotice, StatusBadge};
use crate::format;
use crate::hooks::{use_interval, use_title};

/// How many jobs one page of the table shows.
const PAGE_SIZE: u32 = 25;
/// How often the table asks for news (until the server pushes them).
const POLL_PERIOD: Duration = Duration::from_secs(1);

/// `/jobs`: recent jobs, newest first, filtered and paged, refreshed every second.
#[component]
pub fn JobsPage() -> impl IntoView {
    use_title(|| "Jobs".to_owned());
    let filter = RwSignal::new(JobFilter::default());
    // The cursors of the pages before the current one, for "Newer", and the current one.
    let newer = RwSignal::new(Vec::<Option<String>>::new());
    let cursor = RwSignal::new(None::<String>);
    let tick = RwSignal::new(0_u64);
    use_interval(POLL_PERIOD, move || {
        tick.try_update(|n| *n += 1);
    });

    let page = LocalResource::new(move || {
        tick.track();
        api::jobs(filter.get(), cursor.get(), PAGE_SIZE)
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
        {move || match page.get() {
            None => view! { <p class="loading">"Loading jobs…"</p> }.into_any(),
            Some(Err(error)) => view! { <ErrorNotice error /> }.into_any(),
            Some(Ok(page)) if page.jobs.is_empty() => view! {
                <p class="empty">
                    "No jobs yet. " <a href="/launch">"Launch one"</a> "."
                </p>
            }
            .into_any(),
            Some(Ok(page)) => {
                let older = page.next_cursor.clone();
                view! {
                    <JobTable jobs=page.jobs />
                    <nav class="pager" aria-label="Pages of jobs">
                        <button
                            type="button"
                            disabled=move || newer.with(Vec::is_empty)
                            on:click=move |_| go_newer()
                        >
                            "← Newer"
                        </button>
                        <button
                            type="button"
                            data-testid="jobs-older"
                            disabled=older.is_none()
                            on:click=move |_| {
                                if let Some(next) = older.clone() {
                                    go_older(next);
                                }
                            }
                        >
                            "Older →"
                        </button>
                    </nav>
                }
                .into_any()
            }
        }}
    }
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
fn JobTable(jobs: Vec<Job>) -> impl IntoView {
    view! {
        <div class="table-scroll">
            <table class="jobs">
                <thead>
                    <tr>
                        <th scope="col">"Job"</th>
                        <th scope="col">"Kernel"</th>
                        <th scope="col">"Device"</th>
                        <th scope="col">"Status"</th>
                        <th scope="col">"Created"</th>
                        <th scope="col">"Took"</th>
                        <th scope="col" class="num">"Median"</th>
                        <th scope="col" class="num">"Throughput"</th>
                    </tr>
                </thead>
                <tbody>{jobs.into_iter().map(|job| view! { <JobRow job /> }).collect_view()}</tbody>
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
    let median = format::or_dash(
        job.result
            .as_ref()
            .map(|r| format::millis(r.timing.median_ms)),
    );
    let throughput = format::or_dash(job.result.as_ref().map(|r| {
        format!(
            "{} {}",
            format::number(r.throughput.value),
            r.throughput.unit
        )
    }));
    view! {
        <tr data-testid="job-row" data-job-id=job.id.to_string() data-status=job.status.as_str()>
            <td>
                <a href=format!("/jobs/{}", job.id)>{format!("#{}", job.id)}</a>
            </td>
            <td>{job.kernel}</td>
            <td>
                <code>{job.device}</code>
            </td>
            <td>
                <StatusBadge status=job.status />
            </td>
            <td>{format::local_time(&job.created_at)}</td>
            <td>{took}</td>
            <td class="num">{median}</td>
            <td class="num">{throughput}</td>
        </tr>
    }
}

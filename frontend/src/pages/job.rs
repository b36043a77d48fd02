use std::time::Duration;

use gpulab_shared::{Job, JobStatus};
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::api::{self, ApiError, ApiResult};
use crate::components::{ErrorNotice, JobResultView, StatusBadge};
use crate::format;
use crate::hooks::{use_interval, use_title};

/// How often an unfinished job is asked for news (until the server pushes them).
const POLL_PERIOD: Duration = Duration::from_millis(500);

/// `/jobs/:id`: one job, followed live until it ends.
#[component]
pub fn JobPage() -> impl IntoView {
    let params = use_params_map();
    let id = Memo::new(move |_| params.with(|p| p.get("id").and_then(|id| id.parse::<i64>().ok())));
    let tick = RwSignal::new(0_u64);
    let job = LocalResource::new(move || {
        tick.track();
        let id = id.get();
        async move {
            match id {
                Some(id) => Some(api::job(id).await),
                None => None,
            }
        }
    });
    use_interval(POLL_PERIOD, move || {
        let settled = job
            .try_with_untracked(|job| match job {
                Some(Some(Ok(job))) => job.status.is_finished(),
                Some(Some(Err(ApiError::Problem(p)))) => p.status == 404,
                Some(None) => true,
                _ => false,
            })
            .unwrap_or(true);
        if !settled {
            tick.try_update(|n| *n += 1);
        }
    });
    let cancel = Action::new_local(|id: &i64| api::cancel_job(*id));
    // The cancelled job comes back in the answer; ask again anyway so nothing is missed.
    Effect::new(move |_| {
        if cancel.version().get() > 0 {
            tick.update(|n| *n += 1);
        }
    });

    use_title(move || match (id.get(), job.get().flatten()) {
        (Some(id), Some(Ok(job))) => format!("Job {id} ({})", job.status.as_str()),
        (Some(id), _) => format!("Job {id}"),
        (None, _) => "Job".to_owned(),
    });

    view! {
        {move || match job.get() {
            None => view! { <p class="loading">"Loading the job…"</p> }.into_any(),
            Some(None) => view! {
                <h1>"No such job"</h1>
                <p>"That is not a job number. " <a href="/jobs">"See all jobs"</a> "."</p>
            }
            .into_any(),
            Some(Some(Err(error))) => view! {
                <h1>{format!("Job {}", id.get().unwrap_or_default())}</h1>
                <ErrorNotice error />
            }
            .into_any(),
            Some(Some(Ok(job))) => view! { <JobDetails job cancel=cancel_result(cancel) on_cancel=Callback::new(move |id| { cancel.dispatch(id); }) /> }.into_any(),
        }}
    }
}

/// What went wrong with the last cancel, to show beside the button.
fn cancel_result(cancel: Action<i64, ApiResult<Job>>) -> Signal<Option<ApiError>> {
    Signal::derive(move || cancel.value().get().and_then(Result::err))
}

#[component]
fn JobDetails(
    job: Job,
    #[prop(into)] cancel: Signal<Option<ApiError>>,
    on_cancel: Callback<i64>,
) -> impl IntoView {
    let id = job.id;
    let running = !job.status.is_finished();
    let progress = job.progress.filter(|_| job.status == JobStatus::Running).map(|p| {
        view! {
            <div class="progress">
                <label for="job-progress">{format!("{} of {} runs", p.done, p.total)}</label>
                <progress id="job-progress" max=p.total.to_string() value=p.done.to_string()></progress>
            </div>
        }
    });
    let params = job
        .params
        .iter()
        .map(|(name, value)| {
            view! {
                <dt>{name.clone()}</dt>
                <dd>{format::json_value(value)}</dd>
            }
        })
        .collect_view();
    let took = match (&job.started_at, &job.finished_at) {
        (Some(start), Some(end)) => Some(format::elapsed(start, end)),
        _ => None,
    };
    view! {
        <header class="job-header">
            <h1>{format!("Job {id}")}</h1>
            <p class="job-status" data-testid="job-status" role="status">
                <StatusBadge status=job.status />
            </p>
            {running
                .then(|| view! {
                    <button type="button" class="danger" data-testid="job-cancel" on:click=move |_| on_cancel.run(id)>
                        "Cancel"
                    </button>
                })}
        </header>
        {move || cancel.get().map(|error| view! { <ErrorNotice error /> })}
        {progress}
        {job.error.clone().map(|error| view! {
            <div class="notice error" data-testid="job-error" role="alert">{error}</div>
        })}
        <div class="cards">
            <section class="card" aria-labelledby="job-heading">
                <h2 id="job-heading">{format!("{} on {}", job.kernel, job.device)}</h2>
                <dl class="facts">
                    {params}
                    <dt>"Repetitions"</dt>
                    <dd>{job.repetitions}</dd>
                    <dt>"Time limit"</dt>
                    <dd>{format!("{} s", job.timeout_s)}</dd>
                    <dt>"Created"</dt>
                    <dd>{format::local_time(&job.created_at)}</dd>
                    <dt>"Started"</dt>
                    <dd>{format::or_dash(job.started_at.as_ref().map(format::local_time))}</dd>
                    <dt>"Finished"</dt>
                    <dd>{format::or_dash(job.finished_at.as_ref().map(format::local_time))}</dd>
                    <dt>"Took"</dt>
                    <dd>{format::or_dash(took)}</dd>
                </dl>
            </section>
            {job.result.map(|result| view! { <JobResultView job_id=id result /> })}
        </div>
    }
}

use std::collections::{BTreeMap, BTreeSet};

use gpulab_shared::{
    CudaStatus, Device, DeviceKind, Job, JobRequest, JobStatus, KernelSpec, Params,
};
use leptos::either::Either;
use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api::{self, ApiError};
use crate::components::{error_list, FieldError};
use crate::format;
use crate::hooks::use_title;
use crate::kernel_form::{eligible, KernelChoice, KernelSelect, ParamFields};
use crate::roofline;
use crate::validate;
use crate::watched_jobs::WatchedJobs;

/// The fields outside `params`, by the names the form's errors use.
const DEVICES: &str = "devices";
const REPETITIONS: &str = "repetitions";

/// `/compare`: one kernel with the same parameters on several devices, their throughput
/// side by side and how many times faster each is than the CPU.
#[component]
pub fn ComparePage() -> impl IntoView {
    use_title(|| "Compare".to_owned());
    let catalog = LocalResource::new(|| async {
        let kernels = api::kernels().await?;
        let devices = api::devices().await?;
        let health = api::health().await?;
        Ok::<_, ApiError>((kernels, devices, health.cuda))
    });
    view! {
        <h1>"Compare devices"</h1>
        <p class="lead">
            "Run one kernel with the same parameters on several devices, and see how their throughput compares."
        </p>
        <Suspense fallback=|| view! { <p class="loading">"Loading the kernels and devices…"</p> }>
            <ErrorBoundary fallback=error_list>
                {move || Suspend::new(async move {
                    let (kernels, devices, cuda) = catalog.await?;
                    Ok::<_, ApiError>(view! { <CompareForm kernels devices cuda /> })
                })}
            </ErrorBoundary>
        </Suspense>
    }
}

/// One device's part of a comparison.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    device: Device,
    state: RunState,
}

#[derive(Debug, Clone, PartialEq)]
enum RunState {
    /// The job request is on its way.
    Sending,
    /// The server queued job `id`.
    Queued(i64),
    /// The server refused the job.
    Refused(ApiError),
}

/// What was run, for the heading of the results: the form may change after it.
#[derive(Debug, Clone, PartialEq)]
struct Comparison {
    /// Counts the comparisons of the page, so a late answer finds its own.
    number: u32,
    kernel: String,
    params: Params,
    repetitions: u32,
    runs: Vec<Run>,
}

#[component]
fn CompareForm(kernels: Vec<KernelSpec>, devices: Vec<Device>, cuda: CudaStatus) -> impl IntoView {
    let Some(first) = kernels
        .iter()
        .find(|k| k.devices.len() > 1)
        .or_else(|| kernels.first())
        .cloned()
    else {
        return Either::Left(view! { <p class="notice warn">"The server offers no kernels."</p> });
    };
    let has_gpu = devices.iter().any(|d| d.kind == DeviceKind::Cuda);
    let ticked = RwSignal::new(eligible_ids(&first, &devices));
    let choice = KernelChoice::new(kernels, devices, &first);
    let KernelChoice { choices, .. } = choice;
    // An enum whose values depend on the device offers what every ticked device runs.
    Effect::new(move |_| choice.set_devices(ticked.get().into_iter().collect()));
    let repetitions = RwSignal::new("10".to_owned());
    let refused = RwSignal::new(false);
    let comparison = RwSignal::new(None::<Comparison>);
    let watched = WatchedJobs::new();

    let errors = Memo::new(move |_| {
        let mut errors = choice.param_errors();
        if choices.with(Vec::is_empty) {
            errors.insert(
                DEVICES.to_owned(),
                "No device here can run this kernel.".to_owned(),
            );
        } else if ticked.with(BTreeSet::is_empty) {
            errors.insert(DEVICES.to_owned(), "Tick at least one device.".to_owned());
        }
        if let Err(message) = validate::repetitions(&repetitions.get()) {
            errors.insert(REPETITIONS.to_owned(), message);
        }
        errors
    });
    let field_error = move |name: &str| {
        let name = name.to_owned();
        Signal::derive(move || errors.with(|errors| errors.get(&name).cloned()))
    };
    let edited = move || refused.set(false);

    let on_kernel = move |name: String| {
        choice.choose(name, |spec, devices| {
            ticked.set(eligible_ids(spec, devices))
        });
        edited();
    };
    let on_submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        if !errors.with_untracked(BTreeMap::is_empty) {
            refused.set(true);
            return;
        }
        let (Some((spec, params)), Ok(repetitions)) = (
            choice.request_untracked(),
            validate::repetitions(&repetitions.get_untracked()),
        ) else {
            return;
        };
        let number = comparison.with_untracked(|c| c.as_ref().map_or(0, |c| c.number + 1));
        let ticked = ticked.get_untracked();
        let runs: Vec<Run> = choices
            .get_untracked()
            .into_iter()
            .filter(|d| ticked.contains(&d.id))
            .map(|device| Run {
                device,
                state: RunState::Sending,
            })
            .collect();
        for run in &runs {
            let request = JobRequest {
                kernel: spec.name.clone(),
                device: run.device.id.clone(),
                params: Some(params.clone()),
                repetitions: Some(repetitions),
                timeout_s: None,
            };
            let device = run.device.id.clone();
            spawn_local(async move {
                let state = match api::create_job(request).await {
                    Ok(job) => {
                        let id = job.id;
                        watched.watch(job);
                        RunState::Queued(id)
                    }
                    Err(error) => RunState::Refused(error),
                };
                comparison.try_update(|comparison| {
                    let run = comparison
                        .as_mut()
                        .filter(|c| c.number == number)
                        .and_then(|c| c.runs.iter_mut().find(|r| r.device.id == device));
                    if let Some(run) = run {
                        run.state = state;
                    }
                });
            });
        }
        comparison.set(Some(Comparison {
            number,
            kernel: spec.name,
            params,
            repetitions,
            runs,
        }));
    };

    let sending = move || {
        comparison.with(|c| {
            c.as_ref()
                .is_some_and(|c| c.runs.iter().any(|r| r.state == RunState::Sending))
        })
    };

    Either::Right(view! {
        {(!has_gpu).then(|| view! { <NeedsGpu cuda /> })}
        <form class="compare-form" data-testid="compare-form" novalidate on:submit=on_submit>
            {move || {
                refused
                    .get()
                    .then(|| view! {
                        <div class="notice error" role="alert">
                            "Fix the fields marked below, then run again."
                        </div>
                    })
            }}
            <fieldset>
                <legend>"Kernel"</legend>
                <KernelSelect choice on_change=on_kernel />
                <ParamFields
                    choice
                    field_error=Callback::new(move |name: String| field_error(&name))
                    edited=move |()| edited()
                />
                <div class="field">
                    <label for="repetitions">"Repetitions"</label>
                    <input
                        type="number"
                        id="repetitions"
                        name="repetitions"
                        min="1"
                        step="1"
                        inputmode="numeric"
                        value=repetitions.get_untracked()
                        aria-describedby="help-repetitions error-repetitions"
                        on:input=move |ev| {
                            repetitions.set(event_target_value(&ev));
                            edited();
                        }
                    />
                    <small class="help" id="help-repetitions">
                        "Timed runs on each device, after one untimed warm-up run."
                    </small>
                    <FieldError name=REPETITIONS.to_owned() error=field_error(REPETITIONS) />
                </div>
            </fieldset>
            <fieldset class="device-choice" aria-describedby="error-devices">
                <legend>"Devices"</legend>
                {move || {
                    choices
                        .get()
                        .into_iter()
                        .map(|device| {
                            let id = device.id.clone();
                            let checked = {
                                let id = id.clone();
                                move || ticked.with(|t| t.contains(&id))
                            };
                            let input_id = format!("device-{id}");
                            let label_for = input_id.clone();
                            view! {
                                <label class="device-option" for=label_for>
                                    <input
                                        type="checkbox"
                                        id=input_id
                                        name="device"
                                        value=id.clone()
                                        prop:checked=checked
                                        on:change=move |ev| {
                                            let on = event_target_checked(&ev);
                                            ticked.update(|t| {
                                                if on {
                                                    t.insert(id.clone());
                                                } else {
                                                    t.remove(&id);
                                                }
                                            });
                                            edited();
                                        }
                                    />
                                    <span>{device.name.clone()}</span>
                                    <code class="device-id">{device.id.clone()}</code>
                                </label>
                            }
                        })
                        .collect_view()
                }}
                <FieldError name=DEVICES.to_owned() error=field_error(DEVICES) />
            </fieldset>
            <button type="submit" class="primary" data-testid="compare-run" disabled=sending>
                {move || if sending() { "Starting…" } else { "Run" }}
            </button>
        </form>
        <Results comparison watched />
    })
}

/// Why a comparison here has only one bar.
#[component]
fn NeedsGpu(cuda: CudaStatus) -> impl IntoView {
    let reason = cuda
        .reason
        .unwrap_or_else(|| "the server found no CUDA device".to_owned());
    view! {
        <div class="notice warn page-note" data-testid="compare-needs-gpu">
            <strong>"Comparing needs at least one GPU: "</strong>
            {reason}
            ". You can still run a kernel on the CPU alone to see its figure."
        </div>
    }
}

/// One bar of the chart, as its device's job stands now.
#[derive(Debug, Clone, PartialEq)]
enum Bar {
    /// Not finished yet: the status, and the progress while running.
    Pending(Option<JobStatus>, Option<String>),
    Measured {
        value: f64,
        unit: String,
        /// The share of this device's own peak, with its convention.
        peak: Option<(String, String)>,
    },
    Failed(String),
}

/// The bars: each device's throughput as a bar as long as its share of the fastest, with
/// its figure and how many times the baseline it is; hidden until the first run.
#[component]
fn Results(comparison: RwSignal<Option<Comparison>>, watched: WatchedJobs) -> impl IntoView {
    let heading = move || {
        comparison.with(|c| {
            c.as_ref().map(|c| {
                let params = c
                    .params
                    .iter()
                    .map(|(name, value)| format!("{name} = {}", format::json_value(value)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let (kernel, repetitions) = (&c.kernel, c.repetitions);
                let runs = if repetitions == 1 { "run" } else { "runs" };
                format!("{kernel} ({params}), {repetitions} timed {runs} on each device")
            })
        })
    };
    let rows = Memo::new(move |_| {
        comparison.with(|c| {
            c.iter()
                .flat_map(|c| &c.runs)
                .map(|run| {
                    let job = match &run.state {
                        RunState::Queued(id) => watched.get(*id),
                        _ => None,
                    };
                    (
                        run.device.clone(),
                        run.state.clone(),
                        job.as_ref().map(bar_of),
                    )
                })
                .collect::<Vec<_>>()
        })
    });
    let chart = move || {
        let rows = rows.get();
        let measured: Vec<(&str, f64)> = rows
            .iter()
            .filter_map(|(device, _, bar)| match bar {
                Some(Bar::Measured { value, .. }) => Some((device.id.as_str(), *value)),
                _ => None,
            })
            .collect();
        let fastest = measured.iter().map(|(_, v)| *v).fold(0.0, f64::max);
        // One figure has nothing to be compared with.
        let base = if measured.len() > 1 {
            baseline(&measured)
        } else {
            None
        };
        rows.iter()
            .map(|(device, state, bar)| {
                let job_id = match state {
                    RunState::Queued(id) => Some(*id),
                    _ => None,
                };
                let bar = match (state, bar) {
                    (RunState::Refused(error), _) => Bar::Failed(error.to_string()),
                    (_, Some(bar)) => bar.clone(),
                    (RunState::Sending, _) => Bar::Pending(None, None),
                    (RunState::Queued(_), None) => Bar::Pending(Some(JobStatus::Queued), None),
                };
                let speedup = match (&bar, base) {
                    (Bar::Measured { value, .. }, Some((base_id, base_value))) => {
                        Some(speedup_label(&device.id, *value, base_id, base_value))
                    }
                    _ => None,
                };
                view! { <BarRow device=device.clone() job_id bar fastest speedup /> }
            })
            .collect_view()
    };
    view! {
        <section
            class="card compare-results"
            aria-labelledby="results-heading"
            hidden=move || comparison.with(Option::is_none)
        >
            <h2 id="results-heading">"Throughput"</h2>
            <p class="help">{heading}</p>
            <ul class="bars">{chart}</ul>
        </section>
    }
}

#[component]
fn BarRow(
    device: Device,
    job_id: Option<i64>,
    bar: Bar,
    /// The largest figure of the chart: its bar is full width.
    fastest: f64,
    speedup: Option<String>,
) -> impl IntoView {
    // Every state is drawn with the same elements and plain text: a row whose shape varied
    // would cost the app's download far more than these few strings.
    let status = match &bar {
        Bar::Pending(status, _) => status.map_or("sending", JobStatus::as_str),
        Bar::Measured { .. } => "succeeded",
        Bar::Failed(_) => "failed",
    };
    let pending = matches!(bar, Bar::Pending(..));
    let (peak, convention) = match &bar {
        Bar::Measured {
            peak: Some((line, convention)),
            ..
        } => (line.clone(), convention.clone()),
        _ => (String::new(), String::new()),
    };
    let no_peak = peak.is_empty();
    let (width, figure, detail, error) = match bar {
        Bar::Pending(_, progress) => (
            String::new(),
            String::new(),
            progress.map(|p| format!(" {p}")).unwrap_or_default(),
            String::new(),
        ),
        Bar::Measured { value, unit, .. } => {
            let share = if fastest > 0.0 { value / fastest } else { 0.0 };
            (
                format!("width: {:.1}%", share * 100.0),
                format::number(value),
                format!(" {unit}"),
                String::new(),
            )
        }
        Bar::Failed(error) => (String::new(), String::new(), String::new(), error),
    };
    let failed = !error.is_empty();
    let testid = format!("compare-bar-{}", device.id);
    let (link, link_text) = match job_id {
        Some(id) => (format!("/jobs/{id}"), format!("job {id}")),
        None => (String::new(), String::new()),
    };
    view! {
        <li class="bar-row" data-testid=testid data-status=status>
            <div class="bar-label">
                <strong>{device.name}</strong>
                " "
                <code class="device-id">{device.id}</code>
                " "
                <a class="job-link" href=link hidden=job_id.is_none()>{link_text}</a>
                <small class="bar-peak" title=convention hidden=no_peak>{peak}</small>
            </div>
            <div class="bar-track" aria-hidden="true" hidden=failed>
                <div class="bar-fill" style=width></div>
            </div>
            <span class="bar-figure" hidden=failed>
                <span class=format!("badge status-{status}") hidden=!pending>{status}</span>
                <strong>{figure}</strong>
                {detail}
            </span>
            <p class="bar-error" role="alert" hidden=!failed>{error}</p>
            <span class="bar-speedup">{speedup.unwrap_or_default()}</span>
        </li>
    }
}

fn bar_of(job: &Job) -> Bar {
    match (&job.status, &job.result) {
        (JobStatus::Succeeded, Some(result)) => Bar::Measured {
            value: result.throughput.value,
            unit: result.throughput.unit.clone(),
            peak: result
                .fraction_of_peak
                .as_ref()
                .map(|f| (roofline::fraction_line(f), f.convention.clone())),
        },
        (JobStatus::Queued | JobStatus::Running, _) => Bar::Pending(
            Some(job.status),
            job.progress
                .filter(|_| job.status == JobStatus::Running)
                .map(|p| format!("{} of {} runs", p.done, p.total)),
        ),
        (status, _) => Bar::Failed(
            job.error
                .clone()
                .unwrap_or_else(|| format!("the job ended {} without a result", status.as_str())),
        ),
    }
}

/// The device the others are measured against: the CPU when it has a figure, else the
/// slowest device. `measured` is each device's id and throughput.
fn baseline<'a>(measured: &[(&'a str, f64)]) -> Option<(&'a str, f64)> {
    measured
        .iter()
        .find(|(id, _)| *id == "cpu")
        .or_else(|| measured.iter().min_by(|a, b| a.1.total_cmp(&b.1)))
        .copied()
        .filter(|(_, value)| *value > 0.0)
}

/// How many times the baseline's throughput `value` is: `"12.4× the CPU"`; the baseline's
/// own bar says that it is the baseline.
fn speedup_label(device: &str, value: f64, base_id: &str, base_value: f64) -> String {
    if device == base_id {
        return "baseline".to_owned();
    }
    let base = if base_id == "cpu" {
        "the CPU".to_owned()
    } else {
        base_id.to_owned()
    };
    format!("{}× {base}", format::number(value / base_value))
}

/// Every device that can run the kernel: a comparison starts with all of them ticked.
fn eligible_ids(spec: &KernelSpec, devices: &[Device]) -> BTreeSet<String> {
    eligible(spec, devices).map(|d| d.id.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_against_the_cpu_when_it_ran() {
        let measured = [("cuda:0", 900.0), ("cpu", 72.5), ("cuda:1", 450.0)];
        assert_eq!(baseline(&measured), Some(("cpu", 72.5)));
        assert_eq!(speedup_label("cuda:0", 900.0, "cpu", 72.5), "12.4× the CPU");
        assert_eq!(speedup_label("cpu", 72.5, "cpu", 72.5), "baseline");
    }

    #[test]
    fn measures_against_the_slowest_without_the_cpu() {
        let measured = [("cuda:0", 900.0), ("cuda:1", 450.0)];
        assert_eq!(baseline(&measured), Some(("cuda:1", 450.0)));
        assert_eq!(
            speedup_label("cuda:0", 900.0, "cuda:1", 450.0),
            "2.00× cuda:1"
        );
        assert_eq!(baseline(&[]), None);
        assert_eq!(baseline(&[("cpu", 0.0)]), None, "nothing is n times zero");
    }
}

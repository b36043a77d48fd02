use std::collections::BTreeMap;

use gpulab_shared::{Device, JobRequest, KernelSpec};
use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_query_map};

use crate::api::{self, ApiError};
use crate::components::{error_list, ErrorNotice, FieldError};
use crate::hooks::use_title;
use crate::kernel_form::{eligible, KernelChoice, KernelSelect, ParamFields};
use crate::validate;

/// The fields outside `params` that the launcher shows, by the name the API's problem
/// documents use for them.
const REPETITIONS: &str = "repetitions";
const TIMEOUT_S: &str = "timeout_s";
const KERNEL: &str = "kernel";
const DEVICE: &str = "device";

/// `/launch`: a form for one job, generated from the kernel catalog.
/// `?kernel=` and `?device=` preselect a kernel and a device.
#[component]
pub fn LaunchPage() -> impl IntoView {
    use_title(|| "Launch".to_owned());
    let catalog = LocalResource::new(|| async {
        let kernels = api::kernels().await?;
        let devices = api::devices().await?;
        Ok::<_, ApiError>((kernels, devices))
    });
    view! {
        <h1>"Launch a kernel"</h1>
        <Suspense fallback=|| view! { <p class="loading">"Loading the kernel catalog…"</p> }>
            <ErrorBoundary fallback=error_list>
                {move || Suspend::new(async move {
                    let (kernels, devices) = catalog.await?;
                    Ok::<_, ApiError>(view! { <LaunchForm kernels devices /> })
                })}
            </ErrorBoundary>
        </Suspense>
    }
}

#[component]
fn LaunchForm(kernels: Vec<KernelSpec>, devices: Vec<Device>) -> impl IntoView {
    let query = use_query_map().get_untracked();
    let wanted_device = query.get(DEVICE);
    let Some(first) = initial_kernel(
        &kernels,
        &devices,
        query.get(KERNEL),
        wanted_device.as_deref(),
    ) else {
        return view! { <p class="notice warn">"The server offers no kernels."</p> }.into_any();
    };
    let first_device = eligible(&first, &devices)
        .find(|d| Some(&d.id) == wanted_device.as_ref())
        .or_else(|| eligible(&first, &devices).next())
        .map(|d| d.id.clone())
        .unwrap_or_default();
    let choice = KernelChoice::new(kernels, devices, &first);
    let KernelChoice { spec, choices, .. } = choice;
    choice.set_devices(vec![first_device.clone()]);
    let device = RwSignal::new(first_device);
    let repetitions = RwSignal::new("10".to_owned());
    let timeout_s = RwSignal::new("60".to_owned());
    // Set when the user submits while a field is wrong, so the top of the form says why
    // nothing happened.
    let refused = RwSignal::new(false);

    let client_errors = Memo::new(move |_| {
        let mut errors = choice.param_errors();
        if let Some(spec) = spec.get() {
            if choices.with(Vec::is_empty) {
                let kinds: Vec<&str> = spec.devices.iter().map(|k| k.as_str()).collect();
                errors.insert(
                    DEVICE.to_owned(),
                    format!(
                        "No device here can run {}: it runs on {}.",
                        spec.name,
                        kinds.join(", ")
                    ),
                );
            }
        }
        if let Err(message) = validate::repetitions(&repetitions.get()) {
            errors.insert(REPETITIONS.to_owned(), message);
        }
        if let Err(message) = validate::timeout_s(&timeout_s.get()) {
            errors.insert(TIMEOUT_S.to_owned(), message);
        }
        errors
    });

    let launch = Action::new_local(|request: &JobRequest| api::create_job(request.clone()));
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(job)) = launch.value().get() {
            navigate(&format!("/jobs/{}", job.id), Default::default());
        }
    });
    let server_error = move || launch.value().get().and_then(Result::err);
    // A problem about a field the form shows goes beside that field; any other at the top.
    let shown_fields = move || {
        let mut fields = vec![
            KERNEL.to_owned(),
            DEVICE.to_owned(),
            REPETITIONS.to_owned(),
            TIMEOUT_S.to_owned(),
        ];
        if let Some(spec) = spec.get() {
            fields.extend(spec.params.into_iter().map(|p| p.name));
        }
        fields
    };
    let field_error = move |name: String| {
        Signal::derive(move || {
            client_errors
                .with(|errors| errors.get(&name).cloned())
                .or_else(|| {
                    server_error()
                        .and_then(|err| err.problem().cloned())
                        .filter(|problem| {
                            !is_quota_refusal(problem)
                                && problem.field.as_deref().map(form_field) == Some(name.as_str())
                        })
                        .map(|problem| problem.detail)
                })
        })
    };
    let top_error = move || {
        server_error().filter(|err| {
            if err.problem().is_some_and(is_quota_refusal) {
                return true;
            }
            let field = err
                .problem()
                .and_then(|p| p.field.as_deref())
                .map(form_field);
            !field.is_some_and(|f| shown_fields().iter().any(|s| s == f))
        })
    };
    let edited = move || {
        launch.clear();
        refused.set(false);
    };

    let on_kernel = move |name: String| {
        choice.choose(name, |spec, devices| {
            if !eligible(spec, devices).any(|d| d.id == device.get_untracked()) {
                device.set(
                    eligible(spec, devices)
                        .next()
                        .map(|d| d.id.clone())
                        .unwrap_or_default(),
                );
            }
        });
        choice.set_devices(vec![device.get_untracked()]);
        edited();
    };
    let on_submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        if launch.pending().get_untracked() {
            return;
        }
        if !client_errors.with_untracked(BTreeMap::is_empty) {
            refused.set(true);
            return;
        }
        let Some((spec, params)) = choice.request_untracked() else {
            return;
        };
        launch.dispatch(JobRequest {
            kernel: spec.name,
            device: device.get_untracked(),
            params: Some(params),
            repetitions: validate::repetitions(&repetitions.get_untracked()).ok(),
            timeout_s: validate::timeout_s(&timeout_s.get_untracked()).ok(),
        });
    };

    view! {
        <form class="launch-form" data-testid="launch-form" novalidate on:submit=on_submit>
            {move || {
                refused
                    .get()
                    .then(|| view! {
                        <div class="notice error" role="alert">
                            "Fix the fields marked below, then launch again."
                        </div>
                    })
            }}
            {move || top_error().map(|error| view! { <ErrorNotice error /> })}
            <fieldset>
                <legend>"What to run"</legend>
                <KernelSelect choice described_by="error-kernel" on_change=on_kernel>
                    <FieldError name=KERNEL.to_owned() error=field_error(KERNEL.to_owned()) />
                </KernelSelect>
                <div class="field">
                    <label for="device">"Device"</label>
                    <select
                        id="device"
                        name="device"
                        aria-describedby="error-device"
                        on:change=move |ev| {
                            let id = event_target_value(&ev);
                            choice.set_devices(vec![id.clone()]);
                            device.set(id);
                            edited();
                        }
                    >
                        {move || {
                            choices
                                .get()
                                .into_iter()
                                .map(|d| {
                                    let id = d.id.clone();
                                    let is_selected = move || device.get() == id;
                                    view! {
                                        <option value=d.id.clone() prop:selected=is_selected>
                                            {format!("{} ({})", d.name, d.id)}
                                        </option>
                                    }
                                })
                                .collect_view()
                        }}
                    </select>
                    <FieldError name=DEVICE.to_owned() error=field_error(DEVICE.to_owned()) />
                </div>
            </fieldset>
            <fieldset>
                <legend>"Parameters"</legend>
                <ParamFields choice field_error=Callback::new(field_error) edited=move |()| edited() />
            </fieldset>
            <fieldset>
                <legend>"Measurement"</legend>
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
                        "Timed runs after one untimed warm-up run."
                    </small>
                    <FieldError name=REPETITIONS.to_owned() error=field_error(REPETITIONS.to_owned()) />
                </div>
                <div class="field">
                    <label for="timeout_s">"Time limit"</label>
                    <div class="control">
                        <input
                            type="number"
                            id="timeout_s"
                            name="timeout_s"
                            min="0"
                            step="any"
                            inputmode="decimal"
                            value=timeout_s.get_untracked()
                            aria-describedby="help-timeout_s error-timeout_s"
                            on:input=move |ev| {
                                timeout_s.set(event_target_value(&ev));
                                edited();
                            }
                        />
                        <span class="unit">"s"</span>
                    </div>
                    <small class="help" id="help-timeout_s">
                        "The job ends as timed out after this long."
                    </small>
                    <FieldError name=TIMEOUT_S.to_owned() error=field_error(TIMEOUT_S.to_owned()) />
                </div>
            </fieldset>
            <button type="submit" class="primary" data-testid="launch-submit" disabled=move || launch.pending().get()>
                {move || if launch.pending().get() { "Launching…" } else { "Launch" }}
            </button>
        </form>
    }
    .into_any()
}

/// The kernel the form starts with: the one asked for, else the first that runs on the
/// device asked for, else the first.
fn initial_kernel(
    kernels: &[KernelSpec],
    devices: &[Device],
    wanted: Option<String>,
    wanted_device: Option<&str>,
) -> Option<KernelSpec> {
    let runs_on_wanted_device =
        |k: &&KernelSpec| eligible(k, devices).any(|d| Some(d.id.as_str()) == wanted_device);
    kernels
        .iter()
        .find(|k| Some(&k.name) == wanted.as_ref())
        .or_else(|| kernels.iter().find(runs_on_wanted_device))
        .or_else(|| kernels.first())
        .cloned()
}

/// A refusal for the user's quota: shown at the top with what is left and when it renews,
/// though the server names `timeout_s` (the job's worst case, which is what it counted).
fn is_quota_refusal(problem: &gpulab_shared::Problem) -> bool {
    problem.status == 429 && problem.remaining_seconds.is_some()
}

/// The form field a problem's `field` names: `params.n` is the parameter `n`.
fn form_field(field: &str) -> &str {
    field.strip_prefix("params.").unwrap_or(field)
}

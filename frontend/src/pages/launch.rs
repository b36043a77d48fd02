use std::collections::BTreeMap;

use gpulab_shared::{Device, JobRequest, KernelSpec, Params};
use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_query_map};

use crate::api::{self, ApiError};
use crate::components::{error_list, ErrorNotice, FieldError, ParamField};
use crate::hooks::use_title;
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
    let catalog = StoredValue::new((kernels, devices));

    let kernel = RwSignal::new(first.name.clone());
    let device = RwSignal::new(first_device);
    let values = RwSignal::new(defaults(&first));
    let repetitions = RwSignal::new("10".to_owned());
    let timeout_s = RwSignal::new("60".to_owned());
    // Set when the user submits while a field is wrong, so the top of the form says why
    // nothing happened.
    let refused = RwSignal::new(false);

    let spec = Memo::new(move |_| {
        let name = kernel.get();
        catalog.with_value(|(kernels, _)| kernels.iter().find(|k| k.name == name).cloned())
    });
    let choices = Memo::new(move |_| {
        let spec = spec.get();
        catalog.with_value(|(_, devices)| match &spec {
            Some(spec) => eligible(spec, devices).cloned().collect::<Vec<_>>(),
            None => Vec::new(),
        })
    });
    let client_errors = Memo::new(move |_| {
        let mut errors = BTreeMap::new();
        if let Some(spec) = spec.get() {
            values.with(|values| {
                for param in &spec.params {
                    let text = values.get(&param.name).map_or("", String::as_str);
                    if let Err(message) = validate::param_value(param, text) {
                        errors.insert(param.name.clone(), message);
                    }
                }
            });
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
                            problem.field.as_deref().map(form_field) == Some(name.as_str())
                        })
                        .map(|problem| problem.detail)
                })
        })
    };
    let top_error = move || {
        server_error().filter(|err| {
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

    let on_kernel = move |ev| {
        let name = event_target_value(&ev);
        catalog.with_value(|(kernels, devices)| {
            if let Some(spec) = kernels.iter().find(|k| k.name == name) {
                values.set(defaults(spec));
                if !eligible(spec, devices).any(|d| d.id == device.get_untracked()) {
                    device.set(
                        eligible(spec, devices)
                            .next()
                            .map(|d| d.id.clone())
                            .unwrap_or_default(),
                    );
                }
            }
        });
        kernel.set(name);
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
        let Some(spec) = spec.get_untracked() else {
            return;
        };
        let params: Params = values.with_untracked(|values| {
            spec.params
                .iter()
                .filter_map(|p| {
                    let text = values.get(&p.name).map_or("", String::as_str);
                    Some((p.name.clone(), validate::param_value(p, text).ok()?))
                })
                .collect()
        });
        launch.dispatch(JobRequest {
            kernel: spec.name,
            device: device.get_untracked(),
            params: Some(params),
            repetitions: validate::repetitions(&repetitions.get_untracked()).ok(),
            timeout_s: validate::timeout_s(&timeout_s.get_untracked()).ok(),
        });
    };

    let kernel_options = catalog.with_value(|(kernels, _)| {
        kernels
            .iter()
            .map(|k| {
                let name = k.name.clone();
                let is_selected = {
                    let name = name.clone();
                    move || kernel.get() == name
                };
                view! { <option value=name.clone() prop:selected=is_selected>{name.clone()}</option> }
            })
            .collect_view()
    });

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
                <div class="field">
                    <label for="kernel">"Kernel"</label>
                    <select id="kernel" name="kernel" aria-describedby="kernel-about error-kernel" on:change=on_kernel>
                        {kernel_options}
                    </select>
                    <small class="help" id="kernel-about">
                        {move || spec.get().map(|k| view! {
                            {k.description}
                            <br />
                            "Throughput: " {k.throughput_formula}
                        })}
                    </small>
                    <FieldError name=KERNEL.to_owned() error=field_error(KERNEL.to_owned()) />
                </div>
                <div class="field">
                    <label for="device">"Device"</label>
                    <select
                        id="device"
                        name="device"
                        aria-describedby="error-device"
                        on:change=move |ev| {
                            device.set(event_target_value(&ev));
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
                // Keyed by kernel too: another kernel's fields start afresh at their defaults
                // instead of keeping what was typed into the field before.
                <For
                    each=move || {
                        spec.get()
                            .map(|k| k.params.into_iter().map(|p| (k.name.clone(), p)).collect())
                            .unwrap_or_else(Vec::new)
                    }
                    key=|(kernel, param)| (kernel.clone(), param.name.clone())
                    children=move |(_, param)| {
                        let name = param.name.clone();
                        let on_input = Callback::new(move |text: String| {
                            values.update(|values| {
                                values.insert(name.clone(), text);
                            });
                            edited();
                        });
                        let error = field_error(param.name.clone());
                        view! { <ParamField spec=param error on_input /> }
                    }
                />
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

/// The devices of a kind the kernel runs on.
fn eligible<'a>(spec: &'a KernelSpec, devices: &'a [Device]) -> impl Iterator<Item = &'a Device> {
    devices.iter().filter(|d| spec.devices.contains(&d.kind))
}

/// Every parameter's control text at its default.
fn defaults(spec: &KernelSpec) -> BTreeMap<String, String> {
    spec.params
        .iter()
        .map(|p| (p.name.clone(), validate::initial_text(p)))
        .collect()
}

/// The form field a problem's `field` names: `params.n` is the parameter `n`.
fn form_field(field: &str) -> &str {
    field.strip_prefix("params.").unwrap_or(field)
}

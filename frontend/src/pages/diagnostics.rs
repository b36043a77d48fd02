use gpulab_shared::diag::{Diagnostic, DiagnosticRequest, DEFAULT_STRESS_DURATION_S, LEVELS};
use gpulab_shared::{Device, DeviceKind};
use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_query_map};

use crate::api::{self, ApiError};
use crate::components::{error_list, DiagnosticBadge, ErrorNotice, FieldError};
use crate::diag;
use crate::format;
use crate::hooks::use_title;
use crate::live::use_live_events;

/// The form's fields, by the name the API's problem documents use for them.
const LEVEL: &str = "level";
const DEVICE: &str = "device";
const DURATION_S: &str = "duration_s";
/// What the device select sends for every device.
const ALL: &str = "all";

/// `/diagnostics`: start a diagnostic at a level on one device or all of them, and each
/// device's past diagnostics with their verdicts. `?device=` preselects a device.
#[component]
pub fn DiagnosticsPage() -> impl IntoView {
    use_title(|| "Diagnostics".to_owned());
    let devices = LocalResource::new(api::devices);
    view! {
        <h1>"Diagnostics"</h1>
        <p class="lead">
            "Is this device healthy and as fast as it should be? Each check ends pass, warn, \
             fail or skip, with the figures behind its verdict and where the expectation comes from."
        </p>
        <Suspense fallback=|| view! { <p class="loading">"Looking for devices…"</p> }>
            <ErrorBoundary fallback=error_list>
                {move || Suspend::new(async move {
                    let devices = devices.await?;
                    Ok::<_, ApiError>(view! {
                        <DiagnosticForm devices=devices.clone() />
                        <h2 class="section-title">"History"</h2>
                        <div class="cards">
                            {devices
                                .into_iter()
                                .map(|device| view! { <DeviceHistory device /> })
                                .collect_view()}
                        </div>
                    })
                })}
            </ErrorBoundary>
        </Suspense>
    }
}

#[component]
fn DiagnosticForm(devices: Vec<Device>) -> impl IntoView {
    let wanted = use_query_map().get_untracked().get(DEVICE);
    let first_device = wanted
        .filter(|w| w == ALL || devices.iter().any(|d| &d.id == w))
        .unwrap_or_else(|| ALL.to_owned());
    // The server's `all` is every GPU, or the CPU where there is none.
    let all_label = if devices.iter().any(|d| d.kind == DeviceKind::Cuda) {
        "Every GPU, at once"
    } else {
        "All devices (the CPU: this host has no GPU)"
    };
    let level = RwSignal::new(1u8);
    let device = RwSignal::new(first_device);
    let duration = RwSignal::new(format!("{DEFAULT_STRESS_DURATION_S}"));
    let refused = RwSignal::new(false);
    let client_errors = Memo::new(move |_| {
        let mut errors = Vec::new();
        if level.get() == 3 {
            if let Err(message) = diag::duration_s(&duration.get()) {
                errors.push((DURATION_S, message));
            }
        }
        errors
    });

    let start =
        Action::new_local(|request: &DiagnosticRequest| api::create_diagnostic(request.clone()));
    let navigate = use_navigate();
    Effect::new(move |_| {
        if let Some(Ok(diagnostic)) = start.value().get() {
            navigate(
                &format!("/diagnostics/{}", diagnostic.id),
                Default::default(),
            );
        }
    });
    let server_error = move || start.value().get().and_then(Result::err);
    let field_error = move |name: &'static str| {
        Signal::derive(move || {
            client_errors
                .with(|errors| {
                    errors
                        .iter()
                        .find(|(f, _)| *f == name)
                        .map(|(_, m)| m.clone())
                })
                .or_else(|| {
                    server_error()
                        .and_then(|err| err.problem().cloned())
                        .filter(|problem| problem.field.as_deref() == Some(name))
                        .map(|problem| problem.detail)
                })
        })
    };
    // A problem about a field the form shows goes beside it; any other at the top.
    let top_error = move || {
        server_error().filter(|err| {
            !err.problem()
                .and_then(|p| p.field.as_deref())
                .is_some_and(|f| [LEVEL, DEVICE, DURATION_S].contains(&f))
        })
    };
    let edited = move || {
        start.clear();
        refused.set(false);
    };
    let on_submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        if start.pending().get_untracked() {
            return;
        }
        if !client_errors.with_untracked(Vec::is_empty) {
            refused.set(true);
            return;
        }
        let level = level.get_untracked();
        start.dispatch(DiagnosticRequest {
            level,
            device: device.get_untracked(),
            duration_s: (level == 3)
                .then(|| diag::duration_s(&duration.get_untracked()).ok())
                .flatten(),
            inject: Vec::new(),
        });
    };

    view! {
        <form class="launch-form diag-form" data-testid="diag-form" novalidate on:submit=on_submit>
            {move || {
                refused
                    .get()
                    .then(|| view! {
                        <div class="notice error" role="alert">
                            "Fix the fields marked below, then start again."
                        </div>
                    })
            }}
            {move || top_error().map(|error| view! { <ErrorNotice error /> })}
            <fieldset aria-describedby="error-level">
                <legend>"Level"</legend>
                {LEVELS
                    .iter()
                    .map(|&n| {
                        let id = format!("level-{n}");
                        view! {
                            <div class="field inline-check">
                                <input
                                    type="radio"
                                    id=id.clone()
                                    name="level"
                                    value=n.to_string()
                                    prop:checked=move || level.get() == n
                                    on:change=move |_| {
                                        level.set(n);
                                        edited();
                                    }
                                />
                                <label for=id>{diag::level_title(n)}</label>
                            </div>
                        }
                    })
                    .collect_view()}
                <FieldError name=LEVEL.to_owned() error=field_error(LEVEL) />
                <Show when=move || level.get() == 3>
                    <div class="field">
                        <label for="duration_s">"Stress time per device"</label>
                        <div class="control">
                            <input
                                type="number"
                                id="duration_s"
                                name="duration_s"
                                min="1"
                                step="any"
                                inputmode="decimal"
                                prop:value=move || duration.get()
                                aria-describedby="help-duration_s error-duration_s"
                                aria-invalid=move || field_error(DURATION_S).with(Option::is_some).to_string()
                                on:input=move |ev| {
                                    duration.set(event_target_value(&ev));
                                    edited();
                                }
                            />
                            <span class="unit">"s"</span>
                        </div>
                        <small class="help" id="help-duration_s">
                            {format!(
                                "How long the sustained stress runs on each device; {} unless changed.",
                                format::span(DEFAULT_STRESS_DURATION_S)
                            )}
                        </small>
                        <FieldError name=DURATION_S.to_owned() error=field_error(DURATION_S) />
                    </div>
                </Show>
            </fieldset>
            <fieldset>
                <legend>"Where"</legend>
                <div class="field">
                    <label for="diag-device">"Device"</label>
                    <select
                        id="diag-device"
                        name="device"
                        aria-describedby="error-device"
                        on:change=move |ev| {
                            device.set(event_target_value(&ev));
                            edited();
                        }
                    >
                        <option value=ALL prop:selected=move || device.get() == ALL>
                            {all_label}
                        </option>
                        {devices
                            .iter()
                            .map(|d| {
                                let id = d.id.clone();
                                view! {
                                    <option value=d.id.clone() prop:selected=move || device.get() == id>
                                        {format!("{} ({})", d.name, d.id)}
                                    </option>
                                }
                            })
                            .collect_view()}
                    </select>
                    <FieldError name=DEVICE.to_owned() error=field_error(DEVICE) />
                </div>
            </fieldset>
            <p class="help">"A diagnostic waits for the device's running job, and jobs wait behind it."</p>
            <button type="submit" class="primary" data-testid="diag-start" disabled=move || start.pending().get()>
                {move || if start.pending().get() { "Starting…" } else { "Start the diagnostic" }}
            </button>
        </form>
    }
}

/// One device's past diagnostics, newest first, kept up to date by the `diagnostic` events;
/// "Older" fetches the next page below.
#[component]
fn DeviceHistory(device: Device) -> impl IntoView {
    let live = use_live_events();
    let id = device.id.clone();
    let first = LocalResource::new({
        let id = id.clone();
        move || {
            let synced = live.sync().is_some();
            let id = id.clone();
            async move {
                if synced {
                    Some(api::diagnostics(id, None).await)
                } else {
                    None
                }
            }
        }
    });
    // The older pages fetched since, and the cursor after the last of them.
    let older = RwSignal::new(Vec::<Diagnostic>::new());
    let next = RwSignal::new(None::<String>);
    Effect::new(move |_| {
        if let Some(Some(Ok(page))) = first.get() {
            older.set(Vec::new());
            next.set(page.next_cursor);
        }
    });
    let more = Action::new_local({
        let id = id.clone();
        move |cursor: &String| api::diagnostics(id.clone(), Some(cursor.clone()))
    });
    Effect::new(move |_| {
        if let Some(Ok(page)) = more.value().get() {
            older.update(|rows| rows.extend(page.diagnostics));
            next.set(page.next_cursor);
        }
    });
    let rows =
        Memo::new({
            let id = id.clone();
            move |_| {
                first.with(|page| match page {
                    Some(Some(Ok(page))) => {
                        let fetched: Vec<Diagnostic> = page
                            .diagnostics
                            .iter()
                            .cloned()
                            .chain(older.get())
                            .collect();
                        Some(live.with_diagnostics(|pushed| {
                            diag::history_rows(&fetched, pushed, &id, true)
                        }))
                    }
                    _ => None,
                })
            }
        });
    let error = move || match first.get() {
        Some(Some(Err(error))) => Some(error),
        _ => more.value().get().and_then(Result::err),
    };
    let heading_id = format!("history-{}", device.id);
    let labelled_by = heading_id.clone();
    view! {
        <section
            class="card history"
            data-testid=format!("history-{}", device.id)
            aria-labelledby=labelled_by
        >
            <header class="card-header">
                <h2 id=heading_id>{device.name.clone()} " " <code>{device.id.clone()}</code></h2>
                <a href=format!("/diagnostics?device={}", device.id)>"Diagnose"</a>
            </header>
            {move || error().map(|error| view! { <ErrorNotice error /> })}
            {move || match rows.get() {
                // Not fetched, or refused: the error above says why.
                None if error().is_some() => ().into_any(),
                None => view! { <p class="loading">"Loading its diagnostics…"</p> }.into_any(),
                Some(rows) if rows.is_empty() => view! { <p class="empty">"No diagnostic yet."</p> }.into_any(),
                Some(rows) => {
                    let id = id.clone();
                    view! {
                        <div class="table-scroll">
                            <table class="jobs diagnostics">
                                <thead>
                                    <tr>
                                        <th scope="col">"Diagnostic"</th>
                                        <th scope="col">"Level"</th>
                                        <th scope="col">"Verdict"</th>
                                        <th scope="col">"Created"</th>
                                    </tr>
                                </thead>
                                <tbody>
                                    {rows
                                        .into_iter()
                                        .map(|d| {
                                            let (status, verdict) = diag::verdict_on(&d, &id);
                                            let on = (d.device == ALL).then_some(" (all)");
                                            view! {
                                                <tr data-testid="diagnostic-row" data-diagnostic-id=d.id.to_string()>
                                                    <td>
                                                        <a href=format!("/diagnostics/{}", d.id)>{format!("#{}", d.id)}</a>
                                                        {on}
                                                    </td>
                                                    <td>{d.level}</td>
                                                    <td><DiagnosticBadge status verdict /></td>
                                                    <td>{format::local_time(&d.created_at)}</td>
                                                </tr>
                                            }
                                        })
                                        .collect_view()}
                                </tbody>
                            </table>
                        </div>
                    }
                    .into_any()
                }
            }}
            <Show when=move || next.with(Option::is_some)>
                <button
                    type="button"
                    data-testid="history-older"
                    disabled=move || more.pending().get()
                    on:click=move |_| {
                        if let Some(cursor) = next.get_untracked() {
                            more.dispatch(cursor);
                        }
                    }
                >
                    "Older →"
                </button>
            </Show>
        </section>
    }
}

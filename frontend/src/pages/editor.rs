use std::collections::BTreeMap;

use gpulab_shared::{CudaStatus, Device, DeviceKind, Job, JobRequest, JobStatus};
use leptos::either::Either;
use leptos::ev::SubmitEvent;
use leptos::prelude::*;

use crate::api::{self, ApiError};
use crate::components::{CodeEditor, ErrorNotice, FieldError, JobResultView};
use crate::custom_kernel::compile_log::{self, CompileDiagnostic, Severity};
use crate::custom_kernel::{
    field, fill_label, Arg, ArgKind, ElementType, Fill, LaunchForm, Template, KERNEL, N,
};
use crate::hooks::use_title;
use crate::watched_jobs::WatchedJobs;

/// `/editor`: custom CUDA C, from a starter template, compiled and run on a GPU as a job.
#[component]
pub fn EditorPage() -> impl IntoView {
    use_title(|| "CUDA editor".to_owned());
    view! {
        <h1>"CUDA editor"</h1>
        <p class="lead">
            "Write a CUDA C kernel, give its arguments and launch configuration, and run it on a GPU. Compile errors are marked at their lines."
        </p>
        <EditorForm />
    }
}

/// What the page knows about the GPUs it could run on.
#[derive(Debug, Clone, PartialEq)]
struct Gpus {
    cuda: CudaStatus,
    devices: Vec<Device>,
}

impl Gpus {
    fn usable(&self) -> bool {
        self.cuda.available && !self.devices.is_empty()
    }
}

/// One argument of the form, with the key that keeps its row's controls when others move.
#[derive(Debug, Clone, PartialEq)]
struct ArgRow {
    key: u32,
    arg: Arg,
}

#[component]
fn EditorForm() -> impl IntoView {
    let first = Template::ALL[0];
    let template = RwSignal::new(first.id);
    let source = RwSignal::new(first.source.to_owned());
    let form = RwSignal::new(first.launch());
    let next_key = StoredValue::new(0u32);
    let rows_of = move |args: Vec<Arg>| {
        args.into_iter()
            .map(|arg| {
                let key = next_key.get_value();
                next_key.set_value(key + 1);
                ArgRow { key, arg }
            })
            .collect::<Vec<_>>()
    };
    let args = RwSignal::new(rows_of(first.args()));
    let device = RwSignal::new(String::new());
    let refused = RwSignal::new(false);

    let gpus = LocalResource::new(|| async {
        let cuda = api::health().await?.cuda;
        let devices = api::devices().await?;
        Ok::<_, ApiError>(Gpus {
            cuda,
            devices: devices
                .into_iter()
                .filter(|d| d.kind == DeviceKind::Cuda)
                .collect(),
        })
    });
    let usable = move || {
        gpus.with(|gpus| {
            gpus.as_ref()
                .is_some_and(|gpus| gpus.as_ref().is_ok_and(Gpus::usable))
        })
    };
    Effect::new(move |_| {
        gpus.with(|gpus| {
            if let Some(Ok(gpus)) = gpus {
                if let Some(first) = gpus.devices.first() {
                    device.set(first.id.clone());
                }
            }
        })
    });

    let errors = Memo::new(move |_| {
        let args: Vec<Arg> = args.with(|rows| rows.iter().map(|r| r.arg.clone()).collect());
        source
            .with(|source| form.with(|form| form.params(source, &args)))
            .err()
            .unwrap_or_default()
    });
    let field_error = move |name: String| {
        Signal::derive(move || errors.with(|errors| errors.get(&name).cloned()))
    };

    let watched = WatchedJobs::new();
    let launch = Action::new_local(|request: &JobRequest| api::create_job(request.clone()));
    Effect::new(move |_| {
        if let Some(Ok(job)) = launch.value().get() {
            watched.watch(job);
        }
    });
    let job = Memo::new(move |_| match launch.value().get() {
        Some(Ok(job)) => watched.get(job.id),
        _ => None,
    });
    let launch_error = move || launch.value().get().and_then(Result::err);
    // Compile errors: from the job that failed, or from a refusal, should the server compile
    // before it queues.
    let diagnostics = Memo::new(move |_| {
        if let Some(error) = launch_error() {
            return error
                .problem()
                .map(|p| compile_log::parse(&p.detail))
                .unwrap_or_default();
        }
        job.with(|job| match job {
            Some(job) if job.status == JobStatus::Failed => job
                .error
                .as_deref()
                .map(compile_log::parse)
                .unwrap_or_default(),
            _ => Vec::new(),
        })
    });

    let edited = move || refused.set(false);
    let on_template = move |ev| {
        let Some(chosen) = Template::find(&event_target_value(&ev)) else {
            return;
        };
        let current = template.get_untracked();
        let untouched =
            Template::find(current).is_some_and(|t| source.with_untracked(|s| s == t.source));
        if !untouched {
            let replace = window()
                .confirm_with_message(&format!(
                    "Replace your source with the {} template? Your changes will be lost.",
                    chosen.title
                ))
                .unwrap_or(false);
            if !replace {
                // Puts the select back on the template the source came from.
                template.set(current);
                return;
            }
        }
        template.set(chosen.id);
        source.set(chosen.source.to_owned());
        form.set(chosen.launch());
        args.set(rows_of(chosen.args()));
        launch.clear();
        edited();
    };
    let on_submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        if launch.pending().get_untracked() || !untrack(usable) {
            return;
        }
        let args: Vec<Arg> =
            args.with_untracked(|rows| rows.iter().map(|r| r.arg.clone()).collect());
        let job =
            source.with_untracked(|source| form.with_untracked(|form| form.params(source, &args)));
        match job {
            Ok(job) if !device.with_untracked(String::is_empty) => {
                launch.dispatch(JobRequest {
                    kernel: KERNEL.to_owned(),
                    device: device.get_untracked(),
                    params: Some(job.params),
                    repetitions: Some(job.repetitions),
                    timeout_s: None,
                });
            }
            _ => refused.set(true),
        }
    };
    let add = move |arg: Arg| {
        let row = rows_of(vec![arg]);
        args.update(|rows| rows.extend(row));
        edited();
    };

    let template_options = Template::ALL
        .into_iter()
        .map(|t| {
            view! {
                <option value=t.id prop:selected=move || template.get() == t.id>
                    {t.title}
                </option>
            }
        })
        .collect_view();
    let signature = move || {
        let entry = form.with(|f| f.entry.trim().to_owned());
        let params = args.with(|rows| {
            rows.iter()
                .enumerate()
                .map(|(i, row)| c_parameter(i, &row.arg))
                .collect::<Vec<_>>()
                .join(", ")
        });
        format!("extern \"C\" __global__ void {entry}({params})")
    };
    let device_options = move || {
        let devices = gpus
            .get()
            .and_then(Result::ok)
            .map(|gpus| gpus.devices)
            .unwrap_or_default();
        if devices.is_empty() {
            return Either::Left(view! { <option value="">"No GPU on this host"</option> });
        }
        Either::Right(
            devices
                .into_iter()
                .map(|d| {
                    let id = d.id.clone();
                    view! {
                        <option value=d.id.clone() prop:selected=move || device.get() == id>
                            {format!("{} ({})", d.name, d.id)}
                        </option>
                    }
                })
                .collect_view(),
        )
    };

    view! {
        {move || {
            gpus.get()
                .map(|gpus| match gpus {
                    Ok(gpus) => {
                        Either::Left(
                            (!gpus.usable()).then(|| view! { <NeedsGpu cuda=gpus.cuda /> }),
                        )
                    }
                    Err(error) => Either::Right(view! { <ErrorNotice error /> }),
                })
        }}
        <form class="editor-form" data-testid="editor-form" novalidate on:submit=on_submit>
            <div class="notice error" role="alert" hidden=move || !refused.get()>
                "Fix the fields marked below, then run again."
            </div>
            <div class="editor-toolbar">
                <label for="template">"Template"</label>
                <select
                    id="template"
                    name="template"
                    data-testid="editor-template"
                    on:change=on_template
                >
                    {template_options}
                </select>
            </div>
            <CodeEditor source diagnostics label="CUDA C source" />
            <FieldError
                name=field::SOURCE.to_owned()
                error=field_error(field::SOURCE.to_owned())
            />
            <CompileErrors diagnostics />
            <LaunchFields form field_error edited />
            <fieldset class="args">
                <legend>"Arguments"</legend>
                <p class="help wide">
                    "In the order the kernel declares them. Every buffer holds n elements; a scalar whose value is "
                    <code>{N}</code> " gets the element count. The kernel they fit:"
                </p>
                <pre class="signature wide" data-testid="editor-signature">
                    {signature}
                </pre>
                <ol class="arg-list wide">
                    <For
                        each=move || args.get()
                        key=|row| row.key
                        children=move |row| {
                            view! { <ArgRowView key=row.key args errors edited /> }
                        }
                    />
                </ol>
                <FieldError name=field::ARGS.to_owned() error=field_error(field::ARGS.to_owned()) />
                <div class="arg-add wide">
                    <button type="button" on:click=move |_| add(Arg::buffer())>
                        "Add a buffer"
                    </button>
                    <button type="button" on:click=move |_| add(Arg::scalar())>
                        "Add a scalar"
                    </button>
                </div>
            </fieldset>
            <fieldset>
                <legend>"Run"</legend>
                <div class="field">
                    <label for="device">"GPU"</label>
                    <select
                        id="device"
                        name="device"
                        prop:disabled=move || !usable()
                        on:change=move |ev| {
                            device.set(event_target_value(&ev));
                            edited();
                        }
                    >
                        {device_options}
                    </select>
                </div>
                <NumberField
                    name=field::REPETITIONS
                    label="Repetitions"
                    help="Timed runs after one untimed warm-up run."
                    value=Signal::derive(move || form.with(|f| f.repetitions.clone()))
                    error=field_error(field::REPETITIONS.to_owned())
                    on_input=Callback::new(move |text| {
                        form.update(|f| f.repetitions = text);
                        edited();
                    })
                />
            </fieldset>
            <button
                type="submit"
                class="primary"
                data-testid="editor-run"
                disabled=move || !usable() || launch.pending().get()
            >
                {move || if launch.pending().get() { "Starting…" } else { "Run" }}
            </button>
        </form>
        // A refusal that holds a compile log is shown as the compile errors above.
        {move || {
            launch_error()
                .filter(|_| diagnostics.with(Vec::is_empty))
                .map(|error| view! { <ErrorNotice error /> })
        }}
        <JobOutcome job />
    }
}

/// Why nothing can run here, and what to do about it.
#[component]
fn NeedsGpu(cuda: CudaStatus) -> impl IntoView {
    let reason = match cuda.reason {
        Some(reason) if reason.contains("--gpus") => reason,
        Some(reason) => format!("{reason} — start the container with --gpus all"),
        None => "the server found no CUDA device — start the container with --gpus all".to_owned(),
    };
    view! {
        <div class="notice warn" data-testid="editor-needs-gpu" role="status">
            <strong>"Custom CUDA kernels need a GPU: "</strong>
            {reason}
            ". You can still write and check a kernel here; Run needs a GPU."
        </div>
    }
}

/// The compile errors of the last run, listed below the editor that marks them.
///
/// Like the other parts of this page, it keeps one shape and hides what is empty: a view
/// whose shape changes costs every page of the app download size.
#[component]
fn CompileErrors(diagnostics: Memo<Vec<CompileDiagnostic>>) -> impl IntoView {
    let heading = move || {
        diagnostics.with(|list| {
            match list
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count()
            {
                0 => "The compiler warned:".to_owned(),
                1 => "The kernel did not compile: 1 error, marked in the editor.".to_owned(),
                n => format!("The kernel did not compile: {n} errors, marked in the editor."),
            }
        })
    };
    let lines = move || {
        diagnostics
            .get()
            .into_iter()
            .map(|d| {
                let at = match d.column {
                    Some(column) => format!("Line {}, column {column}: ", d.line),
                    None => format!("Line {}: ", d.line),
                };
                view! { <li>{at} {d.message}</li> }
            })
            .collect_view()
    };
    view! {
        <div
            class="notice error compile-errors"
            data-testid="compile-errors"
            role="alert"
            hidden=move || diagnostics.with(Vec::is_empty)
        >
            <strong>{heading}</strong>
            <ul>{lines}</ul>
        </div>
    }
}

/// The entry, the element count and the launch configuration. The inputs follow `form`,
/// so a template's values replace what was typed.
#[component]
fn LaunchFields(
    form: RwSignal<LaunchForm>,
    field_error: impl Fn(String) -> Signal<Option<String>> + Copy + Send + Sync + 'static,
    edited: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let text = move |read: fn(&LaunchForm) -> &String| {
        Signal::derive(move || form.with(|f| read(f).clone()))
    };
    let set = move |apply: fn(&mut LaunchForm, String)| {
        Callback::new(move |text: String| {
            form.update(|f| apply(f, text));
            edited();
        })
    };
    let set_dim = move |apply: fn(&mut LaunchForm, usize, String)| {
        Callback::new(move |(axis, text): (usize, String)| {
            form.update(|f| apply(f, axis, text));
            edited();
        })
    };
    let per_element = move || form.with(|f| f.per_element);
    view! {
        <fieldset>
            <legend>"Launch"</legend>
            <div class="field">
                <label for="entry">"Entry"</label>
                <input
                    type="text"
                    id="entry"
                    name="entry"
                    spellcheck="false"
                    autocomplete="off"
                    prop:value=text(|f| &f.entry)
                    aria-describedby="help-entry error-entry"
                    on:input=move |ev| set(|f, text| f.entry = text).run(event_target_value(&ev))
                />
                <small class="help" id="help-entry">
                    "The extern \"C\" __global__ function to launch."
                </small>
                <FieldError name=field::ENTRY.to_owned() error=field_error(field::ENTRY.to_owned()) />
            </div>
            <NumberField
                name=field::N
                label="n"
                help="Elements in every buffer."
                value=text(|f| &f.n)
                error=field_error(field::N.to_owned())
                on_input=set(|f, text| f.n = text)
            />
            <NumberField
                name=field::SHARED_MEM_BYTES
                label="Shared memory (bytes)"
                help="Dynamic shared memory per block (extern __shared__), at most 48 KiB."
                value=text(|f| &f.shared_mem_bytes)
                error=field_error(field::SHARED_MEM_BYTES.to_owned())
                on_input=set(|f, text| f.shared_mem_bytes = text)
            />
            <DimsField
                name=field::BLOCK
                label="Block (threads)"
                help="Threads per block: at most 1024 in all."
                values=Signal::derive(move || form.with(|f| f.block.clone()))
                disabled=Signal::derive(|| false)
                error=field_error(field::BLOCK.to_owned())
                on_input=set_dim(|f, axis, text| f.block[axis] = text)
            />
            <div class="field">
                <span class="label">"Grid"</span>
                <label class="inline-check">
                    <input
                        type="checkbox"
                        name="per_element"
                        prop:checked=per_element
                        on:change=move |ev| {
                            let on = event_target_checked(&ev);
                            form.update(|f| f.per_element = on);
                            edited();
                        }
                    />
                    " One thread per element"
                </label>
                <small class="help">"The server launches ⌈n ÷ block x⌉ blocks."</small>
            </div>
            <DimsField
                name=field::GRID
                label="Grid (blocks)"
                help="Blocks per grid, when not one thread per element."
                values=Signal::derive(move || form.with(|f| f.grid.clone()))
                disabled=Signal::derive(per_element)
                error=Signal::derive(move || {
                    if per_element() { None } else { field_error(field::GRID.to_owned()).get() }
                })
                on_input=set_dim(|f, axis, text| f.grid[axis] = text)
            />
        </fieldset>
    }
}

/// A labelled whole number. A text input (with a numeric keyboard) rather than a number
/// input, so the form sees exactly what was typed, half-typed included.
#[component]
fn NumberField(
    name: &'static str,
    label: &'static str,
    help: &'static str,
    value: Signal<String>,
    #[prop(into)] error: Signal<Option<String>>,
    on_input: Callback<String>,
) -> impl IntoView {
    view! {
        <div class="field">
            <label for=name>{label}</label>
            <input
                type="text"
                id=name
                name=name
                inputmode="numeric"
                autocomplete="off"
                prop:value=value
                aria-describedby=format!("help-{name} error-{name}")
                aria-invalid=move || error.with(Option::is_some).then_some("true")
                on:input=move |ev| on_input.run(event_target_value(&ev))
            />
            <small class="help" id=format!("help-{name}")>
                {help}
            </small>
            <FieldError name=name.to_owned() error />
        </div>
    }
}

/// Three whole numbers, x, y and z, such as a block's size.
#[component]
fn DimsField(
    name: &'static str,
    label: &'static str,
    help: &'static str,
    values: Signal<[String; 3]>,
    disabled: Signal<bool>,
    #[prop(into)] error: Signal<Option<String>>,
    /// The axis (0 to 2) and its new text.
    on_input: Callback<(usize, String)>,
) -> impl IntoView {
    let label_id = format!("label-{name}");
    let inputs = ["x", "y", "z"]
        .into_iter()
        .enumerate()
        .map(|(axis, letter)| {
            view! {
                <label class="dim">
                    <span class="unit">{letter}</span>
                    <input
                        type="text"
                        name=format!("{name}-{letter}")
                        aria-label=format!("{label} {letter}")
                        inputmode="numeric"
                        autocomplete="off"
                        prop:value=move || values.with(|v| v[axis].clone())
                        prop:disabled=move || disabled.get()
                        aria-invalid=move || error.with(Option::is_some).then_some("true")
                        on:input=move |ev| on_input.run((axis, event_target_value(&ev)))
                    />
                </label>
            }
        })
        .collect_view();
    let labelled_by = label_id.clone();
    let described_by = format!("help-{name} error-{name}");
    view! {
        <div class="field" role="group" aria-labelledby=labelled_by aria-describedby=described_by>
            <span class="label" id=label_id>
                {label}
            </span>
            <div class="dims">{inputs}</div>
            <small class="help" id=format!("help-{name}")>
                {help}
            </small>
            <FieldError name=name.to_owned() error />
        </div>
    }
}

/// One argument: its kind, type, and a buffer's fill or a scalar's value, with buttons to
/// move or remove it. Every control is always there; those of the other kind are hidden.
#[component]
fn ArgRowView(
    key: u32,
    args: RwSignal<Vec<ArgRow>>,
    errors: Memo<BTreeMap<String, String>>,
    edited: impl Fn() + Copy + Send + Sync + 'static,
) -> impl IntoView {
    let index = Memo::new(move |_| args.with(|rows| rows.iter().position(|r| r.key == key)));
    let read = move |get: fn(&Arg) -> bool| {
        move || {
            args.with(|rows| {
                rows.iter()
                    .find(|r| r.key == key)
                    .is_some_and(|r| get(&r.arg))
            })
        }
    };
    let is_buffer = read(|a| a.kind == ArgKind::Buffer);
    let lists_values = read(|a| a.kind == ArgKind::Buffer && a.fill == Fill::Values);
    let update = move |apply: Box<dyn FnOnce(&mut Arg)>| {
        args.update(|rows| {
            if let Some(row) = rows.iter_mut().find(|r| r.key == key) {
                apply(&mut row.arg);
            }
        });
        edited();
    };
    let move_by = move |step: isize| {
        args.update(|rows| {
            if let Some(at) = rows.iter().position(|r| r.key == key) {
                let to = at as isize + step;
                if (0..rows.len() as isize).contains(&to) {
                    rows.swap(at, to as usize);
                }
            }
        });
        edited();
    };
    let error = move || {
        let index = index.get()?;
        errors.with(|errors| errors.get(&field::arg(index)).cloned())
    };
    let number = move || index.get().map_or(0, |i| i + 1);
    let initial = args
        .with_untracked(|rows| rows.iter().find(|r| r.key == key).map(|r| r.arg.clone()))
        .unwrap_or_else(Arg::buffer);
    let name = initial.name.clone();
    let title = move || match name.as_str() {
        "" => format!("argument {}", number()),
        name => format!("argument {} ({name})", number()),
    };
    let id = move |what: &str| format!("arg-{key}-{what}");
    // The selects change only through themselves: their first state is all they need.
    let kinds = [ArgKind::Buffer, ArgKind::Scalar]
        .into_iter()
        .map(
            |k| view! { <option value=k.as_str() selected=k == initial.kind>{k.as_str()}</option> },
        )
        .collect_view();
    let types = ElementType::ALL
        .into_iter()
        .map(|t| view! { <option value=t.as_str() selected=t == initial.ty>{t.as_str()}</option> })
        .collect_view();
    let fills = Fill::ALL
        .into_iter()
        .map(|f| view! { <option value=f.as_str() selected=f == initial.fill>{fill_label(f)}</option> })
        .collect_view();
    let (up, down, remove) = (title.clone(), title.clone(), title);

    view! {
        <li
            class="arg-row"
            data-testid="arg-row"
            aria-invalid=move || error().is_some().then_some("true")
        >
            <span class="arg-name">
                <span class="arg-index">{number}</span>
                <code hidden=initial.name.is_empty()>{initial.name.clone()}</code>
            </span>
            <div class="field">
                <label for=id("kind")>"Kind"</label>
                <select
                    id=id("kind")
                    on:change=move |ev| {
                        if let Some(kind) = ArgKind::parse(&event_target_value(&ev)) {
                            update(Box::new(move |arg| arg.kind = kind));
                        }
                    }
                >
                    {kinds}
                </select>
            </div>
            <div class="field">
                <label for=id("type")>"Type"</label>
                <select
                    id=id("type")
                    on:change=move |ev| {
                        if let Some(ty) = ElementType::parse(&event_target_value(&ev)) {
                            update(Box::new(move |arg| arg.ty = ty));
                        }
                    }
                >
                    {types}
                </select>
            </div>
            <div class="field" hidden=move || !is_buffer()>
                <label for=id("fill")>"Fill"</label>
                <select
                    id=id("fill")
                    on:change=move |ev| {
                        if let Some(fill) = Fill::parse(&event_target_value(&ev)) {
                            update(Box::new(move |arg| arg.fill = fill));
                        }
                    }
                >
                    {fills}
                </select>
            </div>
            <div class="field" hidden=move || !lists_values()>
                <label for=id("values")>"Values"</label>
                <input
                    type="text"
                    id=id("values")
                    placeholder="1, 2.5, 3"
                    spellcheck="false"
                    autocomplete="off"
                    value=initial.values.clone()
                    on:input=move |ev| {
                        let text = event_target_value(&ev);
                        update(Box::new(move |arg| arg.values = text));
                    }
                />
            </div>
            <label class="inline-check" hidden=move || !is_buffer()>
                <input
                    type="checkbox"
                    checked=initial.output
                    on:change=move |ev| {
                        let on = event_target_checked(&ev);
                        update(Box::new(move |arg| arg.output = on));
                    }
                />
                " Output"
            </label>
            <div class="field" hidden=is_buffer>
                <label for=id("value")>"Value"</label>
                <input
                    type="text"
                    id=id("value")
                    spellcheck="false"
                    autocomplete="off"
                    value=initial.value.clone()
                    on:input=move |ev| {
                        let text = event_target_value(&ev);
                        update(Box::new(move |arg| arg.value = text));
                    }
                />
            </div>
            <span class="arg-actions">
                <button
                    type="button"
                    aria-label=move || format!("Move {} up", up())
                    disabled=move || index.get() == Some(0)
                    on:click=move |_| move_by(-1)
                >
                    "↑"
                </button>
                <button
                    type="button"
                    aria-label=move || format!("Move {} down", down())
                    disabled=move || index.get().map(|i| i + 1) == Some(args.with(Vec::len))
                    on:click=move |_| move_by(1)
                >
                    "↓"
                </button>
                <button
                    type="button"
                    aria-label=move || format!("Remove {}", remove())
                    on:click=move |_| {
                        args.update(|rows| rows.retain(|r| r.key != key));
                        edited();
                    }
                >
                    "✕"
                </button>
            </span>
            <p class="field-error" role="alert">
                {error}
            </p>
        </li>
    }
}

/// The custom job, as it runs and once it has ended; hidden until there is one.
#[component]
fn JobOutcome(job: Memo<Option<Job>>) -> impl IntoView {
    let read = move |get: fn(&Job) -> String| move || job.with(|j| j.as_ref().map(get));
    let status = move || job.with(|j| j.as_ref().map(|j| j.status));
    let progress = move || {
        job.with(|j| {
            j.as_ref()
                .and_then(|j| j.progress.filter(|_| j.status == JobStatus::Running))
                .map(|p| format!("{} of {} runs", p.done, p.total))
        })
    };
    let error = move || job.with(|j| j.as_ref().and_then(|j| j.error.clone()));
    let result =
        Memo::new(move |_| job.with(|j| j.as_ref().and_then(|j| Some((j.id, j.result.clone()?)))));
    view! {
        <section
            class="card editor-job"
            data-testid="editor-job"
            aria-labelledby="editor-job-heading"
            hidden=move || job.with(Option::is_none)
        >
            <h2 id="editor-job-heading">
                <a href=read(|j| format!("/jobs/{}", j.id))>{read(|j| format!("Job {}", j.id))}</a>
                {read(|j| format!(" on {} ", j.device))}
                <span class=move || {
                    status().map(|s| format!("badge status-{}", s.as_str()))
                }>{move || status().map(JobStatus::as_str)}</span>
            </h2>
            <p class="help" hidden=move || progress().is_none()>
                {progress}
            </p>
            <pre class="job-error" hidden=move || error().is_none()>
                {error}
            </pre>
        </section>
        <div class="cards">
            {move || result.get().map(|(id, result)| view! { <JobResultView job_id=id result /> })}
        </div>
    }
}

/// The C parameter that argument `index` gives the kernel: `const float *a`, `unsigned int n`.
fn c_parameter(index: usize, arg: &Arg) -> String {
    let name = match arg.name.as_str() {
        "" => format!("arg{}", index + 1),
        name => name.to_owned(),
    };
    let ty = arg.ty.c_type();
    match (arg.kind, arg.output) {
        (ArgKind::Buffer, false) => format!("const {ty} *{name}"),
        (ArgKind::Buffer, true) => format!("{ty} *{name}"),
        (ArgKind::Scalar, _) => format!("{ty} {name}"),
    }
}

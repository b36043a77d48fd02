use gpulab_shared::{ParamSpec, ParamType};
use leptos::prelude::*;

use crate::validate;

/// One kernel parameter as a labelled form control, built from its catalog entry: a number
/// input with the catalog's bounds, a select for an enum, a checkbox for a boolean.
///
/// The control is uncontrolled: it starts at the default and reports every edit through
/// `on_input`, so a half-typed number is never overwritten while the user types it.
#[component]
pub fn ParamField(
    spec: ParamSpec,
    /// The message to show beside the control, if any.
    #[prop(into)]
    error: Signal<Option<String>>,
    #[prop(into)] on_input: Callback<String>,
    /// For an enum whose choices depend on the device: those the chosen device runs (the
    /// others are shown disabled). `None`: every choice.
    #[prop(optional, into)]
    allowed: Option<Signal<Option<Vec<String>>>>,
) -> impl IntoView {
    let input_name = format!("param-{}", spec.name);
    let help_id = format!("help-{}", spec.name);
    let error_id = format!("error-{}", spec.name);
    let described_by = format!("{help_id} {error_id}");
    let initial = validate::initial_text(&spec);
    let invalid = move || error.with(Option::is_some).then_some("true");
    let num = |bound: Option<f64>| bound.map(|b| b.to_string());

    let control = match spec.ty {
        ParamType::Integer | ParamType::Number => view! {
            <input
                type="number"
                id=input_name.clone()
                name=input_name.clone()
                value=initial
                min=num(spec.min)
                max=num(spec.max)
                step=if spec.ty == ParamType::Integer { "1" } else { "any" }
                inputmode=if spec.ty == ParamType::Integer { "numeric" } else { "decimal" }
                aria-describedby=described_by
                aria-invalid=invalid
                on:input=move |ev| on_input.run(event_target_value(&ev))
            />
        }
        .into_any(),
        ParamType::String => view! {
            <input
                type="text"
                id=input_name.clone()
                name=input_name.clone()
                value=initial
                aria-describedby=described_by
                aria-invalid=invalid
                on:input=move |ev| on_input.run(event_target_value(&ev))
            />
        }
        .into_any(),
        ParamType::Boolean => view! {
            <input
                type="checkbox"
                id=input_name.clone()
                name=input_name.clone()
                checked=initial == "true"
                aria-describedby=described_by
                on:change=move |ev| on_input.run(event_target_checked(&ev).to_string())
            />
        }
        .into_any(),
        ParamType::Enum => {
            let choices = spec.choices.clone().unwrap_or_default();
            view! {
                <select
                    id=input_name.clone()
                    name=input_name.clone()
                    aria-describedby=described_by
                    aria-invalid=invalid
                    on:change=move |ev| on_input.run(event_target_value(&ev))
                >
                    {choices
                        .into_iter()
                        .map(|choice| {
                            let selected = choice == initial;
                            let disabled = {
                                let choice = choice.clone();
                                move || {
                                    allowed.and_then(|a| a.get()).is_some_and(|a| !a.contains(&choice))
                                }
                            };
                            view! {
                                <option value=choice.clone() selected=selected disabled=disabled>
                                    {choice.clone()}
                                </option>
                            }
                        })
                        .collect_view()}
                </select>
            }
            .into_any()
        }
    };

    let unit = spec
        .unit
        .clone()
        .map(|u| view! { <span class="unit">{u}</span> });
    let hint = validate::range_hint(&spec).map(|range| format!(" Range: {range}."));
    let on_device = move || {
        allowed
            .and_then(|a| a.get())
            .map(|a| format!(" This device runs: {}.", a.join(", ")))
    };
    view! {
        <div class="field">
            <label class="param-name" for=input_name>
                {spec.name.clone()}
            </label>
            <div class="control">{control} {unit}</div>
            <small class="help" id=help_id>
                {spec.help.clone()}
                {hint}
                {on_device}
            </small>
            <FieldError name=spec.name.clone() error />
        </div>
    }
}

/// The message beside a form field. It is always in the page, empty when all is well, so a
/// screen reader announces a new message as it appears.
#[component]
pub fn FieldError(
    /// The field's name: the element is `field-error-<name>`.
    name: String,
    #[prop(into)] error: Signal<Option<String>>,
) -> impl IntoView {
    view! {
        <p
            class="field-error"
            id=format!("error-{name}")
            data-testid=format!("field-error-{name}")
            aria-live="polite"
        >
            {move || error.get()}
        </p>
    }
}

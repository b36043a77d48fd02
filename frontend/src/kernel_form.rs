//! What the launcher (`/launch`) and the comparison (`/compare`) share: a kernel chosen from
//! the catalog, its parameters as typed, their checks against the catalog's schema, and the
//! two pieces of form that show them.

use std::collections::BTreeMap;

use gpulab_shared::{Device, KernelSpec, ParamSpec, Params};
use leptos::prelude::*;

use crate::components::ParamField;
use crate::validate;

/// The devices of `devices` that can run `spec`.
pub fn eligible<'a>(
    spec: &'a KernelSpec,
    devices: &'a [Device],
) -> impl Iterator<Item = &'a Device> {
    devices.iter().filter(|d| spec.devices.contains(&d.kind))
}

/// Every parameter's control text at its default.
pub fn defaults(spec: &KernelSpec) -> BTreeMap<String, String> {
    spec.params
        .iter()
        .map(|p| (p.name.clone(), validate::initial_text(p)))
        .collect()
}

/// Each parameter whose text is wrong, with what is wrong, by parameter name.
pub fn param_errors(
    spec: &KernelSpec,
    values: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    spec.params
        .iter()
        .filter_map(|param| {
            let text = values.get(&param.name).map_or("", String::as_str);
            validate::param_value(param, text)
                .err()
                .map(|message| (param.name.clone(), message))
        })
        .collect()
}

/// The parameters as the API takes them; a wrong one is left out.
pub fn params(spec: &KernelSpec, values: &BTreeMap<String, String>) -> Params {
    spec.params
        .iter()
        .filter_map(|p| {
            let text = values.get(&p.name).map_or("", String::as_str);
            Some((p.name.clone(), validate::param_value(p, text).ok()?))
        })
        .collect()
}

/// The catalog, the chosen kernel and its parameters as typed.
#[derive(Clone, Copy)]
pub struct KernelChoice {
    pub catalog: StoredValue<(Vec<KernelSpec>, Vec<Device>)>,
    pub kernel: RwSignal<String>,
    pub values: RwSignal<BTreeMap<String, String>>,
    /// The chosen kernel's catalog entry.
    pub spec: Memo<Option<KernelSpec>>,
    /// The devices that can run it.
    pub choices: Memo<Vec<Device>>,
}

impl KernelChoice {
    /// `first` chosen, its parameters at their defaults.
    pub fn new(kernels: Vec<KernelSpec>, devices: Vec<Device>, first: &KernelSpec) -> Self {
        let catalog = StoredValue::new((kernels, devices));
        let kernel = RwSignal::new(first.name.clone());
        let values = RwSignal::new(defaults(first));
        let spec = Memo::new(move |_| {
            let name = kernel.get();
            catalog.with_value(|(kernels, _)| kernels.iter().find(|k| k.name == name).cloned())
        });
        let choices = Memo::new(move |_| {
            let spec = spec.get();
            catalog.with_value(|(_, devices)| match &spec {
                Some(spec) => eligible(spec, devices).cloned().collect(),
                None => Vec::new(),
            })
        });
        KernelChoice {
            catalog,
            kernel,
            values,
            spec,
            choices,
        }
    }

    /// Chooses kernel `name` with its parameters back at their defaults; `then` sees its
    /// entry and the devices first, so that the page can adjust its device choice.
    pub fn choose(&self, name: String, then: impl FnOnce(&KernelSpec, &[Device])) {
        self.catalog.with_value(|(kernels, devices)| {
            if let Some(spec) = kernels.iter().find(|k| k.name == name) {
                self.values.set(defaults(spec));
                then(spec, devices);
            }
        });
        self.kernel.set(name);
    }

    /// The wrong parameters of the chosen kernel (tracked).
    pub fn param_errors(&self) -> BTreeMap<String, String> {
        match self.spec.get() {
            Some(spec) => self.values.with(|values| param_errors(&spec, values)),
            None => BTreeMap::new(),
        }
    }

    /// The chosen kernel and its parameters as the API takes them (untracked).
    pub fn request_untracked(&self) -> Option<(KernelSpec, Params)> {
        let spec = self.spec.get_untracked()?;
        let params = self.values.with_untracked(|values| params(&spec, values));
        Some((spec, params))
    }
}

/// The kernel's `<select>` with its label and, below it, the kernel's description and
/// throughput formula. `children` go at the end of the field (an error, say).
#[component]
pub fn KernelSelect(
    choice: KernelChoice,
    /// Ids of further descriptions of the control, after the description's own.
    #[prop(optional)]
    described_by: &'static str,
    #[prop(into)] on_change: Callback<String>,
    #[prop(optional)] children: Option<Children>,
) -> impl IntoView {
    let KernelChoice {
        catalog,
        kernel,
        spec,
        ..
    } = choice;
    let options = catalog.with_value(|(kernels, _)| {
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
    let described_by = format!("kernel-about {described_by}").trim_end().to_owned();
    view! {
        <div class="field">
            <label for="kernel">"Kernel"</label>
            <select
                id="kernel"
                name="kernel"
                aria-describedby=described_by
                on:change=move |ev| on_change.run(event_target_value(&ev))
            >
                {options}
            </select>
            <small class="help" id="kernel-about">
                {move || spec.get().map(|k| view! {
                    {k.description}
                    <br />
                    "Throughput: " {k.throughput_formula}
                })}
            </small>
            {children.map(|children| children())}
        </div>
    }
}

/// The choices of an enum parameter that `device` runs, where they depend on the device
/// (`choices_by_device`, such as matmul's dtype); `None` when they do not.
pub fn device_choices(spec: &ParamSpec, device: &str) -> Option<Vec<String>> {
    let by_device = spec.choices_by_device.as_ref()?;
    Some(
        by_device
            .get(device)
            .cloned()
            .unwrap_or_else(|| spec.choices.clone().unwrap_or_default()),
    )
}

/// A control for each parameter of the chosen kernel, generated from its schema.
#[component]
pub fn ParamFields(
    choice: KernelChoice,
    /// The message beside parameter `name`, if any.
    field_error: Callback<String, Signal<Option<String>>>,
    /// Runs after every edit.
    #[prop(into)]
    edited: Callback<()>,
    /// The device the job is for, where one is chosen: a device-dependent enum offers only
    /// what it runs.
    #[prop(optional, into)]
    device: Option<Signal<String>>,
) -> impl IntoView {
    let KernelChoice { spec, values, .. } = choice;
    view! {
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
                    edited.run(());
                });
                let error = field_error.run(param.name.clone());
                let allowed = {
                    let param = param.clone();
                    Signal::derive(move || {
                        device.and_then(|device| device.with(|d| device_choices(&param, d)))
                    })
                };
                view! { <ParamField spec=param error on_input allowed /> }
            }
        />
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> KernelSpec {
        serde_json::from_value(serde_json::json!({
            "name": "saxpy",
            "description": "y = a·x + y",
            "devices": ["cpu"],
            "params": [
                {"name": "n", "type": "integer", "default": 4, "min": 1, "max": 10, "unit": null, "help": "length", "choices": null},
            ],
            "throughput_formula": "3 × n × 4 bytes / time",
        }))
        .unwrap()
    }

    #[test]
    fn a_device_dependent_enum_offers_what_the_device_runs() {
        let dtype: ParamSpec = serde_json::from_value(serde_json::json!({
            "name": "dtype", "type": "enum", "default": "fp32", "min": null, "max": null,
            "unit": null, "help": "type",
            "choices": ["fp64", "fp32", "bf16"],
            "choices_by_device": {"cpu": ["fp64", "fp32"], "cuda:0": ["fp64", "fp32", "bf16"]},
        }))
        .unwrap();
        assert_eq!(device_choices(&dtype, "cpu").unwrap(), ["fp64", "fp32"]);
        assert_eq!(device_choices(&dtype, "cuda:0").unwrap().len(), 3);
        // A device the map does not list takes every choice.
        assert_eq!(device_choices(&dtype, "cuda:7").unwrap().len(), 3);
        let n = &spec().params[0];
        assert_eq!(device_choices(n, "cpu"), None, "not device-dependent");
    }

    #[test]
    fn wrong_parameters_are_named_and_left_out_of_the_request() {
        let spec = spec();
        let mut values = defaults(&spec);
        assert_eq!(values["n"], "4");
        assert!(param_errors(&spec, &values).is_empty());
        assert_eq!(params(&spec, &values)["n"], 4);
        values.insert("n".into(), "11".into());
        assert!(param_errors(&spec, &values).contains_key("n"));
        assert!(params(&spec, &values).is_empty());
    }

    #[test]
    fn only_devices_of_the_kernels_kinds_are_eligible() {
        let device = |id: &str, kind| -> Device {
            serde_json::from_value(serde_json::json!({
                "id": id, "kind": kind, "name": id, "total_memory_bytes": null,
                "free_memory_bytes": null, "cuda": null, "cpu": null,
            }))
            .unwrap()
        };
        let devices = [device("cuda:0", "cuda"), device("cpu", "cpu")];
        let spec = spec();
        let ids: Vec<&str> = eligible(&spec, &devices).map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["cpu"]);
    }
}

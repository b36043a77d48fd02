//! What the launcher (`/launch`) and the comparison (`/compare`) share: a kernel chosen from
//! the catalog, its parameters as typed, their checks against the catalog's schema, and the
//! two pieces of form that show them.

use std::collections::BTreeMap;

use gpulab_shared::{Device, KernelSpec, ParamSpec, ParamType, Params};
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

/// The values an enum parameter offers when it runs on every one of `devices`: those each
/// device runs (its entry in `choices_by_device`, else `choices`), in the catalog's order.
/// Without devices, `choices`.
pub fn enum_choices(param: &ParamSpec, devices: &[String]) -> Vec<String> {
    let all = param.choices.clone().unwrap_or_default();
    let Some(by_device) = &param.choices_by_device else {
        return all;
    };
    all.into_iter()
        .filter(|choice| {
            devices
                .iter()
                .all(|d| by_device.get(d).is_none_or(|runs| runs.contains(choice)))
        })
        .collect()
}

/// What the help of a device-dependent enum says: `"This device runs: fp64, fp32."`, or for
/// several devices what they all run.
pub fn runs_note(allowed: &[String], devices: usize) -> Option<String> {
    let who = match devices {
        0 => return None,
        1 => "This device runs",
        _ => "The devices ticked all run",
    };
    Some(if allowed.is_empty() {
        format!("{who} none of these.")
    } else {
        format!("{who}: {}.", allowed.join(", "))
    })
}

/// `param` as the form checks it on `devices`: an enum offers only what they all run.
fn on_devices(param: &ParamSpec, devices: &[String]) -> ParamSpec {
    match param.ty {
        ParamType::Enum if param.choices_by_device.is_some() => ParamSpec {
            choices: Some(enum_choices(param, devices)),
            ..param.clone()
        },
        _ => param.clone(),
    }
}

/// Moves every enum parameter whose value `devices` do not all run to one they do: the
/// default when it is allowed, else the first allowed value. Other parameters stay as typed.
pub fn fit_to_devices(
    spec: &KernelSpec,
    values: &mut BTreeMap<String, String>,
    devices: &[String],
) {
    for param in spec.params.iter().filter(|p| p.ty == ParamType::Enum) {
        let allowed = enum_choices(param, devices);
        let current = values.get(&param.name).map(String::as_str);
        if current.is_some_and(|c| allowed.iter().any(|a| a == c)) {
            continue;
        }
        let default = validate::initial_text(param);
        let fitted = if allowed.contains(&default) {
            Some(default)
        } else {
            allowed.first().cloned()
        };
        if let Some(fitted) = fitted {
            values.insert(param.name.clone(), fitted);
        }
    }
}

/// Each parameter whose text is wrong on `devices`, with what is wrong, by parameter name.
pub fn param_errors(
    spec: &KernelSpec,
    values: &BTreeMap<String, String>,
    devices: &[String],
) -> BTreeMap<String, String> {
    spec.params
        .iter()
        .filter_map(|param| {
            let text = values.get(&param.name).map_or("", String::as_str);
            validate::param_value(&on_devices(param, devices), text)
                .err()
                .map(|message| (param.name.clone(), message))
        })
        .collect()
}

/// The parameters as the API takes them; a wrong one is left out.
pub fn params(spec: &KernelSpec, values: &BTreeMap<String, String>, devices: &[String]) -> Params {
    spec.params
        .iter()
        .filter_map(|p| {
            let text = values.get(&p.name).map_or("", String::as_str);
            Some((
                p.name.clone(),
                validate::param_value(&on_devices(p, devices), text).ok()?,
            ))
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
    /// The ids of the devices it is to run on, which narrow the values an enum parameter
    /// with `choices_by_device` offers.
    pub devices: RwSignal<Vec<String>>,
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
            devices: RwSignal::new(Vec::new()),
        }
    }

    /// The job is to run on `devices`: enum parameters they do not all run move to a value
    /// they do.
    pub fn set_devices(&self, devices: Vec<String>) {
        if let Some(spec) = self.spec.get_untracked() {
            self.values
                .update(|values| fit_to_devices(&spec, values, &devices));
        }
        self.devices.set(devices);
    }

    /// Chooses kernel `name` with its parameters back at their defaults; `then` sees its
    /// entry and the devices first, so that the page can adjust its device choice.
    pub fn choose(&self, name: String, then: impl FnOnce(&KernelSpec, &[Device])) {
        self.catalog.with_value(|(kernels, devices)| {
            if let Some(spec) = kernels.iter().find(|k| k.name == name) {
                let mut values = defaults(spec);
                self.devices
                    .with_untracked(|ids| fit_to_devices(spec, &mut values, ids));
                self.values.set(values);
                then(spec, devices);
            }
        });
        self.kernel.set(name);
    }

    /// The wrong parameters of the chosen kernel (tracked).
    pub fn param_errors(&self) -> BTreeMap<String, String> {
        match self.spec.get() {
            Some(spec) => self.devices.with(|devices| {
                self.values
                    .with(|values| param_errors(&spec, values, devices))
            }),
            None => BTreeMap::new(),
        }
    }

    /// The chosen kernel and its parameters as the API takes them (untracked).
    pub fn request_untracked(&self) -> Option<(KernelSpec, Params)> {
        let spec = self.spec.get_untracked()?;
        let params = self.devices.with_untracked(|devices| {
            self.values
                .with_untracked(|values| params(&spec, values, devices))
        });
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

/// A control for each parameter of the chosen kernel, generated from its schema.
#[component]
pub fn ParamFields(
    choice: KernelChoice,
    /// The message beside parameter `name`, if any.
    field_error: Callback<String, Signal<Option<String>>>,
    /// Runs after every edit.
    #[prop(into)]
    edited: Callback<()>,
) -> impl IntoView {
    let KernelChoice {
        spec,
        values,
        devices,
        ..
    } = choice;
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
                // An enum's options follow the devices chosen, and its value follows the
                // reset to one they run.
                let choices = {
                    let param = param.clone();
                    Signal::derive(move || devices.with(|ids| enum_choices(&param, ids)))
                };
                let value = {
                    let name = param.name.clone();
                    Signal::derive(move || values.with(|v| v.get(&name).cloned().unwrap_or_default()))
                };
                // Where the values depend on the device, the help says which ones run.
                let note = {
                    let param = param.clone();
                    Signal::derive(move || {
                        param.choices_by_device.as_ref()?;
                        devices.with(|ids| runs_note(&enum_choices(&param, ids), ids.len()))
                    })
                };
                view! { <ParamField spec=param error on_input choices value note /> }
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
    fn wrong_parameters_are_named_and_left_out_of_the_request() {
        let spec = spec();
        let mut values = defaults(&spec);
        assert_eq!(values["n"], "4");
        assert!(param_errors(&spec, &values, &[]).is_empty());
        assert_eq!(params(&spec, &values, &[])["n"], 4);
        values.insert("n".into(), "11".into());
        assert!(param_errors(&spec, &values, &[]).contains_key("n"));
        assert!(params(&spec, &values, &[]).is_empty());
    }

    /// matmul's `dtype` as the catalog gives it: the CPU runs fp64 and fp32, an H100 (9.0)
    /// everything but int8 in this made-up entry, a device not listed takes `choices`.
    fn gemm() -> KernelSpec {
        serde_json::from_value(serde_json::json!({
            "name": "matmul",
            "description": "C = A·B",
            "devices": ["cpu", "cuda"],
            "params": [
                {"name": "n", "type": "integer", "default": 4, "min": 1, "max": 10, "unit": null, "help": "side", "choices": null},
                {"name": "dtype", "type": "enum", "default": "bf16", "min": null, "max": null,
                 "unit": null, "help": "data type",
                 "choices": ["fp64", "fp32", "tf32", "fp16", "bf16", "fp8_e4m3", "int8"],
                 "choices_by_device": {
                     "cpu": ["fp64", "fp32"],
                     "cuda:0": ["fp64", "fp32", "tf32", "fp16", "bf16", "fp8_e4m3"],
                 }},
            ],
            "throughput_formula": "2 × n³ FLOP / median time",
        }))
        .unwrap()
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|&id| id.to_owned()).collect()
    }

    #[test]
    fn an_enum_offers_only_what_the_chosen_devices_run() {
        let spec = gemm();
        let dtype = &spec.params[1];
        assert_eq!(enum_choices(dtype, &ids(&["cpu"])), ["fp64", "fp32"]);
        assert_eq!(enum_choices(dtype, &ids(&["cuda:0"])).len(), 6);
        // Several devices (the comparison): what all of them run.
        assert_eq!(
            enum_choices(dtype, &ids(&["cuda:0", "cpu"])),
            ["fp64", "fp32"]
        );
        // A device the catalog does not list, and no device: the whole list.
        assert_eq!(enum_choices(dtype, &ids(&["cuda:7"])).len(), 7);
        assert_eq!(enum_choices(dtype, &[]).len(), 7);
        // A parameter without `choices_by_device` is untouched.
        let mut plain = dtype.clone();
        plain.choices_by_device = None;
        assert_eq!(enum_choices(&plain, &ids(&["cpu"])).len(), 7);
    }

    #[test]
    fn the_help_says_what_the_devices_run() {
        let allowed = ids(&["fp64", "fp32"]);
        assert_eq!(
            runs_note(&allowed, 1).as_deref(),
            Some("This device runs: fp64, fp32.")
        );
        assert_eq!(
            runs_note(&allowed, 2).as_deref(),
            Some("The devices ticked all run: fp64, fp32.")
        );
        assert_eq!(
            runs_note(&[], 3).as_deref(),
            Some("The devices ticked all run none of these.")
        );
        assert_eq!(runs_note(&allowed, 0), None);
    }

    #[test]
    fn changing_the_device_resets_a_value_it_does_not_run() {
        let spec = gemm();
        let mut values = defaults(&spec);
        assert_eq!(values["dtype"], "bf16");
        // bf16 is no choice on the CPU: refused there, and moved to the first it runs.
        assert!(param_errors(&spec, &values, &ids(&["cpu"])).contains_key("dtype"));
        assert!(!params(&spec, &values, &ids(&["cpu"])).contains_key("dtype"));
        fit_to_devices(&spec, &mut values, &ids(&["cpu"]));
        assert_eq!(values["dtype"], "fp64");
        assert!(param_errors(&spec, &values, &ids(&["cpu"])).is_empty());
        // Back on the GPU fp64 is still allowed, so the user's choice stays.
        fit_to_devices(&spec, &mut values, &ids(&["cuda:0"]));
        assert_eq!(values["dtype"], "fp64");
        // fp8 chosen on the GPU, then the CPU: the default would not run there either.
        values.insert("dtype".into(), "fp8_e4m3".into());
        values.insert("n".into(), "7".into());
        fit_to_devices(&spec, &mut values, &ids(&["cpu"]));
        assert_eq!(values["dtype"], "fp64");
        assert_eq!(values["n"], "7", "other parameters stay as typed");
        // Where the default is allowed, it is the one chosen.
        values.insert("dtype".into(), "int8".into());
        fit_to_devices(&spec, &mut values, &ids(&["cuda:0"]));
        assert_eq!(values["dtype"], "bf16");
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

//! The launcher's own check of what the user typed, with the limits of the kernel catalog,
//! so an out-of-range value is refused before any request. The server checks again.

use gpulab_shared::{ParamSpec, ParamType};
use serde_json::Value;

use crate::format;

/// The text a parameter's control starts with: its catalog default.
pub fn initial_text(spec: &ParamSpec) -> String {
    format::json_value(&spec.default)
}

/// What the user typed for `spec`, as the JSON value the API takes, or what is wrong with it.
pub fn param_value(spec: &ParamSpec, text: &str) -> Result<Value, String> {
    let text = text.trim();
    match spec.ty {
        ParamType::Integer => text
            .parse::<f64>()
            .ok()
            .filter(|x| x.fract() == 0.0 && in_range(spec, *x))
            .map(|x| Value::from(x as i64))
            .ok_or_else(|| format!("Enter a whole number{}{}.", range(spec), unit(spec))),
        ParamType::Number => text
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && in_range(spec, *x))
            .map(Value::from)
            .ok_or_else(|| format!("Enter a number{}{}.", range(spec), unit(spec))),
        ParamType::Boolean => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err("Choose on or off.".to_owned()),
        },
        ParamType::String => Ok(Value::from(text)),
        ParamType::Enum => {
            let choices = spec.choices.as_deref().unwrap_or_default();
            if choices.iter().any(|c| c == text) {
                Ok(Value::from(text))
            } else {
                Err(format!("Choose one of {}.", choices.join(", ")))
            }
        }
    }
}

/// The number of timed repetitions: a whole number of at least 1.
pub fn repetitions(text: &str) -> Result<u32, String> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| "Enter a whole number of at least 1.".to_owned())
}

/// The time limit in seconds: a positive number.
pub fn timeout_s(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|&s| s.is_finite() && s > 0.0)
        .ok_or_else(|| "Enter a number of seconds above 0.".to_owned())
}

/// The allowed range as the help text shows it, such as `"1 – 1048576"`.
pub fn range_hint(spec: &ParamSpec) -> Option<String> {
    match (spec.min, spec.max) {
        (Some(lo), Some(hi)) => Some(format!("{} – {}", num(lo), num(hi))),
        (Some(lo), None) => Some(format!("≥ {}", num(lo))),
        (None, Some(hi)) => Some(format!("≤ {}", num(hi))),
        (None, None) => None,
    }
}

fn in_range(spec: &ParamSpec, x: f64) -> bool {
    spec.min.is_none_or(|lo| x >= lo) && spec.max.is_none_or(|hi| x <= hi)
}

fn range(spec: &ParamSpec) -> String {
    match (spec.min, spec.max) {
        (Some(lo), Some(hi)) => format!(" from {} to {}", num(lo), num(hi)),
        (Some(lo), None) => format!(" of at least {}", num(lo)),
        (None, Some(hi)) => format!(" of at most {}", num(hi)),
        (None, None) => String::new(),
    }
}

fn unit(spec: &ParamSpec) -> String {
    spec.unit
        .as_deref()
        .map(|u| format!(" ({u})"))
        .unwrap_or_default()
}

/// A bound without a needless `.0`.
fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

//! Checking a job's parameters against its kernel's schema, defaults filled in.

use gpulab_shared::{ParamSpec, ParamType, Params};
use serde_json::Value;

/// A parameter that is missing, of the wrong type, out of range or unknown.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{detail}")]
pub struct ParamError {
    /// `params.NAME`.
    pub field: String,
    pub detail: String,
}

/// Parameters checked against a schema: every one present, typed and in range.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedParams(Params);

impl ResolvedParams {
    /// Checks `given` against `specs`, filling in defaults.
    pub fn resolve(specs: &[ParamSpec], given: Option<&Params>) -> Result<Self, ParamError> {
        let empty = Params::new();
        let given = given.unwrap_or(&empty);
        if let Some(unknown) = given.keys().find(|k| !specs.iter().any(|s| &s.name == *k)) {
            let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            return Err(ParamError {
                field: format!("params.{unknown}"),
                detail: format!(
                    "unknown parameter `{unknown}`; this kernel takes: {}",
                    known.join(", ")
                ),
            });
        }
        let mut resolved = Params::new();
        for spec in specs {
            let value = given.get(&spec.name).unwrap_or(&spec.default);
            resolved.insert(spec.name.clone(), check(spec, value)?);
        }
        Ok(ResolvedParams(resolved))
    }

    /// Wraps parameters that are already known to be valid (as the worker receives them).
    pub fn trusted(params: Params) -> Self {
        ResolvedParams(params)
    }

    pub fn as_map(&self) -> &Params {
        &self.0
    }

    pub fn into_map(self) -> Params {
        self.0
    }

    /// The value of `name`, or an error naming it when the schema had no such parameter.
    fn value(&self, name: &str) -> Result<&Value, ParamError> {
        self.0.get(name).ok_or_else(|| ParamError {
            field: format!("params.{name}"),
            detail: format!("missing parameter `{name}`"),
        })
    }

    fn wrong_type(name: &str, expected: &str, value: &Value) -> ParamError {
        ParamError {
            field: format!("params.{name}"),
            detail: format!("`{name}` must be {expected}, got {value}"),
        }
    }

    /// A non-negative integer parameter.
    pub fn integer(&self, name: &str) -> Result<u64, ParamError> {
        let value = self.value(name)?;
        value
            .as_u64()
            .ok_or_else(|| Self::wrong_type(name, "a non-negative integer", value))
    }

    /// A non-negative integer parameter that counts things held in memory.
    pub fn count(&self, name: &str) -> Result<usize, ParamError> {
        let value = self.value(name)?;
        value
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| Self::wrong_type(name, "a count that fits this host", value))
    }

    /// A number parameter (an integer is a number too).
    pub fn number(&self, name: &str) -> Result<f64, ParamError> {
        let value = self.value(name)?;
        value
            .as_f64()
            .ok_or_else(|| Self::wrong_type(name, "a number", value))
    }

    /// An enum parameter, read into the Rust enum `C` whose names the schema offered.
    pub fn choice<C: Choice>(&self, name: &str) -> Result<C, ParamError> {
        let value = self.value(name)?;
        value.as_str().and_then(C::from_name).ok_or_else(|| {
            let names: Vec<&str> = C::CHOICES.iter().map(|(n, _)| *n).collect();
            Self::wrong_type(name, &format!("one of {}", names.join(", ")), value)
        })
    }
}

/// A kernel's typed parameters, read once from [`ResolvedParams`].
pub trait FromParams: Sized {
    /// Reads every parameter; a missing one or one of the wrong type is an error.
    fn from_params(params: &ResolvedParams) -> Result<Self, ParamError>;
}

/// A Rust enum behind an enum parameter: its values and their names in the API, in the order
/// the catalog lists them. Declare one with [`choice_enum!`], and its schema with
/// [`spec::choice_of`], so that the schema and the parsing share one list.
pub trait Choice: Copy + 'static {
    const CHOICES: &'static [(&'static str, Self)];

    /// The name of this value in the API.
    fn name(self) -> &'static str;

    /// The value called `name`, if there is one.
    fn from_name(name: &str) -> Option<Self> {
        Self::CHOICES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, c)| *c)
    }
}

/// Declares an enum parameter's Rust enum and its API names:
///
/// ```ignore
/// choice_enum! {
///     /// How the product is computed.
///     pub enum Variant { Cublas = "cublas", Tiled = "tiled" }
/// }
/// ```
macro_rules! choice_enum {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $crate::kernels::params::Choice for $name {
            const CHOICES: &'static [(&'static str, Self)] = &[$(($text, $name::$variant)),+];

            fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }
    };
}
pub(crate) use choice_enum;

fn check(spec: &ParamSpec, value: &Value) -> Result<Value, ParamError> {
    let field = format!("params.{}", spec.name);
    let err = |detail: String| ParamError {
        field: field.clone(),
        detail,
    };
    let range = || match (spec.min, spec.max) {
        (Some(lo), Some(hi)) => format!(" from {} to {}", fmt_num(lo), fmt_num(hi)),
        (Some(lo), None) => format!(" of at least {}", fmt_num(lo)),
        (None, Some(hi)) => format!(" of at most {}", fmt_num(hi)),
        (None, None) => String::new(),
    };
    let in_range = |x: f64| spec.min.is_none_or(|lo| x >= lo) && spec.max.is_none_or(|hi| x <= hi);
    match spec.ty {
        ParamType::Integer => {
            // Accept 1e6 written as a float when it is a whole number.
            let n = value
                .as_i64()
                .map(|n| n as f64)
                .or_else(|| value.as_f64().filter(|f| f.fract() == 0.0));
            match n {
                Some(x) if in_range(x) => Ok(Value::from(x as i64)),
                _ => Err(err(format!(
                    "`{}` must be an integer{}{}, got {value}",
                    spec.name,
                    range(),
                    unit(spec)
                ))),
            }
        }
        ParamType::Number => match value.as_f64() {
            Some(x) if x.is_finite() && in_range(x) => Ok(Value::from(x)),
            _ => Err(err(format!(
                "`{}` must be a number{}{}, got {value}",
                spec.name,
                range(),
                unit(spec)
            ))),
        },
        ParamType::Boolean => match value {
            Value::Bool(_) => Ok(value.clone()),
            _ => Err(err(format!(
                "`{}` must be true or false, got {value}",
                spec.name
            ))),
        },
        ParamType::String => match value {
            Value::String(_) => Ok(value.clone()),
            _ => Err(err(format!(
                "`{}` must be a string, got {value}",
                spec.name
            ))),
        },
        ParamType::Enum => {
            let choices = spec.choices.as_deref().unwrap_or_default();
            match value.as_str() {
                Some(s) if choices.iter().any(|c| c == s) => Ok(value.clone()),
                _ => Err(err(format!(
                    "`{}` must be one of {}, got {value}",
                    spec.name,
                    choices.join(", ")
                ))),
            }
        }
    }
}

fn unit(spec: &ParamSpec) -> String {
    spec.unit
        .as_deref()
        .map(|u| format!(" ({u})"))
        .unwrap_or_default()
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// Builders for the parameter schemas of the built-in kernels.
pub mod spec {
    use gpulab_shared::{ParamSpec, ParamType};
    use serde_json::Value;

    /// An integer parameter with an inclusive range.
    pub fn integer(
        name: &str,
        default: i64,
        min: i64,
        max: i64,
        unit: Option<&str>,
        help: &str,
    ) -> ParamSpec {
        ParamSpec {
            name: name.into(),
            ty: ParamType::Integer,
            default: Value::from(default),
            min: Some(min as f64),
            max: Some(max as f64),
            choices: None,
            choices_by_device: None,
            unit: unit.map(Into::into),
            help: help.into(),
        }
    }

    /// A number parameter with an inclusive range.
    pub fn number(
        name: &str,
        default: f64,
        min: f64,
        max: f64,
        unit: Option<&str>,
        help: &str,
    ) -> ParamSpec {
        ParamSpec {
            name: name.into(),
            ty: ParamType::Number,
            default: Value::from(default),
            min: Some(min),
            max: Some(max),
            choices: None,
            choices_by_device: None,
            unit: unit.map(Into::into),
            help: help.into(),
        }
    }

    /// One of a fixed set of strings.
    pub fn choice(name: &str, default: &str, choices: &[&str], help: &str) -> ParamSpec {
        ParamSpec {
            name: name.into(),
            ty: ParamType::Enum,
            default: Value::from(default),
            min: None,
            max: None,
            choices: Some(choices.iter().map(|c| c.to_string()).collect()),
            choices_by_device: None,
            unit: None,
            help: help.into(),
        }
    }

    /// The enum parameter of the Rust enum `C`, its choices in `C`'s order.
    pub fn choice_of<C: super::Choice>(name: &str, default: C, help: &str) -> ParamSpec {
        let names: Vec<&str> = C::CHOICES.iter().map(|(n, _)| *n).collect();
        choice(name, default.name(), &names, help)
    }

    /// The `seed` every kernel draws its inputs from.
    pub fn seed() -> ParamSpec {
        integer(
            "seed",
            42,
            0,
            u32::MAX as i64,
            None,
            "Seed of the deterministic input data.",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::spec::*;
    use super::*;

    choice_enum! {
        enum Which { Tiled = "tiled", Cublas = "cublas" }
    }

    fn specs() -> Vec<ParamSpec> {
        vec![
            integer("n", 1024, 1, 1 << 20, Some("elements"), "Elements."),
            number("alpha", 2.0, -10.0, 10.0, None, "Scale."),
            choice_of("variant", Which::Tiled, "Which."),
        ]
    }

    #[test]
    fn an_enum_schema_lists_the_rust_enums_names_in_order() {
        let variant = &specs()[2];
        assert_eq!(variant.ty, ParamType::Enum);
        assert_eq!(variant.default, Value::from("tiled"));
        assert_eq!(
            variant.choices.as_deref(),
            Some(&["tiled".to_string(), "cublas".to_string()][..])
        );
        let given: Params = [("variant".to_string(), Value::from("cublas"))].into();
        let p = ResolvedParams::resolve(&specs(), Some(&given)).unwrap();
        assert_eq!(p.choice::<Which>("variant"), Ok(Which::Cublas));
        assert_eq!(Which::Cublas.name(), "cublas");
    }

    /// The typed getters answer a name the schema lacks, or a value of another type, with an
    /// error naming the parameter: the old string getters panicked.
    #[test]
    fn a_wrong_name_or_type_is_an_error_not_a_panic() {
        let p = ResolvedParams::resolve(&specs(), None).unwrap();
        let e = p.integer("m").unwrap_err();
        assert_eq!(e.field, "params.m");
        assert!(e.detail.contains("missing"), "{}", e.detail);
        assert_eq!(p.integer("alpha").unwrap_err().field, "params.alpha");
        assert_eq!(p.count("variant").unwrap_err().field, "params.variant");
        assert!(p.number("variant").is_err());
        let e = p.choice::<Which>("n").unwrap_err();
        assert!(e.detail.contains("one of tiled, cublas"), "{}", e.detail);
        // Parameters the worker trusts are still checked where they are read.
        let trusted = ResolvedParams::trusted(
            [
                ("n".to_string(), Value::from(-1)),
                ("variant".to_string(), Value::from("naive")),
            ]
            .into(),
        );
        assert!(trusted.integer("n").is_err());
        assert!(trusted.choice::<Which>("variant").is_err());
    }

    #[test]
    fn defaults_fill_missing_parameters() {
        let p = ResolvedParams::resolve(&specs(), None).unwrap();
        assert_eq!(p.integer("n"), Ok(1024));
        assert_eq!(p.count("n"), Ok(1024));
        assert_eq!(p.number("alpha"), Ok(2.0));
        assert_eq!(p.choice::<Which>("variant"), Ok(Which::Tiled));
    }

    #[test]
    fn whole_floats_are_integers() {
        let given: Params = [("n".to_string(), Value::from(4096.0))].into();
        assert_eq!(
            ResolvedParams::resolve(&specs(), Some(&given))
                .unwrap()
                .integer("n"),
            Ok(4096)
        );
    }

    #[test]
    fn out_of_range_names_the_field_and_the_range() {
        let given: Params = [("n".to_string(), Value::from(0))].into();
        let e = ResolvedParams::resolve(&specs(), Some(&given)).unwrap_err();
        assert_eq!(e.field, "params.n");
        assert!(e.detail.contains("from 1 to 1048576"), "{}", e.detail);
        let given: Params = [("n".to_string(), Value::from(2.5))].into();
        assert!(ResolvedParams::resolve(&specs(), Some(&given)).is_err());
        let given: Params = [("n".to_string(), Value::from("10"))].into();
        assert!(ResolvedParams::resolve(&specs(), Some(&given)).is_err());
    }

    #[test]
    fn unknown_parameters_and_bad_choices_are_refused() {
        let given: Params = [("m".to_string(), Value::from(1))].into();
        let e = ResolvedParams::resolve(&specs(), Some(&given)).unwrap_err();
        assert_eq!(e.field, "params.m");
        let given: Params = [("variant".to_string(), Value::from("naive"))].into();
        let e = ResolvedParams::resolve(&specs(), Some(&given)).unwrap_err();
        assert!(e.detail.contains("tiled, cublas"), "{}", e.detail);
    }

    #[test]
    fn non_finite_numbers_are_refused() {
        // JSON cannot carry NaN, but a float that overflows to infinity is caught too.
        let given: Params = [("alpha".to_string(), Value::from(11.0))].into();
        assert!(ResolvedParams::resolve(&specs(), Some(&given)).is_err());
    }
}

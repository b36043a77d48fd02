//! The custom CUDA C kernel that the editor page sends as a job: its launch configuration,
//! its arguments, the starter templates, and the `params` of `POST /api/jobs` built from
//! what the user typed, with every field checked before anything is sent.
//!
//! Nothing here touches the browser, so the checks are unit-tested on the host.

pub mod annotate;
pub mod compile_log;

use std::collections::BTreeMap;

use gpulab_shared::custom::{is_identifier, CustomArg, CustomParams, Dims};
pub use gpulab_shared::custom::{ElementType, Fill, KERNEL};
use gpulab_shared::Params;
use serde_json::Number;

use crate::validate;

/// Dynamic shared memory every CUDA GPU gives a block without opting in to more: 48 KiB.
pub use gpulab_shared::custom::MAX_SHARED_MEM_BYTES;
use gpulab_shared::custom::{MAX_BLOCK, MAX_BLOCK_THREADS, MAX_GRID};

/// `text` as a number of type `ty`, or what is wrong with it.
fn typed_number(ty: ElementType, text: &str) -> Result<Number, String> {
    let text = text.trim();
    let wrong = || format!("Enter {}.", describe(ty));
    match ty {
        ElementType::F32 | ElementType::F64 => text
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && (ty == ElementType::F64 || x.abs() <= f64::from(f32::MAX)))
            .and_then(Number::from_f64)
            .ok_or_else(wrong),
        ElementType::I32 => text.parse::<i32>().map(Number::from).map_err(|_| wrong()),
        ElementType::U32 => text.parse::<u32>().map(Number::from).map_err(|_| wrong()),
    }
}

fn describe(ty: ElementType) -> &'static str {
    match ty {
        ElementType::F32 => "a number (f32)",
        ElementType::F64 => "a number (f64)",
        ElementType::I32 => "a whole number from -2147483648 to 2147483647 (i32)",
        ElementType::U32 => "a whole number from 0 to 4294967295 (u32)",
    }
}

/// What the form's select shows for a fill.
pub fn fill_label(fill: Fill) -> &'static str {
    match fill {
        Fill::Zeros => "zeros",
        Fill::Ones => "ones",
        Fill::Iota => "0, 1, 2, …",
        Fill::Random => "random",
        Fill::Values => "these values…",
    }
}

/// Whether an argument is a device buffer or a number passed by value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// A device buffer of `n` elements; a pointer parameter of the kernel.
    Buffer,
    /// A number passed by value.
    Scalar,
}

impl ArgKind {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buffer => "buffer",
            Self::Scalar => "scalar",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Buffer, Self::Scalar]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// One argument of the kernel, in the order the kernel declares them. It keeps what was
/// typed for both kinds, so switching the kind back loses nothing; only the fields of its
/// kind are sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    /// The parameter's name in the source, for the form's label only: it is not sent.
    pub name: String,
    pub kind: ArgKind,
    pub ty: ElementType,
    /// What a buffer holds before the run.
    pub fill: Fill,
    /// The numbers of a buffer's `Fill::Values`, as typed: `"1, 2.5, 3"`.
    pub values: String,
    /// Whether the job reports a buffer's content after the run.
    pub output: bool,
    /// A scalar's value, as typed; `n` means the element count.
    pub value: String,
}

impl Arg {
    /// A buffer of zeros, for the form's "add a buffer".
    pub fn buffer() -> Self {
        Arg {
            name: String::new(),
            kind: ArgKind::Buffer,
            ty: ElementType::F32,
            fill: Fill::Zeros,
            values: String::new(),
            output: false,
            value: N.to_owned(),
        }
    }

    /// A scalar holding the element count, for the form's "add a scalar".
    pub fn scalar() -> Self {
        Arg {
            kind: ArgKind::Scalar,
            ty: ElementType::U32,
            ..Arg::buffer()
        }
    }

    /// The argument as the API takes it, given the element count `n`.
    fn to_arg(&self, n: Option<u32>) -> Result<CustomArg, String> {
        let ty = self.ty;
        match self.kind {
            ArgKind::Buffer => Ok(CustomArg::Buffer {
                ty,
                fill: self.fill,
                seed: None,
                values: if self.fill == Fill::Values {
                    Some(buffer_values(ty, &self.values, n)?)
                } else {
                    None
                },
                output: self.output,
            }),
            ArgKind::Scalar => {
                let value = if self.value.trim() == N {
                    let n = n.ok_or("Enter a valid n first: this value is n.")?;
                    typed_number(ty, &n.to_string())
                        .map_err(|_| format!("n = {n} does not fit in {}.", ty.as_str()))?
                } else {
                    typed_number(ty, &self.value)?
                };
                Ok(CustomArg::Scalar { ty, value })
            }
        }
    }
}

/// What a scalar's value may say instead of a number: the element count.
pub const N: &str = "n";

/// The numbers of a `values` buffer: one to `n` of them, split by commas or spaces.
fn buffer_values(ty: ElementType, text: &str, n: Option<u32>) -> Result<Vec<Number>, String> {
    let values = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| typed_number(ty, s).map_err(|_| format!("“{s}” is not {}.", describe(ty))))
        .collect::<Result<Vec<_>, _>>()?;
    if values.is_empty() {
        return Err("List the values, separated by commas.".to_owned());
    }
    if let Some(n) = n {
        if values.len() > n as usize {
            return Err(format!(
                "{} values are more than the buffer's n = {n} elements.",
                values.len()
            ));
        }
    }
    Ok(values)
}

/// Everything of a custom job but its source, as the user typed it. Field names are the
/// `params` names of the API, which the errors of [`LaunchForm::params`] use too.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchForm {
    /// The `extern "C" __global__` function to launch.
    pub entry: String,
    /// The number of elements of every buffer.
    pub n: String,
    /// Whether the server picks the grid: `ceil(n / block.x)` blocks, one thread per element.
    pub per_element: bool,
    pub grid: [String; 3],
    pub block: [String; 3],
    pub shared_mem_bytes: String,
    pub repetitions: String,
}

/// The fields of the form, by the names its errors use.
pub mod field {
    pub const SOURCE: &str = "source";
    pub const ENTRY: &str = "entry";
    pub const N: &str = "n";
    pub const GRID: &str = "grid";
    pub const BLOCK: &str = "block";
    pub const SHARED_MEM_BYTES: &str = "shared_mem_bytes";
    pub const REPETITIONS: &str = "repetitions";
    pub const ARGS: &str = "args";

    /// The field of argument `index` (from 0).
    pub fn arg(index: usize) -> String {
        format!("args.{index}")
    }
}

/// A custom job's request, ready to send: its `params` and repetitions.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomJob {
    pub params: Params,
    pub repetitions: u32,
}

impl LaunchForm {
    /// The `params` of the job, or the message for each field that is wrong, by field name
    /// (see [`field`]). The params are the typed request of `gpulab_shared::custom`, checked
    /// as the server checks them.
    pub fn params(
        &self,
        source: &str,
        args: &[Arg],
    ) -> Result<CustomJob, BTreeMap<String, String>> {
        let mut errors = BTreeMap::new();
        fn keep<T>(
            errors: &mut BTreeMap<String, String>,
            name: &str,
            result: Result<T, String>,
        ) -> Option<T> {
            result
                .map_err(|message| errors.insert(name.to_owned(), message))
                .ok()
        }

        let entry = self.entry.trim();
        let source_value = keep(&mut errors, field::SOURCE, check_source(source, entry));
        let entry_value = keep(&mut errors, field::ENTRY, check_entry(entry));
        let n = keep(
            &mut errors,
            field::N,
            self.n
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| "Enter a whole number from 1 to 4294967295.".to_owned()),
        );
        let block = keep(
            &mut errors,
            field::BLOCK,
            dims(&self.block, MAX_BLOCK).and_then(check_block),
        );
        let grid = if self.per_element {
            Some(None)
        } else {
            keep(&mut errors, field::GRID, dims(&self.grid, MAX_GRID)).map(Some)
        };
        let shared = keep(
            &mut errors,
            field::SHARED_MEM_BYTES,
            self.shared_mem_bytes
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|&b| b <= MAX_SHARED_MEM_BYTES)
                .ok_or_else(|| {
                    format!(
                        "Enter a whole number of bytes from 0 to {MAX_SHARED_MEM_BYTES} (48 KiB)."
                    )
                }),
        );
        let repetitions = keep(
            &mut errors,
            field::REPETITIONS,
            validate::repetitions(&self.repetitions),
        );
        if args.is_empty() {
            errors.insert(
                field::ARGS.to_owned(),
                "Add the kernel's arguments, in the order it declares them.".to_owned(),
            );
        }
        let args: Vec<CustomArg> = args
            .iter()
            .enumerate()
            .filter_map(|(i, arg)| keep(&mut errors, &field::arg(i), arg.to_arg(n)))
            .collect();

        let (
            Some(source),
            Some(entry),
            Some(n),
            Some(grid),
            Some(block),
            Some(shared_mem_bytes),
            Some(repetitions),
        ) = (
            source_value,
            entry_value,
            n,
            grid,
            block,
            shared,
            repetitions,
        )
        else {
            return Err(errors);
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let custom = CustomParams {
            source,
            entry,
            n,
            grid,
            block,
            shared_mem_bytes,
            args,
        };
        // What only the whole request shows, such as the limit on listed values.
        if let Err(e) = custom.check() {
            errors.insert(e.field, format!("{}.", e.detail));
            return Err(errors);
        }
        Ok(CustomJob {
            params: custom.to_params(),
            repetitions,
        })
    }
}

fn check_source(source: &str, entry: &str) -> Result<String, String> {
    if source.trim().is_empty() {
        return Err("Write the kernel, or start from a template.".to_owned());
    }
    if is_identifier(entry) && !mentions(source, entry) {
        return Err(format!(
            "The source has no function `{entry}`: the entry must name one of its extern \"C\" __global__ functions."
        ));
    }
    Ok(source.to_owned())
}

fn check_entry(entry: &str) -> Result<String, String> {
    if is_identifier(entry) {
        Ok(entry.to_owned())
    } else {
        Err("Enter the name of an extern \"C\" __global__ function, such as vector_add.".to_owned())
    }
}

/// Whether `source` holds `name` as a whole word.
fn mentions(source: &str, name: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    source.match_indices(name).any(|(at, _)| {
        let before = source[..at].chars().next_back();
        let after = source[at + name.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// Three dimensions, each a whole number from 1 to its limit.
fn dims(text: &[String; 3], max: [u32; 3]) -> Result<Dims, String> {
    let mut dims = [0u32; 3];
    for (i, (text, max)) in text.iter().zip(max).enumerate() {
        let axis = ["x", "y", "z"][i];
        dims[i] = text
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|&d| (1..=max).contains(&d))
            .ok_or_else(|| format!("Enter a whole number from 1 to {max} for {axis}."))?;
    }
    Ok(Dims(dims))
}

fn check_block(block: Dims) -> Result<Dims, String> {
    let threads: u64 = block.0.iter().map(|&d| u64::from(d)).product();
    if threads > MAX_BLOCK_THREADS {
        Err(format!(
            "A block holds at most {MAX_BLOCK_THREADS} threads; x × y × z is {threads}."
        ))
    } else {
        Ok(block)
    }
}

/// A starter kernel: its source and how to launch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    /// What the template select sends and the tests choose.
    pub id: &'static str,
    pub title: &'static str,
    pub source: &'static str,
}

impl Template {
    pub const ALL: [Template; 3] = [
        Template {
            id: "vector_add",
            title: "Vector add",
            source: include_str!("templates/vector_add.cu"),
        },
        Template {
            id: "saxpy",
            title: "SAXPY",
            source: include_str!("templates/saxpy.cu"),
        },
        Template {
            id: "block_sum",
            title: "Shared-memory reduction",
            source: include_str!("templates/block_sum.cu"),
        },
    ];

    pub fn find(id: &str) -> Option<Template> {
        Self::ALL.into_iter().find(|t| t.id == id)
    }

    /// The launch configuration the template's kernel needs.
    pub fn launch(&self) -> LaunchForm {
        let block = 256;
        LaunchForm {
            entry: self.id.to_owned(),
            n: (1u32 << 20).to_string(),
            per_element: true,
            grid: ["4096".to_owned(), "1".to_owned(), "1".to_owned()],
            block: [block.to_string(), "1".to_owned(), "1".to_owned()],
            // The reduction keeps one float per thread in shared memory.
            shared_mem_bytes: if self.id == "block_sum" {
                (block * 4).to_string()
            } else {
                "0".to_owned()
            },
            repetitions: "10".to_owned(),
        }
    }

    /// The template kernel's arguments, in the order it declares them.
    pub fn args(&self) -> Vec<Arg> {
        let buffer = |name: &str, fill, output| Arg {
            name: name.to_owned(),
            fill,
            output,
            ..Arg::buffer()
        };
        let scalar = |name: &str, ty, value: &str| Arg {
            name: name.to_owned(),
            ty,
            value: value.to_owned(),
            ..Arg::scalar()
        };
        let n = || scalar("n", ElementType::U32, N);
        match self.id {
            "vector_add" => vec![
                buffer("a", Fill::Iota, false),
                buffer("b", Fill::Ones, false),
                buffer("c", Fill::Zeros, true),
                n(),
            ],
            "saxpy" => vec![
                scalar("a", ElementType::F32, "2.0"),
                buffer("x", Fill::Iota, false),
                buffer("y", Fill::Ones, true),
                n(),
            ],
            _ => vec![
                buffer("in", Fill::Ones, false),
                buffer("out", Fill::Zeros, true),
                n(),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn vector_add() -> (LaunchForm, Vec<Arg>, &'static str) {
        let template = Template::find("vector_add").unwrap();
        (template.launch(), template.args(), template.source)
    }

    #[test]
    fn every_template_is_a_bounds_checked_extern_c_kernel_that_passes_the_checks() {
        for template in Template::ALL {
            let source = template.source;
            assert!(
                source.contains(&format!("extern \"C\" __global__ void {}(", template.id)),
                "{}",
                template.id
            );
            assert!(source.contains("if (i < n)") || source.contains("(i < n) ?"));
            let job = template
                .launch()
                .params(source, &template.args())
                .unwrap_or_else(|errors| panic!("{}: {errors:?}", template.id));
            assert_eq!(job.params["entry"], template.id);
        }
    }

    #[test]
    fn builds_the_request_the_api_takes() {
        let (form, args, source) = vector_add();
        let job = form.params(source, &args).unwrap();
        assert_eq!(job.repetitions, 10);
        let params = Value::Object(job.params.into_iter().collect());
        // The same request the server's parser is tested with (server/src/cuda/custom.rs).
        let mut expected: Value = serde_json::from_str(include_str!(
            "../../../shared/fixtures/custom_vector_add.json"
        ))
        .unwrap();
        expected["source"] = json!(source);
        assert_eq!(params, expected);
    }

    #[test]
    fn sends_an_explicit_grid_and_listed_values() {
        let (mut form, mut args, source) = vector_add();
        form.per_element = false;
        form.grid = ["8".into(), "2".into(), "1".into()];
        form.n = "4".into();
        args[0] = Arg {
            ty: ElementType::I32,
            fill: Fill::Values,
            values: "1, -2 3".into(),
            ..Arg::buffer()
        };
        args[3] = Arg {
            ty: ElementType::F64,
            value: " 2.5 ".into(),
            ..Arg::scalar()
        };
        let job = form.params(source, &args).unwrap();
        assert_eq!(job.params["grid"], json!([8, 2, 1]));
        assert_eq!(job.params["args"][0]["values"], json!([1, -2, 3]));
        assert_eq!(
            job.params["args"][3],
            json!({"kind": "scalar", "type": "f64", "value": 2.5})
        );
    }

    #[test]
    fn sends_only_the_fields_of_the_arguments_kind() {
        let (form, mut args, source) = vector_add();
        args[0].kind = ArgKind::Scalar;
        args[0].value = "7".into();
        args[3].kind = ArgKind::Buffer;
        let job = form.params(source, &args).unwrap();
        assert_eq!(
            job.params["args"][0],
            json!({"kind": "scalar", "type": "f32", "value": 7.0})
        );
        assert_eq!(
            job.params["args"][3],
            json!({"kind": "buffer", "type": "u32", "fill": "zeros", "output": false})
        );
    }

    #[test]
    fn names_each_wrong_field() {
        let (mut form, mut args, _) = vector_add();
        form.entry = "2fast".into();
        form.n = "0".into();
        form.block = ["512".into(), "4".into(), "1".into()];
        form.shared_mem_bytes = "100000".into();
        form.repetitions = "0".into();
        args[1] = Arg {
            value: "-1".into(),
            ..Arg::scalar()
        };
        let errors = form.params("", &args).unwrap_err();
        let fields: Vec<&str> = errors.keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            [
                "args.1",
                "args.3",
                "block",
                "entry",
                "n",
                "repetitions",
                "shared_mem_bytes",
                "source"
            ]
        );
        assert!(errors["block"].contains("2048"), "{}", errors["block"]);
        assert!(
            errors["args.3"].contains("this value is n"),
            "{}",
            errors["args.3"]
        );
    }

    #[test]
    fn refuses_an_entry_the_source_does_not_define() {
        let (mut form, args, source) = vector_add();
        form.entry = "vector".into();
        let errors = form.params(source, &args).unwrap_err();
        assert!(
            errors["source"].contains("no function `vector`"),
            "{errors:?}"
        );
        assert!(!errors.contains_key("entry"));
    }

    #[test]
    fn refuses_values_that_do_not_fit_their_buffer_or_type() {
        let (mut form, mut args, source) = vector_add();
        form.n = "2".into();
        let values = |ty, text: &str| Arg {
            ty,
            fill: Fill::Values,
            values: text.into(),
            ..Arg::buffer()
        };
        for (arg, wanted) in [
            (values(ElementType::F32, "1, 2, 3"), "more than"),
            (values(ElementType::F32, " , "), "List the values"),
            (values(ElementType::U32, "1, -1"), "“-1”"),
            (values(ElementType::F32, "1e39"), "“1e39”"),
        ] {
            args[0] = arg;
            let errors = form.params(source, &args).unwrap_err();
            assert!(errors["args.0"].contains(wanted), "{errors:?}");
        }
    }

    #[test]
    fn hole4_the_servers_limit_on_listed_values_is_checked_before_sending() {
        let (form, mut args, source) = vector_add();
        let many = vec!["1"; gpulab_shared::custom::MAX_LISTED_VALUES + 1].join(",");
        args[0] = Arg {
            fill: Fill::Values,
            values: many,
            ..Arg::buffer()
        };
        let errors = form.params(source, &args).unwrap_err();
        assert!(errors["args.0"].contains("at most 4096"), "{errors:?}");
    }

    #[test]
    fn needs_at_least_one_argument_and_a_grid_when_not_per_element() {
        let (mut form, _, source) = vector_add();
        form.per_element = false;
        form.grid[1] = "70000".into();
        let errors = form.params(source, &[]).unwrap_err();
        assert!(errors.contains_key("args"));
        assert!(errors["grid"].contains("65535 for y"), "{errors:?}");
    }
}

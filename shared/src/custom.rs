//! The `params` of a custom CUDA C job (`kernel: "custom"`): one set of serde types, used
//! by the server to parse and store a job and by the UI to build one.
//!
//! Unknown fields are refused at every level. What the server stores is the normalised
//! request (defaults filled in, re-serialised from these types), never the client's bytes,
//! and its size is bounded: see the `MAX_*` constants.

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Number;

use crate::Params;

/// The kernel name of a custom job.
pub const KERNEL: &str = "custom";
/// The longest source accepted: 64 KiB.
pub const MAX_SOURCE_BYTES: usize = 64 * 1024;
/// The most numbers all `values` fills of one job may list together.
pub const MAX_LISTED_VALUES: usize = 4096;
/// The most bytes the normalised `params` of one job may take as JSON: 256 KiB.
pub const MAX_PARAMS_JSON_BYTES: usize = 256 * 1024;
/// The most arguments a kernel may take here.
pub const MAX_ARGS: usize = 32;
/// Dynamic shared memory a block gets without opting in to more: 48 KiB.
pub const MAX_SHARED_MEM_BYTES: u32 = 48 * 1024;
/// The most threads of a block, in all and per dimension.
pub const MAX_BLOCK_THREADS: u64 = 1024;
pub const MAX_BLOCK: [u32; 3] = [1024, 1024, 64];
pub const MAX_GRID: [u32; 3] = [(1u32 << 31) - 1, 65_535, 65_535];
/// The block when none is given.
pub const DEFAULT_BLOCK: [u32; 3] = [256, 1, 1];

/// A custom job's `params`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomParams {
    /// The CUDA C source.
    pub source: String,
    /// The `extern "C" __global__` function to launch.
    pub entry: String,
    /// Elements of every buffer, 1 to 4294967295.
    pub n: u32,
    /// `null`: one thread per element, `ceil(n / block.x)` blocks.
    #[serde(default)]
    pub grid: Option<Dims>,
    #[serde(default = "default_block")]
    pub block: Dims,
    #[serde(default)]
    pub shared_mem_bytes: u32,
    /// The kernel's arguments, in the order it declares them.
    #[serde(default)]
    pub args: Vec<CustomArg>,
}

fn default_block() -> Dims {
    Dims(DEFAULT_BLOCK)
}

/// `[x, y, z]`; `[x]`, `[x, y]` or a bare `x` are read with the missing sizes 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Dims(pub [u32; 3]);

impl<'de> Deserialize<'de> for Dims {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DimsVisitor;
        impl<'de> Visitor<'de> for DimsVisitor {
            type Value = Dims;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("[x, y, z]: one to three whole numbers")
            }
            fn visit_u64<E: de::Error>(self, x: u64) -> Result<Dims, E> {
                let x = u32::try_from(x).map_err(|_| E::custom("a size above 4294967295"))?;
                Ok(Dims([x, 1, 1]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Dims, A::Error> {
                let mut out = [1u32; 3];
                let mut len = 0;
                while let Some(d) = seq.next_element::<u32>()? {
                    if len == 3 {
                        return Err(de::Error::invalid_length(4, &self));
                    }
                    out[len] = d;
                    len += 1;
                }
                if len == 0 {
                    return Err(de::Error::invalid_length(0, &self));
                }
                Ok(Dims(out))
            }
        }
        d.deserialize_any(DimsVisitor)
    }
}

/// One argument: a device buffer of `n` elements, or a number passed by value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum CustomArg {
    Buffer {
        #[serde(rename = "type")]
        ty: ElementType,
        #[serde(default)]
        fill: Fill,
        /// The seed of a `random` fill (default 0).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seed: Option<u64>,
        /// The numbers of a `values` fill; the rest of the buffer is zeros.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        values: Option<Vec<Number>>,
        /// Whether the result reports the buffer's content after the run.
        #[serde(default)]
        output: bool,
    },
    Scalar {
        #[serde(rename = "type")]
        ty: ElementType,
        value: Number,
    },
}

/// The element type of a buffer or a scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElementType {
    F32,
    F64,
    I32,
    U32,
}

impl ElementType {
    pub const ALL: [ElementType; 4] = [Self::F32, Self::F64, Self::I32, Self::U32];

    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F64 => "f64",
            Self::I32 => "i32",
            Self::U32 => "u32",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The C type a kernel declares for it.
    pub fn c_type(self) -> &'static str {
        match self {
            Self::F32 => "float",
            Self::F64 => "double",
            Self::I32 => "int",
            Self::U32 => "unsigned int",
        }
    }

    /// Bytes of one element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 => 8,
            _ => 4,
        }
    }

    /// Whether `x` is a value of this type (a whole number in range for the integers).
    pub fn holds(self, x: &Number) -> bool {
        match self {
            Self::F32 => x
                .as_f64()
                .is_some_and(|x| x.is_finite() && x.abs() <= f64::from(f32::MAX)),
            Self::F64 => x.as_f64().is_some_and(f64::is_finite),
            Self::I32 => x.as_i64().is_some_and(|x| i32::try_from(x).is_ok()),
            Self::U32 => x.as_u64().is_some_and(|x| u32::try_from(x).is_ok()),
        }
    }
}

/// What a buffer holds before the first run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fill {
    #[default]
    Zeros,
    Ones,
    /// 0, 1, 2, …
    Iota,
    /// Uniform in [0, 1) for floats, any value for integers, from `seed`.
    Random,
    /// The listed `values`, then zeros.
    Values,
}

impl Fill {
    pub const ALL: [Fill; 5] = [
        Self::Zeros,
        Self::Ones,
        Self::Iota,
        Self::Random,
        Self::Values,
    ];

    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Zeros => "zeros",
            Self::Ones => "ones",
            Self::Iota => "iota",
            Self::Random => "random",
            Self::Values => "values",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// Why a custom job's `params` were refused: the field (`args.2`, `block`, …) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomError {
    pub field: String,
    pub detail: String,
    /// Over a size limit (the API answers 413) rather than wrong (422).
    pub too_large: bool,
}

fn invalid(field: impl Into<String>, detail: impl Into<String>) -> CustomError {
    CustomError {
        field: field.into(),
        detail: detail.into(),
        too_large: false,
    }
}

fn too_large(field: impl Into<String>, detail: impl Into<String>) -> CustomError {
    CustomError {
        too_large: true,
        ..invalid(field, detail)
    }
}

impl CustomParams {
    /// Reads and checks a job's `params`: unknown fields, wrong types and values out of
    /// range are refused with the field they are in.
    pub fn parse(params: Option<&Params>) -> Result<Self, CustomError> {
        let empty = Params::new();
        let map = params.unwrap_or(&empty);
        let value = serde_json::Value::Object(map.clone().into_iter().collect());
        let parsed: CustomParams = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let field = field_of(&path);
            invalid(field, format!("`{path}`: {}", e.inner()))
        })?;
        parsed.check()?;
        Ok(parsed)
    }

    /// Checks what the types alone cannot: sizes, ranges and the limits of a launch.
    pub fn check(&self) -> Result<(), CustomError> {
        if self.source.trim().is_empty() {
            return Err(invalid(
                "source",
                "`source` must be the kernel's CUDA C, as a non-empty string",
            ));
        }
        if self.source.len() > MAX_SOURCE_BYTES {
            return Err(too_large(
                "source",
                format!(
                    "`source` is {} bytes; at most {MAX_SOURCE_BYTES} (64 KiB) are accepted",
                    self.source.len()
                ),
            ));
        }
        if let Some(at) = self.source.find('\0') {
            return Err(invalid(
                "source",
                format!("`source` holds a NUL byte at byte {at}; CUDA C source cannot contain one"),
            ));
        }
        if !is_identifier(&self.entry) {
            return Err(invalid(
                "entry",
                "`entry` must name the kernel's extern \"C\" __global__ function, a C identifier",
            ));
        }
        let n = u64::from(self.n);
        if n == 0 {
            return Err(invalid(
                "n",
                "`n` must be a whole number from 1 to 4294967295",
            ));
        }
        check_dims("block", self.block, MAX_BLOCK)?;
        let threads: u64 = self.block.0.iter().map(|&d| u64::from(d)).product();
        if threads > MAX_BLOCK_THREADS {
            return Err(invalid(
                "block",
                format!(
                    "a block holds at most {MAX_BLOCK_THREADS} threads; x × y × z is {threads}"
                ),
            ));
        }
        match self.grid {
            Some(grid) => check_dims("grid", grid, MAX_GRID)?,
            None if n.div_ceil(u64::from(self.block.0[0])) > u64::from(MAX_GRID[0]) => {
                return Err(invalid(
                    "grid",
                    "n / block.x blocks exceed the grid's limit: give a grid",
                ))
            }
            None => {}
        }
        if self.shared_mem_bytes > MAX_SHARED_MEM_BYTES {
            return Err(invalid(
                "shared_mem_bytes",
                format!(
                    "`shared_mem_bytes` must be a whole number from 0 to {MAX_SHARED_MEM_BYTES}"
                ),
            ));
        }
        if self.args.len() > MAX_ARGS {
            return Err(invalid(
                "args",
                format!("at most {MAX_ARGS} arguments; {} given", self.args.len()),
            ));
        }
        let mut listed = 0usize;
        for (index, arg) in self.args.iter().enumerate() {
            listed += check_arg(arg, index, n)?;
        }
        if listed > MAX_LISTED_VALUES {
            return Err(too_large(
                "args",
                format!(
                    "the `values` fills list {listed} numbers in all; at most \
                     {MAX_LISTED_VALUES} are accepted per job: use another fill"
                ),
            ));
        }
        let stored = self.to_params().len_json();
        if stored > MAX_PARAMS_JSON_BYTES {
            return Err(too_large(
                "params",
                format!(
                    "the custom job's params take {stored} bytes as JSON; at most \
                     {MAX_PARAMS_JSON_BYTES} (256 KiB) are stored per job"
                ),
            ));
        }
        Ok(())
    }

    /// The normalised `params`: every field, defaults filled in.
    pub fn to_params(&self) -> Params {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map.into_iter().collect(),
            _ => unreachable!("a struct serialises to a JSON object"),
        }
    }

    /// Bytes of device memory the buffers take.
    pub fn buffer_bytes(&self) -> u64 {
        self.args
            .iter()
            .map(|a| match a {
                CustomArg::Buffer { ty, .. } => u64::from(self.n) * ty.size() as u64,
                CustomArg::Scalar { .. } => 0,
            })
            .sum()
    }

    /// Bytes of host memory the run needs at most at once: buffers are filled and read
    /// back one at a time, so the largest one.
    pub fn host_bytes(&self) -> u64 {
        self.args
            .iter()
            .map(|a| match a {
                CustomArg::Buffer { ty, .. } => u64::from(self.n) * ty.size() as u64,
                CustomArg::Scalar { .. } => 0,
            })
            .max()
            .unwrap_or(0)
    }
}

/// The size of `params` as JSON, without building the text.
trait JsonLen {
    fn len_json(&self) -> usize;
}

impl JsonLen for Params {
    fn len_json(&self) -> usize {
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut count = Count(0);
        serde_json::to_writer(&mut count, self).expect("params serialise");
        count.0
    }
}

/// `args[2].kind` → `args.2`: the field name the errors have always used.
fn field_of(path: &str) -> String {
    if path == "." || path.is_empty() {
        return "params".into();
    }
    let mut parts = path.split('.');
    let first = parts.next().unwrap_or_default();
    match first.split_once('[') {
        Some((name, rest)) => format!("{name}.{}", rest.trim_end_matches(']')),
        None => first.to_owned(),
    }
}

fn check_dims(field: &str, dims: Dims, max: [u32; 3]) -> Result<(), CustomError> {
    for (axis, (&d, max)) in dims.0.iter().zip(max).enumerate() {
        if !(1..=max).contains(&d) {
            let name = ["x", "y", "z"][axis];
            return Err(invalid(
                field,
                format!("`{field}`.{name} must be a whole number from 1 to {max}"),
            ));
        }
    }
    Ok(())
}

/// Checks one argument; the count of the values it lists.
fn check_arg(arg: &CustomArg, index: usize, n: u64) -> Result<usize, CustomError> {
    let field = format!("args.{index}");
    match arg {
        CustomArg::Scalar { ty, value } => {
            if !ty.holds(value) {
                return Err(invalid(
                    field,
                    format!(
                        "argument {index}: a scalar needs a `value` that is a {} number, not {value}",
                        ty.as_str()
                    ),
                ));
            }
            Ok(0)
        }
        CustomArg::Buffer {
            ty,
            fill,
            seed,
            values,
            ..
        } => {
            if seed.is_some() && *fill != Fill::Random {
                return Err(invalid(
                    field,
                    format!("argument {index}: `seed` goes with fill `random` only"),
                ));
            }
            match (fill, values) {
                (Fill::Values, None) => Err(invalid(
                    field,
                    format!("argument {index}: fill `values` needs a `values` list"),
                )),
                (Fill::Values, Some(values)) => {
                    if values.is_empty() || values.len() as u64 > n {
                        return Err(invalid(
                            field,
                            format!(
                                "argument {index}: `values` must list 1 to n = {n} numbers, not {}",
                                values.len()
                            ),
                        ));
                    }
                    if values.len() > MAX_LISTED_VALUES {
                        return Err(too_large(
                            field,
                            format!(
                                "argument {index}: {} values listed; at most {MAX_LISTED_VALUES} \
                                 are accepted per job: use another fill",
                                values.len()
                            ),
                        ));
                    }
                    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !ty.holds(v)) {
                        return Err(invalid(
                            field,
                            format!(
                                "argument {index}: value {i} ({v}) is not a {} number",
                                ty.as_str()
                            ),
                        ));
                    }
                    Ok(values.len())
                }
                (_, Some(_)) => Err(invalid(
                    field,
                    format!("argument {index}: `values` goes with fill `values` only"),
                )),
                (_, None) => Ok(0),
            }
        }
    }
}

/// Whether `text` is a C identifier.
pub fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn params(v: Value) -> Params {
        serde_json::from_value(v).unwrap()
    }

    fn fixture() -> Value {
        let mut v: Value =
            serde_json::from_str(include_str!("../fixtures/custom_vector_add.json")).unwrap();
        v["source"] = json!("extern \"C\" __global__ void vector_add() {}");
        v
    }

    #[test]
    fn the_fixture_parses_and_normalises_to_itself() {
        let p = CustomParams::parse(Some(&params(fixture()))).unwrap();
        assert_eq!(p.args.len(), 4);
        assert_eq!(
            Value::Object(p.to_params().into_iter().collect()),
            fixture()
        );
    }

    #[test]
    fn hole4_unknown_fields_inside_an_argument_are_refused() {
        let mut v = fixture();
        v["args"][1]["colour"] = json!("blue");
        let e = CustomParams::parse(Some(&params(v))).unwrap_err();
        assert_eq!(e.field, "args.1");
        assert!(e.detail.contains("colour"), "{}", e.detail);
        let mut v = fixture();
        v["args"][3]["fill"] = json!("ones");
        let e = CustomParams::parse(Some(&params(v))).unwrap_err();
        assert_eq!(e.field, "args.3");
    }

    #[test]
    fn defaults_are_filled_in_when_normalised() {
        let v = json!({"source": "k", "entry": "k", "n": 3, "args": [{"kind": "buffer", "type": "f32"}]});
        let p = CustomParams::parse(Some(&params(v))).unwrap().to_params();
        assert_eq!(p["block"], json!([256, 1, 1]));
        assert_eq!(p["grid"], Value::Null);
        assert_eq!(p["shared_mem_bytes"], json!(0));
        assert_eq!(
            p["args"][0],
            json!({"kind": "buffer", "type": "f32", "fill": "zeros", "output": false})
        );
        let v = json!({"source": "k", "entry": "k", "n": 3, "block": 64, "grid": [2, 3]});
        let p = CustomParams::parse(Some(&params(v))).unwrap().to_params();
        assert_eq!(p["block"], json!([64, 1, 1]));
        assert_eq!(p["grid"], json!([2, 3, 1]));
    }

    #[test]
    fn hole4_the_stored_json_is_bounded_even_when_escapes_inflate_the_source() {
        // 60 000 bytes of source, each a control character that JSON writes as `\u0001`:
        // 360 000 bytes stored.
        let mut v = fixture();
        v["source"] = json!(format!("vector_add{}", "\u{1}".repeat(60_000)));
        let e = CustomParams::parse(Some(&params(v))).unwrap_err();
        assert!(e.too_large);
        assert_eq!(e.field, "params");
        assert!(e.detail.contains("256 KiB"), "{}", e.detail);
    }

    #[test]
    fn hole4_listed_values_are_bounded_per_job() {
        let mut v = fixture();
        for i in [0, 1] {
            v["args"][i]["fill"] = json!("values");
            v["args"][i]["values"] = json!(vec![1; MAX_LISTED_VALUES / 2 + 1]);
        }
        let e = CustomParams::parse(Some(&params(v))).unwrap_err();
        assert!(e.too_large);
        assert!(e.detail.contains("4096"), "{}", e.detail);
    }
}

//! Custom kernels: CUDA C that a user sends as a job (`kernel: "custom"`), compiled by NVRTC
//! for the device and launched with the buffers and scalars the job lists.
//!
//! [`CustomJob::parse`] checks the job's `params` on submission, so every mistake is a 422
//! that names its field; the worker runs the parsed job ([`CustomJob::prepare`]).

use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};
use gpulab_shared::{Params, Verification};
use serde_json::{json, Value};

use super::{fnv1a, DriverContext, Gpu, GpuError, Options};
use crate::kernels::{rng, GpuRun, PreparedGpu, RunReport, Work};

pub use gpulab_shared::custom::{CustomError, CustomParams, ElementType, KERNEL};

/// Elements of each output buffer that the result lists.
const SHOWN: usize = 64;

/// A checked custom job.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomJob {
    pub source: String,
    pub entry: String,
    /// Elements of every buffer.
    pub n: u64,
    /// `None`: one thread per element, `ceil(n / block.x)` blocks.
    pub grid: Option<[u32; 3]>,
    pub block: [u32; 3],
    pub shared_mem_bytes: u32,
    pub args: Vec<Arg>,
}

/// One argument, in the kernel's order.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Buffer {
        ty: ElementType,
        fill: Fill,
        output: bool,
    },
    Scalar {
        ty: ElementType,
        value: f64,
    },
}

/// What a buffer holds before the first run.
#[derive(Debug, Clone, PartialEq)]
pub enum Fill {
    Zeros,
    Ones,
    /// 0, 1, 2, … (wrapping for the integer types; exact up to 2²⁴ in f32).
    Iota,
    /// Uniform in [0, 1) for floats, any value for integers, from a seed.
    Random {
        seed: u64,
    },
    /// The listed values, then zeros.
    Values(Vec<f64>),
}

impl CustomJob {
    /// Reads and checks a job's `params` (see [`CustomParams::parse`]).
    pub fn parse(params: Option<&Params>) -> Result<Self, CustomError> {
        CustomParams::parse(params).map(Self::from)
    }

    /// Bytes of GPU memory the buffers take.
    pub fn memory_bytes(&self) -> u64 {
        self.args
            .iter()
            .map(|a| match a {
                Arg::Buffer { ty, .. } => self.n * ty.size() as u64,
                Arg::Scalar { .. } => 0,
            })
            .sum()
    }

    /// Bytes of host memory the run needs at most at once: each buffer is filled, and
    /// each output read back, one at a time.
    pub fn host_bytes(&self) -> u64 {
        self.args
            .iter()
            .map(|a| match a {
                Arg::Buffer { ty, .. } => self.n * ty.size() as u64,
                Arg::Scalar { .. } => 0,
            })
            .max()
            .unwrap_or(0)
    }

    /// The launch: the grid given, or one thread per element.
    pub fn launch_config(&self) -> LaunchConfig {
        let grid = self
            .grid
            .unwrap_or([self.n.div_ceil(self.block[0] as u64).max(1) as u32, 1, 1]);
        LaunchConfig {
            grid_dim: (grid[0], grid[1], grid[2]),
            block_dim: (self.block[0], self.block[1], self.block[2]),
            shared_mem_bytes: self.shared_mem_bytes,
        }
    }

    /// Compiles (or takes from the cache) the source and fills the buffers on the GPU.
    pub fn prepare(&self, gpu: &mut Gpu) -> Result<PreparedGpu, GpuError> {
        gpu.ensure_fits(self.memory_bytes(), "the kernel's buffers")?;
        let (module, report) = gpu.module("kernel.cu", &self.source, &Options::default())?;
        let function = Gpu::function(&module, &self.entry)?;
        let mut buffers = Vec::new();
        let mut scalars = Vec::new();
        for (index, arg) in self.args.iter().enumerate() {
            match arg {
                Arg::Buffer { ty, fill, output } => buffers.push(DeviceBuffer {
                    index,
                    ty: *ty,
                    output: *output,
                    data: upload_filled(gpu, *ty, fill, self.n as usize, index)?,
                }),
                Arg::Scalar { ty, value } => scalars.push(Scalar::new(*ty, *value)),
            }
        }
        Ok(PreparedGpu::new(
            CustomRun {
                job: self.clone(),
                function,
                buffers,
                scalars,
                runs: 0,
            },
            vec![report],
        ))
    }
}

impl From<CustomParams> for CustomJob {
    /// The run's form of checked params: numbers as `f64`, each fill with its data.
    fn from(p: CustomParams) -> Self {
        use gpulab_shared::custom::{CustomArg, Fill as FillKind};
        let number = |v: &serde_json::Number| v.as_f64().unwrap_or(0.0);
        let args = p
            .args
            .iter()
            .map(|arg| match arg {
                CustomArg::Scalar { ty, value } => Arg::Scalar {
                    ty: *ty,
                    value: number(value),
                },
                CustomArg::Buffer {
                    ty,
                    fill,
                    seed,
                    values,
                    output,
                } => Arg::Buffer {
                    ty: *ty,
                    output: *output,
                    fill: match fill {
                        FillKind::Zeros => Fill::Zeros,
                        FillKind::Ones => Fill::Ones,
                        FillKind::Iota => Fill::Iota,
                        FillKind::Random => Fill::Random {
                            seed: seed.unwrap_or(0),
                        },
                        FillKind::Values => {
                            Fill::Values(values.iter().flatten().map(number).collect())
                        }
                    },
                },
            })
            .collect();
        CustomJob {
            source: p.source,
            entry: p.entry,
            n: u64::from(p.n),
            grid: p.grid.map(|g| g.0),
            block: p.block.0,
            shared_mem_bytes: p.shared_mem_bytes,
            args,
        }
    }
}

/// The raw bytes of a buffer filled as asked.
fn filled_bytes(ty: ElementType, fill: &Fill, n: usize, index: usize) -> Vec<u8> {
    let value = |i: usize| -> f64 {
        match fill {
            Fill::Zeros => 0.0,
            Fill::Ones => 1.0,
            Fill::Iota => i as f64,
            Fill::Values(v) => v.get(i).copied().unwrap_or(0.0),
            Fill::Random { .. } => unreachable!("random fills are drawn as bits"),
        }
    };
    let mut bytes = Vec::with_capacity(n * ty.size());
    for i in 0..n {
        match (ty, fill) {
            (ElementType::F32, Fill::Random { seed }) => bytes.extend_from_slice(
                &rng::uniform_f32_at(*seed, index as u64, i as u64, 0.0, 1.0).to_le_bytes(),
            ),
            (ElementType::F64, Fill::Random { seed }) => bytes.extend_from_slice(
                &rng::uniform_f64(rng::stream_seed(*seed, index as u64), i as u64).to_le_bytes(),
            ),
            (_, Fill::Random { seed }) => bytes.extend_from_slice(
                &(rng::hash64(rng::stream_seed(*seed, index as u64), i as u64) as u32)
                    .to_le_bytes(),
            ),
            (ElementType::F32, _) => bytes.extend_from_slice(&(value(i) as f32).to_le_bytes()),
            (ElementType::F64, _) => bytes.extend_from_slice(&value(i).to_le_bytes()),
            (ElementType::I32, Fill::Iota) => {
                bytes.extend_from_slice(&(i as u32 as i32).to_le_bytes())
            }
            (ElementType::U32, Fill::Iota) => bytes.extend_from_slice(&(i as u32).to_le_bytes()),
            (ElementType::I32, _) => bytes.extend_from_slice(&(value(i) as i32).to_le_bytes()),
            (ElementType::U32, _) => bytes.extend_from_slice(&(value(i) as u32).to_le_bytes()),
        }
    }
    bytes
}

fn upload_filled(
    gpu: &Gpu,
    ty: ElementType,
    fill: &Fill,
    n: usize,
    index: usize,
) -> Result<CudaSlice<u8>, GpuError> {
    if *fill == Fill::Zeros {
        return gpu
            .stream
            .alloc_zeros(n * ty.size())
            .during("allocating a buffer");
    }
    let bytes = filled_bytes(ty, fill, n, index);
    gpu.stream
        .clone_htod(&bytes)
        .during("copying a buffer to the GPU")
}

struct DeviceBuffer {
    index: usize,
    ty: ElementType,
    output: bool,
    data: CudaSlice<u8>,
}

/// A scalar argument, held in its C type for the launch.
enum Scalar {
    F32(f32),
    F64(f64),
    I32(i32),
    U32(u32),
}

impl Scalar {
    fn new(ty: ElementType, value: f64) -> Self {
        match ty {
            ElementType::F32 => Scalar::F32(value as f32),
            ElementType::F64 => Scalar::F64(value),
            ElementType::I32 => Scalar::I32(value as i32),
            ElementType::U32 => Scalar::U32(value as u32),
        }
    }
}

struct CustomRun {
    job: CustomJob,
    function: CudaFunction,
    /// The buffers, in argument order among themselves.
    buffers: Vec<DeviceBuffer>,
    /// The scalars, in argument order among themselves.
    scalars: Vec<Scalar>,
    /// Launches so far, the warm-up included: buffers keep what each left.
    runs: u32,
}

impl GpuRun for CustomRun {
    fn step(&mut self, gpu: &Gpu) -> Result<(), GpuError> {
        let mut launch = gpu.stream.launch_builder(&self.function);
        let (mut buffers, mut scalars) = (self.buffers.iter_mut(), self.scalars.iter());
        for arg in &self.job.args {
            match arg {
                Arg::Buffer { .. } => {
                    let buffer = buffers
                        .next()
                        .expect("one device buffer per buffer argument");
                    launch.arg(&mut buffer.data);
                }
                Arg::Scalar { .. } => {
                    match scalars.next().expect("one scalar per scalar argument") {
                        Scalar::F32(v) => launch.arg(v),
                        Scalar::F64(v) => launch.arg(v),
                        Scalar::I32(v) => launch.arg(v),
                        Scalar::U32(v) => launch.arg(v),
                    };
                }
            }
        }
        // SAFETY: not provable: this is the user's kernel. It gets the arguments its job
        // lists, buffers of n elements of their types and scalars by value, in order. A
        // kernel that reads or writes past them faults inside this worker's GPU context
        // alone; the fault comes back as a driver error, the job fails and the worker is
        // replaced. The process's own memory is out of the kernel's reach.
        unsafe { launch.launch(self.job.launch_config()) }.during("launching the kernel")?;
        self.runs += 1;
        Ok(())
    }

    fn finish(self: Box<Self>, gpu: &mut Gpu) -> Result<RunReport, GpuError> {
        let mut outputs = Vec::new();
        let (mut non_finite, mut checked) = (0u64, 0u64);
        for buffer in self.buffers.iter().filter(|b| b.output) {
            let bytes = gpu
                .stream
                .clone_dtoh(&buffer.data)
                .during("copying an output buffer from the GPU")?;
            let summary = summarize(buffer.ty, &bytes);
            non_finite += summary.non_finite;
            checked += (bytes.len() / buffer.ty.size()) as u64;
            outputs.push(json!({
                "arg": buffer.index,
                "type": buffer.ty.as_str(),
                "first": summary.first,
                "min": summary.min,
                "max": summary.max,
                "mean": summary.mean,
                "non_finite": summary.non_finite,
                "checksum": format!("{:016x}", fnv1a(&bytes)),
            }));
        }
        let cfg = self.job.launch_config();
        Ok(RunReport {
            work: Work::Elements(self.job.n as f64),
            verification: Verification {
                passed: non_finite == 0,
                max_abs_error: non_finite as f64,
                max_rel_error: non_finite as f64 / checked.max(1) as f64,
                tolerance: 0.0,
                method: "A custom kernel has no reference to compare with: the check is only \
                         that every output buffer holds finite numbers. The error is the \
                         number (absolute) and the fraction (relative) of output elements \
                         that are NaN or ∞, and must be 0. The checksum is FNV-1a (64 bits) \
                         of each output buffer's bytes."
                    .into(),
            },
            output: json!({
                "entry": self.job.entry,
                "n": self.job.n,
                "grid": [cfg.grid_dim.0, cfg.grid_dim.1, cfg.grid_dim.2],
                "block": [cfg.block_dim.0, cfg.block_dim.1, cfg.block_dim.2],
                "shared_mem_bytes": cfg.shared_mem_bytes,
                "launches": self.runs,
                "buffers": outputs,
                "note": "Buffers are filled once, before the warm-up launch; every launch sees \
                         what the one before left, and the outputs are read after the last.",
            }),
            artifact: None,
        })
    }
}

/// What the result says of an output buffer.
#[derive(Debug, Clone, PartialEq)]
struct Summary {
    first: Vec<Value>,
    min: Option<f64>,
    max: Option<f64>,
    mean: Option<f64>,
    non_finite: u64,
}

fn summarize(ty: ElementType, bytes: &[u8]) -> Summary {
    let values = bytes.chunks_exact(ty.size()).map(|c| match ty {
        ElementType::F32 => f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64,
        ElementType::F64 => f64::from_le_bytes(c.try_into().expect("8 bytes")),
        ElementType::I32 => i32::from_le_bytes(c.try_into().expect("4 bytes")) as f64,
        ElementType::U32 => u32::from_le_bytes(c.try_into().expect("4 bytes")) as f64,
    });
    let mut first = Vec::with_capacity(SHOWN);
    let (mut min, mut max, mut sum, mut count, mut non_finite) =
        (f64::INFINITY, f64::NEG_INFINITY, 0.0f64, 0u64, 0u64);
    for (i, v) in values.enumerate() {
        if i < SHOWN {
            // JSON has no NaN or ∞: those are listed as null.
            first.push(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number));
        }
        if v.is_finite() {
            min = min.min(v);
            max = max.max(v);
            sum += v;
            count += 1;
        } else {
            non_finite += 1;
        }
    }
    Summary {
        first,
        min: (count > 0).then_some(min),
        max: (count > 0).then_some(max),
        mean: (count > 0).then(|| sum / count as f64),
        non_finite,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: Value) -> Params {
        serde_json::from_value(v).unwrap()
    }

    /// What the editor page sends for its vector-add template: the frontend's test checks
    /// that it builds exactly this request.
    fn vector_add() -> Value {
        let mut params: Value = serde_json::from_str(include_str!(
            "../../../shared/fixtures/custom_vector_add.json"
        ))
        .unwrap();
        params["source"] = json!(include_str!(
            "../../../frontend/src/custom_kernel/templates/vector_add.cu"
        ));
        params
    }

    #[test]
    fn the_editors_request_parses() {
        let job = CustomJob::parse(Some(&params(vector_add()))).unwrap();
        assert_eq!(job.entry, "vector_add");
        assert_eq!(job.args.len(), 4);
        assert_eq!(job.memory_bytes(), 3 * (1 << 20) * 4);
        let cfg = job.launch_config();
        // One thread per element: ceil(n / 256) blocks.
        assert_eq!((cfg.grid_dim, cfg.block_dim), ((4096, 1, 1), (256, 1, 1)));
        assert_eq!(
            job.args[3],
            Arg::Scalar {
                ty: ElementType::U32,
                value: (1 << 20) as f64
            }
        );
        let mut p = vector_add();
        p["n"] = json!(1000);
        let cfg = CustomJob::parse(Some(&params(p))).unwrap().launch_config();
        assert_eq!(cfg.grid_dim, (4, 1, 1));
    }

    #[test]
    fn each_mistake_names_its_field() {
        let cases: &[(&str, Value, &str)] = &[
            ("source", json!("a\u{0}b"), "NUL"),
            ("source", json!("x".repeat(64 * 1024 + 1)), "64 KiB"),
            ("entry", json!("not an identifier"), "identifier"),
            ("n", json!(0), "from 1"),
            ("block", json!([1024, 2, 1]), "at most 1024 threads"),
            ("block", json!([1, 1, 65]), "from 1 to 64"),
            ("grid", json!([0, 1, 1]), "from 1"),
            ("shared_mem_bytes", json!(1 << 20), "49152"),
        ];
        for (field, value, words) in cases {
            let mut p = vector_add();
            p[field] = value.clone();
            let err = CustomJob::parse(Some(&params(p))).unwrap_err();
            assert_eq!(err.field, *field, "{err:?}");
            assert!(err.detail.contains(words), "{field}: {}", err.detail);
        }
        let mut p = vector_add();
        p["args"][1]["fill"] = json!("values");
        p["args"][1]["values"] = json!([1, 2, "three"]);
        let err = CustomJob::parse(Some(&params(p))).unwrap_err();
        assert_eq!(err.field, "args.1");
        let mut p = vector_add();
        p["args"][3]["value"] = json!(-1);
        assert_eq!(
            CustomJob::parse(Some(&params(p))).unwrap_err().field,
            "args.3"
        );
        let mut p = vector_add();
        p["args"][0]["type"] = json!("f16");
        assert_eq!(
            CustomJob::parse(Some(&params(p))).unwrap_err().field,
            "args.0"
        );
        let mut p = vector_add();
        p["colour"] = json!("blue");
        assert_eq!(
            CustomJob::parse(Some(&params(p))).unwrap_err().field,
            "colour"
        );
        let mut p = vector_add();
        p["n"] = json!(1000);
        p["args"][0]["fill"] = json!("values");
        p["args"][0]["values"] = json!(vec![1.0; 1001]);
        assert!(CustomJob::parse(Some(&params(p)))
            .unwrap_err()
            .detail
            .contains("1 to n = 1000"));
    }

    #[test]
    fn hole4_more_listed_values_than_the_stated_limit_are_refused() {
        let mut p = vector_add();
        p["n"] = json!(1 << 20);
        p["args"][0]["fill"] = json!("values");
        p["args"][0]["values"] = json!(vec![0.5; 4097]);
        let err = CustomJob::parse(Some(&params(p))).unwrap_err();
        assert!(err.too_large);
        assert!(err.detail.contains("at most 4096"), "{}", err.detail);
    }

    #[test]
    fn hole4_host_memory_is_the_largest_buffer() {
        let mut p = vector_add();
        p["n"] = json!(u32::MAX);
        p["grid"] = json!([1, 1, 1]);
        p["args"][2]["type"] = json!("f64");
        let job = CustomJob::parse(Some(&params(p))).unwrap();
        // The 32 GiB f64 buffer, not the sum of all three.
        assert_eq!(job.host_bytes(), u32::MAX as u64 * 8);
    }

    #[test]
    fn fills_write_the_bytes_of_their_type() {
        let bytes = filled_bytes(ElementType::I32, &Fill::Values(vec![-2.0, 7.0]), 3, 0);
        assert_eq!(
            bytes,
            [
                (-2i32).to_le_bytes(),
                7i32.to_le_bytes(),
                0i32.to_le_bytes()
            ]
            .concat()
        );
        let bytes = filled_bytes(ElementType::F64, &Fill::Iota, 2, 0);
        assert_eq!(bytes, [0.0f64.to_le_bytes(), 1.0f64.to_le_bytes()].concat());
        let a = filled_bytes(ElementType::F32, &Fill::Random { seed: 1 }, 100, 0);
        let b = filled_bytes(ElementType::F32, &Fill::Random { seed: 1 }, 100, 1);
        assert_ne!(a, b, "each argument draws its own stream");
        assert_eq!(
            a,
            filled_bytes(ElementType::F32, &Fill::Random { seed: 1 }, 100, 0)
        );
    }

    #[test]
    fn summaries_count_what_is_not_finite() {
        let bytes: Vec<u8> = [1.0f32, f32::NAN, 3.0, f32::INFINITY]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let s = summarize(ElementType::F32, &bytes);
        assert_eq!(
            (s.min, s.max, s.mean, s.non_finite),
            (Some(1.0), Some(3.0), Some(2.0), 2)
        );
        assert_eq!(
            s.first,
            vec![json!(1.0), Value::Null, json!(3.0), Value::Null]
        );
    }
}

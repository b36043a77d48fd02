//! The built-in kernels: one file each, with its parameters, its CPU path and its check.
//!
//! A kernel describes itself ([`Kernel::spec`]), says how much memory a job needs
//! ([`Kernel::memory_bytes`]) and prepares a CPU run ([`Kernel::prepare_cpu`]) and a CUDA
//! run ([`Kernel::prepare_cuda`]) whose inputs are drawn deterministically from the job's
//! `seed`, from its typed parameters ([`Kernel::Params`]). The CUDA sources are the `.cu`
//! files of `server/kernels/`, each declared by the kernel that compiles it
//! ([`Kernel::cuda_sources`]), embedded in the binary and compiled at run time by NVRTC. The [`harness`] runs the warm-up and the timed
//! repetitions (on the GPU timed with events) and turns the run's [`RunReport`] into a
//! [`JobResult`], whichever device ran it, and both are checked by the same reference.
//! Adding a kernel is a new file here and one line in [`catalog`].

mod bandwidth;
pub(crate) mod gpu;
mod mandelbrot;
mod matmul;
mod monte_carlo_pi;
mod reduce_sum;
mod saxpy;
mod vector_add;

pub mod harness;
pub mod params;
pub mod rng;

use gpulab_shared::{Device, KernelSpec, Verification};

use crate::cuda::{Gpu, GpuError, ModuleReport};

use params::FromParams;
pub use params::{ParamError, ResolvedParams};

/// A CUDA C source of `server/kernels/`, embedded in the binary and compiled at run time by
/// NVRTC, with the `extern "C"` entry points the Rust code launches from it. Each kernel
/// declares its own ([`Kernel::cuda_sources`]): the compile tests iterate the catalog, so
/// no source can be left out of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaSource {
    /// The file name in `server/kernels/`, also the name NVRTC reports errors under.
    pub file: &'static str,
    pub source: &'static str,
    pub entry_points: &'static [&'static str],
}

/// A [`CudaSource`] of `server/kernels/FILE`, embedded at build time:
/// `cuda_source!("saxpy.cu", ["saxpy"])`. Used from a file one folder below `server/src/`.
macro_rules! cuda_source {
    ($file:literal, [$($entry:literal),+ $(,)?]) => {
        $crate::kernels::CudaSource {
            file: $file,
            source: include_str!(concat!("../../kernels/", $file)),
            entry_points: &[$($entry),+],
        }
    };
}
pub(crate) use cuda_source;

/// A built-in kernel, written in its own file: its catalog entry, its CUDA sources, its typed
/// parameters, and its CPU and CUDA paths. The catalog holds it as a [`CatalogKernel`].
pub trait Kernel: Send + Sync + 'static {
    /// The kernel's parameters, read once from the resolved ones of a job.
    type Params: params::FromParams + Send + 'static;

    /// The catalog entry: name, description, device kinds, parameter schema, formula.
    fn spec(&self) -> KernelSpec;

    /// Every CUDA source its GPU path compiles (none for a path that only calls a library).
    fn cuda_sources(&self) -> &'static [CudaSource];

    /// Bytes of device memory a job with these parameters allocates.
    fn memory_bytes(&self, params: &Self::Params) -> u64;

    /// Allocates and fills the inputs on the host, ready for the timed runs.
    fn prepare_cpu(&self, params: &Self::Params) -> Result<Box<dyn CpuRun>, String>;

    /// Compiles (or takes from the cache) the kernel's module, allocates and fills the inputs
    /// on the GPU, ready for the timed runs.
    fn prepare_cuda(&self, params: &Self::Params, gpu: &mut Gpu) -> Result<PreparedGpu, GpuError>;

    /// The FLOPs and bytes of one repetition, by the formula of the catalog entry, for the
    /// roofline and `result.roofline`; `None` for kernels whose work is not arithmetic over
    /// memory (random samples, pixels of data-dependent length, a pure copy).
    fn op_counts(&self, _params: &Self::Params) -> Option<OpCounts> {
        None
    }

    /// The values of this kernel's device-dependent `enum` parameters on `device`, for the
    /// catalog's `choices_by_device`: `(parameter, values)`. Empty when no choice depends on
    /// the device.
    fn device_choices(&self, _device: &Device) -> Vec<(&'static str, Vec<String>)> {
        Vec::new()
    }

    /// What the schema cannot check: combinations of parameters, what `device` can run,
    /// sizes a library cannot do. Runs at submission, after the schema's checks.
    fn check_on_device(&self, _params: &Self::Params, _device: &Device) -> Result<(), ParamError> {
        Ok(())
    }

    /// The roofline's formula in words for the catalog (FLOPs and bytes of one repetition),
    /// or why the kernel has none; appended to `throughput_formula` by [`specs`].
    fn roofline_note(&self) -> &'static str {
        ""
    }
}

/// The work of one repetition as the roofline counts it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpCounts {
    /// Arithmetic operations (FLOPs; integer operations for `int8`).
    pub flops: f64,
    /// Bytes of memory traffic the formula counts (compulsory traffic: each input read
    /// once, each output written once).
    pub bytes: f64,
    /// The compute ceiling the kernel is under: a `Peak::name` such as `fp32` or `bf16`.
    pub ceiling: &'static str,
}

/// A kernel of the catalog, whatever its parameter type: what the API and the worker use.
pub trait CatalogKernel: Send + Sync {
    /// [`Kernel::spec`].
    fn spec(&self) -> KernelSpec;

    /// [`Kernel::cuda_sources`].
    fn cuda_sources(&self) -> &'static [CudaSource];

    /// [`Kernel::roofline_note`].
    fn roofline_note(&self) -> &'static str;

    /// Reads the kernel's typed parameters from resolved ones: a missing parameter or one of
    /// the wrong type is an error naming it, never a panic.
    fn configure(&'static self, params: &ResolvedParams) -> Result<Box<dyn KernelJob>, ParamError>;

    /// [`Kernel::device_choices`].
    fn device_choices(&self, device: &Device) -> Vec<(&'static str, Vec<String>)>;
}

/// A kernel with its typed parameters, read once.
pub trait KernelJob {
    /// Bytes of device memory the job allocates.
    fn memory_bytes(&self) -> u64;

    /// [`Kernel::prepare_cpu`] with these parameters.
    fn prepare_cpu(&self) -> Result<Box<dyn CpuRun>, String>;

    /// [`Kernel::prepare_cuda`] with these parameters.
    fn prepare_cuda(&self, gpu: &mut Gpu) -> Result<PreparedGpu, GpuError>;

    /// [`Kernel::op_counts`] with these parameters.
    fn op_counts(&self) -> Option<OpCounts>;

    /// [`Kernel::check_on_device`] with these parameters.
    fn check_on_device(&self, device: &Device) -> Result<(), ParamError>;
}

impl<K: Kernel> CatalogKernel for K {
    fn spec(&self) -> KernelSpec {
        Kernel::spec(self)
    }

    fn cuda_sources(&self) -> &'static [CudaSource] {
        Kernel::cuda_sources(self)
    }

    fn roofline_note(&self) -> &'static str {
        Kernel::roofline_note(self)
    }

    fn configure(&'static self, params: &ResolvedParams) -> Result<Box<dyn KernelJob>, ParamError> {
        let params = K::Params::from_params(params)?;
        Ok(Box::new(Configured {
            kernel: self,
            params,
        }))
    }

    fn device_choices(&self, device: &Device) -> Vec<(&'static str, Vec<String>)> {
        Kernel::device_choices(self, device)
    }
}

struct Configured<K: Kernel> {
    kernel: &'static K,
    params: K::Params,
}

impl<K: Kernel> KernelJob for Configured<K> {
    fn memory_bytes(&self) -> u64 {
        self.kernel.memory_bytes(&self.params)
    }

    fn prepare_cpu(&self) -> Result<Box<dyn CpuRun>, String> {
        self.kernel.prepare_cpu(&self.params)
    }

    fn prepare_cuda(&self, gpu: &mut Gpu) -> Result<PreparedGpu, GpuError> {
        self.kernel.prepare_cuda(&self.params, gpu)
    }

    fn op_counts(&self) -> Option<OpCounts> {
        self.kernel.op_counts(&self.params)
    }

    fn check_on_device(&self, device: &Device) -> Result<(), ParamError> {
        self.kernel.check_on_device(&self.params, device)
    }
}

/// A prepared GPU run: [`GpuRun::step`] queues one repetition on the GPU's stream (the
/// harness brackets it with events), then [`GpuRun::finish`] copies the output back and
/// checks it against the same reference as the CPU's.
pub trait GpuRun {
    fn step(&mut self, gpu: &Gpu) -> Result<(), GpuError>;

    fn finish(self: Box<Self>, gpu: &mut Gpu) -> Result<RunReport, GpuError>;
}

/// A GPU run and how its module was obtained, which the result reports.
pub struct PreparedGpu {
    pub run: Box<dyn GpuRun>,
    pub modules: Vec<ModuleReport>,
}

impl PreparedGpu {
    pub fn new(run: impl GpuRun + 'static, modules: Vec<ModuleReport>) -> Self {
        PreparedGpu {
            run: Box::new(run),
            modules,
        }
    }
}

/// A prepared CPU run: [`CpuRun::run`] once for the warm-up and once per repetition, then
/// [`CpuRun::finish`] checks the output against an independent reference.
pub trait CpuRun: Send {
    /// One repetition of the kernel. Uses every core.
    fn run(&mut self);

    /// Verifies the output and reports the work of one repetition.
    fn finish(self: Box<Self>) -> RunReport;
}

/// What one run did and how its output compared with the reference.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The work of one repetition, which the harness divides by the median time.
    pub work: Work,
    pub verification: Verification,
    /// Kernel-specific output (`result.output`).
    pub output: serde_json::Value,
    /// An image for `GET /api/jobs/{id}/artifact`.
    pub artifact: Option<Artifact>,
}

/// The work of one repetition, in the unit its throughput is reported in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Work {
    /// Bytes moved to or from memory: throughput in GB/s (10⁹ bytes per second).
    Bytes(f64),
    /// Floating-point operations: throughput in GFLOP/s.
    Flops(f64),
    /// Random samples drawn and tested: throughput in Gsamples/s.
    Samples(f64),
    /// Pixels computed: throughput in Mpixels/s.
    Pixels(f64),
    /// Elements processed (a custom kernel's `n`): throughput in Gelements/s.
    Elements(f64),
    /// Integer arithmetic operations (an int8 GEMM): throughput in GOP/s.
    Ops(f64),
}

impl Work {
    /// The throughput of this much work done in `seconds`.
    pub fn throughput(self, seconds: f64) -> gpulab_shared::Throughput {
        let (amount, scale, unit) = match self {
            Work::Bytes(b) => (b, 1e9, "GB/s"),
            Work::Flops(f) => (f, 1e9, "GFLOP/s"),
            Work::Samples(s) => (s, 1e9, "Gsamples/s"),
            Work::Pixels(p) => (p, 1e6, "Mpixels/s"),
            Work::Elements(e) => (e, 1e9, "Gelements/s"),
            Work::Ops(o) => (o, 1e9, "GOP/s"),
        };
        let value = if seconds > 0.0 {
            amount / seconds / scale
        } else {
            0.0
        };
        gpulab_shared::Throughput {
            value,
            unit: unit.to_string(),
        }
    }
}

/// A file a job produced, stored with its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// Every built-in kernel, in the order the catalog lists them.
pub fn catalog() -> &'static [&'static dyn CatalogKernel] {
    static CATALOG: &[&dyn CatalogKernel] = &[
        &vector_add::VectorAdd,
        &saxpy::Saxpy,
        &reduce_sum::ReduceSum,
        &matmul::Matmul,
        &bandwidth::Bandwidth,
        &mandelbrot::Mandelbrot,
        &monte_carlo_pi::MonteCarloPi,
    ];
    CATALOG
}

/// The catalog entries of [`catalog`], in the same order, built once: every job submission
/// and every worker looks kernels up by name.
pub fn specs() -> &'static [KernelSpec] {
    static SPECS: std::sync::LazyLock<Vec<KernelSpec>> = std::sync::LazyLock::new(|| {
        catalog()
            .iter()
            .map(|k| {
                let mut spec = k.spec();
                let note = k.roofline_note();
                if !note.is_empty() {
                    spec.throughput_formula =
                        format!("{}; roofline: {note}", spec.throughput_formula);
                }
                spec
            })
            .collect()
    });
    &SPECS
}

/// The catalog entries as this server offers them: [`specs`] with each device-dependent
/// `enum` parameter's `choices_by_device` filled in for `devices`.
pub fn specs_for(devices: &[Device]) -> Vec<KernelSpec> {
    catalog()
        .iter()
        .zip(specs())
        .map(|(kernel, spec)| {
            let mut spec = spec.clone();
            for device in devices.iter().filter(|d| spec.devices.contains(&d.kind)) {
                for (name, values) in kernel.device_choices(device) {
                    if let Some(param) = spec.params.iter_mut().find(|p| p.name == name) {
                        param
                            .choices_by_device
                            .get_or_insert_with(Default::default)
                            .insert(device.id.clone(), values);
                    }
                }
            }
            spec
        })
        .collect()
}

/// The names of the catalog's kernels, for messages that list them.
pub fn names() -> Vec<&'static str> {
    specs().iter().map(|s| s.name.as_str()).collect()
}

/// The kernel called `name` with its catalog entry, if the catalog has one.
pub fn find_with_spec(name: &str) -> Option<(&'static dyn CatalogKernel, &'static KernelSpec)> {
    catalog()
        .iter()
        .copied()
        .zip(specs())
        .find(|(_, spec)| spec.name == name)
}

/// The kernel called `name`, if the catalog has one.
pub fn find(name: &str) -> Option<&'static dyn CatalogKernel> {
    find_with_spec(name).map(|(kernel, _)| kernel)
}

/// Every CUDA source the server compiles: the catalog kernels' and the diagnostics'.
pub fn builtin_cuda_sources() -> Vec<CudaSource> {
    catalog()
        .iter()
        .flat_map(|k| k.cuda_sources())
        .chain([&crate::diag::CUDA])
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        let names: BTreeSet<String> = catalog().iter().map(|k| k.spec().name).collect();
        assert_eq!(names.len(), catalog().len());
        for name in &names {
            assert_eq!(find(name).map(|k| k.spec().name).as_ref(), Some(name));
        }
        assert!(find("no_such_kernel").is_none());
    }

    #[test]
    fn every_default_resolves_and_describes_itself() {
        for kernel in catalog() {
            let spec = kernel.spec();
            let params = ResolvedParams::resolve(&spec.params, None).unwrap_or_else(|e| {
                panic!(
                    "{}: the default of {} is invalid: {}",
                    spec.name, e.field, e.detail
                )
            });
            assert!(!spec.description.is_empty() && !spec.throughput_formula.is_empty());
            for kind in [
                gpulab_shared::DeviceKind::Cpu,
                gpulab_shared::DeviceKind::Cuda,
            ] {
                assert!(spec.devices.contains(&kind), "{} on {kind:?}", spec.name);
            }
            let job = kernel
                .configure(&params)
                .unwrap_or_else(|e| panic!("{}: {}: {}", spec.name, e.field, e.detail));
            // Every kernel says where it sits on the roofline, or why it does not.
            assert!(!kernel.roofline_note().is_empty(), "{}", spec.name);
            if let Some(counts) = job.op_counts() {
                assert!(counts.flops > 0.0 && counts.bytes > 0.0, "{}", spec.name);
                assert!(specs()
                    .iter()
                    .any(|s| s.name == spec.name && s.throughput_formula.contains("roofline: ")));
            }
            // Only the π estimate needs no buffers.
            assert_eq!(job.memory_bytes() == 0, spec.name == "monte_carlo_pi");
        }
    }

    /// Every choice the catalog offers for an enum parameter is one its kernel's typed
    /// parameters read: a choice added to the schema but not to the parsing is caught here.
    #[test]
    fn every_choice_of_every_kernel_configures() {
        for kernel in catalog() {
            let spec = kernel.spec();
            for param in spec.params.iter().filter(|p| p.choices.is_some()) {
                for choice in param.choices.as_deref().unwrap_or_default() {
                    let given = [(param.name.clone(), serde_json::Value::from(choice.as_str()))];
                    let params = ResolvedParams::resolve(&spec.params, Some(&given.into()))
                        .unwrap_or_else(|e| panic!("{}: {}", spec.name, e.detail));
                    if let Err(e) = kernel.configure(&params) {
                        panic!("{} with {}={choice}: {}", spec.name, param.name, e.detail);
                    }
                }
            }
        }
    }

    /// A parameter missing from a job's map, or of the wrong type, makes `configure` fail
    /// with the parameter's name, for every kernel and every parameter.
    #[test]
    fn a_missing_or_mistyped_parameter_is_an_error_for_every_kernel() {
        for kernel in catalog() {
            let spec = kernel.spec();
            let defaults = ResolvedParams::resolve(&spec.params, None)
                .unwrap()
                .into_map();
            for param in &spec.params {
                let mut missing = defaults.clone();
                missing.remove(&param.name);
                let e = kernel
                    .configure(&ResolvedParams::trusted(missing))
                    .err()
                    .unwrap_or_else(|| panic!("{} without {}", spec.name, param.name));
                assert_eq!(e.field, format!("params.{}", param.name));
                let mut mistyped = defaults.clone();
                mistyped.insert(param.name.clone(), serde_json::json!([1]));
                let e = kernel
                    .configure(&ResolvedParams::trusted(mistyped))
                    .err()
                    .unwrap_or_else(|| panic!("{} with a list for {}", spec.name, param.name));
                assert_eq!(e.field, format!("params.{}", param.name));
            }
        }
    }

    /// Whether `source` defines `extern "C" __global__ void [__launch_bounds__(…)] entry(`.
    fn defines_global(source: &str, entry: &str) -> bool {
        source
            .split("extern \"C\" __global__ void ")
            .skip(1)
            .any(|rest| {
                let rest = match rest.strip_prefix("__launch_bounds__(") {
                    Some(bounds) => bounds.split_once(')').map_or("", |(_, r)| r.trim_start()),
                    None => rest,
                };
                rest.starts_with(&format!("{entry}("))
            })
    }

    #[test]
    fn a_global_is_found_with_or_without_launch_bounds() {
        let plain = "extern \"C\" __global__ void saxpy(float a)";
        let bounded = "extern \"C\" __global__ void __launch_bounds__(256) mm(float* c)";
        assert!(defines_global(plain, "saxpy") && defines_global(bounded, "mm"));
        assert!(!defines_global(plain, "sax") && !defines_global(bounded, "m"));
        assert!(!defines_global("__global__ void saxpy(float a)", "saxpy"));
    }

    /// Each source a kernel declares defines every entry point it names, as an `extern "C"`
    /// global that the driver finds by that name. NVRTC compiles them in tests/nvrtc.rs.
    #[test]
    fn every_declared_source_defines_its_entry_points_as_extern_c_globals() {
        let sources = builtin_cuda_sources();
        for kernel in catalog() {
            // matmul's cuBLAS path needs no source, but its teaching kernels do.
            assert!(!kernel.cuda_sources().is_empty(), "{}", kernel.spec().name);
        }
        for CudaSource {
            file,
            source,
            entry_points,
        } in &sources
        {
            assert!(!entry_points.is_empty(), "{file}");
            for entry in *entry_points {
                assert!(
                    defines_global(source, entry),
                    "{file} lacks extern \"C\" __global__ void {entry}("
                );
            }
            assert!(!source.contains('\0'), "{file}");
        }
        let files: BTreeSet<&str> = sources.iter().map(|s| s.file).collect();
        assert_eq!(files.len(), sources.len(), "a source is declared twice");
        // Every .cu file of server/kernels/ is declared by a kernel or the diagnostics.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".cu") {
                assert!(files.contains(name.as_str()), "nothing declares {name}");
            }
        }
    }
}

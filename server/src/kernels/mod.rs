//! The built-in kernels: one file each, with its parameters, its CPU path and its check.
//!
//! A kernel describes itself ([`Kernel::spec`]), says how much memory a job needs
//! ([`Kernel::memory_bytes`]) and prepares a CPU run ([`Kernel::prepare_cpu`]) and a CUDA
//! run ([`Kernel::prepare_cuda`]) whose inputs are drawn deterministically from the job's
//! `seed`. The CUDA sources are the `.cu` files of `server/kernels/`, embedded in the binary
//! and compiled at run time by NVRTC. The [`harness`] runs the warm-up and the timed
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

pub use params::{ParamError, ResolvedParams};

/// A built-in kernel of the catalog.
pub trait Kernel: Send + Sync + 'static {
    /// The catalog entry: name, description, device kinds, parameter schema, formula.
    fn spec(&self) -> KernelSpec;

    /// Bytes of device memory a job with these (valid) parameters allocates.
    fn memory_bytes(&self, params: &ResolvedParams) -> u64;

    /// Allocates and fills the inputs on the host, ready for the timed runs.
    fn prepare_cpu(&self, params: &ResolvedParams) -> Result<Box<dyn CpuRun>, String>;

    /// Compiles (or takes from the cache) the kernel's module, allocates and fills the inputs
    /// on the GPU, ready for the timed runs.
    fn prepare_cuda(&self, params: &ResolvedParams, gpu: &mut Gpu)
        -> Result<PreparedGpu, GpuError>;

    /// The FLOPs and bytes of one repetition, by the formula of the catalog entry, for the
    /// roofline and `result.roofline`; `None` for kernels whose work is not arithmetic over
    /// memory (random samples, pixels of data-dependent length, a pure copy).
    fn op_counts(&self, _params: &ResolvedParams) -> Option<OpCounts> {
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
    fn check_params(&self, _params: &ResolvedParams, _device: &Device) -> Result<(), ParamError> {
        Ok(())
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
pub fn catalog() -> &'static [&'static dyn Kernel] {
    static CATALOG: &[&dyn Kernel] = &[
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
    static SPECS: std::sync::LazyLock<Vec<KernelSpec>> =
        std::sync::LazyLock::new(|| catalog().iter().map(|k| k.spec()).collect());
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
pub fn find_with_spec(name: &str) -> Option<(&'static dyn Kernel, &'static KernelSpec)> {
    catalog()
        .iter()
        .copied()
        .zip(specs())
        .find(|(_, spec)| spec.name == name)
}

/// The kernel called `name`, if the catalog has one.
pub fn find(name: &str) -> Option<&'static dyn Kernel> {
    find_with_spec(name).map(|(kernel, _)| kernel)
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
            // Only the π estimate needs no buffers.
            assert_eq!(
                kernel.memory_bytes(&params) == 0,
                spec.name == "monte_carlo_pi"
            );
        }
    }
}

//! A GPU's checks: level 1 asks NVML and the CUDA libraries (no load), level 2 loads the GPU
//! (memory test, bandwidth, PCIe, GEMM twice), level 3 stresses it with sustained GEMM.
//!
//! NVML is opened by the process that runs the checks (the worker, or `gpulab diag`); every
//! figure it cannot give makes its evidence `skip` with the reason, never a failure.

use std::time::{Duration, Instant};

use cudarc::cublas::sys::{
    cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cublasStatus_t, cudaDataType,
};
use cudarc::cublas::{Gemm as _, GemmConfig};
use cudarc::driver::{CudaFunction, CudaSlice, DevicePtr, DevicePtrMut, PushKernelArg};
use gpulab_shared::diag::{Fault, StressSample, Verdict};
use gpulab_shared::Device;
use nvml_wrapper::enum_wrappers::device::{Clock, EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::Nvml;

use super::cpu::{judge_repeat, judge_stress};
use super::evidence::{self, at_least};
use super::expectations::{pcie_link_gbps, DataType, Expectation, GpuExpectations};
use super::memtest::{self, MemError, PatternResult, FLIPPED_BIT, KEPT_ERRORS, RANDOM_SEED};
use super::sensors::{self, Reading, Sensors};
use super::{spec, CheckRun, CheckSpec, Plan};
use crate::cuda::{library_present, DriverContext, Gpu, GpuError, Library, Options};
use crate::devices::host_memory::gib;
use crate::kernels::gpu as kgpu;
use crate::kernels::rng;
use crate::kernels::{cuda_source, CudaSource};

/// The diagnostics' memory test, bandwidth and GEMM comparison: not a catalog kernel, so
/// declared here and added to the compile tests by [`crate::kernels::builtin_cuda_sources`].
pub(crate) const CUDA: CudaSource = cuda_source!(
    "diag.cu",
    [
        "diag_fill",
        "diag_check",
        "diag_invert",
        "diag_checksum",
        "diag_checksum_expected",
        "diag_copy",
        "diag_triad",
        "diag_compare",
        "diag_flip",
    ]
);

pub(super) const STRESS_FP32: &str = "stress_fp32";
/// The evidence of a stress run that [`super::compare_devices`] compares.
pub(super) const STRESS_GFLOPS: &str = "sustained throughput";

pub(super) const CHECKS: &[CheckSpec] = &[
    spec("libraries", "Driver, NVML, NVRTC and cuBLAS", 1),
    spec("identity", "The same GPU in CUDA and NVML", 1),
    spec("persistence_mode", "Persistence mode", 1),
    spec("ecc", "ECC mode and uncorrectable errors", 1),
    spec("memory_repair", "Retired pages and remapped rows", 1),
    spec("throttle", "Throttle reasons", 1),
    spec("pcie_link", "PCIe link", 1),
    spec("processes", "Other processes on the GPU", 1),
    spec("clocks", "Clocks locked or not", 1),
    spec("memory_test", "Memory test", 2),
    spec("memory_bandwidth", "Memory bandwidth", 2),
    spec("pcie_bandwidth", "PCIe bandwidth (pinned)", 2),
    spec(
        "gemm_repeatability",
        "cuBLAS SGEMM run twice, bit for bit",
        2,
    ),
    spec(STRESS_FP32, "Sustained FP32 GEMM stress", 3),
    spec("stress_tensor", "Sustained tensor-core GEMM stress", 3),
];

/// The memory test's share of the free memory.
const MEMORY_TEST_SHARE: f64 = 0.90;
/// Each array of the bandwidth test, at most.
const BANDWIDTH_ARRAY_MAX: u64 = 1 << 30;
/// Timed repetitions of the bandwidth kernels and the PCIe copies.
const REPETITIONS: u32 = 10;
/// The pinned buffer of the PCIe test.
const PCIE_BYTES: usize = 256 << 20;
/// The side of level 2's SGEMM.
const CHECK_GEMM_N: usize = 4096;
/// The side of level 3's FP32 GEMM.
const STRESS_GEMM_N: usize = 8192;
/// The side of level 3's tensor-core GEMM.
const STRESS_TENSOR_GEMM_N: usize = 16384;
/// The most results compared per wait for the GPU.
const STRESS_SLOTS: usize = 256;
/// Threads per block of the diagnostic kernels.
const BLOCK: u32 = 256;

pub(super) struct Context<'a> {
    device: &'a Device,
    gpu: &'a mut Gpu,
    plan: &'a Plan,
    nvml: Result<Nvml, String>,
    expectations: GpuExpectations<'a>,
    /// Why the CUDA context can no longer be used, once a driver error said so.
    broken: Option<String>,
}

impl<'a> Context<'a> {
    pub(super) fn new(device: &'a Device, gpu: &'a mut Gpu, plan: &'a Plan) -> Self {
        let nvml = crate::telemetry::nvml::open();
        let pci_device_id = nvml.as_ref().ok().and_then(|nvml| {
            let handle = find(nvml, device).ok()?;
            handle.pci_info().ok().map(|pci| pci.pci_device_id >> 16)
        });
        let expectations = GpuExpectations::new(&device.name, pci_device_id, device.cuda.as_ref());
        Context {
            device,
            gpu,
            plan,
            nvml,
            expectations,
            broken: None,
        }
    }

    pub(super) fn run(&mut self, run: &mut CheckRun<'_>) {
        if let Some(why) = &self.broken {
            run.evidence(evidence::text(
                "CUDA context",
                "broken",
                "usable",
                "an earlier check of this run",
                Verdict::Skip,
            ));
            run.skip(format!(
                "an earlier check broke this process's CUDA context ({why}): the rest needs a \
                 new process"
            ));
            return;
        }
        let outcome = match run.id() {
            "libraries" => {
                self.libraries(run);
                Ok(())
            }
            "memory_test" => self.memory_test(run),
            "memory_bandwidth" => self.bandwidth(run),
            "pcie_bandwidth" => self.pcie_bandwidth(run),
            "gemm_repeatability" => self.gemm_repeatability(run),
            STRESS_FP32 => self.stress(run, false),
            "stress_tensor" => self.stress(run, true),
            "pcie_link" => self.pcie_link(run),
            id => {
                let id = id.to_owned();
                match &self.nvml {
                    Ok(nvml) => match find(nvml, self.device) {
                        Ok(handle) => {
                            self.nvml_check(&id, &handle, run);
                            Ok(())
                        }
                        Err(why) => {
                            run.skip(why);
                            Ok(())
                        }
                    },
                    Err(why) => {
                        run.skip(why.clone());
                        Ok(())
                    }
                }
            }
        };
        if let Err(error) = outcome {
            if error.is_fatal() {
                self.broken = Some(error.to_string());
            }
            // The check could not measure: a GPU that cannot run the test fails it.
            run.evidence(evidence::text(
                if error.is_fatal() {
                    super::CONTEXT_BROKEN
                } else {
                    "error"
                },
                error.to_string(),
                "the test runs to its end",
                "the CUDA driver, NVRTC or cuBLAS",
                Verdict::Fail,
            ));
            run.summary(format!("could not run: {error}"));
        }
    }

    fn sensors(&self) -> Sensors<'_> {
        let fake = self.plan.injects(Fault::ThermalThrottle);
        match &self.nvml {
            Ok(nvml) => match find(nvml, self.device) {
                Ok(handle) => Sensors::new("NVML", fake, move || read_nvml(&handle)),
                Err(why) => Sensors::new(why, fake, Reading::default),
            },
            Err(why) => Sensors::new(why.clone(), fake, Reading::default),
        }
    }

    fn libraries(&self, run: &mut CheckRun<'_>) {
        let source = "the dynamic loader's library path";
        let found = |present: bool, version: Option<String>| match (present, version) {
            (true, Some(v)) => format!("found, version {v}"),
            (true, None) => "found".to_owned(),
            (false, _) => "not found".to_owned(),
        };
        let verdict = |ok: bool| if ok { Verdict::Pass } else { Verdict::Fail };
        let driver = library_present(Library::Driver);
        let (driver_version, cuda_version, nvml_version) = match &self.nvml {
            Ok(nvml) => (
                nvml.sys_driver_version().ok(),
                nvml.sys_cuda_driver_version()
                    .ok()
                    .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10)),
                nvml.sys_nvml_version().ok(),
            ),
            Err(_) => (None, None, None),
        };
        run.evidence(evidence::text(
            "NVIDIA driver",
            match (&driver_version, &cuda_version) {
                (Some(d), Some(c)) => format!("found, version {d} (CUDA {c})"),
                _ => found(driver, None),
            },
            "found",
            format!("libcuda.so.1 on {source}; versions from NVML"),
            verdict(driver),
        ));
        run.evidence(evidence::text(
            "NVML",
            match &self.nvml {
                Ok(_) => found(true, nvml_version),
                Err(why) => why.clone(),
            },
            "found",
            "libnvidia-ml.so.1",
            verdict(self.nvml.is_ok()),
        ));
        let libraries = crate::cuda::libraries();
        for (name, status) in [("NVRTC", &libraries.nvrtc), ("cuBLAS", &libraries.cublas)] {
            run.evidence(evidence::text(
                name,
                match &status.error {
                    Some(e) if !status.found => e.clone(),
                    _ => found(status.found, status.version.clone()),
                },
                "found",
                source,
                verdict(status.found && status.version.is_some()),
            ));
        }
        run.summary(format!(
            "driver {}, NVML {}, NVRTC {}, cuBLAS {}",
            driver_version.as_deref().unwrap_or("?"),
            if self.nvml.is_ok() {
                "found"
            } else {
                "missing"
            },
            libraries.nvrtc.version.as_deref().unwrap_or("missing"),
            libraries.cublas.version.as_deref().unwrap_or("missing"),
        ));
    }

    /// The level-1 checks that only ask NVML.
    fn nvml_check(&self, id: &str, handle: &nvml_wrapper::Device<'_>, run: &mut CheckRun<'_>) {
        let sample = crate::telemetry::nvml::sample(handle);
        match id {
            "identity" => {
                let cuda = self.device.cuda.as_ref().and_then(|c| c.uuid.clone());
                let nvml = handle.uuid().ok();
                let same =
                    matches!((&cuda, &nvml), (Some(c), Some(n)) if c.eq_ignore_ascii_case(n));
                run.evidence(evidence::text(
                    "UUID in NVML",
                    nvml.clone().unwrap_or_else(|| "not reported".into()),
                    cuda.clone()
                        .unwrap_or_else(|| "not reported by CUDA".into()),
                    "CUDA's UUID of this device; NVML's device found by its PCI bus id",
                    if same { Verdict::Pass } else { Verdict::Fail },
                ));
                run.summary(if same {
                    format!("CUDA and NVML agree: {}", cuda.unwrap_or_default())
                } else {
                    "CUDA and NVML name different GPUs".to_owned()
                });
            }
            "persistence_mode" => match handle.is_in_persistent_mode() {
                Ok(on) => {
                    run.evidence(evidence::text(
                        "persistence mode",
                        if on { "enabled" } else { "disabled" },
                        "enabled",
                        "NVML; without it the driver tears the GPU down when the last client \
                         exits, and every start pays for its initialisation (nvidia-smi -pm 1)",
                        if on { Verdict::Pass } else { Verdict::Warn },
                    ));
                    run.summary(format!(
                        "persistence mode {}",
                        if on { "on" } else { "off" }
                    ));
                }
                Err(e) => run.skip(format!("NVML does not report persistence mode: {e}")),
            },
            "ecc" => self.ecc(handle, run),
            "memory_repair" => memory_repair(handle, &sample, run),
            "throttle" => {
                let mut sensors = self.sensors();
                let reading = sensors.read();
                match reading.throttle_reasons {
                    Some(reasons) => {
                        let trouble = sensors::troubling(&reasons);
                        run.evidence(evidence::text(
                            "active throttle reasons",
                            if reasons.is_empty() {
                                "none".into()
                            } else {
                                reasons.join(", ")
                            },
                            "none of hw_slowdown, hw_thermal_slowdown, sw_thermal_slowdown, \
                             hw_power_brake_slowdown",
                            sensors.described(),
                            if trouble.is_empty() {
                                Verdict::Pass
                            } else {
                                Verdict::Warn
                            },
                        ));
                        run.summary(if trouble.is_empty() {
                            "no throttle reason that means trouble".to_owned()
                        } else {
                            format!("throttled now: {}", trouble.join(", "))
                        });
                    }
                    None => run.skip("NVML does not report throttle reasons"),
                }
                if let Some(t) = reading.temperature_celsius {
                    run.evidence(evidence::unjudged("temperature", t, "°C", "NVML"));
                }
            }
            "processes" => processes(&sample, run),
            "clocks" => clocks(handle, &sample, run),
            other => run.skip(format!("no GPU check is called `{other}`")),
        }
    }

    fn ecc(&self, handle: &nvml_wrapper::Device<'_>, run: &mut CheckRun<'_>) {
        let mode = match handle.is_ecc_enabled() {
            Ok(state) => state,
            Err(e) => {
                run.evidence(evidence::text(
                    "ECC mode",
                    format!("not supported ({e})"),
                    "enabled",
                    "NVML",
                    Verdict::Skip,
                ));
                run.skip("this GPU has no ECC (NVML reports no ECC mode)");
                return;
            }
        };
        run.evidence(evidence::text(
            "ECC mode",
            match (mode.currently_enabled, mode.pending_enabled) {
                (true, _) => "enabled".to_owned(),
                (false, true) => "disabled (enabled after the next reset)".to_owned(),
                (false, false) => "disabled".to_owned(),
            },
            "enabled",
            "NVML; without ECC, memory errors go unseen",
            if mode.currently_enabled {
                Verdict::Pass
            } else {
                Verdict::Warn
            },
        ));
        let mut counts: Vec<String> = Vec::new();
        for (counter, name, verdict) in [
            (
                EccCounter::Volatile,
                "uncorrectable ECC errors since the driver loaded",
                Verdict::Fail,
            ),
            (
                EccCounter::Aggregate,
                "uncorrectable ECC errors over the GPU's life",
                Verdict::Warn,
            ),
        ] {
            match handle.total_ecc_errors(MemoryError::Uncorrected, counter) {
                Ok(n) => {
                    counts.push(format!(
                        "{n} {}",
                        if counter == EccCounter::Volatile {
                            "volatile"
                        } else {
                            "aggregate"
                        }
                    ));
                    run.evidence(evidence::at_most(
                        name,
                        n as f64,
                        "errors",
                        0.0,
                        "NVML (nvidia-smi -q: ECC Errors, DRAM Uncorrectable)",
                        verdict,
                    ));
                }
                Err(e) => run.evidence(evidence::text(
                    name,
                    format!("not reported ({e})"),
                    "0",
                    "NVML",
                    Verdict::Skip,
                )),
            }
        }
        run.summary(format!(
            "ECC {}, uncorrectable errors: {}",
            if mode.currently_enabled { "on" } else { "off" },
            if counts.is_empty() {
                "not reported".to_owned()
            } else {
                counts.join(", ")
            }
        ));
    }

    fn pcie_link(&mut self, run: &mut CheckRun<'_>) -> Result<(), GpuError> {
        let nvml = match &self.nvml {
            Ok(nvml) => nvml,
            Err(why) => {
                run.skip(why.clone());
                return Ok(());
            }
        };
        let handle = match find(nvml, self.device) {
            Ok(h) => h,
            Err(why) => {
                run.skip(why);
                return Ok(());
            }
        };
        // An idle GPU drops its link to a low generation to save power: read it while
        // pinned (so asynchronous) copies of 2 GiB keep the link busy.
        // SAFETY: the pinned buffer is zeroed by the device-to-host copy below before the
        // host-to-device copies read it.
        let mut pinned = unsafe { self.gpu.ctx.alloc_pinned_with_flags::<u8>(64 << 20, 0) }
            .during("allocating pinned host memory")?;
        let mut dev = kgpu::zeros::<u8>(self.gpu, 64 << 20)?;
        // The pinned buffer itself (not a slice of it), so that the copies are queued on the
        // stream without waiting for each other.
        self.gpu
            .stream
            .memcpy_dtoh(&dev, &mut pinned)
            .during("copying from the GPU")?;
        for _ in 0..32 {
            self.gpu
                .stream
                .memcpy_htod(&pinned, &mut dev)
                .during("copying to the GPU")?;
        }
        std::thread::sleep(Duration::from_millis(5));
        let text = |r: Result<u32, nvml_wrapper::error::NvmlError>| r.map_err(|e| e.to_string());
        let (generation, width) = (
            text(handle.current_pcie_link_gen()),
            text(handle.current_pcie_link_width()),
        );
        self.gpu.sync()?;
        let (max_generation, max_width) = (
            text(handle.max_pcie_link_gen()),
            text(handle.max_pcie_link_width()),
        );
        let source = "NVML: the link now (read during a host-to-device copy) against the \
                      most this GPU and its slot support";
        for (name, now, max) in [
            (
                "link generation",
                generation.clone(),
                max_generation.clone(),
            ),
            ("link width", width.clone(), max_width.clone()),
        ] {
            match (now, max) {
                (Ok(now), Ok(max)) => run.evidence(at_least(
                    name,
                    now.into(),
                    if name == "link width" { "lanes" } else { "" },
                    max.into(),
                    source,
                    Verdict::Warn,
                )),
                (now, max) => run.evidence(evidence::text(
                    name,
                    now.map_or_else(|e| format!("not reported ({e})"), |v| v.to_string()),
                    max.map_or_else(|e| format!("not reported ({e})"), |v| v.to_string()),
                    source,
                    Verdict::Skip,
                )),
            }
        }
        let show = |r: &Result<u32, _>| r.as_ref().map_or("?".to_owned(), u32::to_string);
        run.summary(format!(
            "PCIe gen {} x{} (the most: gen {} x{})",
            show(&generation),
            show(&width),
            show(&max_generation),
            show(&max_width)
        ));
        Ok(())
    }

    fn module(&mut self) -> Result<Kernels, GpuError> {
        let (module, _) = self
            .gpu
            .module(CUDA.file, CUDA.source, &Options::default())?;
        let f = |name| Gpu::function(&module, name);
        Ok(Kernels {
            fill: f("diag_fill")?,
            check: f("diag_check")?,
            invert: f("diag_invert")?,
            checksum: f("diag_checksum")?,
            checksum_expected: f("diag_checksum_expected")?,
            copy: f("diag_copy")?,
            triad: f("diag_triad")?,
            compare: f("diag_compare")?,
            flip: f("diag_flip")?,
        })
    }

    fn grid(&self) -> cudarc::driver::LaunchConfig {
        let blocks = self.gpu.multiprocessors.max(1) * (2048 / BLOCK);
        cudarc::driver::LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn memory_test(&mut self, run: &mut CheckRun<'_>) -> Result<(), GpuError> {
        let k = self.module()?;
        let (free, total) = self
            .gpu
            .ctx
            .mem_get_info()
            .during("reading the free memory")?;
        let mut bytes = (free as f64 * MEMORY_TEST_SHARE) as u64;
        let mut rule = format!(
            "{:.0} % of the {} free (of {})",
            MEMORY_TEST_SHARE * 100.0,
            gib(free as u64),
            gib(total as u64)
        );
        if let Some(cap) = self.plan.memory_test_max_bytes {
            if cap < bytes {
                bytes = cap;
                rule = format!("{rule}, capped at {cap} bytes for this run");
            }
        }
        let words = (bytes / 8) as usize;
        let bytes = words as u64 * 8;
        // SAFETY: every word is written by diag_fill before any kernel reads it.
        let mut buf = unsafe { self.gpu.stream.alloc::<u64>(words.max(1)) }
            .during("allocating the memory test's buffer")?;
        let mut count = kgpu::zeros::<u64>(self.gpu, 1)?;
        let mut errors = kgpu::zeros::<u64>(self.gpu, 3 * KEPT_ERRORS)?;
        let cfg = self.grid();
        let n = words as u64;
        let flip = if self.plan.injects(Fault::MemoryBitFlip) {
            memtest::flipped_word(words) as u64
        } else {
            u64::MAX
        };
        let max_errors = KEPT_ERRORS as u32;
        let passes = 12.0;
        let mut done = 0.0;
        let mut results = Vec::new();

        let take = |gpu: &Gpu,
                    count: &mut CudaSlice<u64>,
                    errors: &mut CudaSlice<u64>|
         -> Result<(u64, Vec<MemError>), GpuError> {
            let n = kgpu::download(gpu, count)?[0];
            let raw = kgpu::download(gpu, errors)?;
            gpu.stream
                .memset_zeros(count)
                .during("clearing a counter")?;
            let first = raw
                .chunks(3)
                .take((n as usize).min(KEPT_ERRORS))
                .map(|e| MemError {
                    offset: e[0] * 8,
                    expected: e[1],
                    read: e[2],
                })
                .collect();
            Ok((n, first))
        };

        // Walking ones, then walking zeros.
        let mut walking = (0u64, Vec::new());
        for kind in [0i32, 1] {
            self.launch_fill(&k.fill, &mut buf, n, kind, 0, 0)?;
            let flip_now = if kind == 0 { flip } else { u64::MAX };
            let mut l = self.gpu.stream.launch_builder(&k.check);
            l.arg(&buf)
                .arg(&n)
                .arg(&kind)
                .arg(&0u64)
                .arg(&0u64)
                .arg(&flip_now)
                .arg(&mut count)
                .arg(&mut errors)
                .arg(&max_errors);
            // SAFETY: diag_check(const u64*, u64, int, u64, u64, u64, u64*, u64*, unsigned)
            // reads `n` words of `buf` and writes at most 3 × max_errors words of `errors`.
            unsafe { l.launch(cfg) }.during("launching diag_check")?;
            let (c, first) = take(self.gpu, &mut count, &mut errors)?;
            walking.0 += c;
            walking.1.extend(first);
            done += 2.0;
            run.progress(done / passes);
        }
        results.push(pattern(memtest::PATTERNS[0], walking));

        // Moving inversions.
        let mut inversions = (0u64, Vec::new());
        for base in [0x5555_5555_5555_5555u64, 0] {
            self.launch_fill(&k.fill, &mut buf, n, 2, base, 0)?;
            for (expect, write, descending) in [(base, !base, 0i32), (!base, base, 1)] {
                let mut l = self.gpu.stream.launch_builder(&k.invert);
                l.arg(&mut buf)
                    .arg(&n)
                    .arg(&expect)
                    .arg(&write)
                    .arg(&descending)
                    .arg(&mut count)
                    .arg(&mut errors)
                    .arg(&max_errors);
                // SAFETY: diag_invert(u64*, u64, u64, u64, int, u64*, u64*, unsigned) reads
                // and writes `n` words of `buf`, at most 3 × max_errors words of `errors`.
                unsafe { l.launch(cfg) }.during("launching diag_invert")?;
            }
            let (c, first) = take(self.gpu, &mut count, &mut errors)?;
            inversions.0 += c;
            inversions.1.extend(first);
            done += 2.0;
            run.progress(done / passes);
        }
        results.push(pattern(memtest::PATTERNS[1], inversions));

        // Random, through a checksum; located word by word only when it differs.
        self.launch_fill(&k.fill, &mut buf, n, 3, 0, RANDOM_SEED)?;
        let mut read = kgpu::zeros::<u64>(self.gpu, 2)?;
        let mut expected = kgpu::zeros::<u64>(self.gpu, 2)?;
        let mut l = self.gpu.stream.launch_builder(&k.checksum);
        l.arg(&buf).arg(&n).arg(&mut read);
        // SAFETY: diag_checksum(const u64*, u64, u64*) reads `n` words, writes 2.
        unsafe { l.launch(cfg) }.during("launching diag_checksum")?;
        let mut l = self.gpu.stream.launch_builder(&k.checksum_expected);
        l.arg(&n).arg(&RANDOM_SEED).arg(&mut expected);
        // SAFETY: diag_checksum_expected(u64, u64, u64*) writes 2 words.
        unsafe { l.launch(cfg) }.during("launching diag_checksum_expected")?;
        let sums = (
            kgpu::download(self.gpu, &read)?,
            kgpu::download(self.gpu, &expected)?,
        );
        let random = if sums.0 == sums.1 {
            (0, Vec::new())
        } else {
            let mut l = self.gpu.stream.launch_builder(&k.check);
            let kind = 3i32;
            let none = u64::MAX;
            l.arg(&buf)
                .arg(&n)
                .arg(&kind)
                .arg(&0u64)
                .arg(&RANDOM_SEED)
                .arg(&none)
                .arg(&mut count)
                .arg(&mut errors)
                .arg(&max_errors);
            // SAFETY: as for the walking ones' diag_check.
            unsafe { l.launch(cfg) }.during("launching diag_check")?;
            take(self.gpu, &mut count, &mut errors)?
        };
        results.push(pattern(memtest::PATTERNS[2], random));
        drop(buf);
        run.progress(1.0);
        let failing: u64 = results.iter().map(|r| r.errors).sum();
        for e in memtest::evidence(bytes, &rule, &results) {
            run.evidence(e);
        }
        run.summary(format!(
            "{} tested with {} patterns: {failing} failing word(s){}",
            gib(bytes),
            results.len(),
            if flip != u64::MAX {
                format!(" (test fault: bit {FLIPPED_BIT} of one readback flipped)")
            } else {
                String::new()
            }
        ));
        Ok(())
    }

    fn launch_fill(
        &self,
        fill: &CudaFunction,
        buf: &mut CudaSlice<u64>,
        n: u64,
        kind: i32,
        base: u64,
        seed: u64,
    ) -> Result<(), GpuError> {
        let mut l = self.gpu.stream.launch_builder(fill);
        l.arg(buf).arg(&n).arg(&kind).arg(&base).arg(&seed);
        // SAFETY: diag_fill(u64*, u64, int, u64, u64) writes `n` words of `buf`, which holds
        // at least that many.
        unsafe { l.launch(self.grid()) }
            .during("launching diag_fill")
            .map(|_| ())
    }

    fn bandwidth(&mut self, run: &mut CheckRun<'_>) -> Result<(), GpuError> {
        let k = self.module()?;
        let (free, _) = self
            .gpu
            .ctx
            .mem_get_info()
            .during("reading the free memory")?;
        let array = BANDWIDTH_ARRAY_MAX.min(free as u64 / 8);
        let n = (array / 8) as usize;
        let a = kgpu::upload(self.gpu, &vec![1.0f64; n])?;
        let mut b = kgpu::upload(self.gpu, &vec![2.0f64; n])?;
        let mut c = kgpu::zeros::<f64>(self.gpu, n)?;
        let cfg = self.grid();
        let len = n as u64;
        let copy_times = crate::cuda::time_on_stream(
            self.gpu,
            REPETITIONS,
            |_, _| {},
            |gpu| {
                let mut l = gpu.stream.launch_builder(&k.copy);
                l.arg(&a).arg(&mut c).arg(&len);
                // SAFETY: diag_copy(const double*, double*, u64): `n` doubles each.
                unsafe { l.launch(cfg) }
                    .during("launching diag_copy")
                    .map(|_| ())
            },
        )?;
        run.progress(0.5);
        let scalar = 3.0f64;
        let triad_times = crate::cuda::time_on_stream(
            self.gpu,
            REPETITIONS,
            |_, _| {},
            |gpu| {
                let mut l = gpu.stream.launch_builder(&k.triad);
                l.arg(&mut b).arg(&a).arg(&c).arg(&scalar).arg(&len);
                // SAFETY: diag_triad(double*, const double*, const double*, double, u64): `n`
                // doubles each; b = a + 3c, which leaves a and c as they are.
                unsafe { l.launch(cfg) }
                    .during("launching diag_triad")
                    .map(|_| ())
            },
        )?;
        let best = |t: &[f64]| t.iter().copied().fold(f64::MAX, f64::min) / 1e3;
        let copy = self
            .plan
            .throughput(16.0 * n as f64 / best(&copy_times) / 1e9);
        let triad = self
            .plan
            .throughput(24.0 * n as f64 / best(&triad_times) / 1e9);
        let check = kgpu::download(self.gpu, &b)?;
        let expectation = self.expectations.memory_bandwidth();
        for (name, value) in [("copy bandwidth", copy), ("triad bandwidth", triad)] {
            run.evidence(judged(name, value, "GB/s", expectation.as_ref()));
        }
        run.evidence(evidence::text(
            "triad result",
            evidence::figure(check[n / 2]),
            "4",
            "b = a + 3c with a = 1, c = 1 (c holds the copy of a)",
            if check[n / 2] == 4.0 {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
        ));
        run.summary(format!(
            "copy {copy:.0} GB/s, triad {triad:.0} GB/s ({} per array, best of {REPETITIONS})",
            gib(array)
        ));
        Ok(())
    }

    fn pcie_bandwidth(&mut self, run: &mut CheckRun<'_>) -> Result<(), GpuError> {
        // SAFETY: the pinned buffer is only read (by the host-to-device copies) after the
        // device-to-host copies, which run first, have filled it.
        let mut pinned = unsafe { self.gpu.ctx.alloc_pinned_with_flags::<u8>(PCIE_BYTES, 0) }
            .during("allocating pinned host memory")?;
        let mut dev = kgpu::zeros::<u8>(self.gpu, PCIE_BYTES)?;
        let d2h = crate::cuda::time_on_stream(
            self.gpu,
            REPETITIONS,
            |_, _| {},
            |gpu| {
                let host = pinned.as_mut_slice().during("writing pinned memory")?;
                gpu.stream
                    .memcpy_dtoh(&dev, host)
                    .during("copying from the GPU")
            },
        )?;
        run.progress(0.5);
        let h2d = crate::cuda::time_on_stream(
            self.gpu,
            REPETITIONS,
            |_, _| {},
            |gpu| {
                let host = pinned.as_slice().during("reading pinned memory")?;
                gpu.stream
                    .memcpy_htod(host, &mut dev)
                    .during("copying to the GPU")
            },
        )?;
        let best = |t: &[f64]| t.iter().copied().fold(f64::MAX, f64::min) / 1e3;
        let rate = |t: &[f64]| self.plan.throughput(PCIE_BYTES as f64 / best(t) / 1e9);
        let (up, down) = (rate(&h2d), rate(&d2h));
        let link = self.nvml.as_ref().ok().and_then(|nvml| {
            let handle = find(nvml, self.device).ok()?;
            let generation = handle.max_pcie_link_gen().ok()?;
            let width = handle.max_pcie_link_width().ok()?;
            Some((generation, width, pcie_link_gbps(generation, width)?))
        });
        let fraction = self.expectations.fractions.pcie;
        for (name, value) in [
            ("host to device (pinned)", up),
            ("device to host (pinned)", down),
        ] {
            run.evidence(match link {
                Some((generation, width, theoretical)) => at_least(
                    name,
                    value,
                    "GB/s",
                    fraction * theoretical,
                    format!(
                        "{fraction} × {theoretical:.1} GB/s, the rate of a PCIe gen {generation} \
                         x{width} link (its most, from NVML) after line encoding"
                    ),
                    Verdict::Fail,
                ),
                None => evidence::text(
                    name,
                    format!("{value:.1} GB/s"),
                    "the link's rate",
                    "NVML does not report the link's generation and width",
                    Verdict::Skip,
                ),
            });
        }
        run.summary(format!(
            "host to device {up:.1} GB/s, device to host {down:.1} GB/s ({} MiB pinned, best of {REPETITIONS})",
            PCIE_BYTES >> 20
        ));
        Ok(())
    }

    fn gemm_repeatability(&mut self, run: &mut CheckRun<'_>) -> Result<(), GpuError> {
        let n = CHECK_GEMM_N;
        let mut gemm = GpuGemm::new(self.gpu, n, false)?;
        // Timed five times (after a warm-up), the best counting; the last result is the first
        // of the two compared.
        let times = crate::cuda::time_on_stream(self.gpu, 5, |_, _| {}, |gpu| gemm.step(gpu))?;
        let first = kgpu::download(self.gpu, &gemm.c)?;
        run.progress(0.5);
        gemm.step(self.gpu)?;
        let mut second = kgpu::download(self.gpu, &gemm.c)?;
        let differing = judge_repeat(
            run,
            self.plan,
            &first,
            &mut second,
            "the same inputs on the same GPU give the same bits (cuBLAS SGEMM, TF32 off)",
        );
        let best_ms = times.iter().copied().fold(f64::MAX, f64::min);
        let gflops = self.plan.throughput(gemm.flops() / (best_ms / 1e3) / 1e9);
        run.evidence(judged(
            "SGEMM throughput",
            gflops,
            "GFLOP/s",
            self.expectations.gemm(DataType::Fp32).as_ref(),
        ));
        run.summary(format!(
            "{n}×{n} SGEMM twice on the same inputs: {} differing value(s); {gflops:.0} GFLOP/s (best of 5)",
            differing
        ));
        Ok(())
    }

    fn stress(&mut self, run: &mut CheckRun<'_>, tensor: bool) -> Result<(), GpuError> {
        let data_type = if !tensor {
            DataType::Fp32
        } else if self.gpu.arch.0 >= 8 {
            DataType::Bf16
        } else if self.gpu.arch.0 >= 7 {
            DataType::Fp16
        } else {
            run.evidence(evidence::text(
                "tensor cores",
                format!(
                    "none (compute capability {}.{})",
                    self.gpu.arch.0, self.gpu.arch.1
                ),
                "compute capability 7.0 or newer",
                "the CUDA driver",
                Verdict::Skip,
            ));
            run.skip("this GPU has no tensor cores");
            return Ok(());
        };
        let k = self.module()?;
        // A tensor-core GEMM is some fifteen times faster: a larger one keeps the comparison
        // of each result a small share of the time.
        let n = if tensor {
            STRESS_TENSOR_GEMM_N
        } else {
            STRESS_GEMM_N
        };
        let mut gemm = GpuGemm::new(self.gpu, n, tensor)?;
        gemm.step(self.gpu)?;
        let first = self
            .gpu
            .stream
            .clone_dtod(&gemm.c)
            .during("keeping the first result")?;
        let mut flags = kgpu::zeros::<u64>(self.gpu, STRESS_SLOTS)?;
        let cfg = self.grid();
        let words = (n * n) as u64;
        // With tensor cores the duration is shared by the two stress checks, so that level 3
        // takes level 2 plus --duration.
        let share = if self.gpu.arch.0 >= 7 { 0.5 } else { 1.0 };
        let duration = Duration::from_secs_f64(self.plan.duration_s.max(0.0) * share);
        let expectation = self.expectations.gemm(data_type);
        let fault_gemm = self.plan.injects(Fault::GemmMismatch);
        let flops = gemm.flops();
        let gpu = &*self.gpu;
        let mut sensors = {
            // Built here rather than by self.sensors(), which would borrow all of self.
            let fake = self.plan.injects(Fault::ThermalThrottle);
            match &self.nvml {
                Ok(nvml) => match find(nvml, self.device) {
                    Ok(handle) => Sensors::new("NVML", fake, move || read_nvml(&handle)),
                    Err(why) => Sensors::new(why, fake, Reading::default),
                },
                Err(why) => Sensors::new(why.clone(), fake, Reading::default),
            }
        };
        // Batches of about 50 ms between waits for the GPU: each result is compared with the
        // first on the GPU, into its own slot of `flags`, read back once per batch.
        let timing = Instant::now();
        gemm.step(gpu)?;
        gpu.sync()?;
        let one = timing.elapsed().as_secs_f64().max(1e-6);
        let batch = ((0.05 / one) as usize).clamp(1, STRESS_SLOTS);
        // SAFETY: the first result is n·n f32, read as as many u32 of the same bits.
        let first_words = unsafe { first.transmute::<u32>(n * n) }
            .ok_or_else(|| GpuError::Other("a GEMM result is not n·n words".into()))?;
        let started = Instant::now();
        let mut window = (Instant::now(), 0u64);
        let (mut results, mut differing_results) = (1u64, 0u64);
        let mut altered = !fault_gemm;
        let mut throttled_seconds = 0u32;
        let mut reported_reasons = false;
        let mut peak = Reading::default();
        loop {
            for slot in 0..batch {
                gemm.step(gpu)?;
                if !altered {
                    let index = words / 3;
                    let mut l = gpu.stream.launch_builder(&k.flip);
                    l.arg(&mut gemm.c).arg(&index);
                    // SAFETY: diag_flip(unsigned*, u64) writes one word, `index` < n·n.
                    unsafe { l.launch(cudarc::driver::LaunchConfig::for_num_elems(1)) }
                        .during("launching diag_flip")?;
                    altered = true;
                }
                // SAFETY: the result is n·n f32, read as as many u32 of the same bits.
                let result = unsafe { gemm.c.transmute::<u32>(n * n) }
                    .ok_or_else(|| GpuError::Other("a GEMM result is not n·n words".into()))?;
                let mut counter = flags.slice_mut(slot..slot + 1);
                let mut l = gpu.stream.launch_builder(&k.compare);
                l.arg(&first_words)
                    .arg(&result)
                    .arg(&words)
                    .arg(&mut counter);
                // SAFETY: diag_compare(const unsigned*, const unsigned*, u64, u64*) reads n·n
                // words of each result and adds to the one counter of this result's slot.
                unsafe { l.launch(cfg) }.during("launching diag_compare")?;
            }
            let counts = kgpu::download(gpu, &flags)?;
            differing_results += counts[..batch].iter().filter(|&&c| c > 0).count() as u64;
            gpu.stream
                .memset_zeros(&mut flags)
                .during("clearing the comparison's counters")?;
            results += batch as u64;
            window.1 += batch as u64;
            let elapsed = started.elapsed();
            let window_s = window.0.elapsed().as_secs_f64();
            let finished = elapsed >= duration;
            if window_s >= 1.0 || finished {
                let reading = sensors.read();
                let reasons = reading.throttle_reasons.clone().unwrap_or_default();
                reported_reasons |= reading.throttle_reasons.is_some();
                if !sensors::troubling(&reasons).is_empty() {
                    throttled_seconds += 1;
                }
                peak.temperature_celsius =
                    max(peak.temperature_celsius, reading.temperature_celsius);
                peak.power_watts = max(peak.power_watts, reading.power_watts);
                let sample = StressSample {
                    t_s: elapsed.as_secs_f64(),
                    gflops: self
                        .plan
                        .throughput(flops * window.1 as f64 / window_s / 1e9),
                    sm_clock_mhz: reading.sm_clock_mhz,
                    temperature_celsius: reading.temperature_celsius,
                    power_watts: reading.power_watts,
                    throttle_reasons: reasons,
                };
                run.sample(
                    sample,
                    (elapsed.as_secs_f64() / duration.as_secs_f64().max(1e-9)).min(1.0),
                );
                window = (Instant::now(), 0);
            }
            if finished {
                break;
            }
        }
        let series: Vec<f64> = run.check.series.iter().map(|s| s.gflops).collect();
        judge_stress(
            run,
            &self.plan.baseline,
            expectation.as_ref(),
            &series,
            &format!("{} GEMM ({n}×{n})", data_type.as_str()),
            results,
            differing_results,
        );
        run.evidence(if reported_reasons {
            evidence::at_most(
                "seconds throttled (thermal or hardware)",
                throttled_seconds.into(),
                "s",
                0.0,
                sensors.described(),
                Verdict::Fail,
            )
        } else {
            evidence::text(
                "seconds throttled (thermal or hardware)",
                "not reported",
                "0",
                sensors.described(),
                Verdict::Skip,
            )
        });
        if let Some(t) = peak.temperature_celsius {
            run.evidence(evidence::unjudged(
                "highest temperature",
                t,
                "°C",
                "NVML, once a second",
            ));
        }
        if let Some(w) = peak.power_watts {
            run.evidence(evidence::unjudged(
                "highest power",
                w,
                "W",
                "NVML, once a second",
            ));
        }
        Ok(())
    }
}

fn max(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// A figure against its expectation, or recorded without one.
fn judged(
    name: &str,
    value: f64,
    unit: &str,
    expectation: Option<&Expectation>,
) -> gpulab_shared::diag::Evidence {
    match expectation {
        Some(e) => at_least(
            name,
            value,
            unit,
            e.expected,
            e.source.clone(),
            Verdict::Fail,
        ),
        None => evidence::unjudged(
            name,
            value,
            unit,
            "no expectation: the model is not in gpu-models.toml and its attributes give none",
        ),
    }
}

fn pattern(name: &'static str, (errors, mut first): (u64, Vec<MemError>)) -> PatternResult {
    first.sort_by_key(|e| e.offset);
    first.truncate(KEPT_ERRORS);
    PatternResult {
        name,
        errors,
        first,
    }
}

/// The diagnostic kernels of `diag.cu`.
struct Kernels {
    fill: CudaFunction,
    check: CudaFunction,
    invert: CudaFunction,
    checksum: CudaFunction,
    checksum_expected: CudaFunction,
    copy: CudaFunction,
    triad: CudaFunction,
    compare: CudaFunction,
    flip: CudaFunction,
}

/// A square GEMM on the GPU: cuBLAS SGEMM (TF32 off), or a 16-bit tensor-core GEMM
/// (`cublasGemmEx`, BF16 from compute capability 8.0, else FP16) accumulating and writing
/// FP32.
struct GpuGemm {
    n: usize,
    kind: GemmKind,
    c: CudaSlice<f32>,
}

enum GemmKind {
    Fp32 {
        a: CudaSlice<f32>,
        b: CudaSlice<f32>,
    },
    Half {
        a: CudaSlice<u16>,
        b: CudaSlice<u16>,
        bf16: bool,
    },
}

impl GpuGemm {
    fn new(gpu: &mut Gpu, n: usize, tensor: bool) -> Result<Self, GpuError> {
        let bytes = (n * n) as u64 * if tensor { 2 + 2 + 4 + 4 } else { 4 * 4 };
        gpu.ensure_fits(bytes, "the GEMM check")?;
        gpu.blas()?;
        let mut a = vec![0.0f32; n * n];
        let mut b = vec![0.0f32; n * n];
        rng::fill_uniform_f32(0x6469_6167, 0, &mut a, -1.0, 1.0);
        rng::fill_uniform_f32(0x6469_6167, 1, &mut b, -1.0, 1.0);
        let kind = if tensor {
            let bf16 = gpu.arch.0 >= 8;
            let half = |v: &[f32]| -> Vec<u16> {
                v.iter()
                    .map(|&x| if bf16 { to_bf16(x) } else { to_f16(x) })
                    .collect()
            };
            GemmKind::Half {
                a: kgpu::upload(gpu, &half(&a))?,
                b: kgpu::upload(gpu, &half(&b))?,
                bf16,
            }
        } else {
            GemmKind::Fp32 {
                a: kgpu::upload(gpu, &a)?,
                b: kgpu::upload(gpu, &b)?,
            }
        };
        Ok(GpuGemm {
            n,
            kind,
            c: kgpu::zeros(gpu, n * n)?,
        })
    }

    fn flops(&self) -> f64 {
        2.0 * (self.n as f64).powi(3)
    }

    fn step(&mut self, gpu: &Gpu) -> Result<(), GpuError> {
        let n = self.n as i32;
        let blas = gpu
            .blas_ready()
            .ok_or_else(|| GpuError::Other("cuBLAS was not started".into()))?;
        match &self.kind {
            GemmKind::Fp32 { a, b } => {
                let cfg = GemmConfig {
                    transa: cublasOperation_t::CUBLAS_OP_N,
                    transb: cublasOperation_t::CUBLAS_OP_N,
                    m: n,
                    n,
                    k: n,
                    alpha: 1.0f32,
                    lda: n,
                    ldb: n,
                    beta: 0.0f32,
                    ldc: n,
                };
                // SAFETY: A, B and C are n×n floats each, as the leading dimensions say.
                unsafe { blas.gemm(cfg, a, b, &mut self.c) }
                    .map_err(|e| GpuError::Other(format!("cuBLAS SGEMM failed: {e:?}")))?;
            }
            GemmKind::Half { a, b, bf16 } => {
                let input = if *bf16 {
                    cudaDataType::CUDA_R_16BF
                } else {
                    cudaDataType::CUDA_R_16F
                };
                let (alpha, beta) = (1.0f32, 0.0f32);
                let (a_ptr, _a_sync) = a.device_ptr(&gpu.stream);
                let (b_ptr, _b_sync) = b.device_ptr(&gpu.stream);
                let (c_ptr, _c_sync) = self.c.device_ptr_mut(&gpu.stream);
                // SAFETY: the handle is live on this stream; A and B are n×n 16-bit values and
                // C n×n floats, as the types and leading dimensions say; alpha and beta are
                // f32 as CUBLAS_COMPUTE_32F requires, and live for the call.
                let status = unsafe {
                    cudarc::cublas::sys::cublasGemmEx(
                        *blas.handle(),
                        cublasOperation_t::CUBLAS_OP_N,
                        cublasOperation_t::CUBLAS_OP_N,
                        n,
                        n,
                        n,
                        (&alpha as *const f32).cast(),
                        a_ptr as *const std::ffi::c_void,
                        input,
                        n,
                        b_ptr as *const std::ffi::c_void,
                        input,
                        n,
                        (&beta as *const f32).cast(),
                        c_ptr as *mut std::ffi::c_void,
                        cudaDataType::CUDA_R_32F,
                        n,
                        cublasComputeType_t::CUBLAS_COMPUTE_32F,
                        cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                    )
                };
                if status != cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                    return Err(GpuError::Other(format!("cublasGemmEx failed: {status:?}")));
                }
            }
        }
        Ok(())
    }
}

/// `x` as BF16 bits, rounded to nearest even (inputs are finite).
fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounding = 0x7fff + ((bits >> 16) & 1);
    ((bits + rounding) >> 16) as u16
}

/// `x` as IEEE half bits, for |x| ≤ 1 (the GEMM inputs): subnormals flushed to zero,
/// the mantissa rounded to nearest.
fn to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exponent = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    if exponent <= 0 {
        return sign;
    }
    let mantissa = bits & 0x7f_ffff;
    let rounded = (((exponent as u32) << 10) | (mantissa >> 13)) + ((mantissa >> 12) & 1);
    sign | rounded.min(0x7bff) as u16
}

/// The NVML device of `device`: by PCI bus id (so that the identity check can compare
/// UUIDs), else by UUID.
fn find<'n>(nvml: &'n Nvml, device: &Device) -> Result<nvml_wrapper::Device<'n>, String> {
    let info = device.cuda.as_ref();
    if let Some(bus) = info.and_then(|i| i.pci_bus_id.as_deref()) {
        if let Ok(handle) = nvml.device_by_pci_bus_id(bus) {
            return Ok(handle);
        }
    }
    if let Some(uuid) = info.and_then(|i| i.uuid.as_deref()) {
        if let Ok(handle) = nvml.device_by_uuid(uuid) {
            return Ok(handle);
        }
    }
    Err(format!(
        "NVML lists no GPU with this device's PCI bus id or UUID, so its health cannot be read ({})",
        device.id
    ))
}

fn read_nvml(handle: &nvml_wrapper::Device<'_>) -> Reading {
    Reading {
        temperature_celsius: handle
            .temperature(TemperatureSensor::Gpu)
            .ok()
            .map(f64::from),
        sm_clock_mhz: handle.clock_info(Clock::SM).ok(),
        power_watts: handle.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
        throttle_reasons: handle
            .current_throttle_reasons()
            .ok()
            .map(crate::telemetry::nvml::throttle_reason_names),
    }
}

fn memory_repair(
    handle: &nvml_wrapper::Device<'_>,
    sample: &gpulab_shared::GpuTelemetry,
    run: &mut CheckRun<'_>,
) {
    let source = "NVML (nvidia-smi -q: Retired Pages, Remapped Rows)";
    let mut any = false;
    if let Some(retired) = sample.retired_pages {
        any = true;
        run.evidence(evidence::at_most(
            "retired pages",
            retired as f64,
            "pages",
            0.0,
            source,
            Verdict::Warn,
        ));
    }
    if let Ok(pending) = handle.are_pages_pending_retired() {
        any = true;
        run.evidence(evidence::text(
            "page retirement pending",
            if pending { "yes" } else { "no" },
            "no",
            format!("{source}: a pending retirement takes effect at the next GPU reset"),
            if pending {
                Verdict::Warn
            } else {
                Verdict::Pass
            },
        ));
    }
    if let Some(rows) = &sample.remapped_rows {
        any = true;
        run.evidence(evidence::at_most(
            "rows remapped for uncorrectable errors",
            rows.uncorrectable as f64,
            "rows",
            0.0,
            source,
            Verdict::Warn,
        ));
        run.evidence(evidence::text(
            "row remapping pending",
            if rows.pending { "yes" } else { "no" },
            "no",
            format!("{source}: the GPU needs a reset to apply it"),
            if rows.pending {
                Verdict::Warn
            } else {
                Verdict::Pass
            },
        ));
        run.evidence(evidence::text(
            "row remapping failed",
            if rows.failed { "yes" } else { "no" },
            "no",
            format!("{source}: no spare row was left; the GPU should be replaced"),
            if rows.failed {
                Verdict::Fail
            } else {
                Verdict::Pass
            },
        ));
    }
    if any {
        run.summary(format!(
            "retired pages {}, remapped rows {}",
            sample
                .retired_pages
                .map_or("not reported".into(), |p| p.to_string()),
            sample
                .remapped_rows
                .as_ref()
                .map_or("not reported".into(), |r| format!(
                    "{} correctable / {} uncorrectable{}{}",
                    r.correctable,
                    r.uncorrectable,
                    if r.pending { ", pending" } else { "" },
                    if r.failed { ", FAILED" } else { "" }
                ))
        ));
    } else {
        run.skip("NVML reports neither retired pages nor remapped rows for this GPU");
    }
}

fn processes(sample: &gpulab_shared::GpuTelemetry, run: &mut CheckRun<'_>) {
    let Some(processes) = &sample.processes else {
        run.skip("NVML does not list the GPU's processes");
        return;
    };
    let me = std::process::id();
    let nested = std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(crate::telemetry::nvml::pid_namespace_depth)
        .is_some_and(|depth| depth > 1);
    let mut others: Vec<_> = processes.iter().filter(|p| p.pid != me).collect();
    let mut note = String::new();
    if nested && others.len() == processes.len() && !others.is_empty() {
        // In a container NVML gives host PIDs, so this process is not found by its own: it
        // is taken to be one of them (it has the GPU open).
        others.pop();
        note = "; this process runs in its own PID namespace, so one of NVML's host PIDs is \
                taken to be its own"
            .to_owned();
    }
    let described: Vec<String> = others
        .iter()
        .map(|p| match p.used_memory_bytes {
            Some(bytes) => format!("PID {} using {}", p.pid, gib(bytes)),
            None => format!("PID {}", p.pid),
        })
        .collect();
    run.evidence(evidence::at_most(
        "other compute processes",
        others.len() as f64,
        "processes",
        0.0,
        format!(
            "NVML's running compute processes, less this one (PIDs as the host sees them){note}"
        ),
        Verdict::Warn,
    ));
    if !described.is_empty() {
        run.evidence(evidence::text(
            "processes",
            described.join(", "),
            "none",
            "NVML",
            Verdict::Warn,
        ));
    }
    run.summary(if described.is_empty() {
        "no other process holds the GPU".to_owned()
    } else {
        format!("other processes on the GPU: {}", described.join(", "))
    });
}

fn clocks(
    handle: &nvml_wrapper::Device<'_>,
    sample: &gpulab_shared::GpuTelemetry,
    run: &mut CheckRun<'_>,
) {
    let source = "NVML: the application clock against its default (nvidia-smi -ac / -lgc set them)";
    let mut any = false;
    if let (Ok(now), Ok(default)) = (
        handle.applications_clock(Clock::SM),
        handle.default_applications_clock(Clock::SM),
    ) {
        any = true;
        run.evidence(evidence::number(
            "application SM clock",
            now.into(),
            "MHz",
            default.into(),
            gpulab_shared::diag::Bound::Equal,
            source,
            if now == default {
                Verdict::Pass
            } else {
                Verdict::Warn
            },
        ));
    }
    if let Some(reasons) = &sample.throttle_reasons {
        any = true;
        let locked = reasons.iter().any(|r| r == "applications_clocks_setting");
        run.evidence(evidence::text(
            "clocks held by a clock setting",
            if locked { "yes" } else { "no" },
            "no",
            "NVML's throttle reason applications_clocks_setting (locked or application clocks)",
            if locked { Verdict::Warn } else { Verdict::Pass },
        ));
    }
    if let (Ok(sm), Ok(max)) = (
        handle.clock_info(Clock::SM),
        handle.max_clock_info(Clock::SM),
    ) {
        run.evidence(evidence::unjudged(
            "SM clock now",
            sm.into(),
            "MHz",
            format!("NVML (the most: {max} MHz; an idle GPU clocks down)"),
        ));
    }
    if any {
        run.summary("clocks as the driver sets them by default".to_owned());
        if run
            .check
            .evidence
            .iter()
            .any(|e| e.verdict == Verdict::Warn)
        {
            run.summary("clocks are locked or set by the application clocks");
        }
    } else {
        run.skip("NVML reports no application clock and no throttle reasons");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpulab_shared::diag::CheckResult;
    use gpulab_shared::{GpuProcess, GpuTelemetry};

    fn processes_check(pids: &[u32]) -> CheckResult {
        let sample = GpuTelemetry {
            processes: Some(
                pids.iter()
                    .map(|&pid| GpuProcess {
                        pid,
                        used_memory_bytes: Some(1 << 30),
                    })
                    .collect(),
            ),
            ..GpuTelemetry::default()
        };
        let mut check = super::super::waiting("processes", "Other processes");
        let mut sink = |_: &CheckResult| {};
        let mut run = CheckRun::start(&mut check, &mut sink);
        processes(&sample, &mut run);
        run.finish();
        check
    }

    #[test]
    fn another_process_on_the_gpu_warns_and_this_one_does_not() {
        let me = std::process::id();
        assert_eq!(processes_check(&[me]).verdict, Some(Verdict::Pass));
        assert_eq!(processes_check(&[]).verdict, Some(Verdict::Pass));
        let shared = processes_check(&[me, 4242]);
        assert_eq!(shared.verdict, Some(Verdict::Warn), "{shared:#?}");
        assert!(
            shared.summary.contains("PID 4242 using 1.00 GiB"),
            "{}",
            shared.summary
        );
    }

    #[test]
    fn half_precision_conversions_round_to_nearest() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        assert_eq!(to_bf16(-2.0), 0xc000);
        assert_eq!(to_bf16(0.0), 0);
        // 1 + 2^-8 is halfway between two BF16 values: to even (1.0).
        assert_eq!(to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(to_f16(1.0), 0x3c00);
        assert_eq!(to_f16(-0.5), 0xb800);
        assert_eq!(to_f16(0.0), 0);
        assert_eq!(to_f16(1e-10), 0, "below the normal range: flushed");
        assert_eq!(to_f16(0.333_333_34), 0x3555);
    }
}

//! The CUDA engine of a worker: one device's context and stream, its module cache, cuBLAS,
//! and event timing.
//!
//! Everything here runs inside a worker process (see [`crate::worker`]), which owns one GPU.
//! A driver error in a job may leave the context unusable (an illegal address poisons it for
//! good), so every driver error is [`GpuError::Driver`], which tells the worker to report the
//! job as failed and to be replaced.

pub mod compile;
pub mod custom;
mod includes;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::devices::host_memory::gib;
use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::CUdevice_attribute_enum as Attr;
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaModule, CudaStream, DriverError, LaunchConfig,
};
use gpulab_shared::{CudaLibraries, LibraryStatus};
use serde::Serialize;

pub use compile::{CompileError, Image, ImageKind, Options};

/// Why a GPU job could not run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GpuError {
    /// The CUDA driver failed: the context may be broken, so the worker is replaced.
    #[error("{}", describe_driver_error(.0, .1))]
    Driver(&'static str, DriverError),
    /// The source did not compile.
    #[error("{0}")]
    Compile(#[from] CompileError),
    /// Anything else, such as a problem too big for the free memory; the worker stays.
    #[error("{0}")]
    Other(String),
}

impl GpuError {
    /// Whether the worker's CUDA context can no longer be trusted.
    pub fn is_fatal(&self) -> bool {
        matches!(self, GpuError::Driver(..))
    }
}

/// `what` failed with the driver error's name and text, as in
/// `kernel launch: CUDA_ERROR_ILLEGAL_ADDRESS (an illegal memory access was encountered)`.
fn describe_driver_error(what: &str, e: &DriverError) -> String {
    let name = e
        .error_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|_| format!("{:?}", e.0));
    match e.error_string() {
        Ok(text) => format!("{what}: {name} ({})", text.to_string_lossy()),
        Err(_) => format!("{what}: {name}"),
    }
}

/// A CUDA library that cudarc loads at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Library {
    /// `libcuda.so.1`, the driver.
    Driver,
    Nvrtc,
    Cublas,
    /// `libcublasLt.so`, for matmul's tensor-core data types.
    CublasLt,
}

/// Whether `library` can be loaded. cudarc panics at the first call into a library it
/// cannot find, so every path asks this first.
pub fn library_present(library: Library) -> bool {
    std::panic::catch_unwind(|| {
        // SAFETY: each is_culib_present only tries to dlopen its library under the names
        // cudarc knows and closes it again; loading a CUDA library runs no code of ours.
        unsafe {
            match library {
                Library::Driver => cudarc::driver::sys::is_culib_present(),
                Library::Nvrtc => cudarc::nvrtc::sys::is_culib_present(),
                Library::Cublas => cudarc::cublas::sys::is_culib_present(),
                // cudarc's cuBLASLt bindings have no presence test: loading panics (caught
                // here) when no candidate name loads.
                Library::CublasLt => {
                    cudarc::cublaslt::sys::culib();
                    true
                }
            }
        }
    })
    .unwrap_or(false)
}

/// Whether NVRTC and cuBLAS can be loaded, and their versions. Needs no GPU: neither
/// `nvrtcVersion` nor `cublasGetProperty` touches the driver.
pub fn libraries() -> CudaLibraries {
    CudaLibraries {
        nvrtc: library_status(
            Library::Nvrtc,
            "libnvrtc.so.12 or .13 not found on the library path: no GPU kernel can be compiled",
            || compile::version().map(|(major, minor)| format!("{major}.{minor}")),
        ),
        cublas: library_status(
            Library::Cublas,
            "libcublas.so.12 or .13 not found on the library path: matmul's `cublas` variant \
             cannot run",
            cublas_version,
        ),
    }
}

/// [`libraries`] as a child process (`gpulab cuda-libraries`) finds them. Loading cuBLAS
/// maps close to a gigabyte and costs some 190 MB of resident memory, which the server, which
/// never runs a kernel itself, should not keep for a health report; the child also sees the
/// library path exactly as the workers will. Outside the `gpulab` binary (in tests), in this
/// process.
pub fn libraries_from_child() -> CudaLibraries {
    let unknown = |why: String| {
        let status = LibraryStatus {
            found: false,
            version: None,
            error: Some(why),
        };
        CudaLibraries {
            nvrtc: status.clone(),
            cublas: status,
        }
    };
    let exe = match std::env::current_exe() {
        Ok(exe) if exe.file_stem().is_some_and(|stem| stem == "gpulab") => exe,
        _ => return libraries(),
    };
    let output = std::process::Command::new(exe)
        .arg("cuda-libraries")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output();
    match output {
        Ok(output) if output.status.success() => serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| unknown(format!("the library probe answered no JSON: {e}"))),
        Ok(output) => unknown(format!("the library probe failed ({})", output.status)),
        Err(e) => unknown(format!("the library probe could not start: {e}")),
    }
}

fn library_status(
    library: Library,
    missing: &str,
    version: fn() -> Result<String, String>,
) -> LibraryStatus {
    if !library_present(library) {
        return LibraryStatus {
            found: false,
            version: None,
            error: Some(missing.to_owned()),
        };
    }
    // cudarc panics when a symbol is missing from the library it loaded.
    let version = std::panic::catch_unwind(version)
        .unwrap_or_else(|payload| Err(panic_message(payload.as_ref())));
    match version {
        Ok(version) => LibraryStatus {
            found: true,
            version: Some(version),
            error: None,
        },
        Err(error) => LibraryStatus {
            found: true,
            version: None,
            error: Some(error),
        },
    }
}

/// cuBLAS's version as `major.minor.patch`.
fn cublas_version() -> Result<String, String> {
    use cudarc::cublas::sys::{cublasGetProperty, cublasStatus_t, libraryPropertyType};
    let mut parts = Vec::with_capacity(3);
    for property in [
        libraryPropertyType::MAJOR_VERSION,
        libraryPropertyType::MINOR_VERSION,
        libraryPropertyType::PATCH_LEVEL,
    ] {
        let mut value = 0;
        // SAFETY: `value` is a live c_int for cuBLAS to write; the call needs no handle.
        let status = unsafe { cublasGetProperty(property, &mut value) };
        if status != cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            return Err(format!(
                "cublasGetProperty({property:?}) failed: {status:?}"
            ));
        }
        parts.push(value.to_string());
    }
    Ok(parts.join("."))
}

/// The text of a caught panic.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Adds what was being done to a driver error.
pub trait DriverContext<T> {
    fn during(self, what: &'static str) -> Result<T, GpuError>;
}

impl<T> DriverContext<T> for Result<T, DriverError> {
    fn during(self, what: &'static str) -> Result<T, GpuError> {
        self.map_err(|e| GpuError::Driver(what, e))
    }
}

/// How a module was obtained for a job: compiled now, or taken from the worker's cache.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModuleReport {
    pub cache_hit: bool,
    /// NVRTC's time, on a miss.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compile_ms: Option<f64>,
    /// The time to get a loaded module: the cache lookup on a hit, `cuModuleLoadData` on a
    /// miss.
    pub load_ms: f64,
    /// `cubin` or `ptx`.
    pub image: &'static str,
    /// `sm_90` for a CUBIN.
    pub target: String,
}

/// A GPU owned by this process.
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    /// Compute capability.
    pub arch: (u32, u32),
    pub multiprocessors: u32,
    /// Modules by (source hash, options), loaded in this context.
    modules: ModuleCache<Loaded>,
    blas: Option<CudaBlas>,
}

/// The most modules a worker keeps loaded: the catalog's kernels need far fewer.
pub const MAX_CACHED_MODULES: usize = 32;

/// Values by key, at most `cap` of them: inserting one more evicts the least recently used.
struct ModuleCache<V> {
    entries: HashMap<(u64, bool), (u64, V)>,
    /// Counts lookups and inserts: an entry's tick is its last use.
    tick: u64,
    cap: usize,
}

impl<V> ModuleCache<V> {
    fn new(cap: usize) -> Self {
        ModuleCache {
            entries: HashMap::new(),
            tick: 0,
            cap: cap.max(1),
        }
    }

    fn get(&mut self, key: &(u64, bool)) -> Option<&V> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(key).map(|entry| {
            entry.0 = tick;
            &entry.1
        })
    }

    fn insert(&mut self, key: (u64, bool), value: V) {
        if self.entries.len() >= self.cap && !self.entries.contains_key(&key) {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (tick, _))| *tick)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.tick += 1;
        self.entries.insert(key, (self.tick, value));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

struct Loaded {
    /// Compared on every hit, so two sources with one hash never share a module.
    source: String,
    module: Arc<CudaModule>,
    image: ImageKind,
    target: String,
}

impl Gpu {
    /// Opens CUDA device `ordinal`: its primary context and one stream for every job.
    pub fn open(ordinal: usize) -> Result<Self, GpuError> {
        let ctx = CudaContext::new(ordinal).during("opening the device")?;
        // One stream does all the work, so cudarc's tracking of buffers across streams only
        // costs time.
        // SAFETY: every buffer and launch of this worker uses `stream` alone.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().during("creating a stream")?;
        let attr = |a| {
            ctx.attribute(a)
                .during("reading a device attribute")
                .map(|v| v.max(0) as u32)
        };
        let arch = (
            attr(Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            attr(Attr::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
        );
        let multiprocessors = attr(Attr::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        Ok(Gpu {
            ctx,
            stream,
            arch,
            multiprocessors,
            modules: ModuleCache::new(MAX_CACHED_MODULES),
            blas: None,
        })
    }

    /// The module built from `source`, compiled and loaded on first use and cached (up to
    /// [`MAX_CACHED_MODULES`], the least recently used going first) by the source's hash and the options (the architecture is the
    /// device's, fixed for the worker).
    pub fn module(
        &mut self,
        name: &str,
        source: &str,
        options: &Options,
    ) -> Result<(Arc<CudaModule>, ModuleReport), GpuError> {
        let started = Instant::now();
        let key = (fnv1a(source.as_bytes()), options.no_fmad);
        if let Some(loaded) = self.modules.get(&key).filter(|l| l.source == source) {
            return Ok((
                loaded.module.clone(),
                ModuleReport {
                    cache_hit: true,
                    compile_ms: None,
                    load_ms: started.elapsed().as_secs_f64() * 1e3,
                    image: loaded.image.as_str(),
                    target: loaded.target.clone(),
                },
            ));
        }
        let image = compile::compile(source, name, self.arch, options)?;
        let loading = Instant::now();
        let module = self.load(&image)?;
        let report = ModuleReport {
            cache_hit: false,
            compile_ms: Some(image.compile_ms),
            load_ms: loading.elapsed().as_secs_f64() * 1e3,
            image: image.kind.as_str(),
            target: image.target.clone(),
        };
        self.modules.insert(
            key,
            Loaded {
                source: source.to_owned(),
                module: module.clone(),
                image: image.kind,
                target: image.target,
            },
        );
        Ok((module, report))
    }

    fn load(&self, image: &Image) -> Result<Arc<CudaModule>, GpuError> {
        let ptx = cudarc::nvrtc::Ptx::from_binary(image.bytes.clone());
        self.ctx.load_module(ptx).map_err(|e| {
            use cudarc::driver::sys::cudaError_enum as E;
            match (image.kind, e.0) {
                (ImageKind::Ptx, E::CUDA_ERROR_UNSUPPORTED_PTX_VERSION)
                | (ImageKind::Ptx, E::CUDA_ERROR_INVALID_PTX) => GpuError::Other(format!(
                    "the driver cannot load the PTX that NVRTC built for {} ({}): NVRTC is \
                     newer than the driver and does not know this GPU's architecture sm_{}{}; \
                     update the NVIDIA driver",
                    image.target,
                    describe_driver_error("loading the module", &e),
                    self.arch.0,
                    self.arch.1
                )),
                _ => GpuError::Driver("loading the module", e),
            }
        })
    }

    /// The kernel `entry` of `module`.
    pub fn function(module: &Arc<CudaModule>, entry: &str) -> Result<CudaFunction, GpuError> {
        module.load_function(entry).map_err(|e| {
            GpuError::Other(format!(
                "the module has no kernel `{entry}` ({}): it must be an extern \"C\" \
                 __global__ function",
                describe_driver_error("looking up the kernel", &e)
            ))
        })
    }

    /// cuBLAS on this worker's stream, created on first use.
    pub fn blas(&mut self) -> Result<&CudaBlas, GpuError> {
        if self.blas.is_none() {
            if !library_present(Library::Cublas) {
                return Err(GpuError::Other(
                    "cuBLAS (libcublas.so.12 or .13) is not installed on this host: the \
                     `cublas` variant needs it; the `tiled` variant does not"
                        .into(),
                ));
            }
            let blas = CudaBlas::new(self.stream.clone())
                .map_err(|e| GpuError::Other(format!("cuBLAS could not start: {e:?}")))?;
            // Plain single precision: no TF32 tensor-core shortcut unless asked for.
            // SAFETY: the handle is live; the math mode is a plain enum value.
            let status = unsafe {
                cudarc::cublas::sys::cublasSetMathMode(
                    *blas.handle(),
                    cudarc::cublas::sys::cublasMath_t::CUBLAS_DEFAULT_MATH,
                )
            };
            if status != cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                return Err(GpuError::Other(format!(
                    "cuBLAS refused its math mode: {status:?}"
                )));
            }
            self.blas = Some(blas);
        }
        Ok(self.blas.as_ref().expect("set above"))
    }

    /// cuBLAS, if [`Gpu::blas`] has started it.
    pub fn blas_ready(&self) -> Option<&CudaBlas> {
        self.blas.as_ref()
    }

    /// Fails unless `bytes` more can be allocated, leaving a margin for the driver.
    pub fn ensure_fits(&self, bytes: u64, what: &str) -> Result<(), GpuError> {
        let (free, total) = self.ctx.mem_get_info().during("reading the free memory")?;
        // cuBLAS workspaces, module code and the allocator's rounding.
        let margin = 256u64 << 20;
        if bytes.saturating_add(margin) > free as u64 {
            return Err(GpuError::Other(format!(
                "{what} needs {} of GPU memory, but only {} of {} is free",
                gib(bytes),
                gib(free as u64),
                gib(total as u64)
            )));
        }
        Ok(())
    }

    /// A timing event.
    pub fn event(&self) -> Result<CudaEvent, GpuError> {
        self.ctx
            .new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
            .during("creating an event")
    }

    /// Waits for everything queued on the stream.
    pub fn sync(&self) -> Result<(), GpuError> {
        self.stream.synchronize().during("running the kernel")
    }

    /// A launch of one thread per item for `items` items in blocks of `block` threads, the
    /// grid capped at the hardware's limit (kernels loop over what a smaller grid leaves).
    pub fn linear_launch(items: u64, block: u32) -> LaunchConfig {
        let blocks = items.div_ceil(block as u64).clamp(1, (1 << 31) - 1) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}

/// Times `step` with events on the stream: one untimed warm-up, then `repetitions` timed
/// runs, each bracketed by its own pair of events, `progress(done, total)` after each.
/// Returns each run's milliseconds.
pub fn time_on_stream(
    gpu: &Gpu,
    repetitions: u32,
    mut progress: impl FnMut(u32, u32),
    mut step: impl FnMut(&Gpu) -> Result<(), GpuError>,
) -> Result<Vec<f64>, GpuError> {
    let repetitions = repetitions.max(1);
    step(gpu)?;
    gpu.sync()?;
    let (start, end) = (gpu.event()?, gpu.event()?);
    let mut times = Vec::with_capacity(repetitions as usize);
    for done in 1..=repetitions {
        start.record(&gpu.stream).during("recording an event")?;
        step(gpu)?;
        end.record(&gpu.stream).during("recording an event")?;
        end.synchronize().during("running the kernel")?;
        let ms = elapsed_ms(&start, &end).during("reading the event timer")?;
        times.push(ms as f64);
        progress(done, repetitions);
    }
    Ok(times)
}

/// The milliseconds between two completed events. Drivers from CUDA 12.8 on have
/// `cuEventElapsedTime_v2`, which cudarc's CUDA 13 bindings call; older ones only the
/// first version, which then serves (the two differ only in the precision documented).
fn elapsed_ms(start: &CudaEvent, end: &CudaEvent) -> Result<f32, DriverError> {
    use cudarc::driver::sys;
    type Elapsed = unsafe extern "C" fn(*mut f32, sys::CUevent, sys::CUevent) -> sys::CUresult;
    static V1: std::sync::OnceLock<Option<Elapsed>> = std::sync::OnceLock::new();
    let v1 = *V1.get_or_init(|| {
        // SAFETY: the first version has this signature in every driver that exports it, and
        // the library stays loaded for the life of the process (cudarc keeps it in a static).
        unsafe {
            let has_v2 = sys::culib()
                .get::<Elapsed>(b"cuEventElapsedTime_v2\0")
                .is_ok();
            (!has_v2)
                .then(|| sys::culib().get::<Elapsed>(b"cuEventElapsedTime\0").ok())
                .flatten()
                .map(|symbol| *symbol)
        }
    });
    let mut ms = 0.0f32;
    // SAFETY: both events are live, recorded on this context's stream and completed; `ms`
    // is a live f32 for the driver to write.
    let status = unsafe {
        match v1 {
            Some(v1) => v1(&mut ms, start.cu_event(), end.cu_event()),
            None => sys::cuEventElapsedTime_v2(&mut ms, start.cu_event(), end.cu_event()),
        }
    };
    status.result()?;
    Ok(ms)
}

/// FNV-1a, 64 bits: the module cache's key and the custom kernels' output checksum.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hole3_the_module_cache_is_bounded_and_evicts_the_least_recently_used() {
        let mut cache = ModuleCache::new(3);
        for i in 0..3 {
            cache.insert((i, false), i);
        }
        assert_eq!(cache.get(&(0, false)), Some(&0), "0 is now the newest");
        cache.insert((3, false), 3);
        assert_eq!(cache.len(), 3);
        assert_eq!(
            cache.get(&(1, false)),
            None,
            "1 was the least recently used"
        );
        assert_eq!(cache.get(&(0, false)), Some(&0));
        for i in 10..1000 {
            cache.insert((i, true), i);
        }
        assert_eq!(cache.len(), 3, "a stream of new sources never grows it");
        assert_eq!(cache.get(&(999, true)), Some(&999));
    }

    #[test]
    fn linear_launches_cover_every_item_within_the_grid_limit() {
        let cfg = Gpu::linear_launch(1000, 256);
        assert_eq!((cfg.grid_dim.0, cfg.block_dim.0), (4, 256));
        assert_eq!(Gpu::linear_launch(0, 256).grid_dim.0, 1);
        assert_eq!(Gpu::linear_launch(1 << 45, 256).grid_dim.0, (1 << 31) - 1);
    }

    #[test]
    fn only_driver_errors_cost_the_worker() {
        use cudarc::driver::sys::cudaError_enum as E;
        let fault = GpuError::Driver(
            "running the kernel",
            DriverError(E::CUDA_ERROR_ILLEGAL_ADDRESS),
        );
        assert!(fault.is_fatal());
        let compile = GpuError::Compile(CompileError::Source {
            status: "NVRTC_ERROR_COMPILATION".into(),
            log: "kernel.cu(1): error: x".into(),
        });
        assert!(!compile.is_fatal());
        assert!(!GpuError::Other("too big".into()).is_fatal());
        assert!(compile.to_string().contains("kernel.cu(1): error: x"));
    }

    #[test]
    fn the_cache_key_tells_sources_apart() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        // The published FNV-1a test vector.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}

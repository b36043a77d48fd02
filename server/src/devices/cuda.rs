//! The CUDA GPUs, as the NVIDIA driver (`libcuda`) reports them through cudarc's `sys` layer.
//!
//! cudarc loads `libcuda` on first use and panics when it cannot, so [`detect`] first asks
//! whether the library is present at all, and runs every driver call inside
//! [`std::panic::catch_unwind`] in case a symbol is missing from an old driver.

use std::ffi::{c_char, c_int};
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};

use cudarc::driver::sys::{self, CUdevice, CUdevice_attribute, CUresult};
use gpulab_shared::{ComputeCapability, CudaDeviceInfo, CudaStatus, Device, DeviceKind};

/// Why CUDA is unavailable when no driver library can be loaded.
pub const NO_DRIVER_REASON: &str = "libcuda.so.1 not found: start the container with \
     --gpus all (NVIDIA Container Toolkit) or install the NVIDIA driver";

/// Lists every GPU the driver sees, in ordinal order, and says whether CUDA can be used.
///
/// Initialises the CUDA driver in this process (`cuInit`). Measuring free memory retains
/// each GPU's primary context for a moment (up to a few hundred milliseconds per GPU); every
/// context is released again before this returns.
pub(super) fn detect() -> (Vec<Device>, CudaStatus) {
    if !crate::cuda::library_present(crate::cuda::Library::Driver) {
        return (Vec::new(), unavailable(None, NO_DRIVER_REASON.to_owned()));
    }
    // The driver calls below leave no state behind that a panic could break: the context
    // guards release what they hold while unwinding.
    match panic::catch_unwind(AssertUnwindSafe(probe)) {
        Ok(found) => found,
        Err(payload) => (
            Vec::new(),
            unavailable(
                None,
                format!(
                    "the NVIDIA driver library could not be used: {}",
                    crate::cuda::panic_message(payload.as_ref())
                ),
            ),
        ),
    }
}

fn probe() -> (Vec<Device>, CudaStatus) {
    // cuDriverGetVersion works before cuInit, so the version is known even when cuInit fails.
    let mut version: c_int = 0;
    // SAFETY: `version` is a live c_int for the driver to write.
    let driver_version = check(unsafe { sys::cuDriverGetVersion(&mut version) })
        .ok()
        .and_then(|()| format_cuda_version(version));

    // SAFETY: cuInit takes only flags (which must be 0) and may be called repeatedly from
    // any thread.
    if let Err(error) = check(unsafe { sys::cuInit(0) }) {
        return (
            Vec::new(),
            unavailable(driver_version, init_failure_reason(error)),
        );
    }

    let mut count: c_int = 0;
    // SAFETY: the driver is initialised and `count` is a live c_int to write.
    if let Err(error) = check(unsafe { sys::cuDeviceGetCount(&mut count) }) {
        return (
            Vec::new(),
            unavailable(
                driver_version,
                format!("cuDeviceGetCount failed with {error:?}"),
            ),
        );
    }

    let devices: Vec<Device> = (0..count)
        .filter_map(
            |ordinal| match query_device(ordinal, driver_version.as_deref()) {
                Ok(device) => Some(device),
                Err(error) => {
                    tracing::warn!(ordinal, ?error, "skipping a CUDA device the driver listed");
                    None
                }
            },
        )
        .collect();
    let status = if devices.is_empty() {
        unavailable(
            driver_version,
            init_failure_reason(CUresult::CUDA_ERROR_NO_DEVICE),
        )
    } else {
        CudaStatus {
            available: true,
            driver_version,
            reason: None,
            libraries: Default::default(),
        }
    };
    (devices, status)
}

/// Everything the driver tells about one GPU. Fails only when the ordinal names no device;
/// any single property that cannot be read is `None`.
fn query_device(ordinal: c_int, driver_version: Option<&str>) -> Result<Device, CUresult> {
    let mut dev: CUdevice = 0;
    // SAFETY: the driver is initialised and `dev` is a live CUdevice to write.
    check(unsafe { sys::cuDeviceGet(&mut dev, ordinal) })?;
    let ordinal = u32::try_from(ordinal).map_err(|_| CUresult::CUDA_ERROR_INVALID_DEVICE)?;

    let mut name_buf: [c_char; 256] = [0; 256];
    // SAFETY: the length passed is the buffer's, so the driver writes inside it.
    let name = check(unsafe { sys::cuDeviceGetName(name_buf.as_mut_ptr(), 256, dev) })
        .ok()
        .and_then(|()| string_from_c_chars(&name_buf))
        .unwrap_or_else(|| format!("CUDA device {ordinal}"));

    let mut uuid = sys::CUuuid { bytes: [0; 16] };
    // SAFETY: `uuid` is a live CUuuid for the driver to fill.
    let uuid = check(unsafe { sys::cuDeviceGetUuid_v2(&mut uuid, dev) })
        .ok()
        .map(|()| format_gpu_uuid(&uuid.bytes.map(|b| b as u8)));

    // The driver writes at most 13 characters and a NUL ("0000:00:00.0" with a longer
    // domain is still well under 32).
    let mut bus_buf: [c_char; 32] = [0; 32];
    // SAFETY: the length passed is the buffer's, so the driver writes inside it.
    let pci_bus_id = check(unsafe { sys::cuDeviceGetPCIBusId(bus_buf.as_mut_ptr(), 32, dev) })
        .ok()
        .and_then(|()| string_from_c_chars(&bus_buf));

    let mut total: usize = 0;
    // SAFETY: `total` is a live usize to write.
    let total_memory_bytes = check(unsafe { sys::cuDeviceTotalMem_v2(&mut total, dev) })
        .ok()
        .map(|()| total as u64);

    use sys::CUdevice_attribute_enum as A;
    let attr = |a| attribute_u32(dev, a);
    let compute_capability = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
        .zip(attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR))
        .map(|(major, minor)| ComputeCapability { major, minor });
    let info = CudaDeviceInfo {
        ordinal,
        uuid,
        pci_bus_id,
        compute_capability,
        multiprocessor_count: attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
        max_sm_clock_mhz: attr(A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE).map(khz_to_mhz),
        max_memory_clock_mhz: attr(A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE).map(khz_to_mhz),
        memory_bus_width_bits: attr(A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH),
        l2_cache_bytes: attr(A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE).map(u64::from),
        shared_memory_per_block_bytes: attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK)
            .map(u64::from),
        shared_memory_per_sm_bytes: attr(
            A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR,
        )
        .map(u64::from),
        registers_per_block: attr(A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK),
        max_threads_per_block: attr(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK),
        max_threads_per_sm: attr(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR),
        warp_size: attr(A::CU_DEVICE_ATTRIBUTE_WARP_SIZE),
        async_engine_count: attr(A::CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT),
        ecc_enabled: attr(A::CU_DEVICE_ATTRIBUTE_ECC_ENABLED).map(|v| v != 0),
        driver_cuda_version: driver_version.map(str::to_owned),
    };

    Ok(Device {
        id: format!("cuda:{ordinal}"),
        kind: DeviceKind::Cuda,
        last_diagnostic: None,
        peaks: crate::peaks::gpu::peaks(
            &info,
            info.pci_bus_id
                .as_deref()
                .and_then(crate::peaks::gpu::sysfs_link),
        ),
        name,
        total_memory_bytes,
        free_memory_bytes: free_memory(dev),
        cuda: Some(info),
        cpu: None,
    })
}

/// One device attribute; `None` when the driver refuses it or reports a negative value.
fn attribute_u32(dev: CUdevice, attribute: CUdevice_attribute) -> Option<u32> {
    let mut value: c_int = 0;
    // SAFETY: `value` is a live c_int to write, `dev` came from cuDeviceGet and `attribute`
    // is one of the driver's own enum values.
    check(unsafe { sys::cuDeviceGetAttribute(&mut value, attribute, dev) }).ok()?;
    u32::try_from(value).ok()
}

/// Free memory as `cuMemGetInfo` reports it, which needs a current context. The primary
/// context is retained only for the call, so none is left alive afterwards (unless someone
/// else in this process holds it too). The figure already has that context's own footprint
/// taken off, so it understates what a job will find by a few hundred MiB at most.
fn free_memory(dev: CUdevice) -> Option<u64> {
    let primary = RetainedPrimaryContext::retain(dev).ok()?;
    let _current = PushedContext::push(primary.ctx).ok()?;
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: a context of this device is current on this thread (pushed above) and both
    // pointers are live usizes to write.
    check(unsafe { sys::cuMemGetInfo_v2(&mut free, &mut total) }).ok()?;
    Some(free as u64)
    // `_current` is popped, then `primary` released, in that order.
}

/// A reference to a device's primary context, released on drop.
struct RetainedPrimaryContext {
    dev: CUdevice,
    ctx: sys::CUcontext,
}

impl RetainedPrimaryContext {
    fn retain(dev: CUdevice) -> Result<Self, CUresult> {
        let mut ctx: sys::CUcontext = std::ptr::null_mut();
        // SAFETY: `dev` came from cuDeviceGet and `ctx` is a live pointer to write.
        check(unsafe { sys::cuDevicePrimaryCtxRetain(&mut ctx, dev) })?;
        Ok(RetainedPrimaryContext { dev, ctx })
    }
}

impl Drop for RetainedPrimaryContext {
    fn drop(&mut self) {
        // SAFETY: this struct exists only after a successful retain of `dev`'s primary
        // context, and releases it exactly once.
        let released = check(unsafe { sys::cuDevicePrimaryCtxRelease_v2(self.dev) });
        if let Err(error) = released {
            tracing::warn!(?error, "could not release a CUDA primary context");
        }
    }
}

/// A context made current on this thread, popped again on drop. The raw-pointer marker
/// keeps it on the thread whose context stack it changed.
struct PushedContext(PhantomData<*const ()>);

impl PushedContext {
    fn push(ctx: sys::CUcontext) -> Result<Self, CUresult> {
        // SAFETY: `ctx` is a retained primary context, alive for longer than this guard.
        check(unsafe { sys::cuCtxPushCurrent_v2(ctx) })?;
        Ok(PushedContext(PhantomData))
    }
}

impl Drop for PushedContext {
    fn drop(&mut self) {
        let mut popped: sys::CUcontext = std::ptr::null_mut();
        // SAFETY: this guard pushed a context on this thread (it is neither Send nor Sync)
        // and pops it exactly once; `popped` is a live pointer to write.
        let result = check(unsafe { sys::cuCtxPopCurrent_v2(&mut popped) });
        if let Err(error) = result {
            tracing::warn!(?error, "could not pop a CUDA context");
        }
    }
}

fn check(result: CUresult) -> Result<(), CUresult> {
    match result {
        CUresult::CUDA_SUCCESS => Ok(()),
        error => Err(error),
    }
}

fn unavailable(driver_version: Option<String>, reason: String) -> CudaStatus {
    CudaStatus {
        available: false,
        driver_version,
        reason: Some(reason),
        libraries: Default::default(),
    }
}

/// Why CUDA cannot be used when `cuInit` (or the device count) failed with `error`: the
/// error's name, then what it means and what to do.
pub(super) fn init_failure_reason(error: CUresult) -> String {
    let meaning = match error {
        CUresult::CUDA_ERROR_NO_DEVICE => {
            "the NVIDIA driver found no GPU (start the container with --gpus all, and check \
             that CUDA_VISIBLE_DEVICES does not hide every GPU)"
        }
        CUresult::CUDA_ERROR_STUB_LIBRARY => {
            "the libcuda that was loaded is the CUDA toolkit's stub, not the NVIDIA driver: take \
             the toolkit's stubs directory out of LD_LIBRARY_PATH, and start the container with \
             --gpus all"
        }
        CUresult::CUDA_ERROR_SYSTEM_DRIVER_MISMATCH => {
            "libcuda and the loaded NVIDIA kernel module are different versions: reboot after a \
             driver upgrade, or reinstall the driver"
        }
        CUresult::CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE => {
            "the CUDA forward-compatibility libcuda in use does not support this GPU: use the \
             installed driver's libcuda instead"
        }
        CUresult::CUDA_ERROR_SYSTEM_NOT_READY => {
            "the system is not ready for CUDA (on NVSwitch systems, start nvidia-fabricmanager)"
        }
        CUresult::CUDA_ERROR_DEVICE_UNAVAILABLE => {
            "every GPU is busy or unavailable (another process may hold it in exclusive-process \
             compute mode)"
        }
        CUresult::CUDA_ERROR_NOT_PERMITTED | CUresult::CUDA_ERROR_OPERATING_SYSTEM => {
            "the operating system refused access to the GPU: check the permissions of /dev/nvidia*"
        }
        CUresult::CUDA_ERROR_OUT_OF_MEMORY => "the NVIDIA driver ran out of memory initialising",
        CUresult::CUDA_ERROR_UNKNOWN => {
            "the NVIDIA driver failed without saying why: check that the nvidia kernel module is \
             loaded (nvidia-smi)"
        }
        _ => "the NVIDIA driver could not be initialised",
    };
    format!("cuInit failed with {error:?}: {meaning}")
}

/// The CUDA version that a `cuDriverGetVersion` value encodes (`1000 × major + 10 × minor`),
/// such as `"12.8"` for 12080; `None` for a value that is not a version.
pub(super) fn format_cuda_version(version: c_int) -> Option<String> {
    (version > 0).then(|| format!("{}.{}", version / 1000, (version % 1000) / 10))
}

/// A GPU UUID as nvidia-smi prints it: `GPU-` and 8-4-4-4-12 lowercase hex digits.
pub(super) fn format_gpu_uuid(bytes: &[u8; 16]) -> String {
    let hex = |range: std::ops::Range<usize>| -> String {
        bytes[range].iter().map(|b| format!("{b:02x}")).collect()
    };
    format!(
        "GPU-{}-{}-{}-{}-{}",
        hex(0..4),
        hex(4..6),
        hex(6..8),
        hex(8..10),
        hex(10..16)
    )
}

/// The text before the first NUL of a buffer the driver filled, trimmed; `None` when empty.
fn string_from_c_chars(buf: &[c_char]) -> Option<String> {
    let bytes: Vec<u8> = buf
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn khz_to_mhz(khz: u32) -> u32 {
    khz / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_versions_read_as_major_dot_minor() {
        assert_eq!(format_cuda_version(12080).as_deref(), Some("12.8"));
        assert_eq!(format_cuda_version(12020).as_deref(), Some("12.2"));
        assert_eq!(format_cuda_version(13000).as_deref(), Some("13.0"));
        assert_eq!(format_cuda_version(11040).as_deref(), Some("11.4"));
        assert_eq!(format_cuda_version(0), None);
        assert_eq!(format_cuda_version(-1), None);
    }

    #[test]
    fn uuids_read_as_nvidia_smi_prints_them() {
        let bytes = [
            0x5d, 0x3a, 0x8c, 0x01, 0xf2, 0x4e, 0x0b, 0x7a, 0x9c, 0xde, 0x00, 0x11, 0x22, 0x33,
            0xab, 0xff,
        ];
        assert_eq!(
            format_gpu_uuid(&bytes),
            "GPU-5d3a8c01-f24e-0b7a-9cde-00112233abff"
        );
    }

    #[test]
    fn driver_strings_end_at_the_first_nul() {
        let mut buf: [c_char; 16] = [0; 16];
        for (slot, byte) in buf.iter_mut().zip(b"0000:3B:00.0\0junk") {
            *slot = *byte as c_char;
        }
        assert_eq!(string_from_c_chars(&buf).as_deref(), Some("0000:3B:00.0"));
        assert_eq!(string_from_c_chars(&[0; 8]), None);
    }

    #[test]
    fn init_failures_name_the_error_and_what_to_do() {
        let reason = init_failure_reason(CUresult::CUDA_ERROR_NO_DEVICE);
        assert!(reason.starts_with("cuInit failed with CUDA_ERROR_NO_DEVICE: "));
        assert!(reason.contains("the NVIDIA driver found no GPU"));
        let stub = init_failure_reason(CUresult::CUDA_ERROR_STUB_LIBRARY);
        assert!(stub.contains("CUDA_ERROR_STUB_LIBRARY") && stub.contains("LD_LIBRARY_PATH"));
    }

    #[test]
    fn clocks_convert_from_khz() {
        assert_eq!(khz_to_mhz(1_980_000), 1980);
        assert_eq!(khz_to_mhz(999), 0);
    }

    /// The Docker image ships the CUDA 12 runtime libraries (`libnvrtc.so.12`, …) and the GPU
    /// test machine the CUDA 13.0 toolkit (`libnvrtc.so.13`, …): the cudarc CUDA version
    /// feature decides which file names are tried, and must cover both.
    #[test]
    fn cudarc_looks_for_cuda_12_and_13_libraries() {
        for (lib, wanted) in [
            ("cuda", ["libcuda.so.1", "libcuda.so.1"]),
            ("nvrtc", ["libnvrtc.so.12", "libnvrtc.so.13"]),
            ("cublas", ["libcublas.so.12", "libcublas.so.13"]),
        ] {
            let candidates = cudarc::get_lib_name_candidates(lib);
            for name in wanted {
                assert!(
                    candidates.iter().any(|c| c == name),
                    "{name} is not among {candidates:?}"
                );
            }
        }
    }

    #[test]
    fn detection_never_panics_and_explains_itself() {
        let (devices, status) = detect();
        assert_eq!(status.available, !devices.is_empty());
        assert_eq!(status.reason.is_none(), status.available, "{status:?}");
        for (i, device) in devices.iter().enumerate() {
            assert_eq!(device.id, format!("cuda:{i}"));
            assert_eq!(device.kind, DeviceKind::Cuda);
        }
        if !devices.is_empty() {
            // A context left current would mean a context left alive.
            let mut current: sys::CUcontext = std::ptr::null_mut();
            // SAFETY: the driver was initialised by detect and `current` is live to write.
            check(unsafe { sys::cuCtxGetCurrent(&mut current) }).unwrap();
            assert!(current.is_null());
        }
    }
}

//! Checking a `POST /api/jobs` body against the devices and the catalog, before anything
//! is stored or queued.

use std::sync::LazyLock;

use gpulab_shared::{Device, DeviceKind, JobRequest, KernelSpec};

use super::JobSettings;
use crate::cuda::custom;
use crate::devices::{host_memory, DeviceInventory};
use crate::kernels::{self, params::spec, ResolvedParams};
use crate::store::NewJob;
use crate::worker::TEST_FAULT_KERNEL;

/// Timed repetitions a job may ask for.
pub const MAX_REPETITIONS: u32 = 10_000;
const DEFAULT_REPETITIONS: u32 = 10;

/// The hidden kernel that makes a worker hang or crash, for the supervision tests.
pub static TEST_FAULT_SPEC: LazyLock<KernelSpec> = LazyLock::new(|| KernelSpec {
    name: TEST_FAULT_KERNEL.into(),
    description: "Test only: makes the worker (or its runner) misbehave.".into(),
    devices: vec![DeviceKind::Cpu],
    params: vec![
        spec::choice(
            "mode",
            "hang",
            &[
                "hang",
                "crash",
                "stdout_flood",
                "bad_nonce",
                "oversized_frame",
                "panic_runner",
                "read_path",
            ],
            "What goes wrong.",
        ),
        gpulab_shared::ParamSpec {
            name: "path".into(),
            ty: gpulab_shared::ParamType::String,
            default: "/".into(),
            min: None,
            max: None,
            choices: None,
            choices_by_device: None,
            unit: None,
            help: "The file `read_path` reads in the worker.".into(),
        },
    ],
    throughput_formula: String::new(),
});

/// A request that cannot become a job.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    /// No such device (404).
    #[error("{0}")]
    UnknownDevice(String),
    /// A field is wrong (422).
    #[error("{detail}")]
    Invalid { field: String, detail: String },
    /// A field is over a size limit the server states (413).
    #[error("{detail}")]
    TooLarge { field: String, detail: String },
}

impl RequestError {
    pub fn unknown_device(id: &str, inventory: &DeviceInventory) -> Self {
        let known: Vec<&str> = inventory.devices.iter().map(|d| d.id.as_str()).collect();
        RequestError::UnknownDevice(format!(
            "there is no device `{id}`; this host has: {}",
            known.join(", ")
        ))
    }

    fn invalid(field: &str, detail: String) -> Self {
        RequestError::Invalid {
            field: field.into(),
            detail,
        }
    }
}

/// The public catalog, in order, with the choices each of `devices` offers.
pub fn catalog_specs(devices: &[Device], with_test_kernel: bool) -> Vec<KernelSpec> {
    let mut specs: Vec<KernelSpec> = kernels::specs_for(devices);
    if with_test_kernel {
        specs.push(TEST_FAULT_SPEC.clone());
    }
    specs
}

/// Checks every field of `req` and fills in the defaults.
/// `free_now` is the device's free memory as last measured, if anything measures it; the
/// inventory's reading at start stands in otherwise.
pub fn check(
    req: &JobRequest,
    inventory: &DeviceInventory,
    settings: &JobSettings,
    free_now: Option<u64>,
) -> Result<NewJob, RequestError> {
    let device = inventory
        .find(&req.device)
        .ok_or_else(|| RequestError::unknown_device(&req.device, inventory))?;
    let repetitions = req.repetitions.unwrap_or(DEFAULT_REPETITIONS);
    if !(1..=MAX_REPETITIONS).contains(&repetitions) {
        return Err(RequestError::invalid(
            "repetitions",
            format!("`repetitions` must be from 1 to {MAX_REPETITIONS}, got {repetitions}"),
        ));
    }
    let timeout_s = req
        .timeout_s
        .unwrap_or(settings.default_timeout_s.min(settings.max_timeout_s));
    if !(timeout_s >= super::MIN_TIMEOUT_S && timeout_s <= settings.max_timeout_s) {
        return Err(RequestError::invalid(
            "timeout_s",
            format!(
                "`timeout_s` must be from {} to {} seconds (the server's limits), got {timeout_s}",
                super::MIN_TIMEOUT_S,
                settings.max_timeout_s
            ),
        ));
    }
    if req.kernel == custom::KERNEL {
        return check_custom(req, device, free_now, repetitions, timeout_s);
    }
    let test_kernel = settings.worker.test_faults && req.kernel == TEST_FAULT_KERNEL;
    let found = if test_kernel {
        None
    } else {
        kernels::find_with_spec(&req.kernel)
    };
    let kernel = found.map(|(k, _)| k);
    let spec = match (found, test_kernel) {
        (Some((_, spec)), _) => spec.clone(),
        (None, true) => TEST_FAULT_SPEC.clone(),
        (None, false) => {
            let names = kernels::names();
            return Err(RequestError::invalid(
                "kernel",
                format!(
                    "unknown kernel `{}`; the catalog has: {}",
                    req.kernel,
                    names.join(", ")
                ),
            ));
        }
    };
    if !spec.devices.contains(&device.kind) {
        let kinds: Vec<&str> = spec.devices.iter().map(|k| k.as_str()).collect();
        return Err(RequestError::invalid(
            "device",
            format!(
                "`{}` does not run on {} devices; it runs on: {}",
                spec.name,
                device.kind.as_str(),
                kinds.join(", ")
            ),
        ));
    }
    let params = ResolvedParams::resolve(&spec.params, req.params.as_ref()).map_err(|e| {
        RequestError::Invalid {
            field: e.field,
            detail: e.detail,
        }
    })?;
    if let Some(k) = kernel {
        let job = k.configure(&params).map_err(|e| RequestError::Invalid {
            field: e.field,
            detail: e.detail,
        })?;
        job.check_on_device(device)
            .map_err(|e| RequestError::invalid(&e.field, e.detail))?;
        let needed = job.memory_bytes();
        check_memory(&spec.name, needed, device, free_now)?;
        if device.kind == DeviceKind::Cuda {
            // The GPU path fills its inputs and checks its outputs on the host.
            check_host_memory(&spec.name, needed)?;
        }
    }
    Ok(NewJob {
        kernel: spec.name,
        device: device.id.clone(),
        params: params.into_map(),
        repetitions,
        timeout_s,
        owner: None,
    })
}

/// A custom CUDA C kernel: its `params` are checked first (so that a mistake is named on
/// any host), then the device: CUDA devices only. What is stored is the normalised
/// request, re-serialised from the checked types, never the client's bytes.
fn check_custom(
    req: &JobRequest,
    device: &Device,
    free_now: Option<u64>,
    repetitions: u32,
    timeout_s: f64,
) -> Result<NewJob, RequestError> {
    let params = custom::CustomParams::parse(req.params.as_ref()).map_err(|e| {
        if e.too_large {
            RequestError::TooLarge {
                field: e.field,
                detail: e.detail,
            }
        } else {
            RequestError::Invalid {
                field: e.field,
                detail: e.detail,
            }
        }
    })?;
    if device.kind != DeviceKind::Cuda {
        return Err(RequestError::invalid(
            "device",
            format!(
                "custom kernels are CUDA C and run on CUDA devices only, not on {}",
                device.id
            ),
        ));
    }
    check_memory(custom::KERNEL, params.buffer_bytes(), device, free_now)?;
    check_host_memory(custom::KERNEL, params.host_bytes())?;
    Ok(NewJob {
        kernel: custom::KERNEL.to_owned(),
        device: device.id.clone(),
        params: params.to_params(),
        repetitions,
        timeout_s,
        owner: None,
    })
}

/// Refuses a GPU job whose host-side buffers do not fit in the host's available memory
/// now; the worker checks again before it allocates them.
fn check_host_memory(kernel: &str, needed: u64) -> Result<(), RequestError> {
    host_memory::ensure_fits(kernel, needed, host_memory::available())
        .map_err(|detail| RequestError::invalid("params", detail))
}

fn check_memory(
    kernel: &str,
    needed: u64,
    device: &Device,
    free_now: Option<u64>,
) -> Result<(), RequestError> {
    let Some(limit) = free_now
        .or(device.free_memory_bytes)
        .or(device.total_memory_bytes)
    else {
        return Ok(());
    };
    if needed > limit {
        return Err(RequestError::invalid(
            "params",
            format!(
                "`{kernel}` with these parameters needs {} of memory, but {} has {} free; \
                 choose a smaller problem",
                gib(needed),
                device.id,
                gib(limit)
            ),
        ));
    }
    Ok(())
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

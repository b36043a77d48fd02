use gpulab_shared::{CpuDeviceInfo, CudaDeviceInfo, Device, DeviceKind, TelemetrySample};
use leptos::prelude::*;

use super::{MemoryBar, TelemetryPanel};
use crate::format::{self, or_dash};
use crate::live::use_live_events;

/// One device with everything the server knows about it, its telemetry kept live.
#[component]
pub fn DeviceCard(device: Device) -> impl IntoView {
    // The memory bar follows the latest sample; the inventory's figures are from startup.
    let track = use_live_events().telemetry(&device.id);
    let memory = Memo::new({
        let (total, free) = (device.total_memory_bytes, device.free_memory_bytes);
        move |_| {
            track
                .with(|t| t.latest().and_then(memory_of))
                .unwrap_or((total, free))
        }
    });
    let facts = match (&device.cuda, &device.cpu) {
        (Some(cuda), _) => cuda_facts(cuda),
        (None, Some(cpu)) => cpu_facts(cpu),
        (None, None) => Vec::new(),
    };
    let heading_id = format!("device-{}", device.id);
    let labelled_by = heading_id.clone();
    let kind = match device.kind {
        DeviceKind::Cpu => "CPU",
        DeviceKind::Cuda => "CUDA GPU",
    };
    view! {
        <article
            class="card device-card"
            data-testid=format!("device-card-{}", device.id)
            aria-labelledby=labelled_by
        >
            <header class="card-header">
                <h2 id=heading_id>{device.name.clone()}</h2>
                <span class=format!("badge kind-{}", device.kind.as_str())>{kind}</span>
            </header>
            <p class="device-id">
                <code>{device.id.clone()}</code>
            </p>
            <MemoryBar
                total=Signal::derive(move || memory.get().0)
                free=Signal::derive(move || memory.get().1)
            />
            <TelemetryPanel device=device.id.clone() kind=device.kind />
            <dl class="facts">
                {facts
                    .into_iter()
                    .map(|(label, value)| view! {
                        <dt>{label}</dt>
                        <dd>{value}</dd>
                    })
                    .collect_view()}
            </dl>
            <a class="button" href=format!("/launch?device={}", device.id)>
                "Launch a kernel here"
            </a>
        </article>
    }
}

/// Total and free memory, when the sample knows both.
fn memory_of(sample: &TelemetrySample) -> Option<(Option<u64>, Option<u64>)> {
    if let Some(gpu) = &sample.gpu {
        let total = gpu.memory_total_bytes?;
        let free = gpu
            .memory_free_bytes
            .or_else(|| gpu.memory_used_bytes.map(|used| total.saturating_sub(used)))?;
        return Some((Some(total), Some(free)));
    }
    let cpu = sample.cpu.as_ref()?;
    let total = cpu.memory_total_bytes?;
    Some((
        Some(total),
        Some(total.saturating_sub(cpu.memory_used_bytes?)),
    ))
}

fn cpu_facts(cpu: &CpuDeviceInfo) -> Vec<(&'static str, String)> {
    vec![
        ("Model", or_dash(cpu.model.as_ref())),
        ("Physical cores", or_dash(cpu.physical_cores)),
        ("Logical threads", or_dash(cpu.logical_threads)),
    ]
}

fn cuda_facts(cuda: &CudaDeviceInfo) -> Vec<(&'static str, String)> {
    let mhz = |v: Option<u32>| or_dash(v.map(|v| format!("{v} MHz")));
    let size = |v: Option<u64>| or_dash(v.map(format::bytes));
    vec![
        (
            "Compute capability",
            or_dash(
                cuda.compute_capability
                    .map(|cc| format!("{}.{}", cc.major, cc.minor)),
            ),
        ),
        ("Multiprocessors", or_dash(cuda.multiprocessor_count)),
        ("Max SM clock", mhz(cuda.max_sm_clock_mhz)),
        ("Max memory clock", mhz(cuda.max_memory_clock_mhz)),
        (
            "Memory bus width",
            or_dash(cuda.memory_bus_width_bits.map(|b| format!("{b}-bit"))),
        ),
        ("L2 cache", size(cuda.l2_cache_bytes)),
        (
            "Shared memory per block",
            size(cuda.shared_memory_per_block_bytes),
        ),
        (
            "Shared memory per SM",
            size(cuda.shared_memory_per_sm_bytes),
        ),
        ("Registers per block", or_dash(cuda.registers_per_block)),
        ("Max threads per block", or_dash(cuda.max_threads_per_block)),
        ("Max threads per SM", or_dash(cuda.max_threads_per_sm)),
        ("Warp size", or_dash(cuda.warp_size)),
        ("Async copy engines", or_dash(cuda.async_engine_count)),
        (
            "ECC",
            or_dash(cuda.ecc_enabled.map(|on| if on { "on" } else { "off" })),
        ),
        (
            "Driver CUDA version",
            or_dash(cuda.driver_cuda_version.as_ref()),
        ),
        ("PCI bus", or_dash(cuda.pci_bus_id.as_ref())),
        ("UUID", or_dash(cuda.uuid.as_ref())),
    ]
}

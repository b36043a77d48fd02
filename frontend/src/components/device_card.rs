use gpulab_shared::diag::LastDiagnostic;
use gpulab_shared::{CpuDeviceInfo, CudaDeviceInfo, Device, DeviceKind, TelemetrySample};
use leptos::prelude::*;

use super::{MemoryBar, PeakList, TelemetryPanel, VerdictBadge};
use crate::diag;
use crate::format::{self, or_dash};
use crate::live::use_live_events;

/// One device with everything the server knows about it, its telemetry kept live: first
/// its name and compute capability, then the figures that set its speed (SMs and clocks,
/// or cores), its memory as a bar, and the rest; identifiers are folded away.
#[component]
pub fn DeviceCard(device: Device) -> impl IntoView {
    let live = use_live_events();
    // The memory bar follows the latest sample; the inventory's figures are from startup.
    let track = live.telemetry(&device.id);
    let memory = Memo::new({
        let (total, free) = (device.total_memory_bytes, device.free_memory_bytes);
        move |_| {
            track
                .with(|t| t.latest().and_then(memory_of))
                .unwrap_or((total, free))
        }
    });
    let about = match (&device.cuda, &device.cpu) {
        (Some(cuda), _) => cuda_facts(cuda),
        (None, Some(cpu)) => cpu_facts(&device.name, cpu),
        (None, None) => Facts::default(),
    };
    let heading_id = format!("device-{}", device.id);
    let labelled_by = heading_id.clone();
    let kind = match device.kind {
        DeviceKind::Cpu => "CPU",
        DeviceKind::Cuda => "CUDA GPU",
    };
    let subtitle = about.subtitle.map(|s| view! { <span>{s}</span> " · " });
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
                {subtitle}
                <code>{device.id.clone()}</code>
            </p>
            <dl class="stats">
                {about
                    .stats
                    .into_iter()
                    .map(|(label, value)| view! {
                        <div class="stat">
                            <dt>{label}</dt>
                            <dd>{value}</dd>
                        </div>
                    })
                    .collect_view()}
            </dl>
            <LastDiagnosticLine device=device.id.clone() reported=device.last_diagnostic.clone() />
            <MemoryBar
                total=Signal::derive(move || memory.get().0)
                free=Signal::derive(move || memory.get().1)
            />
            <TelemetryPanel device=device.id.clone() kind=device.kind />
            {fact_list(about.facts)}
            {(!about.limits.is_empty())
                .then(|| view! {
                    <details class="more">
                        <summary>"Limits per block and per SM"</summary>
                        {fact_list(about.limits)}
                    </details>
                })}
            <PeakList peaks=device.peaks.clone() />
            {(!about.identifiers.is_empty())
                .then(|| view! {
                    <details class="more" data-testid="device-identifiers">
                        <summary>"PCI bus and UUID"</summary>
                        {fact_list(about.identifiers)}
                    </details>
                })}
            <a class="button" href=format!("/launch?device={}", device.id)>
                "Launch a kernel here"
            </a>
            " "
            <a
                class="button"
                href=format!("/devices/{}/roofline", device.id)
                data-testid="device-roofline-link"
            >
                "Roofline"
            </a>
        </article>
    }
}

/// The device's last diagnostic: its verdict, level and when, linking to it; a diagnostic
/// that ends while the card is shown takes its place through the event stream.
#[component]
fn LastDiagnosticLine(device: String, reported: Option<LastDiagnostic>) -> impl IntoView {
    let live = use_live_events();
    let last = Memo::new({
        let device = device.clone();
        move |_| {
            live.with_diagnostics(|pushed| diag::latest_last(&device, reported.clone(), pushed))
        }
    });
    let diagnose = format!("/diagnostics?device={device}");
    view! {
        <p class="last-diagnostic" data-testid="last-diagnostic">
            {move || match last.get() {
                Some(last) => view! {
                    "Last diagnostic: "
                    <a href=format!("/diagnostics/{}", last.id) data-testid="last-diagnostic-link">
                        <VerdictBadge verdict=last.verdict />
                        {format!(" level {}", last.level)}
                    </a>
                    {format!(", {}", format::local_time(&last.finished_at))}
                }
                .into_any(),
                None => view! {
                    "No diagnostic yet. "
                    <a href=diagnose.clone()>"Run one"</a>
                }
                .into_any(),
            }}
        </p>
    }
}

/// What a card says about a device, beyond its name and memory.
#[derive(Default)]
struct Facts {
    /// Beside the id under the name, such as "Compute capability 9.0".
    subtitle: Option<String>,
    /// The few figures that set its speed, shown large.
    stats: Vec<Fact>,
    facts: Vec<Fact>,
    /// Folded away: what kernel authors look up.
    limits: Vec<Fact>,
    /// Folded away: what tells one GPU from another of the same model.
    identifiers: Vec<Fact>,
}

type Fact = (&'static str, String);

fn fact_list(facts: Vec<Fact>) -> Option<impl IntoView> {
    (!facts.is_empty()).then(|| {
        view! {
            <dl class="facts">
                {facts
                    .into_iter()
                    .map(|(label, value)| view! {
                        <dt>{label}</dt>
                        <dd>{value}</dd>
                    })
                    .collect_view()}
            </dl>
        }
    })
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

fn cpu_facts(name: &str, cpu: &CpuDeviceInfo) -> Facts {
    Facts {
        subtitle: None,
        stats: vec![
            ("Cores", or_dash(cpu.physical_cores)),
            ("Threads", or_dash(cpu.logical_threads)),
        ],
        // The name is usually the model already.
        facts: cpu
            .model
            .as_ref()
            .filter(|model| model.as_str() != name)
            .map(|model| vec![("Model", model.clone())])
            .unwrap_or_default(),
        limits: Vec::new(),
        identifiers: Vec::new(),
    }
}

fn cuda_facts(cuda: &CudaDeviceInfo) -> Facts {
    let mhz = |v: Option<u32>| or_dash(v.map(|v| format!("{v} MHz")));
    let size = |v: Option<u64>| or_dash(v.map(format::bytes));
    Facts {
        subtitle: Some(format!(
            "Compute capability {}",
            or_dash(
                cuda.compute_capability
                    .map(|cc| format!("{}.{}", cc.major, cc.minor))
            )
        )),
        stats: vec![
            ("SMs", or_dash(cuda.multiprocessor_count)),
            ("SM clock", mhz(cuda.max_sm_clock_mhz)),
            ("Memory clock", mhz(cuda.max_memory_clock_mhz)),
        ],
        facts: vec![
            (
                "Memory bus",
                or_dash(cuda.memory_bus_width_bits.map(|b| format!("{b}-bit"))),
            ),
            ("L2 cache", size(cuda.l2_cache_bytes)),
            ("Async copy engines", or_dash(cuda.async_engine_count)),
            (
                "ECC",
                or_dash(cuda.ecc_enabled.map(|on| if on { "on" } else { "off" })),
            ),
            (
                "Driver CUDA version",
                or_dash(cuda.driver_cuda_version.as_ref()),
            ),
        ],
        limits: vec![
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
        ],
        identifiers: vec![
            ("PCI bus", or_dash(cuda.pci_bus_id.as_ref())),
            ("UUID", or_dash(cuda.uuid.as_ref())),
        ],
    }
}

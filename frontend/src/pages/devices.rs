use gpulab_shared::{CudaStatus, DeviceKind};
use leptos::prelude::*;

use crate::api::{self, ApiError};
use crate::components::{error_list, DeviceCard};
use crate::hooks::use_title;

/// `/`: every device of the host, as a card, and whether CUDA can be used. Without a GPU, a
/// card in its place says why there is none and what to do about it.
#[component]
pub fn DevicesPage() -> impl IntoView {
    use_title(|| "Devices".to_owned());
    let devices = LocalResource::new(api::devices);
    let summary = LocalResource::new(api::devices_text);
    let health = LocalResource::new(api::health);

    view! {
        <h1>"Devices"</h1>
        <Suspense fallback=|| view! { <p class="loading">"Looking for devices…"</p> }>
            <ErrorBoundary fallback=error_list>
                {move || Suspend::new(async move {
                    let summary = summary.await?;
                    let cuda = health.await?.cuda;
                    Ok::<_, ApiError>(view! {
                        <p class="summary">
                            <span data-testid="device-count">{count_line(&summary)}</span>
                            <span class="help">" (CUDA GPUs, counted as the original PyCUDA page did)"</span>
                        </p>
                        {cuda.available.then(|| view! { <CudaNotice cuda /> })}
                    })
                })}
                {move || Suspend::new(async move {
                    let devices = devices.await?;
                    let cuda = health.await?.cuda;
                    let has_gpu = devices.iter().any(|d| d.kind == DeviceKind::Cuda);
                    Ok::<_, ApiError>(view! {
                        <div class="cards">
                            {(!has_gpu).then(|| view! { <NoGpuCard cuda /> })}
                            {devices
                                .into_iter()
                                .map(|device| view! { <DeviceCard device /> })
                                .collect_view()}
                        </div>
                    })
                })}
            </ErrorBoundary>
        </Suspense>
    }
}

/// CUDA is usable, and which version the driver supports.
#[component]
fn CudaNotice(cuda: CudaStatus) -> impl IntoView {
    let version = cuda
        .driver_version
        .map(|v| format!(" (driver supports CUDA {v})"));
    view! { <p class="notice ok" data-testid="cuda-status">"CUDA is available" {version} "."</p> }
}

/// In place of the GPU cards when there are none: the server's reason (which names what
/// failed and what to do) and the usual ways to a visible GPU.
#[component]
fn NoGpuCard(cuda: CudaStatus) -> impl IntoView {
    let reason = match (cuda.available, cuda.reason) {
        (false, Some(reason)) => reason,
        (false, None) => "the server gave no reason".to_owned(),
        // CUDA works but lists no device: the GPUs are hidden from this process.
        (true, _) => "the NVIDIA driver works but lists no GPU".to_owned(),
    };
    view! {
        <article class="card empty-state" data-testid="no-gpu" aria-labelledby="no-gpu-heading">
            <header class="card-header">
                <h2 id="no-gpu-heading">"No GPU"</h2>
                <span class="badge kind-cuda">"CUDA GPU"</span>
            </header>
            <p class="notice warn" data-testid="cuda-status">
                <strong>"CUDA is not available: "</strong>
                {reason}
            </p>
            <p>"To see and use an NVIDIA GPU here:"</p>
            <ul>
                <li>
                    "In Docker, start the container with " <code>"--gpus all"</code>
                    " (the host needs the NVIDIA driver and the NVIDIA Container Toolkit)."
                </li>
                <li>
                    "On the host itself, install the NVIDIA driver; " <code>"nvidia-smi"</code>
                    " should list the GPU."
                </li>
                <li>
                    "Check that " <code>"CUDA_VISIBLE_DEVICES"</code> " does not hide every GPU."
                </li>
            </ul>
            <p class="help">"Until then, every kernel runs on the CPU."</p>
        </article>
    }
}

/// The first sentence of the PyCUDA line, `"N device(s) found."`; the device descriptions
/// after it repeat what the cards show.
fn count_line(summary: &str) -> String {
    let first_line = summary.lines().next().unwrap_or_default();
    match first_line.find("found.") {
        Some(end) => first_line[..end + "found.".len()].to_owned(),
        None => first_line.to_owned(),
    }
}

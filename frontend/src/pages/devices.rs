use gpulab_shared::CudaStatus;
use leptos::prelude::*;

use crate::api::{self, ApiError};
use crate::components::{error_list, DeviceCard};
use crate::hooks::use_title;

/// `/`: every device of the host, as a card, and whether CUDA can be used.
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
                        <CudaNotice cuda />
                    })
                })}
                {move || Suspend::new(async move {
                    let devices = devices.await?;
                    Ok::<_, ApiError>(view! {
                        <div class="cards">
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

/// Whether CUDA is usable; when it is not, the server's reason says what to do about it.
#[component]
fn CudaNotice(cuda: CudaStatus) -> impl IntoView {
    if cuda.available {
        let version = cuda
            .driver_version
            .map(|v| format!(" (driver supports CUDA {v})"));
        view! { <p class="notice ok" data-testid="cuda-status">"CUDA is available" {version} "."</p> }
            .into_any()
    } else {
        let reason = cuda
            .reason
            .unwrap_or_else(|| "the server gave no reason".to_owned());
        view! {
            <p class="notice warn" data-testid="cuda-status">
                <strong>"CUDA is not available: "</strong>
                {reason}
            </p>
        }
        .into_any()
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

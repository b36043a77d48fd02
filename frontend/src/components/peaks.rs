use gpulab_shared::peaks::{FractionOfPeak, Peak};
use leptos::prelude::*;

use crate::api;
use crate::roofline;

/// A device's peaks, folded away: each with its value and how it was obtained, then the
/// formula with this device's figures and where the constants come from.
#[component]
pub fn PeakList(peaks: Vec<Peak>) -> impl IntoView {
    let count = peaks.len();
    let body = if peaks.is_empty() {
        view! {
            <p class="help">
                "The server could not work out this device's peaks: it needs the clocks, core \
                 counts and memory bus the device reports, and an architecture it knows."
            </p>
        }
        .into_any()
    } else {
        view! {
            <dl class="facts peaks">
                {peaks
                    .into_iter()
                    .map(|peak| view! {
                        <dt>{roofline::peak_title(&peak.name)}</dt>
                        <dd data-peak=peak.name.clone()>
                            {format!(
                                "{} ({})",
                                roofline::rate(peak.value, &peak.unit),
                                roofline::basis_label(peak.basis)
                            )}
                            <br />
                            <small class="formula">{peak.formula}</small>
                            <br />
                            <small class="source">{peak.source}</small>
                        </dd>
                    })
                    .collect_view()}
            </dl>
        }
        .into_any()
    };
    view! {
        <details class="more" data-testid="device-peaks">
            <summary>{format!("Peaks ({count})")}</summary>
            {body}
        </details>
    }
}

/// A job's share of its device's peak: the figure, and folded under it how the work is
/// counted and how the peak is worked out (the formula and source come from the device).
#[component]
pub fn FractionOfPeakView(fraction: FractionOfPeak, device: Option<String>) -> impl IntoView {
    let peak_name = fraction.peak.clone();
    let peak = LocalResource::new(move || {
        let device = device.clone();
        let name = peak_name.clone();
        async move {
            let device = api::device(device.as_deref()?).await.ok()?;
            device.peaks.into_iter().find(|p| p.name == name)
        }
    });
    let line = roofline::fraction_line(&fraction);
    view! {
        <div class="fraction-of-peak" data-testid="job-fraction-of-peak">
            <p title=fraction.convention.clone()>{line}</p>
            <details class="more">
                <summary>"How this is counted"</summary>
                <dl class="facts">
                    <dt>"Counting"</dt>
                    <dd>{fraction.convention}</dd>
                    {move || peak.get().flatten().map(|peak| view! {
                        <dt>"Peak"</dt>
                        <dd>{peak.formula}</dd>
                        <dt>"Source"</dt>
                        <dd>{peak.source}</dd>
                    })}
                </dl>
            </details>
        </div>
    }
}

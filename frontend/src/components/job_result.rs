use gpulab_shared::JobResult;
use leptos::prelude::*;

use super::{CudaOutput, FractionOfPeakView, SweepChart, TimingChart};
use crate::api;
use crate::format;

/// What a finished job measured and checked: its timing as figures and as a range bar, its
/// throughput and its share of the device's peak, its verification, its output (with the bandwidth sweep drawn, when it has
/// one) and the image it drew, if any.
#[component]
pub fn JobResultView(
    job_id: i64,
    result: JobResult,
    /// The device the job ran on, for the peak's formula and the roofline link.
    #[prop(optional)]
    device: Option<String>,
) -> impl IntoView {
    let JobResult {
        timing,
        throughput,
        verification,
        output,
        has_artifact,
        fraction_of_peak,
        roofline,
    } = result;
    let roofline_link = device.clone().filter(|_| roofline.is_some()).map(|device| {
        view! {
            <p>
                <a href=format!("/devices/{device}/roofline") data-testid="job-roofline-link">
                    "See it on the roofline of " {device.clone()}
                </a>
            </p>
        }
    });
    let fraction =
        fraction_of_peak.map(|fraction| view! { <FractionOfPeakView fraction device /> });
    let sweep = output.get("sweep").cloned();
    let cuda = output.clone();
    let output = serde_json::to_string_pretty(&output).unwrap_or_else(|_| output.to_string());
    let passed = verification.passed;
    view! {
        <section class="card" aria-labelledby="timing-heading">
            <h2 id="timing-heading">"Timing"</h2>
            <p class="throughput" data-testid="job-throughput">
                <span class="value">{format::number(throughput.value)}</span>
                " "
                <span class="unit">{throughput.unit}</span>
            </p>
            {fraction}
            {roofline_link}
            <dl class="facts">
                <dt>"Min"</dt>
                <dd>{format::millis(timing.min_ms)}</dd>
                <dt>"Median"</dt>
                <dd>{format::millis(timing.median_ms)}</dd>
                <dt>"Max"</dt>
                <dd>{format::millis(timing.max_ms)}</dd>
                <dt>"Repetitions"</dt>
                <dd>{timing.repetitions}</dd>
            </dl>
            <TimingChart timing />
        </section>
        <section class="card" aria-labelledby="verification-heading" data-testid="job-verification">
            <h2 id="verification-heading">"Verification"</h2>
            <p>
                <span class=if passed { "badge status-succeeded" } else { "badge status-failed" }>
                    {if passed { "passed" } else { "failed" }}
                </span>
                " "
                {verification.method}
            </p>
            <dl class="facts">
                <dt>"Max absolute error"</dt>
                <dd>{format::scientific(verification.max_abs_error)}</dd>
                <dt>"Max relative error"</dt>
                <dd>{format::scientific(verification.max_rel_error)}</dd>
                <dt>"Tolerance"</dt>
                <dd>{format::scientific(verification.tolerance)}</dd>
            </dl>
        </section>
        <CudaOutput output=cuda />
        {sweep.map(|sweep| view! { <SweepChart sweep /> })}
        <section class="card" aria-labelledby="output-heading">
            <h2 id="output-heading">"Output"</h2>
            <pre class="json">{output}</pre>
        </section>
        {has_artifact
            .then(|| view! {
                <section class="card artifact" aria-labelledby="artifact-heading">
                    <h2 id="artifact-heading">"Image"</h2>
                    <img
                        data-testid="job-artifact"
                        src=api::artifact_url(job_id)
                        alt=format!("The image job {job_id} computed")
                    />
                </section>
            })}
    }
}

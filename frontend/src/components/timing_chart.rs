use gpulab_shared::Timing;
use leptos::prelude::*;

use crate::format;

/// The scale runs this share of the spread beyond the fastest and the slowest run, so that
/// neither end of the bar sits on the edge.
const PAD: f64 = 0.08;

/// Min, median and max of the timed runs as a range bar: the bar spans the fastest to the
/// slowest run and a tick marks the median, on a scale zoomed to the spread so that the
/// spread is what one sees. The API reports only these three figures, not every run.
#[component]
pub fn TimingChart(timing: Timing) -> impl IntoView {
    let Timing {
        repetitions,
        min_ms,
        median_ms,
        max_ms,
    } = timing;
    let spread = (max_ms - min_ms).max(0.0);
    // A spread of 0 (one run, or a clock too coarse to tell) still gets a visible scale.
    let pad = if spread > 0.0 {
        spread * PAD
    } else {
        median_ms.abs().max(f64::EPSILON) * 0.05
    };
    let (low, high) = (min_ms - pad, max_ms + pad);
    let at = |ms: f64| ((ms - low) / (high - low) * 100.0).clamp(0.0, 100.0);
    let (min_x, median_x, max_x) = (at(min_ms), at(median_ms), at(max_ms));
    let relative = if median_ms > 0.0 {
        format!(" ({} of the median)", format::percent(spread / median_ms))
    } else {
        String::new()
    };
    let runs = if repetitions == 1 { "run" } else { "runs" };
    let description = format!(
        "{repetitions} timed {runs}: fastest {}, median {}, slowest {}",
        format::millis(min_ms),
        format::millis(median_ms),
        format::millis(max_ms)
    );
    view! {
        <figure class="range-chart" data-testid="timing-chart">
            <div class="range-plot" role="img" aria-label=description>
                // Kept clear of the edges, where half of a centred label would be cut off.
                <span
                    class="range-label median"
                    style=format!("left: clamp(4.5rem, {median_x:.2}%, calc(100% - 4.5rem))")
                >
                    {format!("median {}", format::millis(median_ms))}
                </span>
                <svg viewBox="0 0 100 12" preserveAspectRatio="none" aria-hidden="true">
                    <line class="axis" x1="0" x2="100" y1="6" y2="6" vector-effect="non-scaling-stroke" />
                    <rect
                        class="range"
                        x=format!("{min_x:.2}")
                        width=format!("{:.2}", (max_x - min_x).max(0.4))
                        y="2"
                        height="8"
                    />
                    <line
                        class="median"
                        x1=format!("{median_x:.2}")
                        x2=format!("{median_x:.2}")
                        y1="0"
                        y2="12"
                        vector-effect="non-scaling-stroke"
                    />
                </svg>
                <div class="range-ends">
                    <span>{format!("min {}", format::millis(min_ms))}</span>
                    <span>{format!("max {}", format::millis(max_ms))}</span>
                </div>
            </div>
            <figcaption class="help">
                {format!("Spread {}{relative} over {repetitions} {runs}.", format::millis(spread))}
            </figcaption>
        </figure>
    }
}

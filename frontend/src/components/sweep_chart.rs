use leptos::prelude::*;
use serde_json::Value;

use crate::format;

/// The plot's own coordinates; the SVG stretches them to its box, and the axis labels are
/// HTML placed by percentage, so text keeps its size on a phone and on a wide screen.
const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 400.0;
/// At most this many labelled sizes along the x axis.
const MAX_X_TICKS: usize = 7;
/// The keys that may name the curve a point belongs to, such as `"direction": "h2d"`.
const SERIES_KEYS: [&str; 4] = ["direction", "series", "name", "label"];
/// Curves whose peaks differ more than this share a log₁₀ GB/s axis: on a linear one, copies
/// within a GPU (TB/s) would flatten copies over PCIe (tens of GB/s) onto the floor.
const LOG_SCALE_SPREAD: f64 = 10.0;

/// One measured curve of a bandwidth sweep: GB/s at each transfer size.
#[derive(Debug, Clone, PartialEq)]
struct Curve {
    name: Option<String>,
    /// (bytes, GB/s), smallest transfer first.
    points: Vec<(f64, f64)>,
}

/// The curves in a kernel's `output.sweep`, whichever shape it has:
///
/// - a list of points, `[{"bytes": 4096, "gb_per_s": 1.2}, …]`, each optionally naming
///   its curve (`"direction": "h2d"`);
/// - a list of curves, `[{"direction": "h2d", "points": [{"bytes": …, "gb_per_s": …}]}]`;
/// - an object of curves by name, `{"h2d": [{"bytes": …, "gb_per_s": …}], …}`.
///
/// Points that are not a positive size with a finite rate are left out.
fn curves(sweep: &Value) -> Vec<Curve> {
    let mut curves: Vec<Curve> = Vec::new();
    match sweep {
        Value::Array(items) => {
            for item in items {
                if let Some(points) = item.get("points").and_then(Value::as_array) {
                    curves.push(Curve {
                        name: series_name(item),
                        points: points.iter().filter_map(point).collect(),
                    });
                } else if let Some(p) = point(item) {
                    let name = series_name(item);
                    match curves.iter_mut().find(|c| c.name == name) {
                        Some(curve) => curve.points.push(p),
                        None => curves.push(Curve {
                            name,
                            points: vec![p],
                        }),
                    }
                }
            }
        }
        Value::Object(by_name) => {
            for (name, points) in by_name {
                if let Some(points) = points.as_array() {
                    curves.push(Curve {
                        name: Some(name.clone()),
                        points: points.iter().filter_map(point).collect(),
                    });
                }
            }
        }
        _ => {}
    }
    for curve in &mut curves {
        curve.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    curves.retain(|c| !c.points.is_empty());
    curves
}

fn point(item: &Value) -> Option<(f64, f64)> {
    let bytes = item
        .get("bytes")
        .or_else(|| item.get("size_bytes"))?
        .as_f64()?;
    let rate = item.get("gb_per_s")?.as_f64()?;
    (bytes > 0.0 && bytes.is_finite() && rate.is_finite()).then_some((bytes, rate.max(0.0)))
}

fn series_name(item: &Value) -> Option<String> {
    SERIES_KEYS
        .iter()
        .find_map(|key| item.get(key)?.as_str())
        .map(str::to_owned)
}

/// A bandwidth sweep (`output.sweep`) as GB/s against the transfer size, the size on a log₂
/// axis, one line per curve (such as host to device and device to host), with the points
/// as a table for screen readers and for exact values. Nothing when the sweep has no point.
#[component]
pub fn SweepChart(sweep: Value) -> impl IntoView {
    let curves = curves(&sweep);
    let all = || curves.iter().flat_map(|c| c.points.iter().copied());
    let (Some(smallest), Some(largest), Some(fastest)) = (
        all().map(|p| p.0).reduce(f64::min),
        all().map(|p| p.0).reduce(f64::max),
        all().map(|p| p.1).reduce(f64::max),
    ) else {
        return None;
    };
    // One step of 2 either side when every point has the same size.
    let (x_low, x_high) = if largest > smallest {
        (smallest.log2(), largest.log2())
    } else {
        (smallest.log2() - 1.0, smallest.log2() + 1.0)
    };
    let peaks = curves
        .iter()
        .filter_map(|c| c.points.iter().map(|p| p.1).reduce(f64::max));
    let lowest_peak = peaks.clone().reduce(f64::min).unwrap_or(fastest);
    let scale = if lowest_peak > 0.0 && fastest / lowest_peak > LOG_SCALE_SPREAD {
        let slowest = all()
            .map(|p| p.1)
            .filter(|&r| r > 0.0)
            .reduce(f64::min)
            .unwrap_or(lowest_peak);
        RateScale::Log {
            low: slowest.log10().floor(),
            high: fastest.log10().ceil(),
        }
    } else {
        RateScale::Linear {
            ticks: rate_ticks(fastest),
        }
    };
    let y_ticks = scale.ticks();
    let y = |rate: f64| HEIGHT - scale.share(rate) * HEIGHT;
    let x = move |bytes: f64| (bytes.log2() - x_low) / (x_high - x_low) * WIDTH;
    let x_ticks = size_ticks(x_low, x_high);
    let y_title = match scale {
        RateScale::Linear { .. } => "GB/s",
        RateScale::Log { .. } => "GB/s (log₁₀ scale)",
    };

    let peak = curves
        .iter()
        .flat_map(|c| c.points.iter().map(move |p| (c, *p)))
        .max_by(|a, b| a.1 .1.total_cmp(&b.1 .1));
    let description = peak.map(|(curve, (bytes, rate))| {
        let of = curve
            .name
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        format!(
            "Bandwidth by transfer size from {} to {}: peak {} GB/s{of} at {}",
            size_label(smallest),
            size_label(largest),
            format::number(rate),
            size_label(bytes)
        )
    });

    let grid = view! {
        {y_ticks
            .iter()
            .map(|&rate| {
                let at = format!("{:.1}", y(rate));
                view! { <line class="grid" x1="0" x2=WIDTH y1=at.clone() y2=at vector-effect="non-scaling-stroke" /> }
            })
            .collect_view()}
        {x_ticks
            .iter()
            .map(|&exp| {
                let at = format!("{:.1}", x(exp.exp2()));
                view! { <line class="grid" x1=at.clone() x2=at y1="0" y2=HEIGHT vector-effect="non-scaling-stroke" /> }
            })
            .collect_view()}
    };
    let lines = curves
        .iter()
        .enumerate()
        .map(|(i, curve)| {
            let points: Vec<(f64, f64)> = curve.points.iter().map(|&(b, r)| (x(b), y(r))).collect();
            let polyline = points
                .iter()
                .map(|(px, py)| format!("{px:.1},{py:.1}"))
                .collect::<Vec<_>>()
                .join(" ");
            // A zero-length stroke with round caps stays a circle however the plot stretches.
            let dots = points
                .iter()
                .map(|(px, py)| format!("M{px:.1} {py:.1}h0"))
                .collect::<String>();
            view! {
                <g class=format!("curve series-{}", i % 4)>
                    <polyline points=polyline fill="none" vector-effect="non-scaling-stroke" />
                    <path class="dots" d=dots vector-effect="non-scaling-stroke" />
                </g>
            }
        })
        .collect_view();
    let y_labels = y_ticks
        .iter()
        .map(|&rate| {
            let bottom = scale.share(rate) * 100.0;
            view! { <span style=format!("bottom: {bottom:.2}%")>{tick_label(rate)}</span> }
        })
        .collect_view();
    let x_labels = x_ticks
        .iter()
        .map(|&exp| {
            let left = x(exp.exp2()) / WIDTH * 100.0;
            view! { <span style=format!("left: {left:.2}%")>{size_label(exp.exp2())}</span> }
        })
        .collect_view();
    let named = curves.iter().any(|c| c.name.is_some());
    let legend = named.then(|| {
        view! {
            <ul class="legend">
                {curves
                    .iter()
                    .enumerate()
                    .map(|(i, curve)| view! {
                        <li class=format!("series-{}", i % 4)>
                            <span class="swatch" aria-hidden="true"></span>
                            {curve.name.clone().unwrap_or_else(|| format!("curve {}", i + 1))}
                        </li>
                    })
                    .collect_view()}
            </ul>
        }
    });
    let rows = curves
        .iter()
        .flat_map(|curve| {
            curve.points.iter().map(move |&(bytes, rate)| {
                view! {
                    <tr>
                        {named.then(|| view! { <td>{curve.name.clone().unwrap_or_default()}</td> })}
                        <td class="num">{size_label(bytes)}</td>
                        <td class="num">{format::number(rate)}</td>
                    </tr>
                }
            })
        })
        .collect_view();

    Some(view! {
        <section class="card sweep" aria-labelledby="sweep-heading" data-testid="sweep-chart">
            <h2 id="sweep-heading">"Bandwidth by transfer size"</h2>
            <figure class="sweep-figure" role="img" aria-label=description>
                <div class="sweep-y-title" aria-hidden="true">{y_title}</div>
                <div class="sweep-body" aria-hidden="true">
                    <div class="sweep-y-ticks">{y_labels}</div>
                    <svg
                        class="sweep-plot"
                        viewBox=format!("0 0 {WIDTH} {HEIGHT}")
                        preserveAspectRatio="none"
                    >
                        {grid}
                        {lines}
                    </svg>
                    <div class="sweep-x-ticks">{x_labels}</div>
                </div>
                <figcaption class="sweep-x-title">"Transfer size (log₂ scale)"</figcaption>
            </figure>
            {legend}
            <details class="sweep-points">
                <summary>"Measured points"</summary>
                <table class="points">
                    <thead>
                        <tr>
                            {named.then(|| view! { <th scope="col">"Curve"</th> })}
                            <th scope="col" class="num">"Size"</th>
                            <th scope="col" class="num">"GB/s"</th>
                        </tr>
                    </thead>
                    <tbody>{rows}</tbody>
                </table>
            </details>
        </section>
    })
}

/// How GB/s map to the height of the plot.
#[derive(Debug, Clone, PartialEq)]
enum RateScale {
    /// From 0 to the last of these round figures.
    Linear { ticks: Vec<f64> },
    /// From 10^low to 10^high GB/s.
    Log { low: f64, high: f64 },
}

impl RateScale {
    /// Where `rate` lies from the bottom (0) to the top (1) of the plot.
    fn share(&self, rate: f64) -> f64 {
        let share = match self {
            RateScale::Linear { ticks } => rate / ticks.last().copied().unwrap_or(1.0),
            RateScale::Log { low, high } => {
                (rate.max(f64::MIN_POSITIVE).log10() - low) / (high - low).max(1.0)
            }
        };
        share.clamp(0.0, 1.0)
    }

    /// The labelled figures: round ones, or every power of ten.
    fn ticks(&self) -> Vec<f64> {
        match self {
            RateScale::Linear { ticks } => ticks.clone(),
            RateScale::Log { low, high } => (*low as i32..=*high as i32)
                .map(|exp| 10f64.powi(exp))
                .collect(),
        }
    }
}

/// Round GB/s figures from 0 to at least `fastest`, four or five of them.
fn rate_ticks(fastest: f64) -> Vec<f64> {
    let top = if fastest > 0.0 { fastest } else { 1.0 };
    let rough = top / 4.0;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= rough)
        .unwrap_or(10.0 * magnitude);
    let count = (top / step).ceil() as usize;
    (0..=count).map(|i| i as f64 * step).collect()
}

/// The powers of two (as exponents) labelled on the x axis: every one inside the range, or
/// every second, third… when that would be too many to read, preferring a step that labels
/// both ends.
fn size_ticks(low: f64, high: f64) -> Vec<f64> {
    let (first, last) = (low.ceil() as i32, high.floor() as i32);
    if first > last {
        return Vec::new();
    }
    let span = (last - first) as usize;
    let fits = |stride: &usize| span / stride < MAX_X_TICKS;
    let stride = (1..=span.max(1))
        .filter(fits)
        .find(|stride| span.is_multiple_of(*stride))
        .or_else(|| (1..=span.max(1)).find(fits))
        .unwrap_or(1);
    (first..=last).step_by(stride).map(f64::from).collect()
}

/// A GB/s figure of the axis, as short as it is round: `"0.1"`, `"2.5"`, `"1000"`.
fn tick_label(rate: f64) -> String {
    // Six decimals hide the float noise of `3 × 0.1`; then the zeros go.
    let text = format!("{rate:.6}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A transfer size as the axis shows it: `"4 KiB"`, `"1.5 MiB"`, `"256 B"`.
fn size_label(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let number = if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format::number(value)
    };
    format!("{number} {}", UNITS[unit])
}

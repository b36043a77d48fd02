use gpulab_shared::peaks::{Peak, Roofline, RooflineJob};
use leptos::prelude::*;

use crate::format;
use crate::roofline::{self, Layout, Segment};

/// A device's roofline on log–log axes: the memory-bandwidth slope, one ceiling per data
/// type, and each finished job as a marker at its arithmetic intensity and throughput. A
/// marker is a link to its job; hovering or focusing it shows the job. The ceilings (with
/// formula and source) and the points follow as tables, for screen readers and exact values.
#[component]
pub fn RooflineChart(roofline: Roofline) -> impl IntoView {
    let Roofline {
        device,
        bandwidth,
        ceilings,
        points,
    } = roofline;
    let ceiling_values: Vec<(String, f64)> =
        ceilings.iter().map(|c| (c.name.clone(), c.value)).collect();
    let coordinates: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (p.point.arithmetic_intensity, p.point.achieved))
        .collect();
    let layout = roofline::layout(
        bandwidth.as_ref().map(|b| b.value),
        &ceiling_values,
        &coordinates,
    );
    let plot = layout.map(|layout| {
        view! { <RooflinePlot device=device.clone() layout bandwidth=bandwidth.clone() points=points.clone() /> }
    });
    view! {
        <section class="card roofline" aria-labelledby="roofline-heading" data-testid="roofline-chart">
            <h2 id="roofline-heading">"Roofline"</h2>
            {plot}
            <CeilingTable bandwidth ceilings />
            <PointTable points />
        </section>
    }
}

#[component]
fn RooflinePlot(
    device: String,
    layout: Layout,
    bandwidth: Option<Peak>,
    points: Vec<RooflineJob>,
) -> impl IntoView {
    let Layout {
        x,
        y,
        slope,
        ceilings,
    } = layout;
    // Percentages of the plot's box: the SVG has no viewBox, so markers stay round and text
    // outside it keeps its size however the box is stretched.
    let px = move |ai: f64| x.share(ai) * 100.0;
    let py = move |gflops: f64| (1.0 - y.share(gflops)) * 100.0;
    let pct = |v: f64| format!("{v:.2}%");
    let line = move |segment: Segment| {
        (
            pct(px(segment.from.0)),
            pct(py(segment.from.1)),
            pct(px(segment.to.0)),
            pct(py(segment.to.1)),
        )
    };
    let active = RwSignal::new(None::<usize>);

    let grid = view! {
        <g class="grid">
            {y.decades()
                .into_iter()
                .map(|exp| {
                    let at = pct(py(10f64.powi(exp)));
                    view! { <line x1="0" x2="100%" y1=at.clone() y2=at /> }
                })
                .collect_view()}
            {x.decades()
                .into_iter()
                .map(|exp| {
                    let at = pct(px(10f64.powi(exp)));
                    view! { <line x1=at.clone() x2=at y1="0" y2="100%" /> }
                })
                .collect_view()}
        </g>
    };
    let slope_line = slope.map(|segment| {
        let (x1, y1, x2, y2) = line(segment);
        view! { <line class="slope" data-testid="roofline-slope" x1=x1 y1=y1 x2=x2 y2=y2 /> }
    });
    let ceiling_lines = ceilings
        .iter()
        .map(|c| {
            let (x1, y1, x2, y2) = line(c.segment);
            view! {
                <line
                    class="ceiling"
                    data-testid=format!("roofline-ceiling-{}", c.name)
                    data-value=c.value.to_string()
                    x1=x1
                    y1=y1
                    x2=x2
                    y2=y2
                />
            }
        })
        .collect_view();
    let markers = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let cx = pct(px(p.point.arithmetic_intensity));
            let cy = pct(py(p.point.achieved));
            view! {
                <g class="marker">
                    <a
                        href=format!("/jobs/{}", p.job_id)
                        data-testid="roofline-point"
                        data-job=p.job_id.to_string()
                        aria-label=point_summary(p)
                        on:mouseenter=move |_| active.set(Some(i))
                        on:focus=move |_| active.set(Some(i))
                        on:blur=move |_| active.set(None)
                    >
                        <circle cx=cx cy=cy r="6" />
                    </a>
                </g>
            }
        })
        .collect_view();

    // The slope is GB/s × FLOP/byte, so the axis is GFLOP/s (an int8 ceiling's GOP/s is
    // drawn on it as the same count of operations).
    let unit = "GFLOP/s".to_owned();
    let ceiling_labels = roofline::label_groups(&y, &ceilings)
        .into_iter()
        .map(|(names, value)| {
            let bottom = y.share(value) * 100.0;
            view! {
                <span class="ceiling-label" style=format!("bottom: {bottom:.2}%")>
                    {format!("{} {}", names.join(", "), roofline::rate(value, &unit))}
                </span>
            }
        })
        .collect_view();
    let slope_label = bandwidth.as_ref().zip(slope).map(|(peak, segment)| {
        // Halfway along the slope, in log space, a little above it.
        let ai = (segment.from.0 * segment.to.0).sqrt();
        let (left, bottom) = (
            x.share(ai) * 100.0,
            y.share(segment.from.1 * (ai / segment.from.0)) * 100.0,
        );
        view! {
            <span class="slope-label" style=format!("left: {left:.2}%; bottom: {bottom:.2}%")>
                {format!(
                    "{} ({})",
                    roofline::rate(peak.value, &peak.unit),
                    roofline::basis_label(peak.basis)
                )}
            </span>
        }
    });

    let tooltip_points = points.clone();
    let tip_unit = unit.clone();
    let tooltip = move || {
        let i = active.get()?;
        let p = tooltip_points.get(i)?;
        let (left, bottom) = (
            x.share(p.point.arithmetic_intensity) * 100.0,
            y.share(p.point.achieved) * 100.0,
        );
        // Beside the marker, on the side with more room.
        let side = if left > 55.0 {
            format!("right: {:.2}%", 100.0 - left)
        } else {
            format!("left: {left:.2}%")
        };
        let vertical = if bottom > 55.0 {
            format!("top: {:.2}%", 100.0 - bottom)
        } else {
            format!("bottom: {bottom:.2}%")
        };
        Some(view! {
            <div class="roofline-tip" data-testid="roofline-tip" style=format!("{side}; {vertical}")>
                <strong>{p.label.clone()}</strong>
                <span>
                    {format!(
                        "{} at {} FLOP/byte",
                        roofline::rate(p.point.achieved, &tip_unit),
                        format::number(p.point.arithmetic_intensity)
                    )}
                </span>
                <span>
                    {p.fraction_of_peak
                        .as_ref()
                        .map(roofline::fraction_line)
                        .unwrap_or_else(|| "no peak to compare with".to_owned())}
                </span>
                <a href=format!("/jobs/{}", p.job_id)>{format!("Job {}", p.job_id)}</a>
            </div>
        })
    };

    let y_labels = y
        .decades()
        .into_iter()
        .map(|exp| {
            let bottom = y.share(10f64.powi(exp)) * 100.0;
            view! { <span style=format!("bottom: {bottom:.2}%")>{roofline::decade_label(exp)}</span> }
        })
        .collect_view();
    let x_labels = x
        .decades()
        .into_iter()
        .map(|exp| {
            let left = x.share(10f64.powi(exp)) * 100.0;
            view! { <span style=format!("left: {left:.2}%")>{roofline::decade_label(exp)}</span> }
        })
        .collect_view();
    let description = describe(
        &device,
        &bandwidth,
        &ceilings_summary(&ceilings, &unit),
        &points,
    );

    view! {
        <div class="roofline-figure">
            <div class="roofline-y-title" aria-hidden="true">{format!("{unit} (log₁₀ scale)")}</div>
            <div class="roofline-body">
                <div class="roofline-y-ticks" aria-hidden="true">{y_labels}</div>
                <div class="roofline-stage" on:mouseleave=move |_| active.set(None)>
                    <svg
                        class="roofline-plot"
                        role="img"
                        aria-labelledby="roofline-title roofline-desc"
                        data-testid="roofline-svg"
                    >
                        <title id="roofline-title">{format!("Roofline of {device}")}</title>
                        <desc id="roofline-desc">{description}</desc>
                        {grid}
                        {slope_line}
                        {ceiling_lines}
                        {markers}
                    </svg>
                    <div class="roofline-labels" aria-hidden="true">
                        {ceiling_labels}
                        {slope_label}
                    </div>
                    {tooltip}
                </div>
                <div class="roofline-x-ticks" aria-hidden="true">{x_labels}</div>
            </div>
            <div class="roofline-x-title" aria-hidden="true">
                "Arithmetic intensity (FLOP/byte, log₁₀ scale)"
            </div>
        </div>
    }
}

fn ceilings_summary(ceilings: &[roofline::CeilingLine], unit: &str) -> String {
    ceilings
        .iter()
        .map(|c| format!("{} {}", c.name, roofline::rate(c.value, unit)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The chart in words, for the SVG's `<desc>`.
fn describe(
    device: &str,
    bandwidth: &Option<Peak>,
    ceilings: &str,
    points: &[RooflineJob],
) -> String {
    let slope = bandwidth.as_ref().map_or_else(
        || "no memory bandwidth known".to_owned(),
        |b| format!("memory bandwidth {}", roofline::rate(b.value, &b.unit)),
    );
    let ceilings = if ceilings.is_empty() {
        "no compute ceilings".to_owned()
    } else {
        format!("compute ceilings {ceilings}")
    };
    let jobs = match points.len() {
        1 => "1 job".to_owned(),
        n => format!("{n} jobs"),
    };
    format!("Roofline of {device}: {slope}, {ceilings}; {jobs} drawn as points, listed in the table below.")
}

/// A point in one sentence, for the marker's label.
fn point_summary(p: &RooflineJob) -> String {
    let share = p
        .fraction_of_peak
        .as_ref()
        .map(|f| format!(", {}", roofline::fraction_line(f)))
        .unwrap_or_default();
    format!(
        "Job {}: {}, {} GFLOP/s at {} FLOP/byte{share}",
        p.job_id,
        p.label,
        format::number(p.point.achieved),
        format::number(p.point.arithmetic_intensity)
    )
}

/// The bandwidth and every ceiling with its value, basis, ridge point, formula and source.
#[component]
fn CeilingTable(bandwidth: Option<Peak>, ceilings: Vec<Peak>) -> impl IntoView {
    if bandwidth.is_none() && ceilings.is_empty() {
        return None;
    }
    let bw = bandwidth.as_ref().map(|b| b.value);
    let row = move |peak: Peak, is_slope: bool| {
        let ridge = if is_slope {
            String::new()
        } else {
            bw.map(|bw| format::number(peak.value / bw))
                .unwrap_or_else(|| format::UNKNOWN.to_owned())
        };
        view! {
            <tr data-peak=peak.name.clone()>
                <th scope="row">{roofline::peak_title(&peak.name)}</th>
                <td class="num">{roofline::rate(peak.value, &peak.unit)}</td>
                <td>{roofline::basis_label(peak.basis)}</td>
                <td class="num">{ridge}</td>
                <td class="formula">{peak.formula}</td>
                <td class="source">{peak.source}</td>
            </tr>
        }
    };
    let rows = bandwidth
        .into_iter()
        .map(|b| (b, true))
        .chain(ceilings.into_iter().map(|c| (c, false)))
        .map(|(peak, is_slope)| row(peak, is_slope))
        .collect_view();
    Some(view! {
        <h3>"Ceilings"</h3>
        <div class="table-scroll">
            <table class="points" data-testid="roofline-ceilings">
                <thead>
                    <tr>
                        <th scope="col">"Peak"</th>
                        <th scope="col" class="num">"Value"</th>
                        <th scope="col">"Basis"</th>
                        <th scope="col" class="num">"Ridge point (FLOP/byte)"</th>
                        <th scope="col">"Formula"</th>
                        <th scope="col">"Source"</th>
                    </tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
        </div>
    })
}

/// Every point as a row: the job, its arithmetic intensity, throughput and share of peak.
#[component]
fn PointTable(points: Vec<RooflineJob>) -> impl IntoView {
    if points.is_empty() {
        return None;
    }
    let count = points.len();
    let rows = points
        .into_iter()
        .map(|p| {
            view! {
                <tr data-job=p.job_id.to_string()>
                    <td><a href=format!("/jobs/{}", p.job_id)>{format!("Job {}", p.job_id)}</a></td>
                    <td>{p.label.clone()}</td>
                    <td class="num">{format::number(p.point.arithmetic_intensity)}</td>
                    <td class="num">{format::number(p.point.achieved)}</td>
                    <td>{p.point.ceiling.clone()}</td>
                    <td class="num">
                        {p.fraction_of_peak
                            .as_ref()
                            .map(|f| roofline::share(f.fraction))
                            .unwrap_or_else(|| format::UNKNOWN.to_owned())}
                    </td>
                </tr>
            }
        })
        .collect_view();
    Some(view! {
        <details class="roofline-points">
            <summary>{format!("The {count} points as a table")}</summary>
            <div class="table-scroll">
                <table class="points" data-testid="roofline-points">
                    <thead>
                        <tr>
                            <th scope="col">"Job"</th>
                            <th scope="col">"What ran"</th>
                            <th scope="col" class="num">"FLOP/byte"</th>
                            <th scope="col" class="num">"GFLOP/s"</th>
                            <th scope="col">"Ceiling"</th>
                            <th scope="col" class="num">"% of peak"</th>
                        </tr>
                    </thead>
                    <tbody>{rows}</tbody>
                </table>
            </div>
        </details>
    })
}

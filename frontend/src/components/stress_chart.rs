use gpulab_shared::diag::StressSample;
use leptos::prelude::*;

use crate::format;

/// The plot's own coordinates; the SVG stretches them to its box, and the labels are HTML,
/// so text keeps its size however wide the chart is drawn.
const WIDTH: f64 = 300.0;
const HEIGHT: f64 = 100.0;
/// Room above and below, so the stroke of an extreme value is not cut in half.
const MARGIN: f64 = 3.0;

/// One figure a stress run samples every second.
struct Metric {
    /// The chart is `stress-chart-<id>`.
    id: &'static str,
    title: &'static str,
    value: fn(&StressSample) -> Option<f64>,
    show: fn(f64) -> String,
    /// Whether the scale starts at zero (a throughput) rather than at the lowest value.
    from_zero: bool,
}

static METRICS: [Metric; 4] = [
    Metric {
        id: "throughput",
        title: "Throughput",
        value: |s| Some(s.gflops),
        show: |v| format!("{} GFLOP/s", format::number(v)),
        from_zero: true,
    },
    Metric {
        id: "sm-clock",
        title: "SM clock",
        value: |s| s.sm_clock_mhz.map(f64::from),
        show: |v| format!("{v:.0} MHz"),
        from_zero: false,
    },
    Metric {
        id: "temperature",
        title: "Temperature",
        value: |s| s.temperature_celsius,
        show: format::celsius,
        from_zero: false,
    },
    Metric {
        id: "power",
        title: "Power",
        value: |s| s.power_watts,
        show: format::watts,
        from_zero: false,
    },
];

/// A stress run, second by second: throughput, SM clock, temperature and power, each as a
/// line over the run, drawn again as samples arrive; and every sample as a table, for screen
/// readers and for exact values. A figure the device does not report says so.
#[component]
pub fn StressCharts(
    /// The element ids are made from it.
    check: String,
    #[prop(into)] series: Signal<Vec<StressSample>>,
) -> impl IntoView {
    let count = Memo::new(move |_| series.with(Vec::len));
    let charts = METRICS
        .iter()
        .map(|metric| view! { <StressChart metric series /> })
        .collect_view();
    let rows = move || {
        series.with(|samples| {
            samples
                .iter()
                .map(|s| {
                    let or_dash = |v: Option<String>| v.unwrap_or_else(|| format::UNKNOWN.to_owned());
                    view! {
                        <tr>
                            <td class="num">{format!("{:.0}", s.t_s)}</td>
                            <td class="num">{format::number(s.gflops)}</td>
                            <td class="num">{or_dash(s.sm_clock_mhz.map(|v| v.to_string()))}</td>
                            <td class="num">{or_dash(s.temperature_celsius.map(format::celsius))}</td>
                            <td class="num">{or_dash(s.power_watts.map(format::watts))}</td>
                            <td>
                                {if s.throttle_reasons.is_empty() {
                                    "none".to_owned()
                                } else {
                                    s.throttle_reasons.join(", ")
                                }}
                            </td>
                        </tr>
                    }
                })
                .collect_view()
        })
    };
    view! {
        <div class="stress" data-testid=format!("stress-{check}")>
            <div class="stress-charts">{charts}</div>
            <details class="stress-samples">
                <summary>{move || format!("Samples as a table ({})", count.get())}</summary>
                <div class="table-scroll">
                    <table class="points" data-testid="stress-samples">
                        <thead>
                            <tr>
                                <th scope="col" class="num">"Second"</th>
                                <th scope="col" class="num">"GFLOP/s"</th>
                                <th scope="col" class="num">"SM clock (MHz)"</th>
                                <th scope="col" class="num">"Temperature"</th>
                                <th scope="col" class="num">"Power"</th>
                                <th scope="col">"Throttle reasons"</th>
                            </tr>
                        </thead>
                        <tbody>{rows}</tbody>
                    </table>
                </div>
            </details>
        </div>
    }
}

#[component]
fn StressChart(metric: &'static Metric, series: Signal<Vec<StressSample>>) -> impl IntoView {
    let plot = Memo::new(move |_| {
        series.with(|samples| {
            let points: Vec<(f64, f64)> = samples
                .iter()
                .filter_map(|s| {
                    (metric.value)(s)
                        .filter(|v| v.is_finite())
                        .map(|v| (s.t_s, v))
                })
                .collect();
            Plot::of(&points, metric.from_zero)
        })
    });
    let latest = Memo::new(move |_| {
        series.with(|samples| samples.iter().rev().find_map(metric.value).map(metric.show))
    });
    view! {
        <figure class="stress-chart" data-testid=format!("stress-chart-{}", metric.id)>
            <figcaption>
                <span class="name">{metric.title}</span>
                <span class="value">
                    {move || latest.get().unwrap_or_else(|| format::UNKNOWN.to_owned())}
                </span>
            </figcaption>
            {move || match plot.get() {
                None => view! {
                    <p class="help">
                        {if latest.with(Option::is_some) {
                            "Not enough samples yet."
                        } else {
                            "Not reported by this device."
                        }}
                    </p>
                }
                .into_any(),
                Some(plot) => {
                    let description = plot.describe(metric.title, metric.show);
                    view! {
                        <div class="stress-plot" role="img" aria-label=description>
                            <div class="stress-y" aria-hidden="true">
                                <span>{(metric.show)(plot.top)}</span>
                                <span>{(metric.show)(plot.bottom)}</span>
                            </div>
                            <svg
                                viewBox=format!("0 0 {WIDTH} {HEIGHT}")
                                preserveAspectRatio="none"
                                aria-hidden="true"
                            >
                                <polyline
                                    points=plot.points.clone()
                                    fill="none"
                                    vector-effect="non-scaling-stroke"
                                />
                            </svg>
                            <div class="stress-x" aria-hidden="true">
                                <span>{format!("{:.0} s", plot.start)}</span>
                                <span>{format!("{:.0} s", plot.end)}</span>
                            </div>
                        </div>
                    }
                    .into_any()
                }
            }}
        </figure>
    }
}

/// A line ready to draw: its points in the plot's coordinates and the scale it is drawn on.
#[derive(Debug, Clone, PartialEq)]
struct Plot {
    /// The `points` of the polyline: `"x,y x,y …"`.
    points: String,
    /// The values at the bottom and the top of the scale.
    bottom: f64,
    top: f64,
    /// The lowest and highest value drawn.
    low: f64,
    high: f64,
    /// The first and last second drawn.
    start: f64,
    end: f64,
}

impl Plot {
    /// `points` (seconds, value), oldest first, on a scale from zero or from the lowest
    /// value to the highest; `None` with fewer than two.
    fn of(points: &[(f64, f64)], from_zero: bool) -> Option<Plot> {
        if points.len() < 2 {
            return None;
        }
        let (start, end) = (points[0].0, points[points.len() - 1].0);
        let (low, high) = points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, v)| {
                (lo.min(v), hi.max(v))
            });
        let mut bottom = if from_zero { low.min(0.0) } else { low };
        let mut top = high;
        // A steady value runs across the middle of a scale of ±5 % (or ±1).
        if top - bottom < f64::EPSILON * top.abs().max(1.0) {
            let half = (top.abs() * 0.05).max(1.0);
            bottom = if from_zero {
                bottom.min(0.0)
            } else {
                top - half
            };
            top += half;
        }
        let duration = (end - start).max(f64::EPSILON);
        let points = points
            .iter()
            .map(|&(t, v)| {
                let x = (t - start) / duration * WIDTH;
                let y = HEIGHT - MARGIN - (v - bottom) / (top - bottom) * (HEIGHT - 2.0 * MARGIN);
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ");
        Some(Plot {
            points,
            bottom,
            top,
            low,
            high,
            start,
            end,
        })
    }

    /// The line in words, for a screen reader: "Throughput over 60 seconds of stress, 800 to
    /// 845 GFLOP/s".
    fn describe(&self, title: &str, show: fn(f64) -> String) -> String {
        let (low, high) = (show(self.low), show(self.high));
        let range = if low == high {
            format!("steady at {low}")
        } else {
            format!("{low} to {high}")
        };
        format!(
            "{title} over {} of stress, {range}",
            format::span(self.end - self.start)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xy(plot: &Plot) -> Vec<(f64, f64)> {
        plot.points
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn a_line_spans_the_run_and_its_values_within_the_view_box() {
        let plot = Plot::of(&[(1.0, 100.0), (2.0, 50.0), (3.0, 80.0)], true).unwrap();
        assert_eq!(
            (plot.bottom, plot.top),
            (0.0, 100.0),
            "a throughput is drawn from zero"
        );
        assert_eq!((plot.start, plot.end), (1.0, 3.0));
        let points = xy(&plot);
        assert_eq!(points[0], (0.0, MARGIN), "the highest value at the top");
        assert_eq!(points[2].0, WIDTH, "the last second at the right edge");
        assert_eq!(
            points[1].1,
            HEIGHT / 2.0,
            "half the highest value half way up"
        );
        let description = plot.describe("Throughput", |v| format!("{v} GFLOP/s"));
        assert_eq!(
            description,
            "Throughput over 2 seconds of stress, 50 GFLOP/s to 100 GFLOP/s"
        );
    }

    #[test]
    fn a_temperature_is_drawn_on_a_scale_that_fits_it() {
        let plot = Plot::of(&[(0.0, 60.0), (1.0, 70.0)], false).unwrap();
        assert_eq!((plot.bottom, plot.top), (60.0, 70.0));
        assert_eq!(xy(&plot), [(0.0, HEIGHT - MARGIN), (WIDTH, MARGIN)]);
    }

    #[test]
    fn a_steady_value_runs_across_the_middle_and_says_so() {
        let plot = Plot::of(&[(0.0, 1980.0), (1.0, 1980.0), (2.0, 1980.0)], false).unwrap();
        assert!(plot.bottom < 1980.0 && plot.top > 1980.0);
        for (_, y) in xy(&plot) {
            assert_eq!(y, HEIGHT / 2.0);
        }
        assert_eq!(
            plot.describe("SM clock", |v| format!("{v:.0} MHz")),
            "SM clock over 2 seconds of stress, steady at 1980 MHz"
        );
        // A throughput steady at zero (a stalled device) still has a scale.
        let stalled = Plot::of(&[(0.0, 0.0), (1.0, 0.0)], true).unwrap();
        assert!(stalled.top > stalled.bottom);
        assert!(xy(&stalled)
            .iter()
            .all(|&(_, y)| (0.0..=HEIGHT).contains(&y)));
    }

    #[test]
    fn one_sample_is_not_yet_a_line() {
        assert_eq!(Plot::of(&[(0.0, 5.0)], true), None);
        assert_eq!(Plot::of(&[], false), None);
    }
}

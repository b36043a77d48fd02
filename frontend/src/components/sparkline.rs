use leptos::prelude::*;

use crate::format;

/// One metric over time, ready to draw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Seconds since any fixed moment, and the value then; oldest first.
    pub points: Vec<(f64, f64)>,
    /// The bottom of the scale, when fixed; otherwise the scale fits the values.
    pub floor: Option<f64>,
    /// The top of the scale, when fixed.
    pub ceiling: Option<f64>,
    /// The least a scale that fits the values spans, so that noise does not look like a swing.
    pub min_span: f64,
}

/// The width and height the line is drawn in; the SVG stretches it to its box.
const WIDTH: f64 = 100.0;
const HEIGHT: f64 = 30.0;
/// Room above and below, so the stroke of an extreme value is not cut in half.
const MARGIN: f64 = 1.5;

/// A metric over the last minutes as a small line, with its range in words for screen
/// readers, such as "CPU utilisation over the last 5 minutes, 3 % to 97 %".
#[component]
pub fn Sparkline(
    /// The element is `sparkline-<metric>`.
    metric: &'static str,
    /// What is drawn, as a screen reader introduces it: "CPU utilisation".
    name: String,
    #[prop(into)] series: Signal<Series>,
    /// How one value reads.
    show: fn(f64) -> String,
) -> impl IntoView {
    let drawing = Memo::new(move |_| series.with(|s| Drawing::of(s, &name, show)));
    view! {
        <svg
            class="sparkline"
            data-testid=format!("sparkline-{metric}")
            viewBox=format!("0 0 {WIDTH} {HEIGHT}")
            preserveAspectRatio="none"
            role="img"
            aria-label=move || drawing.with(|d| d.description.clone())
        >
            <polyline
                points=move || drawing.with(|d| d.points.clone())
                fill="none"
                vector-effect="non-scaling-stroke"
            />
        </svg>
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Drawing {
    /// The `points` of the polyline: `"x,y x,y …"`.
    points: String,
    description: String,
}

impl Drawing {
    fn of(series: &Series, name: &str, show: fn(f64) -> String) -> Drawing {
        let points = &series.points;
        let (Some(&(start, _)), Some(&(end, _))) = (points.first(), points.last()) else {
            return Drawing::empty(name);
        };
        if points.len() < 2 {
            return Drawing::empty(name);
        }
        let (low, high) = points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, v)| {
                (lo.min(v), hi.max(v))
            });
        let mut bottom = series.floor.map_or(low, |f| f.min(low));
        let mut top = series.ceiling.map_or(high, |c| c.max(high));
        let min_span = series.min_span.max(f64::EPSILON * top.abs().max(1.0));
        if top - bottom < min_span {
            // Widen the scale about the values; a steady value runs across the middle.
            let middle = (top + bottom) / 2.0;
            bottom = middle - min_span / 2.0;
            top = middle + min_span / 2.0;
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
        let (low, high) = (show(low), show(high));
        let range = if low == high {
            format!("steady at {low}")
        } else {
            format!("{low} to {high}")
        };
        Drawing {
            points,
            description: format!(
                "{name} over the last {}, {range}",
                format::span(end - start)
            ),
        }
    }

    fn empty(name: &str) -> Drawing {
        Drawing {
            points: String::new(),
            description: format!("{name}: not enough samples yet"),
        }
    }
}

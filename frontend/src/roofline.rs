//! The arithmetic of the roofline page, kept apart from the drawing so that it is tested on
//! the host: log₁₀ scales that hold values many decades apart, where the bandwidth slope and
//! each compute ceiling lie, how a peak and a share of it read, and the matmul ladder.

use gpulab_shared::peaks::{FractionOfPeak, PeakBasis};
use gpulab_shared::{Job, JobStatus};

use crate::format;

/// At most this many labelled decades along an axis; more are thinned to every second,
/// third… decade.
const MAX_TICKS: usize = 8;
/// Ceiling labels nearer than this share of the plot's height are merged into one, so that
/// fp16 and bf16 (the same peak on most GPUs) do not print over each other.
const LABEL_GAP: f64 = 0.05;

/// A log₁₀ axis from 10^`low` to 10^`high`, whole decades.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogScale {
    pub low: i32,
    pub high: i32,
}

impl LogScale {
    /// The whole decades that hold every positive finite value of `values`; one value (or
    /// values within one decade that is a power of ten) gets a decade either side. `None`
    /// when no value is positive and finite.
    pub fn covering(values: impl IntoIterator<Item = f64>) -> Option<LogScale> {
        let (min, max) = values
            .into_iter()
            .filter(|v| v.is_finite() && *v > 0.0)
            .fold(None, |range: Option<(f64, f64)>, v| match range {
                None => Some((v, v)),
                Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
            })?;
        let mut low = min.log10().floor() as i32;
        let mut high = max.log10().ceil() as i32;
        if high <= low {
            low -= 1;
            high += 1;
        }
        Some(LogScale { low, high })
    }

    /// Where `value` lies from the start (0) to the end (1) of the axis, clamped to it;
    /// zero, negative and non-finite values lie at the start.
    pub fn share(&self, value: f64) -> f64 {
        if !(value.is_finite() && value > 0.0) {
            return 0.0;
        }
        let span = f64::from((self.high - self.low).max(1));
        ((value.log10() - f64::from(self.low)) / span).clamp(0.0, 1.0)
    }

    /// The value at the start and at the end of the axis.
    pub fn bounds(&self) -> (f64, f64) {
        (10f64.powi(self.low), 10f64.powi(self.high))
    }

    /// The decades labelled along the axis (as exponents): every one, or every second,
    /// third… when there would be more than [`MAX_TICKS`], always including both ends'
    /// nearest multiple of the stride.
    pub fn decades(&self) -> Vec<i32> {
        let span = (self.high - self.low).max(0) as usize;
        let stride = span / MAX_TICKS + 1;
        (self.low..=self.high)
            .filter(|exp| ((exp - self.low) as usize).is_multiple_of(stride))
            .collect()
    }
}

/// The label of the decade 10^`exp`: plain from 0.001 to 1000 (`"0.01"`, `"100"`), with
/// the exponent written out beyond (`"10⁻⁵"`, `"10⁶"`).
pub fn decade_label(exp: i32) -> String {
    match exp {
        -3..=-1 => format!("{:.*}", (-exp) as usize, 10f64.powi(exp)),
        0..=3 => format!("{}", 10i32.pow(exp as u32)),
        _ => format!("10{}", superscript(exp)),
    }
}

fn superscript(n: i32) -> String {
    n.to_string()
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            '0' => '⁰',
            '1' => '¹',
            '2' => '²',
            '3' => '³',
            '4' => '⁴',
            '5' => '⁵',
            '6' => '⁶',
            '7' => '⁷',
            '8' => '⁸',
            _ => '⁹',
        })
        .collect()
}

/// A straight piece of the roofline, in data units: (FLOP/byte, GFLOP/s) at either end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    pub from: (f64, f64),
    pub to: (f64, f64),
}

/// One compute ceiling as drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct CeilingLine {
    /// The peak's name, such as `fp32`.
    pub name: String,
    /// GFLOP/s (GOP/s for int8).
    pub value: f64,
    /// The arithmetic intensity where the bandwidth slope meets it; `None` without a
    /// bandwidth.
    pub ridge: Option<f64>,
    pub segment: Segment,
}

/// The roofline laid out: both axes, the bandwidth slope and the ceilings.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Arithmetic intensity, FLOP/byte.
    pub x: LogScale,
    /// GFLOP/s.
    pub y: LogScale,
    /// From the left edge up to the highest ceiling's ridge (to the right edge without a
    /// ceiling); `None` without a bandwidth.
    pub slope: Option<Segment>,
    /// Highest first, each from its ridge (the left edge without a bandwidth) to the right
    /// edge.
    pub ceilings: Vec<CeilingLine>,
}

/// Lays out a roofline of `bandwidth` GB/s (if known) under `ceilings` (name, GFLOP/s),
/// with `points` (FLOP/byte, GFLOP/s) to show: the x axis holds every point and every ridge
/// point with a decade to spare either side of the ridges, the y axis every point, every
/// ceiling and where the slope enters the plot. `None` when there is nothing to draw.
pub fn layout(
    bandwidth: Option<f64>,
    ceilings: &[(String, f64)],
    points: &[(f64, f64)],
) -> Option<Layout> {
    let bandwidth = bandwidth.filter(|b| b.is_finite() && *b > 0.0);
    let mut ceilings: Vec<(String, f64)> = ceilings
        .iter()
        .filter(|(_, v)| v.is_finite() && *v > 0.0)
        .cloned()
        .collect();
    ceilings.sort_by(|a, b| b.1.total_cmp(&a.1));
    let ridges: Vec<f64> = match bandwidth {
        Some(bw) => ceilings.iter().map(|(_, peak)| peak / bw).collect(),
        None => Vec::new(),
    };
    let x_values = points
        .iter()
        .map(|p| p.0)
        .chain(ridges.iter().flat_map(|r| [r / 10.0, r * 10.0]));
    let x = match LogScale::covering(x_values) {
        Some(x) => x,
        // A bandwidth alone: a slope over a few decades around 1 FLOP/byte.
        None if bandwidth.is_some() => LogScale { low: -2, high: 2 },
        None if !ceilings.is_empty() => LogScale { low: -1, high: 3 },
        None => return None,
    };
    let (x_low, x_high) = x.bounds();
    let top = ceilings.first().map(|c| c.1);
    let slope_values = bandwidth
        .map(|bw| {
            let end = top.map_or(bw * x_high, |peak| peak.min(bw * x_high));
            [bw * x_low, end]
        })
        .into_iter()
        .flatten();
    let y_values = points
        .iter()
        .map(|p| p.1)
        .chain(ceilings.iter().map(|c| c.1))
        .chain(slope_values);
    let y = LogScale::covering(y_values)?;
    let slope = bandwidth.map(|bw| {
        let ridge = top.map_or(x_high, |peak| (peak / bw).min(x_high));
        Segment {
            from: (x_low, bw * x_low),
            to: (ridge, bw * ridge),
        }
    });
    let ceilings = ceilings
        .into_iter()
        .map(|(name, value)| {
            let ridge = bandwidth.map(|bw| value / bw);
            let start = ridge.map_or(x_low, |r| r.clamp(x_low, x_high));
            CeilingLine {
                name,
                value,
                ridge,
                segment: Segment {
                    from: (start, value),
                    to: (x_high, value),
                },
            }
        })
        .collect();
    Some(Layout {
        x,
        y,
        slope,
        ceilings,
    })
}

/// The ceiling labels to print: the names of the ceilings (highest first) whose heights on
/// the `y` scale are within [`LABEL_GAP`] of the label above, merged, each with the
/// value of its highest member.
pub fn label_groups(y: &LogScale, ceilings: &[CeilingLine]) -> Vec<(Vec<String>, f64)> {
    let mut groups: Vec<(Vec<String>, f64)> = Vec::new();
    for ceiling in ceilings {
        match groups.last_mut() {
            Some((names, value)) if y.share(*value) - y.share(ceiling.value) < LABEL_GAP => {
                names.push(ceiling.name.clone());
            }
            _ => groups.push((vec![ceiling.name.clone()], ceiling.value)),
        }
    }
    groups
}

/// A rate in the unit a peak or result uses (`GB/s`, `GFLOP/s`, `GOP/s`), moved to T or P
/// when it is that large: `"67.0 TFLOP/s"`, `"4.80 TB/s"`, `"845 GFLOP/s"`.
pub fn rate(value: f64, unit: &str) -> String {
    let Some(rest) = unit.strip_prefix('G') else {
        return format!("{} {unit}", format::number(value));
    };
    let (scaled, prefix) = if value.abs() >= 1e6 {
        (value / 1e6, "P")
    } else if value.abs() >= 1e3 {
        (value / 1e3, "T")
    } else {
        (value, "G")
    };
    format!("{} {prefix}{rest}", format::number(scaled))
}

/// How a peak was obtained, as the page says it.
pub fn basis_label(basis: PeakBasis) -> &'static str {
    match basis {
        PeakBasis::Computed => "computed",
        PeakBasis::Datasheet => "datasheet",
        PeakBasis::Measured => "measured",
    }
}

/// A share of a peak as a percentage: whole above 10 % (`"63 %"`), three digits below
/// (`"4.20 %"`, `"0.123 %"`).
pub fn share(fraction: f64) -> String {
    let percent = fraction * 100.0;
    if percent.abs() >= 10.0 {
        format!("{percent:.0} %")
    } else {
        format!("{} %", format::number(percent))
    }
}

/// What a peak's name means on the page: `"fp32"` stays, the bandwidth reads as words.
pub fn peak_title(name: &str) -> String {
    match name {
        gpulab_shared::peaks::names::MEMORY_BANDWIDTH => "memory bandwidth".to_owned(),
        gpulab_shared::peaks::names::PCIE => "PCIe".to_owned(),
        other => other.to_owned(),
    }
}

/// A job's share of its peak in one line: `"63 % of fp32 peak (67.0 TFLOP/s, computed)"`.
pub fn fraction_line(fraction: &FractionOfPeak) -> String {
    format!(
        "{} of {} peak ({}, {})",
        share(fraction.fraction),
        peak_title(&fraction.peak),
        rate(fraction.peak_value, &fraction.unit),
        basis_label(fraction.basis)
    )
}

/// The steps of the matmul ladder, slowest first: the lesson of the course the tiled kernel
/// comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rung {
    Naive,
    Tiled,
    RegisterTiled,
    Cublas,
    TensorCores,
}

impl Rung {
    pub const ALL: [Rung; 5] = [
        Rung::Naive,
        Rung::Tiled,
        Rung::RegisterTiled,
        Rung::Cublas,
        Rung::TensorCores,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Rung::Naive => "naive",
            Rung::Tiled => "tiled (shared memory)",
            Rung::RegisterTiled => "register-tiled",
            Rung::Cublas => "cuBLAS SGEMM (fp32)",
            Rung::TensorCores => "tensor cores (cuBLAS)",
        }
    }

    /// The matmul parameters that put a job on this rung.
    pub fn how(self) -> &'static str {
        match self {
            Rung::Naive => "variant naive",
            Rung::Tiled => "variant tiled",
            Rung::RegisterTiled => "variant register_tiled",
            Rung::Cublas => "variant cublas, dtype fp32",
            Rung::TensorCores => "variant cublas, dtype tf32, bf16, fp16 or fp8_e4m3",
        }
    }
}

/// The rungs a device can climb: those whose `variant` the catalog's matmul offers, and the
/// tensor cores where the device runs a tensor-core `dtype` (tf32, fp16, bf16, fp8, int8).
pub fn offered_rungs(variants: &[String], dtypes: &[String]) -> Vec<Rung> {
    let has = |v: &str| variants.iter().any(|x| x == v);
    Rung::ALL
        .into_iter()
        .filter(|rung| match rung {
            Rung::Naive => has("naive"),
            Rung::Tiled => has("tiled"),
            Rung::RegisterTiled => has("register_tiled"),
            Rung::Cublas => has("cublas"),
            Rung::TensorCores => {
                has("cublas")
                    && dtypes
                        .iter()
                        .any(|d| !matches!(d.as_str(), "fp32" | "fp64"))
            }
        })
        .collect()
}

/// Which rung a matmul job run on a GPU is on, from its `variant` and `dtype`: cuBLAS in
/// fp32 (or without a `dtype`) is SIMT SGEMM, in any other type the tensor cores (fp64 is
/// neither, and left out). `None` for another kernel or an unknown variant.
pub fn rung_of(job: &Job) -> Option<Rung> {
    if job.kernel != "matmul" {
        return None;
    }
    let param = |name: &str| job.params.get(name).and_then(|v| v.as_str());
    match (param("variant").unwrap_or("cublas"), param("dtype")) {
        ("naive", _) => Some(Rung::Naive),
        ("tiled", _) => Some(Rung::Tiled),
        ("register_tiled", _) => Some(Rung::RegisterTiled),
        ("cublas", None | Some("fp32")) => Some(Rung::Cublas),
        ("cublas", Some("fp64")) => None,
        ("cublas", Some(_)) => Some(Rung::TensorCores),
        _ => None,
    }
}

/// The side of a square matmul (`m = n = k`); `None` for another shape.
pub fn square_side(job: &Job) -> Option<u64> {
    let dim = |name: &str| job.params.get(name).and_then(|v| v.as_u64());
    let n = dim("n")?;
    (dim("m")? == n && dim("k")? == n).then_some(n)
}

/// One rung of the ladder: the best finished job on it (highest share of its peak).
#[derive(Debug, Clone, PartialEq)]
pub struct LadderStep {
    pub rung: Rung,
    pub job: Option<Job>,
}

/// The ladder for square matmuls of side `n` from `jobs`: each of `rungs`, with its best
/// succeeded job that has a share of peak.
pub fn ladder(jobs: &[Job], n: u64, rungs: &[Rung]) -> Vec<LadderStep> {
    rungs
        .iter()
        .copied()
        .map(|rung| LadderStep {
            rung,
            job: jobs
                .iter()
                .filter(|j| j.status == JobStatus::Succeeded)
                .filter(|j| rung_of(j) == Some(rung) && square_side(j) == Some(n))
                .filter_map(|j| Some((j, fraction_of(j)?)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(j, _)| j.clone()),
        })
        .collect()
}

/// The sides `n` of the square matmuls in `jobs` that reach a rung, the one with the most
/// rungs filled first (the larger on a tie).
pub fn ladder_sizes(jobs: &[Job]) -> Vec<u64> {
    let mut sizes: Vec<u64> = jobs
        .iter()
        .filter(|j| j.status == JobStatus::Succeeded && rung_of(j).is_some())
        .filter(|j| fraction_of(j).is_some())
        .filter_map(square_side)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    let filled = |n: u64| {
        ladder(jobs, n, &Rung::ALL)
            .iter()
            .filter(|s| s.job.is_some())
            .count()
    };
    sizes.sort_by_key(|&n| std::cmp::Reverse((filled(n), n)));
    sizes
}

fn fraction_of(job: &Job) -> Option<f64> {
    job.result
        .as_ref()?
        .fraction_of_peak
        .as_ref()
        .map(|f| f.fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scale_covers_whole_decades_and_widens_a_single_value() {
        assert_eq!(
            LogScale::covering([0.083, 170.0]),
            Some(LogScale { low: -2, high: 3 })
        );
        // One value inside a decade: that decade.
        assert_eq!(
            LogScale::covering([5.0]),
            Some(LogScale { low: 0, high: 1 })
        );
        // One power of ten: a decade either side, so it is not drawn on an edge of nothing.
        assert_eq!(
            LogScale::covering([100.0]),
            Some(LogScale { low: 1, high: 3 })
        );
        // Zero, negatives and NaN cannot be drawn on a log axis.
        assert_eq!(
            LogScale::covering([0.0, -1.0, f64::NAN, f64::INFINITY]),
            None
        );
        assert_eq!(
            LogScale::covering([0.0, 2.0]),
            Some(LogScale { low: 0, high: 1 })
        );
    }

    #[test]
    fn shares_are_logarithmic_and_clamped() {
        let scale = LogScale { low: -2, high: 3 };
        assert_eq!(scale.share(0.01), 0.0);
        assert_eq!(scale.share(1000.0), 1.0);
        assert!((scale.share(1.0) - 0.4).abs() < 1e-12);
        assert!((scale.share(10f64.sqrt()) - 0.5).abs() < 1e-12);
        assert_eq!(scale.share(1e9), 1.0);
        assert_eq!(scale.share(0.0), 0.0);
        assert_eq!(scale.share(-3.0), 0.0);
    }

    #[test]
    fn many_decades_are_thinned_to_at_most_eight_labels() {
        let few = LogScale { low: -1, high: 3 };
        assert_eq!(few.decades(), vec![-1, 0, 1, 2, 3]);
        // Twenty decades: every third.
        let many = LogScale { low: -6, high: 14 };
        let decades = many.decades();
        assert!(decades.len() <= MAX_TICKS, "{decades:?}");
        assert_eq!(decades.first(), Some(&-6));
        assert!(decades.windows(2).all(|w| w[1] - w[0] == 3), "{decades:?}");
        assert_eq!(LogScale { low: 0, high: 8 }.decades().len(), 5);
    }

    #[test]
    fn decades_read_plainly_near_one_and_as_powers_beyond() {
        assert_eq!(decade_label(-3), "0.001");
        assert_eq!(decade_label(-1), "0.1");
        assert_eq!(decade_label(0), "1");
        assert_eq!(decade_label(3), "1000");
        assert_eq!(decade_label(4), "10⁴");
        assert_eq!(decade_label(-12), "10⁻¹²");
    }

    #[test]
    fn the_slope_meets_each_ceiling_at_its_ridge_point() {
        // An H200-like device: 4,800 GB/s, fp32 67 TFLOP/s, bf16 990 TFLOP/s.
        let ceilings = [
            ("fp32".to_owned(), 67_000.0),
            ("bf16".to_owned(), 990_000.0),
        ];
        let layout = layout(Some(4800.0), &ceilings, &[(0.083, 350.0)]).unwrap();
        // Highest first.
        let names: Vec<&str> = layout.ceilings.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["bf16", "fp32"]);
        let bf16 = &layout.ceilings[0];
        let ridge = bf16.ridge.unwrap();
        assert!((ridge - 206.25).abs() < 1e-9);
        assert_eq!(bf16.segment.from, (ridge, 990_000.0));
        let (x_low, x_high) = layout.x.bounds();
        assert_eq!(bf16.segment.to, (x_high, 990_000.0));
        // The x axis spares a decade either side of the ridges (13.96 and 206.25) and
        // holds the point.
        assert_eq!(layout.x, LogScale { low: -2, high: 4 });
        let slope = layout.slope.unwrap();
        assert_eq!(slope.from, (x_low, 4800.0 * x_low));
        assert!((slope.to.0 - ridge).abs() < 1e-9 && (slope.to.1 - 990_000.0).abs() < 1e-6);
        // The y axis holds the slope's start (48 GFLOP/s) and the highest ceiling.
        assert_eq!(layout.y, LogScale { low: 1, high: 6 });
    }

    #[test]
    fn without_a_bandwidth_the_ceilings_span_the_plot_and_points_still_show() {
        let ceilings = [("fp32".to_owned(), 100.0)];
        let layout = layout(None, &ceilings, &[(1.0, 2.0), (170.0, 80.0)]).unwrap();
        assert!(layout.slope.is_none());
        let (x_low, x_high) = layout.x.bounds();
        assert_eq!(layout.ceilings[0].segment.from, (x_low, 100.0));
        assert_eq!(layout.ceilings[0].segment.to, (x_high, 100.0));
        assert_eq!(layout.ceilings[0].ridge, None);
    }

    #[test]
    fn points_alone_or_a_bandwidth_alone_still_lay_out() {
        let alone = layout(None, &[], &[(0.083, 1.5)]).unwrap();
        assert_eq!(alone.x, LogScale { low: -2, high: -1 });
        assert_eq!(alone.y, LogScale { low: 0, high: 1 });
        let bandwidth = layout(Some(20.0), &[], &[]).unwrap();
        let slope = bandwidth.slope.unwrap();
        assert_eq!(slope.to.0, bandwidth.x.bounds().1);
        assert_eq!(layout(None, &[], &[]), None);
        // A ceiling of 0 GFLOP/s is not drawn.
        assert_eq!(layout(None, &[("fp8_e4m3".to_owned(), 0.0)], &[]), None);
    }

    #[test]
    fn values_fifteen_decades_apart_stay_inside_the_plot() {
        let layout = layout(Some(1e-3), &[("fp64".to_owned(), 1e6)], &[(1e-6, 1e-9)]).unwrap();
        for share in [
            layout.x.share(1e-6),
            layout.y.share(1e-9),
            layout.y.share(1e6),
        ] {
            assert!((0.0..=1.0).contains(&share));
        }
        assert_eq!(layout.y.share(1e-9), 0.0);
        assert_eq!(layout.y.share(1e6), 1.0);
        assert!(layout.y.decades().len() <= MAX_TICKS);
    }

    #[test]
    fn equal_or_close_ceilings_share_one_label() {
        let ceilings = [
            ("fp16".to_owned(), 990_000.0),
            ("bf16".to_owned(), 990_000.0),
            ("tf32".to_owned(), 495_000.0),
            ("fp32".to_owned(), 67_000.0),
        ];
        let layout = layout(Some(4800.0), &ceilings, &[]).unwrap();
        let groups = label_groups(&layout.y, &layout.ceilings);
        let names: Vec<Vec<String>> = groups.into_iter().map(|g| g.0).collect();
        assert_eq!(
            names,
            vec![
                vec!["fp16".to_owned(), "bf16".to_owned()],
                vec!["tf32".to_owned()],
                vec!["fp32".to_owned()]
            ]
        );
    }

    #[test]
    fn rates_move_to_the_larger_prefix() {
        assert_eq!(rate(67_000.0, "GFLOP/s"), "67.0 TFLOP/s");
        assert_eq!(rate(4800.0, "GB/s"), "4.80 TB/s");
        assert_eq!(rate(845.0, "GFLOP/s"), "845 GFLOP/s");
        assert_eq!(rate(1_980_000.0, "GOP/s"), "1.98 POP/s");
        assert_eq!(rate(12.5, "samples/s"), "12.5 samples/s");
    }

    #[test]
    fn a_fraction_reads_with_its_peak_and_basis() {
        let fraction = FractionOfPeak {
            fraction: 0.632,
            peak: "fp32".to_owned(),
            peak_value: 67_000.0,
            unit: "GFLOP/s".to_owned(),
            basis: PeakBasis::Computed,
            convention: "2 × m × n × k FLOP".to_owned(),
        };
        assert_eq!(
            fraction_line(&fraction),
            "63 % of fp32 peak (67.0 TFLOP/s, computed)"
        );
        assert_eq!(share(0.042), "4.20 %");
        assert_eq!(share(0.00123), "0.123 %");
        let bandwidth = FractionOfPeak {
            peak: "memory_bandwidth".to_owned(),
            basis: PeakBasis::Measured,
            peak_value: 20.0,
            unit: "GB/s".to_owned(),
            ..fraction
        };
        assert_eq!(
            fraction_line(&bandwidth),
            "63 % of memory bandwidth peak (20.0 GB/s, measured)"
        );
    }

    fn matmul(id: i64, params: serde_json::Value, fraction: Option<f64>) -> Job {
        let mut job: Job = serde_json::from_value(serde_json::json!({
            "id": id, "kernel": "matmul", "device": "cuda:0", "params": params,
            "repetitions": 3, "timeout_s": 60.0, "status": "succeeded",
            "created_at": "2026-12-03T14:00:00Z", "started_at": null, "finished_at": null,
            "progress": null, "error": null, "result": null,
        }))
        .unwrap();
        if let Some(fraction) = fraction {
            job.result = Some(
                serde_json::from_value(serde_json::json!({
                    "timing": {"min_ms": 1.0, "median_ms": 1.0, "max_ms": 1.0, "repetitions": 3},
                    "throughput": {"value": 1.0, "unit": "GFLOP/s"},
                    "verification": {"passed": true, "method": "x", "max_abs_error": 0.0,
                                     "max_rel_error": 0.0, "tolerance": 0.0},
                    "output": {}, "has_artifact": false,
                    "fraction_of_peak": {"fraction": fraction, "peak": "fp32",
                        "peak_value": 1.0, "unit": "GFLOP/s", "basis": "computed",
                        "convention": "x"},
                    "roofline": null,
                }))
                .unwrap(),
            );
        }
        job
    }

    fn square(n: u64, variant: &str, dtype: Option<&str>) -> serde_json::Value {
        let mut params = serde_json::json!({"m": n, "n": n, "k": n, "variant": variant});
        if let Some(dtype) = dtype {
            params["dtype"] = dtype.into();
        }
        params
    }

    #[test]
    fn the_ladder_puts_each_job_on_its_rung_and_keeps_the_best() {
        let jobs = vec![
            matmul(1, square(1024, "tiled", Some("fp32")), Some(0.05)),
            matmul(2, square(1024, "tiled", Some("fp32")), Some(0.08)),
            matmul(3, square(1024, "cublas", None), Some(0.7)),
            matmul(4, square(1024, "cublas", Some("bf16")), Some(0.6)),
            matmul(5, square(1024, "register_tiled", Some("fp32")), Some(0.3)),
            // Another size, another shape, no result, fp64: not on this ladder.
            matmul(6, square(2048, "naive", Some("fp32")), Some(0.01)),
            matmul(
                7,
                serde_json::json!({"m": 1024, "n": 1024, "k": 512, "variant": "naive"}),
                Some(0.01),
            ),
            matmul(8, square(1024, "naive", Some("fp32")), None),
            matmul(9, square(1024, "cublas", Some("fp64")), Some(0.9)),
        ];
        let steps = ladder(&jobs, 1024, &Rung::ALL);
        let ids: Vec<(Rung, Option<i64>)> = steps
            .iter()
            .map(|s| (s.rung, s.job.as_ref().map(|j| j.id)))
            .collect();
        assert_eq!(
            ids,
            vec![
                (Rung::Naive, None),
                (Rung::Tiled, Some(2)),
                (Rung::RegisterTiled, Some(5)),
                (Rung::Cublas, Some(3)),
                (Rung::TensorCores, Some(4)),
            ]
        );
        // 1024 fills four rungs, 2048 one.
        assert_eq!(ladder_sizes(&jobs), vec![1024, 2048]);
        assert!(ladder_sizes(&[]).is_empty());
        // Only the rungs asked for.
        let steps = ladder(&jobs, 1024, &[Rung::Tiled, Rung::Cublas]);
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[1].job.as_ref().map(|j| j.id), Some(3));
    }

    #[test]
    fn only_the_rungs_the_catalog_and_device_offer_are_shown() {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let variants = strings(&["cublas", "tiled", "register_tiled"]);
        // An H100: no naive kernel in the catalog, tensor cores in the device's dtypes.
        assert_eq!(
            offered_rungs(&variants, &strings(&["fp64", "fp32", "tf32", "bf16"])),
            vec![
                Rung::Tiled,
                Rung::RegisterTiled,
                Rung::Cublas,
                Rung::TensorCores
            ]
        );
        // A Maxwell GPU runs fp64 and fp32 only: no tensor-core rung.
        assert_eq!(
            offered_rungs(&variants, &strings(&["fp64", "fp32"])),
            vec![Rung::Tiled, Rung::RegisterTiled, Rung::Cublas]
        );
        assert_eq!(
            offered_rungs(&strings(&["naive", "cublas"]), &strings(&["fp16"])),
            vec![Rung::Naive, Rung::Cublas, Rung::TensorCores]
        );
    }
}

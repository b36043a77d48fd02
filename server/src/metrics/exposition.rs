//! A writer of the Prometheus text exposition format, version 0.0.4: `# HELP` and `# TYPE`
//! once per family, then its samples, with label values and help text escaped.

use std::collections::HashSet;
use std::fmt::Write;

/// The metric types gpulab exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// A sample value. Integers are written exactly, however large.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Float(f64),
    Unsigned(u64),
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Unsigned(v)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Unsigned(v.into())
    }
}

/// Label names and values of one sample, in the order they are written.
pub type Labels<'a> = [(&'a str, &'a str)];

/// The whole exposition being written.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
    families: HashSet<String>,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family. Its `# HELP` and `# TYPE` lines are written with its first sample,
    /// so a family without samples leaves no trace. Each name may be started once.
    pub fn family<'a>(&'a mut self, name: &'a str, kind: MetricType, help: &'a str) -> Family<'a> {
        debug_assert!(is_metric_name(name), "bad metric name {name:?}");
        let first = self.families.insert(name.to_owned());
        debug_assert!(first, "the family {name} was started twice");
        Family {
            out: self,
            name,
            kind,
            help,
            started: false,
        }
    }

    /// The text to serve.
    pub fn finish(self) -> String {
        self.text
    }
}

/// One metric family being written; see [`Exposition::family`].
pub struct Family<'a> {
    out: &'a mut Exposition,
    name: &'a str,
    kind: MetricType,
    help: &'a str,
    started: bool,
}

impl Family<'_> {
    /// One sample of a counter or gauge.
    pub fn sample(&mut self, labels: &Labels<'_>, value: impl Into<Value>) {
        debug_assert_ne!(self.kind, MetricType::Histogram, "use `histogram`");
        self.header();
        let name = self.name;
        self.line(name, "", labels, None, value.into());
    }

    /// One histogram: `at_most[i]` observations were at most `bounds[i]`; `count` in all
    /// (the `+Inf` bucket), adding up to `sum`.
    pub fn histogram(
        &mut self,
        labels: &Labels<'_>,
        bounds: &[f64],
        at_most: &[u64],
        count: u64,
        sum: f64,
    ) {
        debug_assert_eq!(self.kind, MetricType::Histogram);
        debug_assert_eq!(bounds.len(), at_most.len());
        self.header();
        let name = self.name;
        for (bound, n) in bounds.iter().zip(at_most) {
            self.line(name, "_bucket", labels, Some(*bound), Value::Unsigned(*n));
        }
        self.line(
            name,
            "_bucket",
            labels,
            Some(f64::INFINITY),
            Value::Unsigned(count),
        );
        self.line(name, "_sum", labels, None, Value::Float(sum));
        self.line(name, "_count", labels, None, Value::Unsigned(count));
    }

    fn header(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        let text = &mut self.out.text;
        let _ = writeln!(text, "# HELP {} {}", self.name, escape_help(self.help));
        let _ = writeln!(text, "# TYPE {} {}", self.name, self.kind.as_str());
    }

    fn line(&mut self, name: &str, suffix: &str, labels: &Labels<'_>, le: Option<f64>, v: Value) {
        let text = &mut self.out.text;
        text.push_str(name);
        text.push_str(suffix);
        let le = le.map(format_float);
        let le = le.as_deref().map(|le| ("le", le));
        let mut all = labels.iter().copied().chain(le).peekable();
        if all.peek().is_some() {
            text.push('{');
            for (i, (label, value)) in all.enumerate() {
                debug_assert!(is_label_name(label), "bad label name {label:?}");
                if i > 0 {
                    text.push(',');
                }
                let _ = write!(text, "{label}=\"{}\"", escape_label_value(value));
            }
            text.push('}');
        }
        text.push(' ');
        match v {
            Value::Float(v) => text.push_str(&format_float(v)),
            Value::Unsigned(v) => {
                let _ = write!(text, "{v}");
            }
        }
        text.push('\n');
    }
}

/// A float as the format spells it: `NaN`, `+Inf`, `-Inf`, otherwise the shortest decimal
/// that reads back as the same number.
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// A label value between double quotes: backslash, double quote and line feed escaped.
pub fn escape_label_value(s: &str) -> String {
    escape(s, true)
}

/// Help text: backslash and line feed escaped (a double quote stays as it is).
pub fn escape_help(s: &str) -> String {
    escape(s, false)
}

fn escape(s: &str, quote: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(escape_label_value("plain"), "plain");
        assert_eq!(
            escape_label_value("C:\\gpu \"A100\"\nnext"),
            "C:\\\\gpu \\\"A100\\\"\\nnext"
        );
        let mut exp = Exposition::new();
        exp.family("x", MetricType::Gauge, "X.")
            .sample(&[("name", "a\"b\\c\nd")], 1u64);
        assert!(exp.finish().contains("x{name=\"a\\\"b\\\\c\\nd\"} 1\n"));
    }

    #[test]
    fn help_escapes_backslash_and_newline_but_not_quotes() {
        assert_eq!(
            escape_help("a \"quoted\" \\ path\nline"),
            "a \"quoted\" \\\\ path\\nline"
        );
    }

    #[test]
    fn floats_are_written_as_prometheus_reads_them() {
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_float(0.0), "0");
        assert_eq!(format_float(-0.5), "-0.5");
        assert_eq!(format_float(1.0), "1");
        assert_eq!(format_float(0.1), "0.1");
        assert_eq!(format_float(1e-9), "0.000000001");
        assert_eq!(format_float(1.5e9), "1500000000");
        // Every finite value reads back as itself.
        for v in [0.1 + 0.2, 1.0 / 3.0, 6.02e23, 5e-324, f64::MAX] {
            assert_eq!(format_float(v).parse::<f64>().unwrap(), v);
        }
        let mut exp = Exposition::new();
        exp.family("big", MetricType::Gauge, "Exact integers.")
            .sample(&[], u64::MAX);
        assert_eq!(
            exp.finish(),
            "# HELP big Exact integers.\n# TYPE big gauge\nbig 18446744073709551615\n"
        );
    }

    #[test]
    fn a_family_has_one_header_and_all_its_series() {
        let mut exp = Exposition::new();
        let mut temp = exp.family(
            "gpulab_gpu_temperature_celsius",
            MetricType::Gauge,
            "GPU temperature.\nFrom NVML.",
        );
        temp.sample(&[("device", "cuda:0"), ("uuid", "GPU-a")], 41.5);
        temp.sample(&[("device", "cuda:1"), ("uuid", "GPU-b")], f64::NAN);
        exp.family("gpulab_empty", MetricType::Counter, "Never written.");
        exp.family("gpulab_jobs_total", MetricType::Counter, "Jobs.")
            .sample(&[], 3u32);
        assert_eq!(
            exp.finish(),
            "# HELP gpulab_gpu_temperature_celsius GPU temperature.\\nFrom NVML.\n\
             # TYPE gpulab_gpu_temperature_celsius gauge\n\
             gpulab_gpu_temperature_celsius{device=\"cuda:0\",uuid=\"GPU-a\"} 41.5\n\
             gpulab_gpu_temperature_celsius{device=\"cuda:1\",uuid=\"GPU-b\"} NaN\n\
             # HELP gpulab_jobs_total Jobs.\n\
             # TYPE gpulab_jobs_total counter\n\
             gpulab_jobs_total 3\n"
        );
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_then_sum_and_count() {
        let mut exp = Exposition::new();
        exp.family("d_seconds", MetricType::Histogram, "D.")
            .histogram(&[("k", "v")], &[0.005, 1.0], &[1, 2], 3, 7.25);
        assert_eq!(
            exp.finish(),
            "# HELP d_seconds D.\n# TYPE d_seconds histogram\n\
             d_seconds_bucket{k=\"v\",le=\"0.005\"} 1\n\
             d_seconds_bucket{k=\"v\",le=\"1\"} 2\n\
             d_seconds_bucket{k=\"v\",le=\"+Inf\"} 3\n\
             d_seconds_sum{k=\"v\"} 7.25\n\
             d_seconds_count{k=\"v\"} 3\n"
        );
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "started twice")]
    fn a_family_cannot_be_started_twice() {
        let mut exp = Exposition::new();
        exp.family("x", MetricType::Gauge, "X.");
        exp.family("x", MetricType::Gauge, "X.");
    }

    #[test]
    fn names_follow_the_data_model() {
        assert!(is_metric_name("gpulab_gpu_power_watts"));
        assert!(is_metric_name("a:b_c"));
        assert!(!is_metric_name("1abc"));
        assert!(!is_metric_name("a-b"));
        assert!(!is_metric_name(""));
        assert!(is_label_name("device"));
        assert!(!is_label_name("__name__"));
        assert!(!is_label_name("le-x"));
    }
}

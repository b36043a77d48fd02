//! `GET /metrics` against the real server: the exposition parses (with `prometheus-parse`
//! and with a strict line-by-line reading of format 0.0.4) and its values are the API's.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use gpulab_shared::{Device, DeviceTelemetry, Health, Job, JobPage, JobStatus};
use prometheus_parse::{Sample, Scrape, Value};
use reqwest::StatusCode;
use serde_json::json;
use support::{spawn_app, spawn_app_with, AppOptions, TestApp};

#[tokio::test]
async fn metrics_count_jobs_and_list_devices_as_the_api_does() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for body in [
        json!({"kernel": "saxpy", "device": "cpu", "params": {"n": 1000}, "repetitions": 2}),
        json!({"kernel": "saxpy", "device": "cpu", "params": {"n": 1000}, "repetitions": 2}),
        json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 1000}, "repetitions": 2}),
        json!({"kernel": "_test_fault", "device": "cpu", "params": {"mode": "crash"}}),
        json!({"kernel": "_test_fault", "device": "cpu", "params": {"mode": "hang"}, "timeout_s": 1}),
    ] {
        ids.push(app.submit(body).await.id);
    }
    // Queued behind the hanging job, so it is cancelled before it ever starts.
    let never_ran = app
        .submit(json!({"kernel": "vector_add", "device": "cpu"}))
        .await;
    let resp = app.delete(&format!("/api/jobs/{}", never_ran.id)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    ids.push(never_ran.id);
    for id in &ids {
        app.wait_finished(*id).await;
    }

    let jobs: JobPage = app.get_json("/api/jobs?limit=500").await;
    let statuses: BTreeSet<&str> = jobs.jobs.iter().map(|j| j.status.as_str()).collect();
    assert_eq!(
        statuses,
        BTreeSet::from(["cancelled", "failed", "succeeded", "timed_out"]),
        "{jobs:?}"
    );
    let (text, scrape) = app.scrape().await;

    // Jobs by kernel, device and status: exactly what the API lists.
    let mut expected: BTreeMap<Vec<String>, f64> = BTreeMap::new();
    for job in &jobs.jobs {
        let key = vec![
            job.kernel.clone(),
            job.device.clone(),
            job.status.as_str().to_owned(),
        ];
        *expected.entry(key).or_default() += 1.0;
    }
    assert_eq!(
        series(
            &scrape,
            "gpulab_jobs_total",
            &["kernel", "device", "status"]
        ),
        expected,
        "{text}"
    );
    for sample in scrape
        .samples
        .iter()
        .filter(|s| s.metric == "gpulab_jobs_total")
    {
        assert!(matches!(sample.value, Value::Counter(_)), "{sample:?}");
    }

    // Nothing waits or runs now, and every device says so with a 0.
    let devices: Vec<Device> = app.get_json("/api/devices").await;
    let now = series(&scrape, "gpulab_jobs", &["device", "status"]);
    let expected: BTreeMap<Vec<String>, f64> = devices
        .iter()
        .flat_map(|d| {
            ["queued", "running"].map(|status| (vec![d.id.clone(), status.to_owned()], 0.0))
        })
        .collect();
    assert_eq!(now, expected, "{text}");

    // One duration per job that started and ended; the cancelled one never started.
    let ran: Vec<&Job> = jobs
        .jobs
        .iter()
        .filter(|j| j.started_at.is_some() && j.finished_at.is_some())
        .collect();
    assert_eq!(ran.len(), ids.len() - 1);
    let mut observed = 0.0;
    let mut by_kernel: BTreeMap<Vec<String>, f64> = BTreeMap::new();
    for sample in samples(&scrape, "gpulab_job_duration_seconds") {
        let Value::Histogram(buckets) = &sample.value else {
            panic!("not a histogram: {sample:?}");
        };
        assert!(buckets
            .windows(2)
            .all(|w| w[0].count <= w[1].count && w[0].less_than < w[1].less_than));
        let inf = buckets.last().unwrap();
        assert_eq!(inf.less_than, f64::INFINITY);
        observed += inf.count;
        by_kernel.insert(key(sample, &["kernel", "device"]), inf.count);
    }
    assert_eq!(observed, ran.len() as f64, "{text}");
    let counts = series(
        &scrape,
        "gpulab_job_duration_seconds_count",
        &["kernel", "device"],
    );
    assert_eq!(counts, by_kernel, "_count agrees with the +Inf bucket");
    // The job that hung ran for its whole timeout of 1 s.
    let sums = series(
        &scrape,
        "gpulab_job_duration_seconds_sum",
        &["kernel", "device"],
    );
    let fault_s = sums[&vec!["_test_fault".to_owned(), "cpu".to_owned()]];
    assert!(fault_s >= 1.0, "{fault_s}");

    // Every device of the inventory, with its attributes.
    let mut info = HashMap::new();
    for sample in samples(&scrape, "gpulab_device_info") {
        assert_eq!(sample.value, Value::Gauge(1.0));
        info.insert(sample.labels.get("device").unwrap().to_owned(), sample);
    }
    assert_eq!(info.len(), devices.len(), "{text}");
    let strict = check_format(&text);
    for device in &devices {
        let sample = info.get(&device.id).expect(&device.id);
        assert_eq!(sample.labels.get("kind"), Some(device.kind.as_str()));
        let uuid = device.cuda.as_ref().and_then(|c| c.uuid.as_deref());
        assert_eq!(sample.labels.get("uuid"), uuid);
        // The name can hold any character: read it back through the strict reading,
        // which undoes the escaping.
        let line = strict
            .iter()
            .find(|s| s.name == "gpulab_device_info" && s.labels["device"] == device.id)
            .unwrap();
        assert_eq!(line.labels["name"], device.name);
    }

    let health: Health = app.get_json("/api/health").await;
    let build: Vec<&Sample> = samples(&scrape, "gpulab_build_info").collect();
    assert_eq!(build.len(), 1);
    assert_eq!(
        build[0].labels.get("version"),
        Some(health.version.as_str())
    );
    assert_eq!(build[0].value, Value::Gauge(1.0));
}

#[tokio::test]
async fn cpu_telemetry_is_exposed_in_base_units() {
    let app = spawn_app().await;
    let Some(latest) = app.cpu_telemetry().await else {
        // The sampler has not reported yet: nothing to compare with.
        eprintln!("no CPU telemetry within 3 s: the CPU series were not checked");
        let (text, _) = app.scrape().await;
        assert!(
            !text.contains("gpulab_cpu_"),
            "no made-up CPU values: {text}"
        );
        return;
    };
    let cpu = latest.cpu.expect("the CPU sample has CPU figures");
    let (text, scrape) = app.scrape().await;
    let one = |name: &str| -> Option<f64> {
        let found: Vec<f64> = samples(&scrape, name)
            .map(|s| {
                assert_eq!(s.labels.get("device"), Some("cpu"), "{s:?}");
                gauge(s)
            })
            .collect();
        assert!(found.len() <= 1, "{name}: {found:?}");
        found.first().copied()
    };
    // The total does not change between two samples, so it must be exactly the API's.
    assert_eq!(
        one("gpulab_cpu_memory_total_bytes"),
        cpu.memory_total_bytes.map(|b| b as f64),
        "{text}"
    );
    assert_eq!(
        one("gpulab_cpu_memory_used_bytes").is_some(),
        cpu.memory_used_bytes.is_some(),
        "a series exactly when the API has the value"
    );
    if let Some(ratio) = one("gpulab_cpu_utilization_ratio") {
        assert!((0.0..=1.0).contains(&ratio), "{ratio}");
    }
    let loads = series(&scrape, "gpulab_cpu_load_average", &["window"]);
    if cpu.load_average.is_some() {
        let windows: Vec<&str> = loads.keys().map(|k| k[0].as_str()).collect();
        assert_eq!(windows, ["15m", "1m", "5m"]);
    }
    let times = series(
        &scrape,
        "gpulab_telemetry_sample_timestamp_seconds",
        &["device"],
    );
    assert!(times[&vec!["cpu".to_owned()]] >= latest.at.timestamp() as f64);
}

#[tokio::test]
async fn job_counters_survive_kill_9_and_count_interrupted_jobs() {
    let mut app = spawn_app().await;
    let done = app
        .submit(json!({"kernel": "saxpy", "device": "cpu", "params": {"n": 1000}}))
        .await;
    app.wait_finished(done.id).await;
    let hang = app
        .submit(json!({"kernel": "_test_fault", "device": "cpu", "params": {"mode": "hang"}}))
        .await;
    app.wait_until(hang.id, |j| j.status == JobStatus::Running)
        .await;
    let (_, before) = app.scrape().await;
    let running = series(&before, "gpulab_jobs", &["device", "status"]);
    assert_eq!(running[&vec!["cpu".to_owned(), "running".to_owned()]], 1.0);

    let data_dir = app.kill_9();
    let app = spawn_app_with(AppOptions {
        data_dir: Some(data_dir),
        test_faults: true,
        ..Default::default()
    })
    .await;
    let (text, scrape) = app.scrape().await;
    let totals = series(
        &scrape,
        "gpulab_jobs_total",
        &["kernel", "device", "status"],
    );
    let key = |k: &str, s: &str| vec![k.to_owned(), "cpu".to_owned(), s.to_owned()];
    assert_eq!(
        totals,
        BTreeMap::from([
            (key("_test_fault", "interrupted"), 1.0),
            (key("saxpy", "succeeded"), 1.0)
        ]),
        "{text}"
    );
    let now = series(&scrape, "gpulab_jobs", &["device", "status"]);
    assert_eq!(now[&vec!["cpu".to_owned(), "running".to_owned()]], 0.0);
}

#[test]
fn the_strict_reading_refuses_what_the_format_forbids() {
    let ok = "# HELP a A.\n# TYPE a gauge\na{x=\"q\\\"\\\\\\n,}\"} +Inf\n";
    let read = check_format(ok);
    assert_eq!(read[0].labels["x"], "q\"\\\n,}");
    assert_eq!(read[0].value, f64::INFINITY);
    for bad in [
        "a 1\n",                                                                // no TYPE
        "# TYPE a gauge\na 1\n",                                                // no HELP
        "# HELP a A.\n# TYPE a gauge\na 1",                                     // no final newline
        "# HELP a A.\n# TYPE a gauge\na{x=\"1\"} one\n",                        // not a number
        "# HELP a A.\n# TYPE a gauge\na{x=\"\\t\"} 1\n",                        // unknown escape
        "# HELP a A.\n# TYPE a gauge\na 1\na 2\n", // the same series twice
        "# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\nb 1\na 1\n", // a family split
        "# HELP a A.\n# TYPE a gauge\na 1\n# HELP a A.\n# TYPE a gauge\n", // repeated
    ] {
        let refused = std::panic::catch_unwind(|| check_format(bad));
        assert!(refused.is_err(), "accepted {bad:?}");
    }
}

impl TestApp {
    /// The latest CPU sample, waiting up to 3 s for the sampler's first one.
    async fn cpu_telemetry(&self) -> Option<gpulab_shared::TelemetrySample> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let telemetry: DeviceTelemetry = self.get_json("/api/devices/cpu/telemetry").await;
            if telemetry.latest.is_some() || tokio::time::Instant::now() >= deadline {
                return telemetry.latest;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /metrics`: its text, checked line by line, and as `prometheus-parse` reads it.
    async fn scrape(&self) -> (String, Scrape) {
        let resp = self.get("/metrics").await;
        assert_eq!(resp.status(), StatusCode::OK);
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = resp.text().await.unwrap();
        check_format(&text);
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        (text, scrape)
    }
}

fn samples<'a>(scrape: &'a Scrape, name: &'a str) -> impl Iterator<Item = &'a Sample> {
    scrape.samples.iter().filter(move |s| s.metric == name)
}

fn gauge(sample: &Sample) -> f64 {
    match sample.value {
        Value::Gauge(v) | Value::Counter(v) | Value::Untyped(v) => v,
        _ => panic!("not a single number: {sample:?}"),
    }
}

fn key(sample: &Sample, labels: &[&str]) -> Vec<String> {
    labels
        .iter()
        .map(|l| {
            sample
                .labels
                .get(l)
                .unwrap_or_else(|| panic!("{sample:?} lacks {l}"))
                .to_owned()
        })
        .collect()
}

/// The series of one family by the values of `labels`, each key seen once.
fn series(scrape: &Scrape, name: &str, labels: &[&str]) -> BTreeMap<Vec<String>, f64> {
    let mut out = BTreeMap::new();
    for sample in samples(scrape, name) {
        let previous = out.insert(key(sample, labels), gauge(sample));
        assert!(previous.is_none(), "{name} repeats {sample:?}");
    }
    out
}

/// One sample line as the strict reading sees it, label values unescaped.
#[derive(Debug)]
struct Line {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Reads the exposition as format 0.0.4 defines it and panics at the first thing it
/// forbids: each family has `# HELP` and `# TYPE` before its first sample and only once,
/// its samples are together, names and label names are valid, label values are escaped,
/// values are numbers, no series repeats, and the text ends with a line feed.
fn check_format(text: &str) -> Vec<Line> {
    assert!(text.ends_with('\n'), "the exposition ends with a line feed");
    let mut helps = BTreeSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut seen = BTreeSet::new();
    let mut lines = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').expect(line);
            assert!(valid_name(name, true), "{line}");
            assert!(helps.insert(name.to_owned()), "HELP twice: {line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect(line);
            assert!(helps.contains(name), "TYPE without HELP: {line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE twice: {line}"
            );
            if let Some(previous) = current.replace(name.to_owned()) {
                done.insert(previous);
            }
        } else if line.starts_with('#') || line.is_empty() {
            panic!("unexpected line {line:?}");
        } else {
            let sample = read_sample(line);
            let family = family_of(&sample.name, &types)
                .unwrap_or_else(|| panic!("no TYPE before the sample {line}"));
            assert_eq!(
                current.as_deref(),
                Some(family.as_str()),
                "{line} is apart from its family"
            );
            assert!(!done.contains(&family), "{line}");
            if types[&family] == "histogram" && sample.name.ends_with("_bucket") {
                assert!(sample.labels.contains_key("le"), "{line}");
            }
            let id = (sample.name.clone(), sample.labels.clone());
            assert!(seen.insert(id), "the series repeats: {line}");
            lines.push(sample);
        }
    }
    lines
}

fn family_of(name: &str, types: &HashMap<String, String>) -> Option<String> {
    if types.contains_key(name) {
        return Some(name.to_owned());
    }
    ["_bucket", "_sum", "_count"]
        .into_iter()
        .find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            matches!(types.get(base)?.as_str(), "histogram" | "summary").then(|| base.to_owned())
        })
}

fn read_sample(line: &str) -> Line {
    let end = line.find(['{', ' ']).expect(line);
    let name = &line[..end];
    assert!(valid_name(name, true), "{line}");
    let mut labels = BTreeMap::new();
    let mut rest = &line[end..];
    if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = body.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = body.split_once("=\"").expect(line);
            assert!(valid_name(label, false), "label {label:?} in {line}");
            let mut value = String::new();
            let mut chars = after.char_indices();
            let close = loop {
                match chars.next().expect(line) {
                    (_, '\\') => match chars.next().expect(line).1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => panic!("unknown escape \\{other} in {line}"),
                    },
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            assert!(labels.insert(label.to_owned(), value).is_none(), "{line}");
            body = &after[close + 1..];
            match body.strip_prefix(',') {
                Some(after) => body = after,
                None => assert!(body.starts_with('}'), "{line}"),
            }
        }
    }
    // gpulab writes no timestamps: the value is all that follows.
    let value = rest.strip_prefix(' ').expect(line);
    let value = match value {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => {
            assert!(
                v.bytes()
                    .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)),
                "not a number: {line}"
            );
            v.parse().expect(line)
        }
    };
    Line {
        name: name.to_owned(),
        labels,
        value,
    }
}

fn valid_name(name: &str, metric: bool) -> bool {
    let extra = |c: char| c == '_' || (metric && c == ':');
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || extra(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || extra(c))
}

//! The fleet: every gpulab node a Prometheus server scrapes, read from Prometheus with fixed
//! queries of this server's own (never one from a browser), for `GET /api/fleet`.
//!
//! A node is a scrape target (`job`, `instance`) of a gpulab job: a job in which some target
//! has served `gpulab_build_info` within the hour, whatever the job is called (Prometheus
//! Operator names jobs after the Service, a static configuration after whoever wrote it).
//! So a node that has never answered (a wrong token, a Pod that cannot start) is listed too,
//! down. Its `up` says whether the last scrape worked. Its devices are those of
//! `gpulab_device_info`, now or, for a node that stopped answering, as last seen within the
//! hour.

mod prometheus;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use gpulab_shared::diag::Verdict;
use gpulab_shared::fleet::{Fleet, FleetDevice, FleetDiagnostic, FleetNode};
use gpulab_shared::DeviceKind;

pub use prometheus::QueryError;
use prometheus::{Prometheus, Sample};

/// Every target of a job that served gpulab's metrics within the hour, with its `up` (1 or
/// 0). Staleness hides a dead target's other series at once, so the hour is looked back over.
pub const NODES_QUERY: &str =
    "up and on(job) group by (job) (present_over_time(gpulab_build_info[1h]))";

/// Every device each node reported within the hour.
pub const DEVICES_SEEN_QUERY: &str = "last_over_time(gpulab_device_info[1h])";

/// What the nodes report now: their devices, the figures the Fleet page shows (each series
/// keeps its `__name__`, which says which figure it is) and the last diagnostics.
pub const CURRENT_QUERY: &str = concat!(
    r#"{__name__=~"gpulab_device_info"#,
    r#"|gpulab_(gpu|cpu)_(temperature_celsius|utilization_ratio|memory_used_bytes|memory_total_bytes)"#,
    r#"|gpulab_gpu_power_watts"#,
    r#"|gpulab_diagnostic_(verdict|last_run_timestamp_seconds)"}"#
);

/// The default `--fleet-node-url`: the address Prometheus scrapes, over http.
pub const DEFAULT_NODE_URL: &str = "http://{instance}/";

/// The target label that, set by relabelling in the scrape configuration, gives a node's
/// URL itself and wins over `--fleet-node-url`.
pub const NODE_URL_LABEL: &str = "gpulab_url";

/// What a server without `--prometheus-url` answers.
pub const SETUP_HINT: &str = "This server reads the fleet from Prometheus: start it with \
    --prometheus-url http://PROMETHEUS:9090 (or GPULAB_PROMETHEUS_URL), naming a Prometheus \
    that scrapes the /metrics of every gpulab node.";

/// How long an answer of Prometheus serves every request for the fleet: however many
/// browsers ask, Prometheus gets at most one set of queries in this time.
const REUSE_FOR: Duration = Duration::from_secs(2);

/// Reads the fleet from one Prometheus.
#[derive(Debug)]
pub struct FleetReader {
    prometheus: Prometheus,
    node_url: String,
    /// The last answer and when it came. Held while Prometheus is asked, so that
    /// requests that come meanwhile wait for that answer instead of asking again.
    last: tokio::sync::Mutex<Option<(Instant, Result<Fleet, QueryError>)>>,
}

impl FleetReader {
    /// `prometheus_url` as `--prometheus-url` gives it; `node_url` is the template of a
    /// node's URL, with `{instance}`, `{host}`, `{port}` and `{job}` replaced by the node's.
    pub fn new(prometheus_url: &str, node_url: &str) -> Result<Self, String> {
        let prometheus = Prometheus::new(prometheus_url)?;
        let example = node_url_from(node_url, "gpu-node-1:8080", "gpulab");
        if example.is_none() {
            return Err(format!(
                "--fleet-node-url must make an http:// or https:// URL from a node's \
                 {{instance}}, {{host}}, {{port}} and {{job}}, such as {DEFAULT_NODE_URL}, got \
                 `{node_url}`"
            ));
        }
        Ok(FleetReader {
            prometheus,
            node_url: node_url.to_owned(),
            last: Default::default(),
        })
    }

    pub fn prometheus_url(&self) -> String {
        self.prometheus.display_url()
    }

    /// The fleet: Prometheus' answer of the last [`REUSE_FOR`], or a new one.
    pub async fn read(&self) -> Result<Fleet, QueryError> {
        let mut last = self.last.lock().await;
        if let Some((answered, answer)) = last.as_ref() {
            if answered.elapsed() < REUSE_FOR {
                return answer.clone();
            }
        }
        let answer = self.ask().await;
        *last = Some((Instant::now(), answer.clone()));
        answer
    }

    /// Asks Prometheus now.
    async fn ask(&self) -> Result<Fleet, QueryError> {
        let queried_at = Utc::now();
        let (nodes, seen, current) = tokio::try_join!(
            self.prometheus.query(NODES_QUERY),
            self.prometheus.query(DEVICES_SEEN_QUERY),
            self.prometheus.query(CURRENT_QUERY),
        )?;
        Ok(Fleet {
            configured: true,
            setup: None,
            prometheus_url: Some(self.prometheus_url()),
            queried_at: Some(queried_at),
            nodes: assemble(&nodes, &seen, &current, &self.node_url),
        })
    }
}

/// The answer of a server without `--prometheus-url`.
pub fn not_configured() -> Fleet {
    Fleet {
        configured: false,
        setup: Some(SETUP_HINT.to_owned()),
        prometheus_url: None,
        queried_at: None,
        nodes: Vec::new(),
    }
}

/// A node, as Prometheus labels its series.
type NodeKey = (String, String);

fn node_key(sample: &Sample) -> Option<NodeKey> {
    Some((
        sample.label("job")?.to_owned(),
        sample.label("instance")?.to_owned(),
    ))
}

/// The nodes from the answers to [`NODES_QUERY`], [`DEVICES_SEEN_QUERY`] and
/// [`CURRENT_QUERY`]; `node_url` as in [`FleetReader::new`].
fn assemble(
    nodes: &[Sample],
    seen: &[Sample],
    current: &[Sample],
    node_url: &str,
) -> Vec<FleetNode> {
    let mut by_node: BTreeMap<NodeKey, NodeFigures> = BTreeMap::new();
    for sample in current {
        let (Some(key), Some(name), Some(device)) = (
            node_key(sample),
            sample.label("__name__"),
            sample.label("device"),
        ) else {
            continue;
        };
        let figures = by_node.entry(key).or_default();
        let device = device.to_owned();
        match name {
            "gpulab_device_info" => {
                figures.reported.insert(device, sample.clone());
            }
            "gpulab_diagnostic_verdict" | "gpulab_diagnostic_last_run_timestamp_seconds" => {
                let Some(level) = sample.label("level").and_then(|l| l.parse::<u8>().ok()) else {
                    continue;
                };
                let entry = figures.diagnostics.entry((device, level)).or_default();
                if name == "gpulab_diagnostic_verdict" {
                    entry.0 = Some(sample.value);
                } else {
                    entry.1 = Some(sample.value);
                }
            }
            _ => {
                figures
                    .values
                    .insert((device, figure_of(name).to_owned()), sample.value);
            }
        }
    }
    let mut last_seen: BTreeMap<NodeKey, BTreeMap<String, &Sample>> = BTreeMap::new();
    for sample in seen {
        if let (Some(key), Some(device)) = (node_key(sample), sample.label("device")) {
            last_seen
                .entry(key)
                .or_default()
                .insert(device.to_owned(), sample);
        }
    }
    let mut fleet: Vec<FleetNode> = nodes
        .iter()
        .filter_map(|sample| {
            let key = node_key(sample)?;
            let figures = by_node.remove(&key).unwrap_or_default();
            let seen = last_seen.remove(&key).unwrap_or_default();
            let (job, instance) = key;
            let url = sample
                .label(NODE_URL_LABEL)
                .and_then(checked_url)
                .or_else(|| node_url_from(node_url, &instance, &job));
            Some(FleetNode {
                devices: figures.devices(seen),
                up: sample.value == 1.0,
                url,
                instance,
                job,
            })
        })
        .collect();
    fleet.sort_by_key(|node| sort_key(&node.instance, &node.job));
    fleet
}

/// What one node reports now.
#[derive(Debug, Default)]
struct NodeFigures {
    /// `gpulab_device_info` by device.
    reported: BTreeMap<String, Sample>,
    /// By device and figure (`temperature_celsius`, …).
    values: BTreeMap<(String, String), f64>,
    /// By device and level: the verdict's value and when it ended.
    diagnostics: BTreeMap<(String, u8), (Option<f64>, Option<f64>)>,
}

impl NodeFigures {
    /// The node's devices: those reported now, then those only seen within the hour;
    /// GPUs by ordinal, then the CPU, as gpulab lists them.
    fn devices(&self, seen: BTreeMap<String, &Sample>) -> Vec<FleetDevice> {
        let mut devices: Vec<FleetDevice> = self
            .reported
            .iter()
            .map(|(id, info)| self.device(id, info, true))
            .chain(
                seen.iter()
                    .filter(|(id, _)| !self.reported.contains_key(*id))
                    .map(|(id, info)| self.device(id, info, false)),
            )
            .collect();
        devices.sort_by_key(|d| device_order(&d.id));
        devices
    }

    fn device(&self, id: &str, info: &Sample, reported: bool) -> FleetDevice {
        let value = |figure: &str| {
            self.values
                .get(&(id.to_owned(), figure.to_owned()))
                .copied()
                .filter(|v| v.is_finite())
        };
        let bytes = |figure: &str| value(figure).filter(|v| *v >= 0.0).map(|v| v as u64);
        let kind = match info.label("kind") {
            Some("cuda") => DeviceKind::Cuda,
            Some("cpu") => DeviceKind::Cpu,
            _ if id.starts_with("cuda:") => DeviceKind::Cuda,
            _ => DeviceKind::Cpu,
        };
        FleetDevice {
            id: id.to_owned(),
            kind,
            name: info.label("name").unwrap_or(id).to_owned(),
            uuid: info.label("uuid").map(str::to_owned),
            reported,
            temperature_celsius: value("temperature_celsius"),
            power_watts: value("power_watts"),
            utilization_ratio: value("utilization_ratio"),
            memory_used_bytes: bytes("memory_used_bytes"),
            memory_total_bytes: bytes("memory_total_bytes"),
            diagnostic: self.last_diagnostic(id),
        }
    }

    /// The device's diagnostic that ended last (the highest level where the node says
    /// not when); `None` when it has none with a verdict.
    fn last_diagnostic(&self, id: &str) -> Option<FleetDiagnostic> {
        self.diagnostics
            .iter()
            .filter(|((device, _), _)| device == id)
            .filter_map(|((_, level), (verdict, at))| {
                let verdict = match (*verdict)? {
                    0.0 => Verdict::Pass,
                    1.0 => Verdict::Warn,
                    2.0 => Verdict::Fail,
                    _ => return None,
                };
                Some((*at, *level, verdict))
            })
            .max_by(|a, b| {
                let at = |x: Option<f64>| x.unwrap_or(f64::NEG_INFINITY);
                at(a.0).total_cmp(&at(b.0)).then(a.1.cmp(&b.1))
            })
            .map(|(at, level, verdict)| FleetDiagnostic {
                level,
                verdict,
                finished_at: at.and_then(|s| DateTime::from_timestamp_millis((s * 1e3) as i64)),
            })
    }
}

/// The figure a metric is: its name without `gpulab_gpu_` or `gpulab_cpu_`.
fn figure_of(metric: &str) -> &str {
    metric
        .strip_prefix("gpulab_gpu_")
        .or_else(|| metric.strip_prefix("gpulab_cpu_"))
        .unwrap_or(metric)
}

/// `cuda:N` by N, then anything else (the CPU) by name.
fn device_order(id: &str) -> (u8, u64, String) {
    match id.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
        Some(n) => (0, n, String::new()),
        None => (1, 0, id.to_owned()),
    }
}

/// Nodes by host, then port as a number, then job.
fn sort_key(instance: &str, job: &str) -> (String, u32, String) {
    match instance.rsplit_once(':') {
        Some((host, port)) if port.parse::<u32>().is_ok() => (
            host.to_owned(),
            port.parse().unwrap_or_default(),
            job.to_owned(),
        ),
        _ => (instance.to_owned(), 0, job.to_owned()),
    }
}

/// The URL `template` makes for the node `instance` of `job`, when it is an http(s) URL.
fn node_url_from(template: &str, instance: &str, job: &str) -> Option<String> {
    let (host, port) = match instance.rsplit_once(':') {
        // `[::1]:8080` keeps its brackets in {host}.
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (host, port)
        }
        _ => (instance, ""),
    };
    let url = template
        .replace("{instance}", instance)
        .replace("{host}", host)
        .replace("{port}", port)
        .replace("{job}", job);
    checked_url(&url)
}

/// `url` when it is an absolute http(s) URL: a label's value never becomes a `javascript:`
/// link.
fn checked_url(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    (matches!(parsed.scheme(), "http" | "https") && parsed.host_str().is_some())
        .then(|| parsed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    fn vector(series: &str) -> Vec<Sample> {
        let answer = format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{series}]}}}}"#
        );
        prometheus::parse_vector(StatusCode::OK, answer.as_bytes()).unwrap()
    }

    // Two nodes as a Prometheus scraping them answers: `gpu-a` with two GPUs and the CPU,
    // up, whose cuda:1 has left the inventory; `gpu-b`, down, known from the last hour.
    fn nodes() -> Vec<Sample> {
        vector(
            r#"{"metric":{"__name__":"up","instance":"gpu-b:8080","job":"kubernetes-pods"},"value":[1796293546.1,"0"]},
               {"metric":{"__name__":"up","instance":"gpu-a:8080","job":"kubernetes-pods"},"value":[1796293546.1,"1"]}"#,
        )
    }

    fn seen() -> Vec<Sample> {
        vector(
            r#"{"metric":{"__name__":"gpulab_device_info","device":"cuda:0","instance":"gpu-a:8080","job":"kubernetes-pods","kind":"cuda","name":"NVIDIA H100 80GB HBM3","uuid":"GPU-a0"},"value":[1796293546.1,"1"]},
               {"metric":{"__name__":"gpulab_device_info","device":"cuda:1","instance":"gpu-a:8080","job":"kubernetes-pods","kind":"cuda","name":"NVIDIA H100 80GB HBM3","uuid":"GPU-a1"},"value":[1796293546.1,"1"]},
               {"metric":{"__name__":"gpulab_device_info","device":"cpu","instance":"gpu-a:8080","job":"kubernetes-pods","kind":"cpu","name":"AMD EPYC 9454"},"value":[1796293546.1,"1"]},
               {"metric":{"__name__":"gpulab_device_info","device":"cuda:0","instance":"gpu-b:8080","job":"kubernetes-pods","kind":"cuda","name":"NVIDIA H200","uuid":"GPU-b0"},"value":[1796293546.1,"1"]}"#,
        )
    }

    fn current() -> Vec<Sample> {
        vector(
            r#"{"metric":{"__name__":"gpulab_device_info","device":"cuda:0","instance":"gpu-a:8080","job":"kubernetes-pods","kind":"cuda","name":"NVIDIA H100 80GB HBM3","uuid":"GPU-a0"},"value":[1796293546.1,"1"]},
               {"metric":{"__name__":"gpulab_device_info","device":"cpu","instance":"gpu-a:8080","job":"kubernetes-pods","kind":"cpu","name":"AMD EPYC 9454"},"value":[1796293546.1,"1"]},
               {"metric":{"__name__":"gpulab_gpu_temperature_celsius","device":"cuda:0","instance":"gpu-a:8080","job":"kubernetes-pods","uuid":"GPU-a0"},"value":[1796293546.1,"61"]},
               {"metric":{"__name__":"gpulab_gpu_power_watts","device":"cuda:0","instance":"gpu-a:8080","job":"kubernetes-pods","uuid":"GPU-a0"},"value":[1796293546.1,"312.5"]},
               {"metric":{"__name__":"gpulab_gpu_utilization_ratio","device":"cuda:0","instance":"gpu-a:8080","job":"kubernetes-pods","uuid":"GPU-a0"},"value":[1796293546.1,"0.97"]},
               {"metric":{"__name__":"gpulab_gpu_memory_used_bytes","device":"cuda:0","instance":"gpu-a:8080","job":"kubernetes-pods","uuid":"GPU-a0"},"value":[1796293546.1,"42949672960"]},
               {"metric":{"__name__":"gpulab_gpu_memory_total_bytes","device":"cuda:0","instance":"gpu-a:8080","job":"kubernetes-pods","uuid":"GPU-a0"},"value":[1796293546.1,"85899345920"]},
               {"metric":{"__name__":"gpulab_cpu_utilization_ratio","device":"cpu","instance":"gpu-a:8080","job":"kubernetes-pods"},"value":[1796293546.1,"NaN"]},
               {"metric":{"__name__":"gpulab_cpu_memory_used_bytes","device":"cpu","instance":"gpu-a:8080","job":"kubernetes-pods"},"value":[1796293546.1,"1031643136"]},
               {"metric":{"__name__":"gpulab_diagnostic_verdict","device":"cuda:0","instance":"gpu-a:8080","job":"kubernetes-pods","level":"1","uuid":"GPU-a0"},"value":[1796293546.1,"0"]},
               {"metric":{"__name__":"gpulab_diagnostic_last_run_timestamp_seconds","device":"cuda:0","instance":"gpu-a:8080","job":"kubernetes-pods","level":"1","uuid":"GPU-a0"},"value":[1796293546.1,"1796290000"]},
               {"metric":{"__name__":"gpulab_diagnostic_verdict","device":"cuda:0","instance":"gpu-a:8080","job":"kubernetes-pods","level":"2","uuid":"GPU-a0"},"value":[1796293546.1,"2"]},
               {"metric":{"__name__":"gpulab_diagnostic_last_run_timestamp_seconds","device":"cuda:0","instance":"gpu-a:8080","job":"kubernetes-pods","level":"2","uuid":"GPU-a0"},"value":[1796293546.1,"1796291000.5"]}"#,
        )
    }

    #[test]
    fn nodes_are_ordered_with_their_state_and_devices() {
        let fleet = assemble(&nodes(), &seen(), &current(), DEFAULT_NODE_URL);
        let names: Vec<(&str, bool)> = fleet.iter().map(|n| (n.instance.as_str(), n.up)).collect();
        assert_eq!(names, [("gpu-a:8080", true), ("gpu-b:8080", false)]);
        assert_eq!(fleet[0].job, "kubernetes-pods");
        assert_eq!(fleet[0].url.as_deref(), Some("http://gpu-a:8080/"));

        let a = &fleet[0].devices;
        let ids: Vec<(&str, bool)> = a.iter().map(|d| (d.id.as_str(), d.reported)).collect();
        assert_eq!(
            ids,
            [("cuda:0", true), ("cuda:1", false), ("cpu", true)],
            "GPUs by ordinal, then the CPU; cuda:1 is gone from the inventory"
        );
        let gpu = &a[0];
        assert_eq!(gpu.kind, DeviceKind::Cuda);
        assert_eq!(gpu.name, "NVIDIA H100 80GB HBM3");
        assert_eq!(gpu.uuid.as_deref(), Some("GPU-a0"));
        assert_eq!(gpu.temperature_celsius, Some(61.0));
        assert_eq!(gpu.power_watts, Some(312.5));
        assert_eq!(gpu.utilization_ratio, Some(0.97));
        assert_eq!(gpu.memory_used_bytes, Some(40 << 30));
        assert_eq!(gpu.memory_total_bytes, Some(80 << 30));
        assert_eq!(
            a[1].temperature_celsius, None,
            "a gone device has no figures"
        );
        let cpu = &a[2];
        assert_eq!(cpu.kind, DeviceKind::Cpu);
        assert_eq!(cpu.utilization_ratio, None, "NaN is no figure");
        assert_eq!(cpu.memory_used_bytes, Some(1031643136));
        assert_eq!(cpu.power_watts, None);

        let b = &fleet[1].devices;
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].name.as_str(), b[0].reported), ("NVIDIA H200", false));
        assert_eq!(b[0].utilization_ratio, None);
    }

    #[test]
    fn the_last_diagnostic_is_the_one_that_ended_last() {
        let fleet = assemble(&nodes(), &seen(), &current(), DEFAULT_NODE_URL);
        let diagnostic = fleet[0].devices[0].diagnostic.clone().unwrap();
        assert_eq!(diagnostic.level, 2);
        assert_eq!(diagnostic.verdict, Verdict::Fail);
        assert_eq!(
            diagnostic.finished_at.unwrap().timestamp_millis(),
            1_796_291_000_500
        );
        assert_eq!(fleet[0].devices[2].diagnostic, None, "none ran: unknown");

        // Level 1 ran again after level 2: its pass is the last word.
        let rerun = vector(
            r#"{"metric":{"__name__":"gpulab_diagnostic_verdict","device":"cuda:0","instance":"gpu-a:8080","job":"kubernetes-pods","level":"1"},"value":[1,"0"]},
               {"metric":{"__name__":"gpulab_diagnostic_last_run_timestamp_seconds","device":"cuda:0","instance":"gpu-a:8080","job":"kubernetes-pods","level":"1"},"value":[1,"1796292000"]},
               {"metric":{"__name__":"gpulab_diagnostic_verdict","device":"cuda:0","instance":"gpu-a:8080","job":"kubernetes-pods","level":"2"},"value":[1,"2"]},
               {"metric":{"__name__":"gpulab_diagnostic_last_run_timestamp_seconds","device":"cuda:0","instance":"gpu-a:8080","job":"kubernetes-pods","level":"2"},"value":[1,"1796291000"]}"#,
        );
        let fleet = assemble(&nodes(), &seen(), &rerun, DEFAULT_NODE_URL);
        let diagnostic = fleet[0].devices[0].diagnostic.clone().unwrap();
        assert_eq!((diagnostic.level, diagnostic.verdict), (1, Verdict::Pass));
    }

    #[test]
    fn a_node_url_comes_from_its_label_or_the_template_and_is_always_http() {
        let nodes = vector(
            r#"{"metric":{"__name__":"up","instance":"10.0.0.7:8080","job":"gpulab","gpulab_url":"https://gpu-7.example.org/"},"value":[1,"1"]},
               {"metric":{"__name__":"up","instance":"10.0.0.8:8080","job":"gpulab","gpulab_url":"javascript:alert(1)"},"value":[1,"1"]},
               {"metric":{"__name__":"up","instance":"[fd00::9]:8080","job":"gpulab"},"value":[1,"1"]}"#,
        );
        let fleet = assemble(&nodes, &[], &[], "https://{host}.gpu.lab:{port}/?via={job}");
        let urls: Vec<Option<&str>> = fleet.iter().map(|n| n.url.as_deref()).collect();
        assert_eq!(
            urls,
            [
                Some("https://gpu-7.example.org/"),
                Some("https://10.0.0.8.gpu.lab:8080/?via=gpulab"),
                None,
            ],
            "a javascript: label falls back to the template; `[fd00::9].gpu.lab` is no host"
        );
        assert_eq!(
            node_url_from(DEFAULT_NODE_URL, "[fd00::9]:8080", "gpulab").as_deref(),
            Some("http://[fd00::9]:8080/")
        );
    }

    #[test]
    fn a_node_url_template_that_makes_no_http_url_is_refused_at_start() {
        assert!(FleetReader::new("http://prom:9090", DEFAULT_NODE_URL).is_ok());
        let e = FleetReader::new("http://prom:9090", "{instance}").unwrap_err();
        assert!(e.contains("--fleet-node-url"), "{e}");
        let e = FleetReader::new("http://prom:9090", "javascript:{instance}").unwrap_err();
        assert!(e.contains("--fleet-node-url"), "{e}");
    }

    #[test]
    fn ports_sort_as_numbers() {
        let nodes = vector(
            r#"{"metric":{"instance":"10.0.0.1:10000","job":"gpulab"},"value":[1,"1"]},
               {"metric":{"instance":"10.0.0.1:9000","job":"gpulab"},"value":[1,"1"]}"#,
        );
        let fleet = assemble(&nodes, &[], &[], DEFAULT_NODE_URL);
        assert_eq!(fleet[0].instance, "10.0.0.1:9000");
    }
}

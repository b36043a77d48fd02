//! `GET /api/fleet`: every gpulab node that a Prometheus server scrapes, and their devices,
//! as the server reads them from Prometheus with queries of its own.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::diag::Verdict;
use crate::DeviceKind;

/// `GET /api/fleet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Fleet {
    /// Whether the server was given a Prometheus to read the fleet from
    /// (`--prometheus-url`); when it was not, `setup` says how and `nodes` is empty.
    pub configured: bool,
    /// How to give the server a Prometheus, when it has none.
    pub setup: Option<String>,
    /// The Prometheus read (without any user name or password of its URL).
    pub prometheus_url: Option<String>,
    /// When Prometheus was asked.
    pub queried_at: Option<DateTime<Utc>>,
    /// Every node that has served gpulab's metrics to Prometheus in the last hour, in the
    /// order of their `instance`.
    pub nodes: Vec<FleetNode>,
}

/// One gpulab server, as Prometheus scrapes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FleetNode {
    /// The scrape target's `instance` label, normally `host:port`.
    pub instance: String,
    /// The scrape job's `job` label.
    pub job: String,
    /// Whether Prometheus' last scrape of the node succeeded (`up == 1`).
    pub up: bool,
    /// The node's own gpulab, to open in the browser; `null` when none can be made out.
    pub url: Option<String>,
    /// The node's devices: those it reports now and, for a node that stopped answering,
    /// those it last reported within the hour.
    pub devices: Vec<FleetDevice>,
}

/// One device of a node, with its latest figures. A figure the node does not report (or
/// no longer does: the node is down) is `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FleetDevice {
    /// `cpu` or `cuda:N`, as on the node.
    pub id: String,
    pub kind: DeviceKind,
    /// The model, such as `NVIDIA H100 80GB HBM3`.
    pub name: String,
    pub uuid: Option<String>,
    /// Whether the node's latest scrape listed the device; false for a device of a node that
    /// is down, or gone from an up node's inventory.
    pub reported: bool,
    pub temperature_celsius: Option<f64>,
    pub power_watts: Option<f64>,
    /// Busy share, 0 to 1.
    pub utilization_ratio: Option<f64>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    /// The device's last finished diagnostic; `null`: unknown (none ran, or the node's
    /// gpulab does not export diagnostics).
    pub diagnostic: Option<FleetDiagnostic>,
}

/// A device's last finished diagnostic, from `gpulab_diagnostic_verdict`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FleetDiagnostic {
    pub level: u8,
    /// `pass`, `warn` or `fail`.
    pub verdict: Verdict,
    /// When it ended, where the node says (`gpulab_diagnostic_last_run_timestamp_seconds`).
    pub finished_at: Option<DateTime<Utc>>,
}

//! PLACEHOLDER for the engine (branch diag-engine), which replaces this file when it is merged: the
//! surface the service calls, with no checks behind it. Not a diagnostic engine.
#![allow(dead_code, unused_variables)]
use gpulab_shared::diag::{CheckResult, DeviceDiagnostic, Fault};
use gpulab_shared::Device;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baseline(BTreeMap<(String, String), Vec<f64>>);
impl Baseline {
    pub fn push(&mut self, check: &str, evidence: &str, measured: f64) {
        self.0
            .entry((check.to_owned(), evidence.to_owned()))
            .or_default()
            .push(measured);
    }
}
pub struct Plan {
    pub level: u8,
    pub duration_s: f64,
    pub faults: Vec<Fault>,
    pub baseline: Baseline,
    pub memory_test_max_bytes: Option<u64>,
}
pub enum Target<'a> {
    Cpu,
    Gpu(&'a mut crate::cuda::Gpu),
}
pub fn planned_checks(device: &Device, level: u8) -> Vec<CheckResult> {
    Vec::new()
}
pub fn run_device(
    device: &Device,
    target: Target<'_>,
    plan: &Plan,
    report: &mut dyn FnMut(&CheckResult),
) -> Vec<CheckResult> {
    Vec::new()
}
pub fn compare_devices(devices: &mut [DeviceDiagnostic]) {}

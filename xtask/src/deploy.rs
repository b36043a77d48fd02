//! `cargo xtask deploy`: checks the deployment artefacts of deploy/ without a cluster: the
//! Kubernetes manifests and their rendered Kustomize output (kubernetes-validate, strict),
//! the ServiceMonitor (the Prometheus Operator's API schema), the Prometheus rules
//! (`promtool check rules`, `promtool test rules`) and the Grafana dashboard's queries.
//! The checks themselves are deploy/check/check.py; its unit tests run first.

use anyhow::Result;

use crate::process::{command, run, workspace_root};
use crate::setup;

/// Installs what the checks need (promtool, kubernetes-validate, the npm schema package)
/// when missing, then runs them.
pub fn check() -> Result<()> {
    let promtool = setup::promtool()?;
    let python = setup::kubernetes_validate()?;
    setup::npm_ci("deploy/check")?;
    let check_dir = workspace_root().join("deploy/check");
    run(command(&python.to_string_lossy())
        .args(["-m", "unittest", "discover", "-s"])
        .arg(&check_dir)
        .env("PYTHONPATH", &check_dir))?;
    run(command(&python.to_string_lossy())
        .arg(check_dir.join("check.py"))
        .env("PROMTOOL", promtool))
}

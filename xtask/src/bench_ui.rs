//! `cargo xtask bench-ui`: what the browser UI costs a visitor. Builds the UI and the release
//! server, starts the server with a fresh data folder and runs `end2end/bench-ui.mjs`
//! against it, which prints the compressed bytes the devices page downloads, the time from
//! navigation to the device cards in headless Chromium, and how the jobs table pages
//! through a long history. It prints figures; it does not judge them.

use std::fs;

use anyhow::{Context, Result};

use crate::process::{cargo, command, run, workspace_root};
use crate::setup::{run_setup, SetupOptions};
use crate::test::{fresh_data_dir, RunningServer};
use crate::{build_ui, target_dir};

/// Runs the UI benchmark.
pub fn bench_ui() -> Result<()> {
    run_setup(SetupOptions {
        lint: false,
        browser: true,
        cuda_libraries: false,
    })?;
    build_ui()?;
    run(cargo().args(["build", "--release", "-p", "gpulab-server"]))?;
    let data_dir = fresh_data_dir()?;
    let server = RunningServer::start(
        &target_dir().join("release/gpulab"),
        &workspace_root().join("dist"),
        &data_dir,
    )?;
    let bench = run(command("node")
        .arg("bench-ui.mjs")
        .env("GPULAB_URL", &server.url)
        .current_dir(workspace_root().join("end2end")));
    let stopped = server.stop();
    fs::remove_dir_all(&data_dir)
        .with_context(|| format!("could not remove {}", data_dir.display()))?;
    bench.and(stopped)
}

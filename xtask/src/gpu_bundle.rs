//! `cargo xtask gpu-bundle`: the folder to copy to a GPU machine for the GPU check.
//!
//! The machine needs no Rust and no network: the bundle holds the release server, the CUDA
//! integration tests (a test binary that starts that server) and the check scripts of
//! gpu-check/. There, `gpu-bundle/run.sh REPORT_DIR` runs everything in a few minutes.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::process::{cargo, run, workspace_root};

/// The bundle's folder (ignored by git).
pub fn bundle_dir() -> PathBuf {
    workspace_root().join("gpu-bundle")
}

pub fn gpu_bundle() -> Result<()> {
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "gpulab-server",
        "--bin",
        "gpulab",
    ]))?;
    let tests = cuda_test_binary()?;
    let dir = bundle_dir();
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let copies = [
        (crate::target_dir().join("release/gpulab"), "gpulab"),
        (tests, "cuda-tests"),
        (workspace_root().join("gpu-check/run.sh"), "run.sh"),
        (workspace_root().join("gpu-check/check.py"), "check.py"),
    ];
    for (from, name) in copies {
        copy(&from, &dir.join(name))?;
    }
    // The test binary's debug information is most of its size; the bundle travels.
    let tests = dir.join("cuda-tests");
    if let Err(e) = run(crate::process::command("strip").arg(&tests)) {
        println!(
            "note: {} keeps its debug information: {e:#}",
            tests.display()
        );
    }
    println!(
        "built {}: copy it to a GPU machine and run `{}/run.sh REPORT_DIR` there",
        dir.display(),
        dir.display()
    );
    Ok(())
}

/// Builds server/tests/cuda.rs and returns the test binary's path, which cargo prints in
/// its JSON messages.
fn cuda_test_binary() -> Result<PathBuf> {
    let output = cargo()
        .args([
            "test",
            "--no-run",
            "-p",
            "gpulab-server",
            "--test",
            "cuda",
            "--message-format=json",
        ])
        .output()
        .context("could not run cargo")?;
    if !output.status.success() {
        bail!(
            "building the CUDA tests failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "cuda")
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .context("cargo named no executable for the `cuda` test")
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

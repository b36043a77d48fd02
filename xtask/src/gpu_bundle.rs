//! `cargo xtask gpu-bundle`: the folder to copy to a GPU machine for the GPU check.
//!
//! The machine needs no Rust and no network: the bundle holds the release server, the
//! server's integration tests (test binaries that start that server: the CUDA tests, and the
//! API, metrics, telemetry, worker and peaks tests, which take their GPU branches there) and the check
//! scripts of gpu-check/ (check.py, and diag.py for `gpulab diag`). There,
//! `gpu-bundle/run.sh REPORT_DIR` runs everything in a few minutes.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::process::{cargo, command, run, workspace_root};

/// The server's integration tests that the bundle carries.
const TESTS: [&str; 7] = [
    "cuda",
    "gemm_dtypes",
    "api",
    "metrics",
    "telemetry",
    "workers",
    "peaks",
];

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
    let tests = test_binaries()?;
    let dir = bundle_dir();
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let copies = [
        (crate::target_dir().join("release/gpulab"), "gpulab"),
        (workspace_root().join("gpu-check/run.sh"), "run.sh"),
        (workspace_root().join("gpu-check/check.py"), "check.py"),
        (workspace_root().join("gpu-check/diag.py"), "diag.py"),
    ];
    for (from, name) in copies {
        copy(&from, &dir.join(name))?;
    }
    for (name, from) in tests {
        let to = dir.join(format!("{name}-tests"));
        copy(&from, &to)?;
        // A test binary's debug information is most of its size, and the bundle travels.
        if let Err(e) = run(command("strip").arg(&to)) {
            println!("note: {} keeps its debug information: {e:#}", to.display());
        }
    }
    println!(
        "built {}: copy it to a GPU machine and run `{}/run.sh REPORT_DIR` there",
        dir.display(),
        dir.display()
    );
    Ok(())
}

/// Builds the integration tests of [`TESTS`] and returns each one's binary, whose path
/// cargo prints in its JSON messages.
fn test_binaries() -> Result<Vec<(&'static str, PathBuf)>> {
    let mut args = vec![
        "test",
        "--no-run",
        "-p",
        "gpulab-server",
        "--message-format=json",
    ];
    for name in TESTS {
        args.extend(["--test", name]);
    }
    let output = cargo()
        .args(&args)
        .output()
        .context("could not run cargo")?;
    if !output.status.success() {
        bail!(
            "building the integration tests failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let messages: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|msg: &serde_json::Value| msg["reason"] == "compiler-artifact")
        .collect();
    TESTS
        .iter()
        .map(|&name| {
            messages
                .iter()
                .filter(|msg| msg["target"]["name"] == name)
                .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
                .map(|path| (name, path))
                .with_context(|| format!("cargo named no executable for the `{name}` test"))
        })
        .collect()
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    Ok(())
}

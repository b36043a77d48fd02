//! gpulab's project tasks, run as `cargo xtask <task>` (the alias is in .cargo/config.toml).
//!
//! Every task prints the commands it runs, so anything it does can be repeated by hand.

mod bench_ui;
mod compress;
mod deploy;
mod docker;
mod gpu_bundle;
mod process;
mod setup;
mod test;

use std::env;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::process::{cargo, command, run, workspace_root};
use crate::setup::{run_setup, SetupOptions};

const USAGE: &str = "\
usage: cargo xtask <task> [arguments]

tasks:
  setup [--browser]  install the missing tools: the wasm32 target, rustfmt, clippy, trunk,
                     wasm-bindgen and wasm-opt; with --browser also Chromium, chromedriver
                     and the npm packages of end2end/
  ui                 build the browser UI into dist/: bundle the CUDA editor's CodeMirror
                     (npm ci, esbuild in frontend/editor-js), trunk build --release, then
                     brotli and gzip copies of its files for the server to send
  serve [args...]    setup, ui, then run the release server on http://127.0.0.1:8080;
                     the arguments go to `gpulab serve` (see `gpulab serve --help`)
  dist               setup, ui and the release build of the server (used by the Dockerfile)
  bench              the benchmark: job latency, GET /api/devices requests/s, CPU saxpy and
                     reduce_sum GB/s beside a memory copy, then 30 s of load and chaos
                     (kill -9 of workers and the server; fails if a job is lost or stuck)
  bench-ui           the UI benchmark: compressed bytes of every page and load time of the
                     devices page in headless Chromium, jobs table paging with 1,000 jobs
                     (prints figures)
  gpu-bundle         build gpu-bundle/: the release server, the CUDA integration tests and
                     the GPU check (gpu-check/run.sh, check.py), to copy to a GPU machine
                     and run there as `gpu-bundle/run.sh REPORT_DIR`
  docker [--full]    the container test: start the Docker engine if none answers, make
                     stand-in base images (debootstrap, PyPI's NVRTC and cuBLAS), build the
                     image from the Dockerfile with the release server and UI built here
                     (--full: the whole two-stage build, its log in docs/docker/), run it
                     as the README says and check it (prints figures)
  test               everything CI checks: setup --browser, fmt, clippy, tests, deploy, ui, the
                     browser tests and Schemathesis against a running server, and the
                     container test (`docker` without --full); .ci/run runs this
  api-schema         the debug server build, then Schemathesis (installed into
                     .tools/schemathesis) against its /api/openapi.json
  deploy             check deploy/: the Kubernetes manifests (kubernetes-validate, strict),
                     the Prometheus rules (promtool check and test) and the Grafana
                     dashboard's queries
";

fn main() -> ExitCode {
    match run_task() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is::<test::FailureReported>() => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_task() -> Result<()> {
    process::prepend_tool_dirs_to_path()?;
    let mut args = env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();
    match task.as_deref() {
        Some("setup") => {
            let browser = match rest.as_slice() {
                [] => false,
                [flag] if flag == "--browser" => true,
                _ => bail!(
                    "`setup` takes only --browser, not `{}`\n\n{USAGE}",
                    rest.join(" ")
                ),
            };
            run_setup(SetupOptions {
                lint: true,
                browser,
                cuda_libraries: true,
            })
        }
        Some("ui") => {
            no_arguments("ui", &rest)?;
            build_ui()
        }
        Some("serve") => serve(&rest),
        Some("dist") => {
            no_arguments("dist", &rest)?;
            dist()
        }
        Some("test") => {
            no_arguments("test", &rest)?;
            test::run_tests()
        }
        Some("api-schema") => {
            no_arguments("api-schema", &rest)?;
            run(cargo().args(["build", "-p", "gpulab-server"]))?;
            test::api_schema()
        }
        Some("bench") => {
            no_arguments("bench", &rest)?;
            // The benchmark starts the release server itself (CARGO_BIN_EXE_gpulab).
            run(cargo().args(["bench", "-p", "gpulab-server", "--bench", "e2e"]))?;
            // Load and chaos: it exits non-zero if a job answered 202 is lost or stuck.
            run(cargo().args(["bench", "-p", "gpulab-server", "--bench", "chaos"]))
        }
        Some("docker") => {
            let full = match rest.as_slice() {
                [] => false,
                [flag] if flag == "--full" => true,
                _ => bail!(
                    "`docker` takes only --full, not `{}`\n\n{USAGE}",
                    rest.join(" ")
                ),
            };
            docker::docker(docker::DockerOptions {
                full,
                build_ui: true,
            })
        }
        Some("gpu-bundle") => {
            no_arguments("gpu-bundle", &rest)?;
            gpu_bundle::gpu_bundle()
        }
        Some("deploy") => {
            no_arguments("deploy", &rest)?;
            deploy::check()
        }
        Some("bench-ui") => {
            no_arguments("bench-ui", &rest)?;
            bench_ui::bench_ui()
        }
        None | Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown task `{other}`\n\n{USAGE}"),
    }
}

fn no_arguments(task: &str, rest: &[String]) -> Result<()> {
    if rest.is_empty() {
        Ok(())
    } else {
        bail!(
            "`{task}` takes no arguments, got `{}`\n\n{USAGE}",
            rest.join(" ")
        )
    }
}

/// Builds the Leptos UI into dist/ with the root Trunk.toml, then compresses it ahead of
/// time for the server to send.
pub fn build_ui() -> Result<()> {
    if !workspace_root().join("Trunk.toml").is_file() {
        bail!("Trunk.toml is missing from the workspace root: it tells trunk to build frontend/ into dist/");
    }
    code_editor_bundle()?;
    // trunk otherwise asks the network for a newer trunk on every build.
    run(command("trunk")
        .args(["build", "--release"])
        .env("TRUNK_SKIP_VERSION_CHECK", "true"))?;
    compress::precompress(&workspace_root().join("dist"))
}

/// Bundles the CUDA editor's CodeMirror (frontend/editor-js/, exact versions in its
/// package-lock.json) into frontend/vendor/codemirror.js, which trunk copies into dist/:
/// esbuild, minified, run by frontend/editor-js/build.mjs.
fn code_editor_bundle() -> Result<()> {
    const FOLDER: &str = "frontend/editor-js";
    setup::npm_ci(FOLDER)?;
    run(command("node")
        .arg("build.mjs")
        .current_dir(workspace_root().join(FOLDER)))
}

/// Builds everything and replaces this process with the release server, so that Ctrl-C
/// and the server's exit status go straight to the user.
fn serve(server_args: &[String]) -> Result<()> {
    run_setup(SetupOptions {
        lint: false,
        browser: false,
        cuda_libraries: false,
    })?;
    build_ui()?;
    let mut server = cargo();
    server
        .args([
            "run",
            "--release",
            "-p",
            "gpulab-server",
            "--",
            "serve",
            "--static-dir",
            "dist",
        ])
        .args(server_args);
    println!("$ {}", process::display(&server));
    let error = server.exec();
    Err(error).context("could not start cargo")
}

/// The release artefacts: dist/ and target/release/gpulab.
pub fn dist() -> Result<()> {
    run_setup(SetupOptions {
        lint: false,
        browser: false,
        cuda_libraries: false,
    })?;
    build_ui()?;
    run(cargo().args(["build", "--release", "-p", "gpulab-server"]))?;
    println!(
        "built {} and {}",
        workspace_root().join("dist").display(),
        target_dir().join("release/gpulab").display()
    );
    Ok(())
}

/// Cargo's target folder, which CARGO_TARGET_DIR may move.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

//! `cargo xtask test`: every check CI makes, in order, stopping at the first failure.
//!
//! The last line printed is the summary, `N passed, 0 failed` when everything passed.

use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::process::{self, cargo, command, run, workspace_root};
use crate::setup::{run_setup, SetupOptions};
use crate::{build_ui, target_dir};

/// How long the server may take to print its address.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the server may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The line the server prints on stdout once it accepts connections, followed by its URL.
const LISTENING: &str = "gpulab listening on ";

/// Returned once a failure and the summary have been printed, so `main` prints nothing more.
#[derive(Debug)]
pub struct FailureReported;

impl fmt::Display for FailureReported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cargo xtask test failed")
    }
}

impl std::error::Error for FailureReported {}

/// A named check; the name is what the summary blames when it fails.
type Step = (&'static str, fn() -> Result<()>);

/// Runs every step and prints the summary.
pub fn run_tests() -> Result<()> {
    let steps: [Step; 12] = [
        ("setup --browser", || {
            run_setup(SetupOptions {
                lint: true,
                browser: true,
                cuda_libraries: true,
            })
        }),
        ("format", || run(cargo().args(["fmt", "--all", "--check"]))),
        ("clippy", || {
            run(cargo().args([
                "clippy",
                "--workspace",
                "--exclude",
                "gpulab-frontend",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        }),
        ("clippy (wasm32 frontend)", || {
            run(cargo().args([
                "clippy",
                "-p",
                "gpulab-frontend",
                "--target",
                "wasm32-unknown-unknown",
                "--",
                "-D",
                "warnings",
            ]))
        }),
        ("unit and integration tests", || {
            run(process::with_cuda_libraries(&mut cargo()).args([
                "test",
                "--workspace",
                "--exclude",
                "gpulab-frontend",
            ]))
        }),
        // The frontend's pure modules (the editor's checks, the compile-log reader) are
        // tested on the host: the crate builds natively too.
        ("frontend unit tests", || {
            run(cargo().args(["test", "-p", "gpulab-frontend"]))
        }),
        // Kubernetes manifests, Prometheus rules and the Grafana dashboard of deploy/.
        ("deploy", crate::deploy::check),
        ("ui", build_ui),
        ("server build", || {
            run(cargo().args(["build", "-p", "gpulab-server"]))
        }),
        ("browser tests", browser_tests),
        ("api schema (schemathesis)", api_schema),
        // The image from the real Dockerfile, run and checked with a real Docker engine;
        // the UI in dist/ is the one the `ui` step built.
        ("container", || {
            crate::docker::docker(crate::docker::DockerOptions {
                full: false,
                build_ui: false,
            })
        }),
    ];
    let mut passed = 0;
    // How long each step took, printed before the summary: CI's time limit is 90 minutes.
    let mut times = String::new();
    let started = Instant::now();
    for (name, step) in steps {
        println!("\n=== {name}");
        let step_started = Instant::now();
        let outcome = step();
        times.push_str(&format!(
            "  {:>6.0} s  {name}\n",
            step_started.elapsed().as_secs_f64()
        ));
        if let Err(error) = outcome {
            eprintln!("\nerror in step `{name}`: {error:#}");
            print!("\ntime per step:\n{times}");
            println!("{passed} passed, 1 failed");
            return Err(FailureReported.into());
        }
        passed += 1;
    }
    print!(
        "\ntime per step:\n{times}  {:>6.0} s  in all\n",
        started.elapsed().as_secs_f64()
    );
    println!("\n{passed} passed, 0 failed");
    Ok(())
}

/// Starts the debug server on a free port with a fresh data folder and runs `node --test`
/// in end2end/ against it.
fn browser_tests() -> Result<()> {
    let end2end = workspace_root().join("end2end");
    if !has_node_tests(&end2end)? {
        bail!("end2end/ holds no test files that `node --test` would run (such as `*.test.mjs`)");
    }
    // Debian's Prometheus, which end2end/fleet.test.mjs runs: the package brings promtool too.
    let prometheus = crate::setup::promtool()?.with_file_name("prometheus");
    in_fresh_data_dir(|data_dir| run_against_server(&end2end, data_dir, &prometheus))
}

/// The Schemathesis checks: the status code, content type, headers and body of every answer
/// must be the ones the document declares, no answer may be a 5xx, and a request the schema
/// forbids must be refused. Left out: `use_after_free` (DELETE cancels a job, which stays
/// readable), `ensure_resource_availability` (it follows the link Schemathesis infers from
/// POST /api/jobs to the job's artifact, which only a Mandelbrot job has),
/// `positive_data_acceptance` (the schema cannot list the kernels and devices a server has,
/// so schema-valid requests meet 404 and 422) and the token checks (every request carries
/// the token).
const SCHEMATHESIS_CHECKS: &str = "not_a_server_error,status_code_conformance,\
    content_type_conformance,response_headers_conformance,response_schema_conformance,\
    negative_data_rejection,unsupported_method,allow_header_conformance";
/// Test cases per operation and phase: enough to reach every documented answer, few enough
/// for about a minute on two cores.
const SCHEMATHESIS_EXAMPLES: &str = "50";
/// A fixed seed, so that a failure is the same on every run; change it to explore further.
const SCHEMATHESIS_SEED: &str = "20261203";
/// The server's token, sent with every request: `POST /api/users` turns lab mode on in the
/// middle of the run, after which the token (an admin credential there) still reaches
/// every operation, where requests without it would all meet 401.
const SCHEMATHESIS_TOKEN: &str = "schemathesis-token";

/// Starts the debug server on a free port with a fresh data folder and runs Schemathesis
/// against its `/api/openapi.json`: every operation in every phase (the document's examples,
/// coverage, fuzzing, and the stateful phase that follows its links).
pub fn api_schema() -> Result<()> {
    let st = crate::setup::schemathesis()?;
    // Schemathesis keeps its cache (for `st replay`) in its working folder.
    let work_dir = target_dir().join("schemathesis");
    fs::create_dir_all(&work_dir)
        .with_context(|| format!("could not create {}", work_dir.display()))?;
    in_fresh_data_dir(|data_dir| {
        // Schema-valid submissions start real CPU jobs: two may wait, each ends within 10 s.
        let server = RunningServer::start_with_env(
            &target_dir().join("debug/gpulab"),
            &workspace_root().join("dist"),
            data_dir,
            &[
                ("GPULAB_QUEUE_CAPACITY", "2"),
                ("GPULAB_MAX_TIMEOUT_S", "10"),
                ("GPULAB_DEFAULT_TIMEOUT_S", "10"),
                ("GPULAB_TOKEN", SCHEMATHESIS_TOKEN),
            ],
        )?;
        let checked = run(command(&st.to_string_lossy())
            .arg("run")
            .arg(format!("{}/api/openapi.json", server.url))
            .args(["--checks", SCHEMATHESIS_CHECKS])
            .args([
                "--header",
                &format!("Authorization: Bearer {SCHEMATHESIS_TOKEN}"),
            ])
            // An event stream never ends: each request would run into the timeout.
            .args(["--exclude-path", "/api/events"])
            .args(["--max-examples", SCHEMATHESIS_EXAMPLES])
            .args(["--seed", SCHEMATHESIS_SEED])
            // One worker: Python 3.11's ast.parse, which Hypothesis calls, is not thread-safe.
            .args(["--workers", "1", "--request-timeout", "10", "--no-color"])
            .args(["--generation-database", "none"])
            .current_dir(&work_dir));
        let stopped = server.stop();
        match (checked, stopped) {
            (Err(checked), Err(stopped)) => {
                eprintln!("warning: {stopped:#}");
                Err(checked)
            }
            (checked, stopped) => checked.and(stopped),
        }
    })
}

/// Runs `with_dir` with a new, empty data folder, removed afterwards unless the run failed and
/// the server wrote something there.
fn in_fresh_data_dir(with_dir: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let data_dir = fresh_data_dir()?;
    match with_dir(&data_dir) {
        Ok(()) => fs::remove_dir_all(&data_dir)
            .with_context(|| format!("could not remove {}", data_dir.display())),
        Err(error) => {
            // Keep what the server wrote, for a look at the failure; an empty folder goes.
            let _ = fs::remove_dir(&data_dir);
            if data_dir.exists() {
                bail!(
                    "{error:#}\n(the server's data folder is kept: {})",
                    data_dir.display()
                );
            }
            Err(error)
        }
    }
}

fn run_against_server(end2end: &Path, data_dir: &Path, prometheus: &Path) -> Result<()> {
    let binary = target_dir().join("debug/gpulab");
    let static_dir = workspace_root().join("dist");
    // Test faults let the browser tests see a diagnostic fail (an injected bit flip); with
    // them, the CPU's memory test covers 64 MiB rather than up to 1 GiB.
    let server = RunningServer::start_with(
        &binary,
        &static_dir,
        data_dir,
        &[("GPULAB_TEST_MEMORY_TEST_BYTES", "67108864")],
        &["--enable-test-faults"],
    )?;
    // Node 18 and 20 take a folder argument, newer Node only globs: running `node --test`
    // inside end2end/ finds the same files on every version. The binary and the UI are
    // passed too, for the test that restarts a server of its own.
    let tests = run(command("node")
        .arg("--test")
        .env("GPULAB_URL", &server.url)
        .env("GPULAB_BIN", &binary)
        .env("GPULAB_STATIC_DIR", &static_dir)
        .env("GPULAB_PROMETHEUS", prometheus)
        .current_dir(end2end));
    let stopped = server.stop();
    match (tests, stopped) {
        (Err(tests), Err(stopped)) => {
            eprintln!("warning: {stopped:#}");
            Err(tests)
        }
        (tests, stopped) => tests.and(stopped),
    }
}

/// A server started for the browser tests or the UI benchmark; dropping it stops the server.
pub struct RunningServer {
    child: Child,
    /// Where it listens, such as `http://127.0.0.1:41234`.
    pub url: String,
}

impl RunningServer {
    /// Starts `binary` on a free port, serving the UI in `static_dir` and keeping its jobs
    /// in `data_dir`, and waits until it listens.
    pub fn start(binary: &Path, static_dir: &Path, data_dir: &Path) -> Result<Self> {
        Self::start_with_env(binary, static_dir, data_dir, &[])
    }

    /// [`RunningServer::start`] with environment variables (`GPULAB_*` settings) added.
    pub fn start_with_env(
        binary: &Path,
        static_dir: &Path,
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> Result<Self> {
        Self::start_with(binary, static_dir, data_dir, env, &[])
    }

    /// [`RunningServer::start_with_env`] with arguments added to `serve`'s.
    pub fn start_with(
        binary: &Path,
        static_dir: &Path,
        data_dir: &Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Result<Self> {
        let mut server = Command::new(binary);
        server
            .envs(env.iter().copied())
            .current_dir(workspace_root())
            .args(["serve", "--addr", "127.0.0.1:0", "--static-dir"])
            .arg(static_dir)
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        println!("$ {}", process::display(&server));
        let mut child = server
            .spawn()
            .with_context(|| format!("could not start {}", binary.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");

        // The thread passes the server's stdout through, which also keeps the pipe from
        // filling up, and hands over the URL from the line that announces it.
        let (url_sender, url_receiver) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                println!("{line}");
                if let Some(url) = line.split_once(LISTENING).map(|(_, url)| url.trim()) {
                    let _ = url_sender.send(url.trim_end_matches('/').to_owned());
                }
            }
        });

        let mut server = RunningServer {
            child,
            url: String::new(),
        };
        match url_receiver.recv_timeout(LISTEN_TIMEOUT) {
            Ok(url) => {
                server.url = url;
                Ok(server)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                "the server did not print `{LISTENING}http://…` within {} s",
                LISTEN_TIMEOUT.as_secs()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = server
                    .child
                    .wait()
                    .context("could not wait for the server")?;
                bail!("the server exited ({status}) before printing `{LISTENING}http://…`")
            }
        }
    }

    /// Asks the server to stop with SIGTERM, and kills it if it has not stopped in time.
    pub fn stop(mut self) -> Result<()> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = self.child.id().to_string();
        let _ = command("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(100));
        }
        self.child.kill()?;
        self.child.wait()?;
        bail!(
            "the server did not stop within {} s of SIGTERM and was killed",
            STOP_TIMEOUT.as_secs()
        )
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Err(error) = self.terminate() {
            eprintln!("warning: {error:#}");
        }
    }
}

/// A new, empty folder for the server's data under the system's temporary folder.
pub fn fresh_data_dir() -> Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("gpulab-end2end-{}-{nanos}", std::process::id()));
    fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    Ok(dir)
}

/// Whether `dir` holds a file that `node --test` finds by its default patterns.
fn has_node_tests(dir: &Path) -> Result<bool> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(false);
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() {
            if name != "node_modules"
                && !name.starts_with('.')
                && (name == "test" || has_node_tests(&path)?)
            {
                return Ok(true);
            }
        } else if is_node_test_file(&name) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Node's default test file patterns: `test.js`, `test-*.js`, `*.test.js`, `*-test.js` and
/// `*_test.js`, each also as `.mjs` and `.cjs`.
fn is_node_test_file(name: &str) -> bool {
    let Some(stem) = [".js", ".mjs", ".cjs"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
    else {
        return false;
    };
    stem == "test"
        || stem.starts_with("test-")
        || [".test", "-test", "_test"]
            .iter()
            .any(|suffix| stem.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::is_node_test_file;

    #[test]
    fn recognises_node_default_test_names() {
        for name in [
            "ui.test.mjs",
            "test.js",
            "test-jobs.cjs",
            "devices-test.js",
            "api_test.mjs",
        ] {
            assert!(is_node_test_file(name), "{name}");
        }
        for name in [
            "helpers.mjs",
            "ui.test.ts",
            "package.json",
            "testing.js",
            "latest.js",
        ] {
            assert!(!is_node_test_file(name), "{name}");
        }
    }
}

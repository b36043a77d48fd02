//! `cargo xtask docker [--full]`: the container test. Builds the image from the real
//! Dockerfile on stand-in base images made here (no registry is needed), runs it as the
//! README says, and checks what a user relies on: healthy, the UI, every built-in kernel,
//! a non-root user, the token, history across restarts, a clean `docker stop`, and a
//! read-only root filesystem. Prints every figure (image size, build, start and stop times).
//!
//! Without `--full` the runtime stage is built from the server and UI built here
//! (`--build-arg ARTIFACTS=prebuilt`); `--full` runs the whole two-stage build, the build
//! stage included, on a stand-in Rust image, and writes its log to docs/docker/.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::process::{self, command, find_on_path, run, workspace_root};
use crate::target_dir;

/// The image's name, as the README's `docker build -t gpulab .` gives it.
const IMAGE: &str = "gpulab";
/// A minimal Debian made by debootstrap: the root of the other stand-ins.
const DEBIAN_STAND_IN: &str = "gpulab-ci/debian:bookworm";
/// Stands in for `nvidia/cuda:12.8.1-runtime-ubuntu24.04`: NVRTC and cuBLAS of CUDA 12.8.1
/// from PyPI's wheels (installed by `cargo xtask setup`), where the real image keeps them,
/// registered with ldconfig.
const CUDA_STAND_IN: &str = "gpulab-ci/cuda:12.8.1-runtime";
/// Stands in for `rust:1.95-bookworm` (only for `--full`): this machine's Rust toolchain.
const RUST_STAND_IN: &str = "gpulab-ci/rust:bookworm";
/// The label that records which recipe made a stand-in, so that a changed recipe rebuilds it.
const RECIPE_LABEL: &str = "org.gpulab.recipe";
/// The container and volume the checks use; removed before and after.
const CONTAINER: &str = "gpulab-ci";
const VOLUME: &str = "gpulab-ci-data";
/// How long a container may take to turn healthy.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `docker stop` may take: the promise to users.
const STOP_LIMIT: Duration = Duration::from_secs(10);
/// How long one built-in kernel's job may take on the CPU with its default parameters.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// What `cargo xtask docker` was asked for.
pub struct DockerOptions {
    /// The whole two-stage build instead of the runtime stage from local artefacts.
    pub full: bool,
    /// Set up the tools (Chromium included) and build the UI and the release server first
    /// (`cargo xtask dist`); `cargo xtask test` has done the set-up and built the UI already,
    /// and only builds the release server.
    pub build_ui: bool,
}

/// Figures, printed as a table at the end.
#[derive(Default)]
struct Figures(Vec<(String, String)>);

impl Figures {
    fn add(&mut self, what: &str, figure: impl Into<String>) {
        let figure = figure.into();
        println!("  {what}: {figure}");
        self.0.push((what.to_owned(), figure));
    }

    fn time(&mut self, what: &str, since: Instant) -> Duration {
        let took = since.elapsed();
        self.add(what, seconds(took));
        took
    }

    fn table(&self) -> String {
        let width = self.0.iter().map(|(what, _)| what.len()).max().unwrap_or(0);
        let mut table = String::new();
        for (what, figure) in &self.0 {
            let _ = writeln!(table, "{what:<width$}  {figure}");
        }
        table
    }
}

fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

pub fn docker(options: DockerOptions) -> Result<()> {
    let mut figures = Figures::default();
    let started = Instant::now();
    if options.build_ui {
        // Chromium and end2end/'s npm packages, for the UI check, and PyPI's NVRTC and
        // cuBLAS for the CUDA stand-in (`test` has them already).
        crate::setup::run_setup(crate::setup::SetupOptions {
            lint: false,
            browser: true,
            cuda_libraries: true,
        })?;
    }

    println!("\n--- the Docker engine");
    let step = Instant::now();
    engine()?;
    figures.time("engine ready", step);

    println!("\n--- stand-in base images");
    let step = Instant::now();
    stand_ins(options.full)?;
    figures.time("stand-in bases", step);

    println!("\n--- the image");
    let tag = if options.full {
        full_build(&mut figures)?
    } else {
        prebuilt_build(&options, &mut figures)?
    };
    let size: u64 = docker_output(&["image", "inspect", "-f", "{{.Size}}", &tag])?
        .parse()
        .context("docker image inspect printed no size")?;
    figures.add("image size", format!("{:.0} MB", size as f64 / 1e6));

    println!("\n--- the container, run as the README says");
    let checked = container_checks(&tag, &mut figures);
    cleanup();
    checked?;
    figures.time("whole container test", started);

    let table = figures.table();
    println!("\ncontainer figures:\n{table}");
    let report = target_dir().join("docker/figures.txt");
    fs::write(&report, &table).with_context(|| format!("could not write {}", report.display()))?;
    println!("(also in {})", report.display());
    if options.full {
        // Kept beside the build's log: what the full image did when it was checked.
        let kept = workspace_root().join("docs/docker/full-figures.txt");
        fs::write(&kept, &table).with_context(|| format!("could not write {}", kept.display()))?;
    }
    Ok(())
}

/// The `docker.io` package's own client, by its full path: a newer client earlier on PATH
/// refuses BuildKit without the buildx plugin. BuildKit is asked for by variable, as Debian's
/// Docker 20.10 does not use it by default.
fn docker_cli() -> Command {
    let program = ["/usr/bin/docker", "/usr/local/bin/docker"]
        .into_iter()
        .find(|path| Path::new(path).is_file())
        .unwrap_or("docker");
    let mut docker = command(program);
    docker.env("DOCKER_BUILDKIT", "1");
    docker
}

fn docker_run(args: &[&str]) -> Result<()> {
    run(docker_cli().args(args))
}

/// Runs a docker command quietly and returns its trimmed stdout; fails with its stderr.
fn docker_output(args: &[&str]) -> Result<String> {
    let output = docker_cli()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("could not start docker")?;
    if !output.status.success() {
        bail!(
            "`docker {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn docker_succeeds(args: &[&str]) -> bool {
    docker_cli()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Installs Debian's `docker.io` (and debootstrap) when missing and starts `dockerd` when
/// no engine answers.
fn engine() -> Result<()> {
    let mut missing = Vec::new();
    if !Path::new("/usr/bin/docker").is_file() {
        missing.push("docker.io");
    }
    if find_on_path("debootstrap").is_none() && !Path::new("/usr/sbin/debootstrap").is_file() {
        missing.push("debootstrap");
    }
    if !missing.is_empty() {
        crate::setup::apt_install("the Docker engine and debootstrap", &missing)?;
    }
    if docker_succeeds(&["info"]) {
        println!("the Docker engine answers");
        return Ok(());
    }
    if !process::is_root() {
        bail!("no Docker engine answers, and only root can start one: run `sudo dockerd &`");
    }
    let log_path = target_dir().join("docker/dockerd.log");
    fs::create_dir_all(log_path.parent().expect("a file in a folder"))?;
    let log = fs::File::create(&log_path)?;
    let dockerd = ["/usr/sbin/dockerd", "/usr/bin/dockerd"]
        .into_iter()
        .find(|path| Path::new(path).is_file())
        .unwrap_or("dockerd");
    println!("$ {dockerd} &  (log: {})", log_path.display());
    // Left running after this task, as a service would be: later runs reuse it.
    Command::new(dockerd)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("could not start dockerd")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if docker_succeeds(&["info"]) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(500));
    }
    bail!(
        "dockerd did not answer within 60 s; its log is {}",
        log_path.display()
    )
}

/// The stand-in base images, each made once and remade when its recipe changes.
fn stand_ins(full: bool) -> Result<()> {
    debian_stand_in()?;
    cuda_stand_in()?;
    if full {
        rust_stand_in()?;
    }
    Ok(())
}

/// The recipe a stand-in was made from, as its label records it; `None` if it is missing.
fn recipe_of(image: &str) -> Option<String> {
    let format = format!("{{{{ index .Config.Labels \"{RECIPE_LABEL}\" }}}}");
    docker_output(&["image", "inspect", "-f", &format, image]).ok()
}

/// Whether `image` exists, made from the recipe `id`.
fn made_before(image: &str, id: &str) -> bool {
    let made = recipe_of(image).as_deref() == Some(id);
    if made {
        println!("{image}: made before");
    }
    made
}

/// An empty folder at `path`, whatever was there.
fn fresh_folder(path: &Path) -> Result<()> {
    if path.exists() {
        fs::remove_dir_all(path).with_context(|| format!("could not empty {}", path.display()))?;
    }
    fs::create_dir_all(path).with_context(|| format!("could not create {}", path.display()))
}

/// Builds the stand-in `tag` from the Dockerfile in `context`, labelled with its recipe `id`,
/// then removes the context.
fn build_stand_in(tag: &str, id: &str, context: &Path) -> Result<()> {
    docker_run(&[
        "build",
        "--label",
        &format!("{RECIPE_LABEL}={id}"),
        "-t",
        tag,
        &context.to_string_lossy(),
    ])?;
    fs::remove_dir_all(context)?;
    Ok(())
}

/// A digest of a recipe's text, to put in a label.
fn recipe_id(recipe: &str) -> String {
    // FNV-1a: enough to notice a change, and no dependency.
    let hash = recipe
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}

/// `debootstrap --variant=minbase bookworm` from the mirror this machine's apt uses,
/// imported as an image.
fn debian_stand_in() -> Result<()> {
    let mirror = debian_mirror();
    let recipe = format!("debootstrap --variant=minbase bookworm {mirror}");
    let id = recipe_id(&recipe);
    if made_before(DEBIAN_STAND_IN, &id) {
        return Ok(());
    }
    let root = target_dir().join("docker/debian-rootfs");
    fresh_folder(&root)?;
    run(command("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&root)
        .arg(&mirror))?;
    // Debootstrap's apt caches and logs are not part of a base image.
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists", "var/log"] {
        let _ = fs::remove_dir_all(root.join(dir));
        fs::create_dir_all(root.join(dir))?;
    }
    let tar = command("tar")
        .arg("-C")
        .arg(&root)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start tar")?;
    println!(
        "$ tar -C {} -c . | docker import - {DEBIAN_STAND_IN}",
        root.display()
    );
    let imported = docker_cli()
        .args(["import", "--change", &format!("LABEL {RECIPE_LABEL}={id}")])
        .args(["--change", "CMD [\"/bin/bash\"]", "-", DEBIAN_STAND_IN])
        .stdin(tar.stdout.expect("piped"))
        .status()?;
    ensure!(imported.success(), "docker import failed ({imported})");
    fs::remove_dir_all(&root)?;
    Ok(())
}

/// The Debian mirror of this machine's apt sources (deb.debian.org when none is found).
fn debian_mirror() -> String {
    let sources = [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ];
    for path in sources {
        let Ok(text) = fs::read_to_string(path) else {
            continue;
        };
        for line in text.lines().map(str::trim) {
            let uri = line.strip_prefix("URIs:").map(str::trim).or_else(|| {
                line.strip_prefix("deb ")
                    .and_then(|rest| rest.split_whitespace().next())
            });
            if let Some(uri) = uri {
                if uri.ends_with("/debian") {
                    return uri.to_owned();
                }
            }
        }
    }
    "http://deb.debian.org/debian".to_owned()
}

/// The CUDA runtime stand-in: NVRTC and cuBLAS from PyPI's wheels in
/// /usr/local/cuda-12.8/targets/x86_64-linux/lib, as the real image keeps them, with the
/// real image's ldconfig entry and variables.
fn cuda_stand_in() -> Result<()> {
    const DOCKERFILE: &str = "\
FROM gpulab-ci/debian:bookworm
COPY lib/ /usr/local/cuda-12.8/targets/x86_64-linux/lib/
RUN ln -s targets/x86_64-linux/lib /usr/local/cuda-12.8/lib64 \\
 && ln -s /usr/local/cuda-12.8 /usr/local/cuda \\
 && echo /usr/local/cuda/targets/x86_64-linux/lib > /etc/ld.so.conf.d/988_cuda-12.conf \\
 && ldconfig
ENV NVIDIA_REQUIRE_CUDA=cuda>=12.8 CUDA_VERSION=12.8.1 \\
    LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64
";
    // The libraries `cargo xtask setup` took from PyPI's wheels, and the pins they came from.
    let libraries = workspace_root().join(crate::process::CUDA_LIB_DIR);
    let pins = fs::read_to_string(libraries.join("WHEELS")).with_context(|| {
        format!(
            "no CUDA libraries in {}: run `cargo xtask setup`",
            libraries.display()
        )
    })?;
    let recipe = format!("{DOCKERFILE}{pins}");
    let id = recipe_id(&recipe);
    let base_id = recipe_of(DEBIAN_STAND_IN).unwrap_or_default();
    let id = recipe_id(&format!("{id}{base_id}"));
    if made_before(CUDA_STAND_IN, &id) {
        return Ok(());
    }
    let context = target_dir().join("docker/cuda-stand-in");
    fresh_folder(&context)?;
    run(command("cp")
        .args(["-a", "--reflink=auto"])
        .arg(&libraries)
        .arg(context.join("lib")))?;
    let _ = fs::remove_file(context.join("lib/WHEELS"));
    fs::write(context.join("Dockerfile"), DOCKERFILE)?;
    build_stand_in(CUDA_STAND_IN, &id, &context)
}

/// The Rust stand-in for the full build: Debian with a C toolchain, this machine's Rust
/// toolchain (rustup, the wasm32 target included) and its CA certificates, so that the
/// build stage reaches crates.io and npm through this network's TLS proxy as the host does.
fn rust_stand_in() -> Result<()> {
    const DOCKERFILE: &str = "\
FROM gpulab-ci/debian:bookworm
COPY ca-certificates/ /usr/local/share/ca-certificates/
RUN apt-get update \\
 && apt-get install -y --no-install-recommends build-essential ca-certificates pkg-config git curl \\
 && rm -rf /var/lib/apt/lists/*
COPY rustup /usr/local/rustup
COPY cargo /usr/local/cargo
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \\
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \\
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN cd /usr/local/cargo/bin \\
 && for tool in cargo rustc rustdoc cargo-fmt rustfmt cargo-clippy clippy-driver; do ln -sf rustup $tool; done \\
 && cargo --version && rustc --version
";
    let home = PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?);
    let rustup_home = std::env::var_os("RUSTUP_HOME").map_or(home.join(".rustup"), PathBuf::from);
    let cargo_home = std::env::var_os("CARGO_HOME").map_or(home.join(".cargo"), PathBuf::from);
    let toolchain = process::query("rustc", &["--version"]).unwrap_or_default();
    let id = recipe_id(&format!(
        "{DOCKERFILE}{toolchain}{}",
        recipe_of(DEBIAN_STAND_IN).unwrap_or_default()
    ));
    if made_before(RUST_STAND_IN, &id) {
        return Ok(());
    }
    let context = target_dir().join("docker/rust-stand-in");
    fresh_folder(&context)?;
    fs::create_dir_all(context.join("cargo/bin"))?;
    fs::create_dir_all(context.join("ca-certificates"))?;
    // Only the toolchains and settings: not rustup's downloads or the host's crates.
    run(command("cp")
        .args(["-a", "--reflink=auto"])
        .arg(&rustup_home)
        .arg(context.join("rustup")))?;
    for dir in ["downloads", "tmp", "update-hashes"] {
        let _ = fs::remove_dir_all(context.join("rustup").join(dir));
    }
    // Only the toolchain that builds gpulab (and names that link to it): not a nightly too.
    let sysroot = process::query("rustc", &["--print", "sysroot"]).context("rustc is missing")?;
    let active = fs::canonicalize(&sysroot)?;
    for toolchain in fs::read_dir(rustup_home.join("toolchains"))? {
        let toolchain = toolchain?;
        let copy = context
            .join("rustup/toolchains")
            .join(toolchain.file_name());
        if fs::canonicalize(toolchain.path())? != active {
            if copy.is_symlink() {
                fs::remove_file(&copy)?;
            } else {
                fs::remove_dir_all(&copy)?;
            }
        } else if copy.is_symlink() {
            // rustup links by absolute path, which the image's RUSTUP_HOME would break.
            fs::remove_file(&copy)?;
            let target = active
                .file_name()
                .context("a toolchain folder has a name")?;
            std::os::unix::fs::symlink(target, &copy)?;
        }
    }
    fs::copy(
        cargo_home.join("bin/rustup"),
        context.join("cargo/bin/rustup"),
    )
    .context("rustup is not in CARGO_HOME/bin")?;
    for entry in fs::read_dir("/usr/local/share/ca-certificates")
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.path().extension().is_some_and(|ext| ext == "crt") {
            fs::copy(
                entry.path(),
                context.join("ca-certificates").join(entry.file_name()),
            )?;
        }
    }
    fs::write(context.join("Dockerfile"), DOCKERFILE)?;
    build_stand_in(RUST_STAND_IN, &id, &context)
}

/// The runtime stage from the release server and UI built on this machine.
fn prebuilt_build(options: &DockerOptions, figures: &mut Figures) -> Result<String> {
    let step = Instant::now();
    if options.build_ui {
        crate::dist()?;
    } else {
        run(crate::process::cargo().args(["build", "--release", "-p", "gpulab-server"]))?;
    }
    figures.time("release server and UI build", step);
    let context = target_dir().join("docker/context");
    fresh_folder(&context)?;
    let prebuilt = context.join("prebuilt");
    fs::create_dir_all(&prebuilt)?;
    fs::copy(target_dir().join("release/gpulab"), prebuilt.join("gpulab"))
        .context("target/release/gpulab is missing")?;
    run(command("cp")
        .arg("-a")
        .arg(workspace_root().join("dist"))
        .arg(prebuilt.join("dist")))?;
    let step = Instant::now();
    docker_run(&[
        "build",
        "-f",
        &workspace_root().join("Dockerfile").to_string_lossy(),
        "--build-arg",
        "ARTIFACTS=prebuilt",
        "--build-arg",
        &format!("RUNTIME_BASE={CUDA_STAND_IN}"),
        "--build-arg",
        &format!("BUILD_BASE={DEBIAN_STAND_IN}"),
        "-t",
        IMAGE,
        &context.to_string_lossy(),
    ])?;
    figures.time("docker build (runtime stage)", step);
    Ok(IMAGE.to_owned())
}

/// The full two-stage build from the repository, its log kept in docs/docker/.
fn full_build(figures: &mut Figures) -> Result<String> {
    let tag = format!("{IMAGE}:full");
    let log_path = workspace_root().join("docs/docker/full-build.log");
    fs::create_dir_all(log_path.parent().expect("a file in a folder"))?;
    let mut build = docker_cli();
    build.args([
        "build",
        "--progress=plain",
        "--build-arg",
        &format!("BUILD_BASE={RUST_STAND_IN}"),
        "--build-arg",
        &format!("RUNTIME_BASE={CUDA_STAND_IN}"),
        "-t",
        &tag,
        ".",
    ]);
    println!(
        "$ {}  (log: {})",
        process::display(&build),
        log_path.display()
    );
    let step = Instant::now();
    let output = build.stdin(Stdio::null()).output()?;
    let took = step.elapsed();
    let mut log = fs::File::create(&log_path)?;
    writeln!(
        log,
        "# {} on {}, {}",
        process::display(&build),
        process::query("hostname", &[]).unwrap_or_default(),
        process::query("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default()
    )?;
    log.write_all(&output.stdout)?;
    log.write_all(&output.stderr)?;
    writeln!(
        log,
        "# exit: {}, {:.0} s",
        output.status,
        took.as_secs_f64()
    )?;
    ensure!(
        output.status.success(),
        "the full docker build failed ({}); its log is {}",
        output.status,
        log_path.display()
    );
    figures.add("docker build (full, two stages)", seconds(took));
    Ok(tag)
}

fn cleanup() {
    let _ = docker_output(&["rm", "-f", CONTAINER]);
    let _ = docker_output(&["volume", "rm", "-f", VOLUME]);
}

/// A container started as the README's `docker run` (no `--gpus` here: no GPU), plus
/// `extra` flags, on a free loopback port; returns its URL once healthy, and the token.
struct Started {
    url: String,
    token: String,
}

fn start_container(
    image: &str,
    extra: &[&str],
    figures: &mut Figures,
    what: &str,
) -> Result<Started> {
    let volume = format!("{VOLUME}:/var/lib/gpulab");
    let mut args = vec![
        "run",
        "-d",
        "--name",
        CONTAINER,
        "-p",
        "127.0.0.1::8080",
        "-v",
        &volume,
    ];
    args.extend_from_slice(extra);
    args.push(image);
    let step = Instant::now();
    docker_run(&args)?;
    wait_healthy(figures, what, step)?;
    connect()
}

/// The `docker run` flags that give the container what deploy/kubernetes's DaemonSet gives
/// its Pod (user, read-only root, tmpfs, no capabilities, no privilege escalation), as
/// deploy/check/check.py reads them from the rendered manifest.
fn pod_security_flags() -> Result<Vec<String>> {
    let python = crate::setup::kubernetes_validate()?;
    let output = command(&python.to_string_lossy())
        .arg("deploy/check/check.py")
        .arg("--docker-run-flags")
        .stderr(Stdio::inherit())
        .output()
        .context("could not run deploy/check/check.py")?;
    ensure!(
        output.status.success(),
        "deploy/check/check.py --docker-run-flags failed ({})",
        output.status
    );
    serde_json::from_slice(&output.stdout)
        .context("deploy/check/check.py --docker-run-flags printed no list of flags")
}

/// The URL and the token of the running container.
fn connect() -> Result<Started> {
    let port = docker_output(&["port", CONTAINER, "8080/tcp"])?;
    let port = port
        .lines()
        .find_map(|line| line.rsplit_once(':').map(|(_, port)| port.to_owned()))
        .context("docker port printed no port")?;
    let url = format!("http://127.0.0.1:{port}");
    let logs = container_logs()?;
    // The last start's token: each start makes its own.
    let token = logs
        .rmatch_indices("?token=")
        .next()
        .map(|(at, _)| {
            logs[at + "?token=".len()..]
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect::<String>()
        })
        .filter(|token| !token.is_empty())
        .with_context(|| format!("the log shows no `?token=` URL:\n{logs}"))?;
    Ok(Started { url, token })
}

fn container_logs() -> Result<String> {
    let output = docker_cli().args(["logs", CONTAINER]).output()?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

fn wait_healthy(figures: &mut Figures, what: &str, since: Instant) -> Result<()> {
    loop {
        let state = docker_output(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
            CONTAINER,
        ])?;
        match state.as_str() {
            "running healthy" => {
                figures.time(what, since);
                return Ok(());
            }
            "running starting" | "running unhealthy" | "created starting" | "created" => {}
            other => bail!(
                "the container is `{other}`, not healthy; its log:\n{}",
                container_logs().unwrap_or_default()
            ),
        }
        if since.elapsed() > HEALTHY_TIMEOUT {
            bail!(
                "the container did not turn healthy within {} s; its log:\n{}",
                HEALTHY_TIMEOUT.as_secs(),
                container_logs().unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// An HTTP request by curl: the status and the body.
fn http(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, String)> {
    let mut curl = command("curl");
    curl.args([
        "-sS",
        "--max-time",
        "30",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(token) = token {
        curl.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    if let Some(body) = body {
        curl.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body.to_string(),
        ]);
    }
    curl.arg(url);
    let Output {
        status,
        stdout,
        stderr,
    } = curl
        .stdin(Stdio::null())
        .output()
        .context("could not start curl")?;
    ensure!(
        status.success(),
        "curl {method} {url} failed: {}",
        String::from_utf8_lossy(&stderr)
    );
    let text = String::from_utf8_lossy(&stdout);
    let (body, code) = text.rsplit_once('\n').context("curl printed no status")?;
    Ok((
        code.trim().parse().context("curl printed no status")?,
        body.to_owned(),
    ))
}

fn get_json(server: &Started, path: &str) -> Result<Value> {
    let (status, body) = http(
        "GET",
        &format!("{}{path}", server.url),
        Some(&server.token),
        None,
    )?;
    ensure!(status == 200, "GET {path} answered {status}: {body}");
    serde_json::from_str(&body).with_context(|| format!("GET {path} is not JSON: {body}"))
}

fn submit(server: &Started, request: &Value) -> Result<i64> {
    let (status, body) = http(
        "POST",
        &format!("{}/api/jobs", server.url),
        Some(&server.token),
        Some(request),
    )?;
    ensure!(
        status == 202,
        "POST /api/jobs {request} answered {status}: {body}"
    );
    let job: Value = serde_json::from_str(&body)?;
    job["id"]
        .as_i64()
        .with_context(|| format!("the new job has no id: {body}"))
}

/// Waits until job `id` is no longer queued or running; returns it.
fn wait_final(server: &Started, id: i64, timeout: Duration) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let job = get_json(server, &format!("/api/jobs/{id}"))?;
        if !matches!(job["status"].as_str(), Some("queued" | "running")) {
            return Ok(job);
        }
        ensure!(
            Instant::now() < deadline,
            "job {id} is still {} after {timeout:?}",
            job["status"]
        );
        thread::sleep(Duration::from_millis(200));
    }
}

fn container_checks(image: &str, figures: &mut Figures) -> Result<()> {
    cleanup();
    docker_run(&["volume", "create", VOLUME])?;
    let server = start_container(image, &[], figures, "first start to healthy")?;
    println!("container at {} (token from its log)", server.url);

    println!("\ncheck: the server runs as a non-root user and can write its volume");
    let uid = docker_output(&[
        "exec",
        CONTAINER,
        "sh",
        "-c",
        "awk '/^Uid:/ {print $2}' /proc/1/status",
    ])?;
    ensure!(
        uid != "0" && !uid.is_empty(),
        "the server (PID 1) runs as uid `{uid}`"
    );
    docker_output(&[
        "exec",
        CONTAINER,
        "sh",
        "-c",
        "f=/var/lib/gpulab/.write-check && echo ok > $f && rm $f",
    ])
    .context("the data volume is not writable by the server's user")?;
    figures.add("server uid", uid);

    println!("\ncheck: the workers cannot open the data volume (Landlock)");
    let logs = container_logs()?;
    ensure!(
        logs.contains("confined by Landlock") && logs.contains("no access to /var/lib/gpulab"),
        "no worker says it is confined by Landlock away from /var/lib/gpulab; the log:\n{logs}"
    );

    println!("\ncheck: /api/health says why there is no CUDA device, and finds NVRTC and cuBLAS");
    let health = get_json(&server, "/api/health")?;
    let cuda = &health["cuda"];
    ensure!(
        cuda["available"] == false,
        "CUDA is available without a GPU? {health}"
    );
    let reason = cuda["reason"].as_str().unwrap_or_default();
    ensure!(
        !reason.is_empty(),
        "/api/health gives no reason for no CUDA: {health}"
    );
    for library in ["nvrtc", "cublas"] {
        let found = &cuda["libraries"][library];
        ensure!(
            found["found"] == true,
            "{library} not found in the image: {health}"
        );
        let version = found["version"].as_str().unwrap_or_default();
        ensure!(!version.is_empty(), "{library} has no version: {health}");
        figures.add(&format!("{library} in the image"), version);
    }
    println!("no CUDA device: {reason}");

    println!("\ncheck: listening beyond loopback without a token, the server made one");
    let request = json!({"kernel": "vector_add", "device": "cpu", "params": {"n": 1024}});
    let (status, body) = http(
        "POST",
        &format!("{}/api/jobs", server.url),
        None,
        Some(&request),
    )?;
    ensure!(
        status == 401,
        "a job without the token was answered {status}: {body}"
    );
    let (status, _) = http(
        "POST",
        &format!("{}/api/jobs", server.url),
        Some("not-the-token"),
        Some(&request),
    )?;
    ensure!(
        status == 401,
        "a job with a wrong token was answered {status}"
    );
    let (status, _) = http("GET", &format!("{}/api/jobs", server.url), None, None)?;
    ensure!(
        status == 401,
        "reads without the token were answered {status}"
    );
    let first = submit(&server, &request)?;

    println!("\ncheck: every built-in kernel succeeds on the CPU");
    let kernels = get_json(&server, "/api/kernels")?;
    let mut finished = vec![first];
    for kernel in kernels.as_array().context("/api/kernels is not a list")? {
        let name = kernel["name"].as_str().context("a kernel without a name")?;
        let on_cpu = kernel["devices"]
            .as_array()
            .is_some_and(|devices| devices.iter().any(|d| d == "cpu"));
        if !on_cpu {
            continue;
        }
        let step = Instant::now();
        let id = submit(
            &server,
            &json!({"kernel": name, "device": "cpu", "repetitions": 3}),
        )?;
        let job = wait_final(&server, id, JOB_TIMEOUT)?;
        ensure!(
            job["status"] == "succeeded",
            "{name} on cpu ended {}: {}",
            job["status"],
            job["error"]
        );
        figures.add(&format!("job {name} on cpu"), seconds(step.elapsed()));
        finished.push(id);
    }
    ensure!(
        finished.len() > 5,
        "the catalog has only {} CPU kernels",
        finished.len() - 1
    );

    println!("\ncheck: the UI loads in Chromium from the container with no page errors");
    run(command("node")
        .arg("container-ui.mjs")
        .env("GPULAB_URL", &server.url)
        .env("GPULAB_TOKEN", &server.token)
        .current_dir(workspace_root().join("end2end")))?;

    println!("\ncheck: job history survives `docker restart`");
    let step = Instant::now();
    docker_run(&["restart", CONTAINER])?;
    wait_healthy(figures, "docker restart to healthy", step)?;
    let server = connect()?;
    for &id in &finished {
        let job = get_json(&server, &format!("/api/jobs/{id}"))?;
        ensure!(
            job["status"] == "succeeded",
            "after the restart job {id} is {}",
            job["status"]
        );
    }

    println!(
        "\ncheck: a job running at `docker stop` ends `interrupted`; the stop is quick and clean"
    );
    let long = submit(
        &server,
        &json!({"kernel": "matmul", "device": "cpu", "repetitions": 50, "timeout_s": 600,
                "params": {"m": 4096, "n": 4096, "k": 4096}}),
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_json(&server, &format!("/api/jobs/{long}"))?["status"] != "running" {
        ensure!(
            Instant::now() < deadline,
            "the long job did not start within 30 s"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let step = Instant::now();
    docker_run(&["stop", CONTAINER])?;
    let stop = figures.time("docker stop with a job running", step);
    let exit = docker_output(&["inspect", "-f", "{{.State.ExitCode}}", CONTAINER])?;
    figures.add("exit code after docker stop", exit.clone());
    ensure!(exit == "0", "the server exited with {exit} on SIGTERM");
    ensure!(
        stop < STOP_LIMIT,
        "docker stop took {stop:?}, more than {STOP_LIMIT:?}"
    );

    println!("\ncheck: a new container on the same volume keeps the history");
    docker_run(&["rm", CONTAINER])?;
    let server = start_container(
        image,
        &[],
        figures,
        "new container on the volume to healthy",
    )?;
    let job = get_json(&server, &format!("/api/jobs/{long}"))?;
    ensure!(
        job["status"] == "interrupted",
        "the job running at the stop is {}",
        job["status"]
    );
    for &id in &finished {
        let job = get_json(&server, &format!("/api/jobs/{id}"))?;
        ensure!(
            job["status"] == "succeeded",
            "in the new container job {id} is {}",
            job["status"]
        );
    }
    docker_run(&["rm", "-f", CONTAINER])?;

    // The Kubernetes DaemonSet asks for the same: its security context as docker flags.
    let pod_flags = pod_security_flags()?;
    ensure!(
        ["--read-only", "--tmpfs"]
            .iter()
            .all(|flag| pod_flags.iter().any(|f| f == flag)),
        "the DaemonSet's security context no longer gives a read-only root with a tmpfs: {pod_flags:?}"
    );
    println!(
        "\ncheck: `--read-only` with the volume and a tmpfs for /tmp, as the Kubernetes Pod \
         runs (deploy/kubernetes): {}",
        pod_flags.join(" ")
    );
    let pod_flags: Vec<&str> = pod_flags.iter().map(String::as_str).collect();
    let server = start_container(image, &pod_flags, figures, "read-only start to healthy")?;
    for kernel in ["vector_add", "mandelbrot"] {
        let id = submit(
            &server,
            &json!({"kernel": kernel, "device": "cpu", "repetitions": 1}),
        )?;
        let job = wait_final(&server, id, JOB_TIMEOUT)?;
        ensure!(
            job["status"] == "succeeded",
            "{kernel} on a read-only root ended {}: {}",
            job["status"],
            job["error"]
        );
    }
    docker_run(&["rm", "-f", CONTAINER])?;
    Ok(())
}

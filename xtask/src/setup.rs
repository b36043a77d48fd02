//! `cargo xtask setup`: installs what building, running and testing gpulab need, skipping
//! every tool that is already there at the right version, so that a second run is quick.

use std::fs;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};

use crate::process::{self, cargo, command, find_on_path, query, run, workspace_root};

/// The trunk release series the project builds with; 0.22 needs a newer rustc.
const TRUNK_SERIES: &str = "0.21";
/// The oldest Node.js that end2end/ (playwright-core) runs on: its package.json `engines`.
const NODE_MIN_MAJOR_FOR_BROWSER_TESTS: u32 = 20;
/// The Node.js release series `setup` fetches from npm when the system's is older.
const NODE_SERIES: &str = "22";
/// The binaryen release whose wasm-opt trunk runs; Debian's binaryen 108 emits broken wasm.
const BINARYEN_VERSION: &str = "132";
/// The Schemathesis release that checks the server against its OpenAPI document.
const SCHEMATHESIS_VERSION: &str = "4.32.5";
/// Where `schemathesis()` keeps its Python virtual environment.
const SCHEMATHESIS_VENV: &str = ".tools/schemathesis";
/// The kubernetes-validate release that checks the manifests of deploy/kubernetes; it
/// carries the schemas of Kubernetes up to 1.37.
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";
/// Where `kubernetes_validate()` keeps its Python virtual environment.
const KUBERNETES_VALIDATE_VENV: &str = ".tools/kubernetes-validate";

/// What to install beyond the tools every build needs.
#[derive(Clone, Copy, Debug)]
pub struct SetupOptions {
    /// rustfmt and clippy, for `cargo xtask test` and for developers.
    pub lint: bool,
    /// Chromium, chromedriver and the end2end/ npm packages, for the browser tests.
    pub browser: bool,
    /// NVRTC and cuBLAS from PyPI into .tools/, for the tests that need them but no GPU.
    pub cuda_libraries: bool,
}

/// Installs whatever is missing.
pub fn run_setup(options: SetupOptions) -> Result<()> {
    let mut apt = Apt::default();
    node_and_npm(&mut apt)?;
    if options.browser {
        node_for_browser_tests()?;
    }
    wasm_target()?;
    if options.lint {
        lint_components()?;
    }
    trunk()?;
    wasm_bindgen()?;
    wasm_opt()?;
    if options.browser {
        chromium(&mut apt)?;
        end2end_packages()?;
    }
    if options.cuda_libraries {
        for set in &CUDA_LIBRARIES {
            cuda_libraries(set)?;
        }
    }
    Ok(())
}

/// CUDA libraries from NVIDIA's wheels on PyPI, which carry the real shared libraries:
/// NVRTC and cuBLAS load and work without a GPU, so the tests compile every kernel and read
/// the libraries' versions on any machine.
struct CudaLibrarySet {
    /// Where the libraries go, below the workspace root.
    folder: &'static str,
    /// Exact pins: a change here makes `setup` install again.
    wheels: &'static [&'static str],
    /// The files taken out of the wheels; the rest (headers, licences, Python files) is left.
    libraries: &'static [&'static str],
}

/// CUDA 12.8 (NVRTC and cuBLAS, the versions of CUDA 12.8.1, which the Dockerfile's default
/// runtime image carries; the container test's stand-in takes them from here), which the
/// test step puts on LD_LIBRARY_PATH, and NVRTC 13,
/// which the NVRTC tests also compile against in a child process of their own.
const CUDA_LIBRARIES: [CudaLibrarySet; 2] = [
    CudaLibrarySet {
        folder: process::CUDA_LIB_DIR,
        wheels: &[
            "nvidia-cuda-nvrtc-cu12==12.8.93",
            "nvidia-cublas-cu12==12.8.4.1",
        ],
        libraries: &[
            "libnvrtc.so.12",
            "libnvrtc-builtins.so.12.8",
            "libcublas.so.12",
            "libcublasLt.so.12",
        ],
    },
    CudaLibrarySet {
        folder: ".tools/cuda13/lib",
        wheels: &["nvidia-cuda-nvrtc==13.5.37"],
        libraries: &["libnvrtc.so.13", "libnvrtc-builtins.so.13.5"],
    },
];

/// Takes the listed .so files out of every wheel in the folder argv[1] into argv[2].
const EXTRACT_LIBRARIES: &str = r#"
import os, sys, zipfile
wheels, dest, wanted = sys.argv[1], sys.argv[2], set(sys.argv[3:])
for wheel in sorted(os.listdir(wheels)):
    with zipfile.ZipFile(os.path.join(wheels, wheel)) as archive:
        for member in archive.namelist():
            name = os.path.basename(member)
            if name in wanted:
                with archive.open(member) as src, open(os.path.join(dest, name), "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                wanted.discard(name)
if wanted:
    sys.exit("the wheels hold no " + ", ".join(sorted(wanted)))
"#;

fn cuda_libraries(set: &CudaLibrarySet) -> Result<()> {
    let folder = workspace_root().join(set.folder);
    // The pins of what is installed, written last, so an interrupted install is redone.
    let stamp = folder.join("WHEELS");
    let wanted = set.wheels.join("\n");
    if fs::read_to_string(&stamp).is_ok_and(|installed| installed == wanted)
        && set.libraries.iter().all(|lib| folder.join(lib).is_file())
    {
        found(&format!("{} in {}", set.wheels.join(", "), set.folder));
        return Ok(());
    }
    if query("python3", &["-m", "pip", "--version"]).is_none() {
        bail!(
            "the CUDA libraries for the NVRTC tests come from PyPI through pip, which is missing: \
             install python3-pip (Debian) and run this command again"
        );
    }
    let downloads = folder.with_file_name("wheels");
    if downloads.exists() {
        fs::remove_dir_all(&downloads)
            .with_context(|| format!("could not empty {}", downloads.display()))?;
    }
    fs::create_dir_all(&folder)
        .with_context(|| format!("could not create {}", folder.display()))?;
    run(command("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            // The wheels go once their libraries are out: no second copy in pip's cache.
            "--no-cache-dir",
            "--dest",
        ])
        .arg(&downloads)
        .args(set.wheels))?;
    run(command("python3")
        .args(["-c", EXTRACT_LIBRARIES])
        .arg(&downloads)
        .arg(&folder)
        .args(set.libraries))?;
    fs::remove_dir_all(&downloads)
        .with_context(|| format!("could not remove {}", downloads.display()))?;
    fs::write(&stamp, wanted).with_context(|| format!("could not write {}", stamp.display()))
}

fn found(what: &str) {
    println!("found {what}");
}

fn node_and_npm(apt: &mut Apt) -> Result<()> {
    let node = query("node", &["--version"]);
    let npm = query("npm", &["--version"]);
    match (&node, &npm) {
        (Some(node), Some(npm)) => {
            found(&format!("node {node}, npm {npm}"));
            Ok(())
        }
        // Debian packages npm separately; a node from elsewhere (NodeSource) brings its own npm.
        (Some(_), None) => apt.install(
            "npm, which installs wasm-opt and the browser-test packages,",
            &["npm"],
        ),
        (None, _) => apt.install(
            "Node.js, which runs wasm-opt and the browser tests,",
            &["nodejs", "npm"],
        ),
    }
}

/// Debian 12 ships Node 18, too old for playwright-core. npm's `node-linux-<cpu>` packages
/// carry the official Node binary and come from the npm registry, with no install script.
fn node_for_browser_tests() -> Result<()> {
    let version = query("node", &["--version"]).context("node is not on PATH")?;
    if node_major(&version).is_some_and(|major| major >= NODE_MIN_MAJOR_FOR_BROWSER_TESTS) {
        return Ok(());
    }
    println!(
        "node {version} is older than the browser tests need (v{NODE_MIN_MAJOR_FOR_BROWSER_TESTS})"
    );
    let cpu = match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        other => bail!(
            "the browser tests need Node.js {NODE_MIN_MAJOR_FOR_BROWSER_TESTS} or newer and there is no npm build of it for {other}: install it from https://nodejs.org"
        ),
    };
    run(command("npm").args([
        "install",
        "--no-save",
        "--no-audit",
        "--no-fund",
        "--prefix",
        ".tools/node",
        &format!("node-linux-{cpu}@{NODE_SERIES}"),
    ]))?;
    // PATH already lists .tools/node first, so plain `node` is now the new one.
    let version = query("node", &["--version"])
        .context("the Node.js just installed in .tools/node does not run")?;
    found(&format!("node {version} in .tools/node"));
    Ok(())
}

/// The major version in `node --version` output such as `v20.20.2`.
fn node_major(version: &str) -> Option<u32> {
    version.strip_prefix('v')?.split('.').next()?.parse().ok()
}

fn wasm_target() -> Result<()> {
    const TARGET: &str = "wasm32-unknown-unknown";
    let sysroot = query("rustc", &["--print", "sysroot"])
        .context("rustc is not on PATH: install Rust with rustup")?;
    if Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .is_dir()
    {
        found(&format!("Rust target {TARGET}"));
        return Ok(());
    }
    if find_on_path("rustup").is_none() {
        bail!("the Rust standard library for {TARGET} is missing and rustup is not on PATH: install Rust with rustup (https://rustup.rs)");
    }
    run(command("rustup").args(["target", "add", TARGET]))
}

fn lint_components() -> Result<()> {
    let mut missing = Vec::new();
    for (component, subcommand) in [("rustfmt", "fmt"), ("clippy", "clippy")] {
        match query("cargo", &[subcommand, "--version"]) {
            Some(version) => found(&version),
            None => missing.push(component),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if find_on_path("rustup").is_none() {
        bail!(
            "{} missing and rustup is not on PATH: install Rust with rustup (https://rustup.rs)",
            missing.join(" and ")
        );
    }
    run(command("rustup").args(["component", "add"]).args(&missing))
}

fn trunk() -> Result<()> {
    // `trunk --version` prints `trunk 0.21.14`.
    if let Some(version) = query("trunk", &["--version"]) {
        if version.starts_with(&format!("trunk {TRUNK_SERIES}.")) {
            found(&version);
            return Ok(());
        }
        println!("found {version}, but the project needs trunk {TRUNK_SERIES}.x");
    }
    println!("installing trunk: this compiles it from source and takes about ten minutes");
    run(cargo().args([
        "install",
        "trunk",
        "--version",
        &format!("~{TRUNK_SERIES}"),
        "--locked",
    ]))
}

fn wasm_bindgen() -> Result<()> {
    // trunk refuses a wasm-bindgen CLI whose version differs from the crate's in Cargo.lock.
    let version = locked_version("wasm-bindgen")?;
    let wanted = format!("wasm-bindgen {version}");
    if let Some(installed) = query("wasm-bindgen", &["--version"]) {
        if installed == wanted {
            found(&installed);
            return Ok(());
        }
        println!("found {installed}, but Cargo.lock pins {wanted}");
    }
    // No `--locked`: the lock file published with wasm-bindgen-cli has failed to build with
    // this project's rustc, while a fresh resolution builds.
    run(cargo().args(["install", "wasm-bindgen-cli", "--version", &version]))
}

fn wasm_opt() -> Result<()> {
    // Ask the project's copy only: another wasm-opt on PATH is no substitute.
    let project_copy = process::npm_tools_bin().join("wasm-opt");
    let wanted = format!("version {BINARYEN_VERSION} ");
    if let Some(version) = query(&project_copy.to_string_lossy(), &["--version"]) {
        if version.contains(&wanted) {
            found(&version);
            return Ok(());
        }
        println!("found {version} in .tools, but the project needs binaryen {BINARYEN_VERSION}");
    }
    run(command("npm").args([
        "install",
        "--no-save",
        "--no-audit",
        "--no-fund",
        "--prefix",
        ".tools",
        &format!("binaryen@{BINARYEN_VERSION}"),
    ]))
}

/// Installs Schemathesis (from PyPI, into a virtual environment under .tools) unless that
/// version is there, and returns the path of its `st` command.
pub fn schemathesis() -> Result<std::path::PathBuf> {
    let venv = workspace_root().join(SCHEMATHESIS_VENV);
    let st = venv.join("bin/st");
    // `st --version` prints `st, version 4.32.5`.
    let wanted = format!("version {SCHEMATHESIS_VERSION}");
    if let Some(version) = query(&st.to_string_lossy(), &["--version"]) {
        if version.ends_with(&wanted) {
            found(&format!(
                "Schemathesis {SCHEMATHESIS_VERSION} in {SCHEMATHESIS_VENV}"
            ));
            return Ok(st);
        }
        println!("found {version}, but the project needs Schemathesis {SCHEMATHESIS_VERSION}");
    }
    if query("python3", &["--version"]).is_none() {
        apt_install(
            "Python 3, which runs Schemathesis,",
            &["python3", "python3-venv"],
        )?;
    }
    pip_install(
        SCHEMATHESIS_VENV,
        "Schemathesis",
        &format!("schemathesis=={SCHEMATHESIS_VERSION}"),
    )?;
    Ok(st)
}

/// Installs `requirement` with the pip of the virtual environment `venv` (relative to the
/// workspace), making the environment first when it is missing or its pip does not run: a
/// copied or moved environment keeps scripts whose first line names the old path.
fn pip_install(venv: &str, what: &str, requirement: &str) -> Result<()> {
    let pip = workspace_root().join(venv).join("bin/pip");
    let pip = pip.to_string_lossy();
    if query(&pip, &["--version"]).is_none() {
        // Debian's python3 makes no virtual environment without its python3-venv package.
        if query("python3", &["-c", "import ensurepip"]).is_none() {
            apt_install(
                &format!("Python's venv module, which holds {what},"),
                &["python3-venv"],
            )?;
        }
        run(command("python3").args(["-m", "venv", "--clear", venv]))?;
    }
    run(command(&pip).args(["install", "--disable-pip-version-check", requirement]))
}

/// Installs kubernetes-validate (from PyPI, into a virtual environment under .tools, as
/// Schemathesis) unless that version is there, and returns the path of the environment's
/// Python, which deploy/check/check.py runs with.
pub fn kubernetes_validate() -> Result<std::path::PathBuf> {
    let venv = workspace_root().join(KUBERNETES_VALIDATE_VENV);
    let python = venv.join("bin/python");
    // `kubernetes-validate --version` prints `1.37.0`.
    let program = venv.join("bin/kubernetes-validate");
    if let Some(version) = query(&program.to_string_lossy(), &["--version"]) {
        if version == KUBERNETES_VALIDATE_VERSION {
            found(&format!(
                "kubernetes-validate {version} in {KUBERNETES_VALIDATE_VENV}"
            ));
            return Ok(python);
        }
        println!("found kubernetes-validate {version}, but the project needs {KUBERNETES_VALIDATE_VERSION}");
    }
    pip_install(
        KUBERNETES_VALIDATE_VENV,
        "kubernetes-validate",
        &format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"),
    )?;
    Ok(python)
}

/// Installs promtool, which checks and unit-tests the Prometheus rules, with Debian's
/// `prometheus` package unless it is on PATH, and returns its path.
pub fn promtool() -> Result<std::path::PathBuf> {
    if find_on_path("promtool").is_none() {
        apt_install(
            "promtool, which checks and tests the Prometheus rules,",
            &["prometheus"],
        )?;
    }
    let path = find_on_path("promtool").context("promtool is not on PATH after installing it")?;
    // `promtool --version` prints `promtool, version 2.42.0+ds (branch: …` and more lines.
    let version = query(&path.to_string_lossy(), &["--version"]).unwrap_or_default();
    found(version.lines().next().unwrap_or("promtool"));
    Ok(path)
}

fn chromium(apt: &mut Apt) -> Result<()> {
    let browser = find_on_path("chromium");
    let driver = find_on_path("chromedriver");
    if let (Some(browser), Some(driver)) = (&browser, &driver) {
        found(&format!("{} and {}", browser.display(), driver.display()));
        return Ok(());
    }
    apt.install(
        "Chromium, which runs the browser tests,",
        &["chromium", "chromium-driver"],
    )
}

fn end2end_packages() -> Result<()> {
    let end2end = workspace_root().join("end2end");
    if !end2end.join("package.json").is_file() {
        println!("no end2end/package.json: no npm packages to install");
        return Ok(());
    }
    npm_ci("end2end")
}

/// Installs the npm packages that `folder`'s package-lock.json pins, unless node_modules/
/// was installed after the last change to the lock file.
pub fn npm_ci(folder: &str) -> Result<()> {
    let dir = workspace_root().join(folder);
    let lock = dir.join("package-lock.json");
    if !lock.is_file() {
        bail!("{folder}/package-lock.json is missing: run `npm install` in {folder}/ and commit the lock file it writes");
    }
    // npm records what it installed in node_modules/.package-lock.json.
    let installed = dir.join("node_modules/.package-lock.json");
    if let (Some(installed), Some(lock)) = (modified(&installed)?, modified(&lock)?) {
        if installed >= lock {
            found(&format!(
                "{folder}/node_modules, installed after the last change to {folder}/package-lock.json"
            ));
            return Ok(());
        }
    }
    run(command("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir))
}

fn modified(path: &Path) -> Result<Option<SystemTime>> {
    match fs::metadata(path) {
        Ok(metadata) => Ok(Some(metadata.modified()?)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("could not read {}", path.display())),
    }
}

/// The version of `package` in Cargo.lock, which is written first when it is missing.
fn locked_version(package: &str) -> Result<String> {
    let lock_path = workspace_root().join("Cargo.lock");
    if !lock_path.is_file() {
        run(cargo().arg("generate-lockfile"))?;
    }
    let lock = fs::read_to_string(&lock_path)
        .with_context(|| format!("could not read {}", lock_path.display()))?;
    let versions = versions_in_lock(&lock, package);
    match versions.as_slice() {
        [version] => Ok(version.clone()),
        [] => bail!("{package} is not in Cargo.lock: the frontend must depend on it"),
        _ => bail!(
            "Cargo.lock holds several versions of {package} ({}): pin one with `=` in frontend/Cargo.toml",
            versions.join(", ")
        ),
    }
}

/// The versions of `package` in the text of a Cargo.lock.
fn versions_in_lock(lock: &str, package: &str) -> Vec<String> {
    let name_line = format!("name = \"{package}\"");
    lock.split("[[package]]")
        .filter(|entry| entry.lines().any(|line| line.trim() == name_line))
        .filter_map(|entry| {
            entry
                .lines()
                .find_map(|line| line.trim().strip_prefix("version = \""))
                .and_then(|rest| rest.strip_suffix('"'))
                .map(str::to_owned)
        })
        .collect()
}

/// Installs Debian `packages` (what they are for: `what`) as root, or says how to.
pub fn apt_install(what: &str, packages: &[&str]) -> Result<()> {
    Apt::default().install(what, packages)
}

/// Debian packages: installed by apt-get when running as root, else explained to the user.
#[derive(Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    fn install(&mut self, what: &str, packages: &[&str]) -> Result<()> {
        let list = packages.join(" ");
        if find_on_path("apt-get").is_none() {
            bail!("{what} is missing: install it ({list} on Debian) with your system's package manager");
        }
        if !process::is_root() {
            bail!("{what} is missing: install it with\n    sudo apt-get update && sudo apt-get install -y {list}\nthen run this command again");
        }
        if !self.updated {
            run(command("apt-get").arg("update"))?;
            self.updated = true;
        }
        run(command("apt-get")
            .args(["install", "-y"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    }
}

#[cfg(test)]
mod tests {
    use super::{node_major, versions_in_lock};

    #[test]
    fn reads_the_node_major_version() {
        assert_eq!(node_major("v20.20.2"), Some(20));
        assert_eq!(node_major("v18.19.0"), Some(18));
        assert_eq!(node_major("20.1.0"), None);
    }

    const LOCK: &str = r#"
[[package]]
name = "wasm-bindgen"
version = "0.2.130"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "wasm-bindgen-macro"
version = "0.2.130"

[[package]]
name = "web-sys"
version = "0.3.77"
"#;

    #[test]
    fn finds_the_exact_package_not_its_prefix_siblings() {
        assert_eq!(versions_in_lock(LOCK, "wasm-bindgen"), ["0.2.130"]);
        assert_eq!(versions_in_lock(LOCK, "web-sys"), ["0.3.77"]);
        assert!(versions_in_lock(LOCK, "trunk").is_empty());
    }

    #[test]
    fn reports_every_version_when_a_package_appears_twice() {
        let twice =
            format!("{LOCK}\n[[package]]\nname = \"wasm-bindgen\"\nversion = \"0.2.100\"\n");
        assert_eq!(
            versions_in_lock(&twice, "wasm-bindgen"),
            ["0.2.130", "0.2.100"]
        );
    }
}

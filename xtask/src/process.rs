//! Child processes: every command that does work is printed before it runs, runs from the
//! workspace root, and finds the tools that `setup` installs through PATH.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The workspace root: the parent of this crate's folder.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one folder below the workspace root")
}

/// Where `npm install --prefix .tools` puts the wasm-opt that trunk must use.
pub fn npm_tools_bin() -> PathBuf {
    workspace_root().join(".tools/node_modules/.bin")
}

/// Where `setup` puts a newer Node.js when the system's is too old for the browser tests.
pub fn npm_node_bin() -> PathBuf {
    workspace_root().join(".tools/node/node_modules/.bin")
}

/// Where `setup` puts NVRTC and cuBLAS (CUDA 12.8), below the workspace root.
pub const CUDA_LIB_DIR: &str = ".tools/cuda/lib";

/// `command` with the CUDA libraries that `setup` installed in front of LD_LIBRARY_PATH, so
/// that cudarc, which loads them by name, finds them; unchanged when there are none.
pub fn with_cuda_libraries(command: &mut Command) -> &mut Command {
    let dir = workspace_root().join(CUDA_LIB_DIR);
    if dir.is_dir() {
        let mut dirs = vec![dir];
        if let Some(current) = env::var_os("LD_LIBRARY_PATH") {
            dirs.extend(env::split_paths(&current));
        }
        if let Ok(joined) = env::join_paths(dirs) {
            command.env("LD_LIBRARY_PATH", joined);
        }
    }
    command
}

/// Where `cargo install` puts binaries (trunk, wasm-bindgen).
pub fn cargo_install_bin() -> Option<PathBuf> {
    if let Some(root) = env::var_os("CARGO_INSTALL_ROOT") {
        return Some(PathBuf::from(root).join("bin"));
    }
    cargo_home().map(|home| home.join("bin"))
}

fn cargo_home() -> Option<PathBuf> {
    env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
}

/// Puts the project's tool folders in front of PATH, for this process and so for every child.
///
/// The project's wasm-opt and Node.js must win over any other on the system (Debian's binaryen 108 emits
/// broken wasm), and `cargo install` targets may not be on a fresh shell's PATH yet.
pub fn prepend_tool_dirs_to_path() -> Result<()> {
    let mut dirs = vec![npm_node_bin(), npm_tools_bin()];
    if let Some(bin) = cargo_install_bin() {
        dirs.push(bin);
    }
    if let Some(home) = cargo_home() {
        dirs.push(home.join("bin"));
    }
    let current = env::var_os("PATH").unwrap_or_default();
    for dir in env::split_paths(&current) {
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    let path = env::join_paths(dirs).context("a tool folder contains a ':'")?;
    // Called at the start of `main`, before any thread exists.
    env::set_var("PATH", path);
    Ok(())
}

/// A command for `program` that runs in the workspace root.
pub fn command(program: &str) -> Command {
    let mut command = Command::new(program);
    command.current_dir(workspace_root());
    command
}

/// The cargo that runs this xtask, so nested builds use the same toolchain.
pub fn cargo() -> Command {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    command(&cargo)
}

/// Prints `command` as a shell line and runs it with inherited stdio; fails on a non-zero exit.
pub fn run(command: &mut Command) -> Result<()> {
    let line = display(command);
    println!("$ {line}");
    let status = command
        .status()
        .with_context(|| format!("could not start `{line}`: {}", not_found_hint(command)))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs a quiet query such as `trunk --version` and returns its trimmed stdout, or `None`
/// when the program is missing or fails. Queries change nothing, so they are not printed.
pub fn query(program: &str, args: &[&str]) -> Option<String> {
    let output = command(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The first file named `program` on PATH.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Whether this process runs as root, and so may call apt-get itself.
pub fn is_root() -> bool {
    query("id", &["-u"]).as_deref() == Some("0")
}

/// `command` as a shell line: explicitly set variables, program, arguments.
pub fn display(command: &Command) -> String {
    let mut words: Vec<String> = command
        .get_envs()
        .filter_map(|(key, value)| {
            Some(format!(
                "{}={}",
                key.to_string_lossy(),
                value?.to_string_lossy()
            ))
        })
        .collect();
    words.push(
        Path::new(command.get_program())
            .file_name()
            .unwrap_or(command.get_program())
            .to_string_lossy()
            .into_owned(),
    );
    words.extend(command.get_args().map(|arg| quote(arg.to_os_string())));
    let line = words.join(" ");
    match command.get_current_dir() {
        Some(dir) if dir != workspace_root() => {
            let shown = dir.strip_prefix(workspace_root()).unwrap_or(dir);
            format!("(cd {} && {line})", shown.display())
        }
        _ => line,
    }
}

fn quote(arg: OsString) -> String {
    let arg = arg.to_string_lossy().into_owned();
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@~+,%".contains(c))
    {
        arg
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn not_found_hint(command: &Command) -> String {
    let program = command.get_program().to_string_lossy();
    if Path::new(program.as_ref()).is_absolute() || find_on_path(&program).is_some() {
        "it exists but could not be executed".to_owned()
    } else {
        format!(
            "`{program}` is not on PATH; run `cargo xtask setup` to install the project's tools"
        )
    }
}

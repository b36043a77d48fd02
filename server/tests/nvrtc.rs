//! NVRTC and cuBLAS without a GPU: every CUDA source the catalog's kernels and the
//! diagnostics declare compiles for sm_80, sm_90 and the newest architecture NVRTC knows, with
//! a symbol for each entry point they name, and so does every template of the CUDA editor; a
//! compile error
//! names its line and column; no `#include` reads a file of the server; `/api/health`
//! reports both libraries with their versions.
//!
//! `cargo xtask setup` installs the libraries into .tools/cuda/lib (CUDA 12.8) and
//! .tools/cuda13/lib (NVRTC 13), and `cargo xtask test` puts the first on LD_LIBRARY_PATH.
//! Without NVRTC these tests say so and pass, except where CI=true or
//! GPULAB_REQUIRE_NVRTC=1, where they fail.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gpulab::cuda::compile::{self, CompileError, ImageKind, Options};
use gpulab::cuda::{library_present, Library};
use serde_json::Value;
use support::spawn_app;

/// The test that the NVRTC 13 check runs again in a child process.
const EVERY_ARCHITECTURE: &str = "builtin_kernels_and_templates_compile_for_every_architecture";

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("GPULAB_REQUIRE_NVRTC").is_ok_and(|v| v == "1")
}

/// Whether `library` loads. Where it must (CI), a missing one fails the test; elsewhere
/// the test is skipped with a note.
fn loaded(library: Library, test: &str) -> bool {
    if library_present(library) {
        return true;
    }
    let name = match library {
        Library::Nvrtc => "NVRTC (libnvrtc.so.12 or .13)",
        Library::Cublas => "cuBLAS (libcublas.so.12 or .13)",
        Library::CublasLt => "cuBLASLt (libcublasLt.so.12 or .13)",
        Library::Driver => "the NVIDIA driver (libcuda.so.1)",
    };
    let why = format!(
        "{name} is not on the library path: run `cargo xtask setup`, then the tests through \
         `cargo xtask test` (or with LD_LIBRARY_PATH=.tools/cuda/lib)"
    );
    if required() {
        panic!("{test}: {why}");
    }
    eprintln!("skipping {test}: {why}");
    false
}

/// The `.cu` files of `folder` (relative to server/), sorted, with their names.
fn sources_in(folder: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let mut sources: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cu"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    sources.sort();
    assert!(!sources.is_empty(), "no .cu file in {}", dir.display());
    sources
}

fn compile_for(source: &str, name: &str, arch: (u32, u32)) -> Result<compile::Image, CompileError> {
    compile::compile(source, name, arch, &Options::default())
}

/// The log of a refused or failed compilation; panics when it compiled.
fn error_log(source: &str) -> String {
    match compile_for(source, "kernel.cu", (8, 0)) {
        Err(CompileError::Source { log, .. }) => log,
        Err(other) => panic!("NVRTC could not be used: {other}"),
        Ok(_) => panic!("compiled, but should not have:\n{source}"),
    }
}

#[test]
fn builtin_kernels_and_templates_compile_for_every_architecture() {
    if !loaded(Library::Nvrtc, EVERY_ARCHITECTURE) {
        return;
    }
    let (major, minor) = compile::version().unwrap();
    let archs = compile::supported_archs().unwrap();
    // The NVRTC 13 check below reads this line from the child it starts.
    println!("NVRTC {major}.{minor}: architectures {archs:?}");
    let newest = *archs.iter().max().unwrap();
    let mut targets = vec![80, 90, newest];
    targets.dedup();
    // The built-in sources as the kernels declare them (a unit test checks that every .cu
    // file of server/kernels/ is declared), then the editor's templates, which name no entry
    // points here.
    let builtin = gpulab::builtin_cuda_sources();
    assert!(builtin.iter().any(|s| s.file == "matmul_register_tiled.cu"));
    let sources: Vec<(String, String, &[&str])> = builtin
        .iter()
        .map(|s| (s.file.to_string(), s.source.to_string(), s.entry_points))
        .chain(
            sources_in("../frontend/src/custom_kernel/templates")
                .into_iter()
                .map(|(name, source)| (name, source, &[][..])),
        )
        .collect();
    for arch in targets {
        assert!(
            archs.contains(&arch),
            "NVRTC {major}.{minor} lacks sm_{arch}: {archs:?}"
        );
        let cc = (arch as u32 / 10, arch as u32 % 10);
        for (name, source, entry_points) in &sources {
            let image = compile_for(source, name, cc)
                .unwrap_or_else(|e| panic!("{name} for sm_{arch} with NVRTC {major}.{minor}: {e}"));
            assert_eq!(image.kind, ImageKind::Cubin, "{name}");
            assert_eq!(image.target, format!("sm_{arch}"), "{name}");
            // An ELF file: what cuModuleLoadData takes.
            assert_eq!(&image.bytes[..4], b"\x7fELF", "{name} for sm_{arch}");
            // The symbol the driver looks the function up by, in the ELF string table.
            for entry in *entry_points {
                let symbol = format!("\0{entry}\0");
                assert!(
                    image
                        .bytes
                        .windows(symbol.len())
                        .any(|w| w == symbol.as_bytes()),
                    "{name} for sm_{arch} has no symbol {entry}"
                );
            }
        }
    }
}

/// Runs the test above once more in a child process for each NVRTC that `setup` installed
/// (.tools/cuda*/lib), with only that folder on the library path, and checks that the child
/// loaded that NVRTC: this is how NVRTC 13 is compiled against beside the 12.8 of the rest.
#[test]
fn every_installed_nvrtc_compiles_the_kernels() {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools");
    let mut installed: Vec<(PathBuf, String)> = std::fs::read_dir(&tools)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let lib = entry.ok()?.path().join("lib");
            let major = std::fs::read_dir(&lib).ok()?.find_map(|file| {
                let name = file.ok()?.file_name().to_string_lossy().into_owned();
                name.strip_prefix("libnvrtc.so.").map(str::to_owned)
            })?;
            Some((lib, major))
        })
        .collect();
    installed.sort();
    if installed.is_empty() {
        let why = "no NVRTC in .tools/cuda*/lib: run `cargo xtask setup`";
        assert!(!required(), "{why}");
        eprintln!("skipping: {why}");
        return;
    }
    for (lib, major) in installed {
        let output = Command::new(std::env::current_exe().unwrap())
            .args([EVERY_ARCHITECTURE, "--exact", "--nocapture"])
            .env("LD_LIBRARY_PATH", &lib)
            .env("GPULAB_REQUIRE_NVRTC", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "with {}:\n{stdout}\n{stderr}",
            lib.display()
        );
        let line = stdout
            .lines()
            .find(|line| line.starts_with("NVRTC "))
            .unwrap_or_else(|| panic!("the child ran no compilation:\n{stdout}"));
        assert!(
            line.starts_with(&format!("NVRTC {major}.")),
            "{} holds libnvrtc.so.{major}, but the child loaded another: {line}",
            lib.display()
        );
        println!("{}: {line}", lib.display());
    }
}

#[test]
fn a_compile_error_names_its_line_and_column() {
    if !loaded(Library::Nvrtc, "a_compile_error_names_its_line_and_column") {
        return;
    }
    let log =
        error_log("extern \"C\" __global__ void k(float* y) {\n    int i = 0;\n    y[i] = x;\n}\n");
    assert!(
        log.contains("kernel.cu(3,12): error: identifier \"x\" is undefined"),
        "{log}"
    );
}

/// Hole 1: NVRTC opened whatever an `#include` named and echoed its lines into the log.
#[test]
fn an_include_never_reads_a_file_of_the_server() {
    if !loaded(
        Library::Nvrtc,
        "an_include_never_reads_a_file_of_the_server",
    ) {
        return;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    assert!(
        passwd.contains("root:"),
        "the check below needs root in /etc/passwd"
    );
    for (source, line) in [
        ("#include \"/etc/passwd\"\n", 1),
        ("#include </etc/passwd>\n", 1),
        ("int a;\n%:include \"/etc/passwd\"\n", 2),
        ("# /* between */ include \"/etc/passwd\"\n", 1),
        ("#\\\ninclude \"/etc/passwd\"\n", 1),
        ("#inc\\\nlude \"/etc/passwd\"\n", 1),
        ("#define F \"/etc/passwd\"\n#include F\n", 2),
        ("#include_next \"/etc/passwd\"\n", 1),
        ("#include \"../../../../../../etc/passwd\"\n", 1),
        ("#include \"Cargo.toml\"\n", 1),
    ] {
        let log = error_log(source);
        assert!(
            !log.contains("root:"),
            "{source:?} leaked /etc/passwd:\n{log}"
        );
        assert!(
            !log.contains("[package]"),
            "{source:?} leaked Cargo.toml:\n{log}"
        );
        assert!(
            log.starts_with(&format!(
                "kernel.cu({line},1): error: #include is not available"
            )),
            "{source:?}:\n{log}"
        );
    }
    // Existence is a leak too.
    let log = error_log("#if __has_include(\"/etc/passwd\")\n#error found\n#endif\n");
    assert!(log.contains("`__has_include` is not available"), "{log}");
    // EDG honours an `__has_include` that token pasting built.
    let log = error_log(
        "#define P(a, b) a##b\n#if P(__has_, include)(\"/etc/passwd\")\n#error found\n#endif\n",
    );
    assert!(
        log.contains("kernel.cu(1,18): error: token pasting"),
        "{log}"
    );
    let log = error_log("??=include \"/etc/passwd\"\n");
    assert!(log.contains("trigraphs"), "{log}");
}

#[test]
fn including_dev_zero_is_refused_at_once() {
    if !loaded(Library::Nvrtc, "including_dev_zero_is_refused_at_once") {
        return;
    }
    let started = Instant::now();
    let log = error_log("#include \"/dev/zero\"\n__global__ void k() {}\n");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        log.contains("kernel.cu(1,1): error: #include is not available"),
        "{log}"
    );
}

#[test]
fn preprocessor_use_without_files_still_compiles() {
    if !loaded(
        Library::Nvrtc,
        "preprocessor_use_without_files_still_compiles",
    ) {
        return;
    }
    let source = "#define N 4\n#define STR(x) #x\n#pragma once\nconst char* s = STR(include) \"#include <x>\";\n\
                  // #include \"/etc/passwd\" in a comment\n\
                  extern \"C\" __global__ void k(float* y) {\n#pragma unroll\n  for (int i = 0; i < N; ++i) y[i] = 1'000.0f;\n}\n";
    let image = compile_for(source, "kernel.cu", (8, 0)).unwrap_or_else(|e| panic!("{e}"));
    assert!(!image.bytes.is_empty());
}

#[tokio::test]
async fn health_reports_nvrtc_and_cublas_with_their_versions() {
    let test = "health_reports_nvrtc_and_cublas_with_their_versions";
    if !loaded(Library::Nvrtc, test) || !loaded(Library::Cublas, test) {
        return;
    }
    let (major, minor) = compile::version().unwrap();
    let app = spawn_app().await;
    // The raw JSON, since a container test reads exactly these fields.
    let health: Value = app.get_json("/api/health").await;
    let libraries = &health["cuda"]["libraries"];
    assert_eq!(libraries["nvrtc"]["found"], true, "{health}");
    assert_eq!(
        libraries["nvrtc"]["version"],
        format!("{major}.{minor}"),
        "{health}"
    );
    assert_eq!(libraries["nvrtc"]["error"], Value::Null, "{health}");
    assert_eq!(libraries["cublas"]["found"], true, "{health}");
    let cublas = libraries["cublas"]["version"].as_str().unwrap_or_default();
    let parts: Vec<&str> = cublas.split('.').collect();
    assert!(
        parts.len() == 3
            && parts.iter().all(|p| p.parse::<u32>().is_ok())
            && ["12", "13"].contains(&parts[0]),
        "cuBLAS version {cublas:?} in {health}"
    );
}

/// matmul's tensor-core data types need cuBLASLt: the same wheel as cuBLAS ships it, and it
/// loads and answers its version without a GPU.
#[test]
fn cublaslt_loads_and_reports_its_version() {
    let test = "cublaslt_loads_and_reports_its_version";
    if !loaded(Library::Cublas, test) {
        return;
    }
    assert!(
        library_present(Library::CublasLt),
        "cuBLAS loads but cuBLASLt does not: the cuBLAS install is incomplete"
    );
    // SAFETY: cublasLtGetVersion takes no arguments and needs no handle or GPU.
    let version = unsafe { cudarc::cublaslt::sys::cublasLtGetVersion() };
    assert!(
        (120_000..140_000).contains(&version),
        "cuBLASLt version {version} is not a CUDA 12 or 13 one"
    );
}

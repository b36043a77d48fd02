//! `gpulab diag` through the real binary: its exit codes (0 all pass, 1 a warning, 2 a
//! failure, 3 it could not run), its JSON, and a baseline read from an earlier run's JSON.
//! The memory test is capped at 8 MiB so that the suite stays fast.

use std::process::{Command, Output};

use gpulab_shared::diag::{Diagnostic, DiagnosticStatus, Verdict, SCHEMA_VERSION};

fn diag(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpulab"))
        .arg("diag")
        .args(args)
        .env("GPULAB_DIAG_MEMORY_TEST_MIB", "8")
        .output()
        .expect("gpulab runs")
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("gpulab exited, not killed")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn json(output: &Output) -> Diagnostic {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not a diagnostic ({e}):\n{}", text(output)))
}

#[test]
fn a_healthy_cpu_exits_0_with_a_line_per_check() {
    let out = diag(&["--device", "cpu", "--level", "1"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for check in ["host", "cuda_libraries", "throttle"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("cpu") && l.contains(check)),
            "{stdout}"
        );
    }
    assert!(stdout.contains("level 1 on cpu: pass"), "{stdout}");
}

#[test]
fn a_warning_exits_1() {
    // No --device: every device, which on a host without a GPU is the CPU alone.
    let out = diag(&["--inject", "thermal_throttle"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(text(&out).contains("hw_thermal_slowdown"), "{}", text(&out));
}

#[test]
fn a_failure_exits_2_and_the_json_names_the_address_and_bit() {
    let out = diag(&[
        "--device",
        "cpu",
        "--level",
        "2",
        "--json",
        "--inject",
        "memory_bit_flip",
    ]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    let diagnostic = json(&out);
    assert_eq!(diagnostic.schema_version, SCHEMA_VERSION);
    assert_eq!(diagnostic.level, 2);
    assert_eq!(diagnostic.status, DiagnosticStatus::Finished);
    assert_eq!(diagnostic.verdict, Some(Verdict::Fail));
    let cpu = &diagnostic.devices[0];
    assert_eq!(cpu.device, "cpu");
    let memory = cpu
        .checks
        .iter()
        .find(|c| c.check == "memory_test")
        .unwrap();
    assert_eq!(memory.verdict, Some(Verdict::Fail));
    assert!(
        memory
            .evidence
            .iter()
            .any(|e| e.name.contains("error at offset 0x")
                && e.measured_text
                    .as_deref()
                    .unwrap_or("")
                    .starts_with("bit 13")),
        "{memory:#?}"
    );
}

#[test]
fn no_such_device_or_a_bad_argument_exits_3() {
    for args in [
        &["--device", "cuda:7"][..],
        &["--device", "tpu"],
        &["--level", "4"],
        &["--duration", "ten minutes", "--level", "3"],
        &["--baseline", "/nonexistent/diag.json"],
    ] {
        let out = diag(args);
        assert_eq!(code(&out), 3, "{args:?}: {}", text(&out));
    }
    let out = diag(&["--device", "cuda:7"]);
    assert!(text(&out).contains("no device `cuda:7`"), "{}", text(&out));
}

#[test]
fn a_tenth_of_the_speed_of_an_earlier_run_fails_against_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = diag(&["--device", "cpu", "--level", "2", "--json"]);
    assert_eq!(code(&first), 0, "{}", text(&first));
    let earlier = dir.path().join("first.json");
    std::fs::write(&earlier, &first.stdout).unwrap();
    let earlier = earlier.to_str().unwrap();

    let slow = diag(&[
        "--device",
        "cpu",
        "--level",
        "2",
        "--json",
        "--baseline",
        earlier,
        "--inject",
        "slow_throughput",
    ]);
    assert_eq!(code(&slow), 2, "{}", text(&slow));
    let bandwidth = json(&slow).devices[0]
        .checks
        .iter()
        .find(|c| c.check == "memory_bandwidth")
        .cloned()
        .unwrap();
    assert_eq!(bandwidth.verdict, Some(Verdict::Fail), "{bandwidth:#?}");
    assert!(bandwidth.evidence.iter().any(|e| e
        .source
        .as_deref()
        .unwrap_or("")
        .contains("history")));
}

#[test]
fn level_3_runs_the_stress_for_the_duration_given() {
    let out = diag(&[
        "--device",
        "cpu",
        "--level",
        "3",
        "--duration",
        "2s",
        "--json",
    ]);
    let diagnostic = json(&out);
    assert_eq!(diagnostic.duration_s, Some(2.0));
    let stress = diagnostic.devices[0]
        .checks
        .iter()
        .find(|c| c.check == "stress")
        .cloned()
        .unwrap();
    assert!(stress.series.len() >= 2, "{stress:#?}");
    assert!(stress.duration_s.unwrap() >= 2.0);
    // A healthy CPU's stress: no differing result. (The verdict may still be a fall of
    // throughput on a busy test machine, so only the results are asserted here.)
    let differing = stress
        .evidence
        .iter()
        .find(|e| e.name == "results differing from the first")
        .unwrap();
    assert_eq!(differing.measured, Some(0.0));
    assert!(matches!(code(&out), 0..=2), "{}", text(&out));
}

//! The CPU device's checks, each seen passing and seen failing (with the fault injected);
//! the GPU's comparison of devices.

use gpulab_shared::diag::{CheckState, DeviceDiagnostic, DiagnosticStatus, Evidence};
use gpulab_shared::{CpuDeviceInfo, Device, DeviceKind};

use super::*;

/// The memory test's cap in the tests: 8 MiB, so that the suite stays fast.
const SMALL: u64 = 8 << 20;

fn cpu() -> Device {
    Device {
        id: "cpu".into(),
        kind: DeviceKind::Cpu,
        name: "test CPU".into(),
        total_memory_bytes: None,
        free_memory_bytes: None,
        cuda: None,
        cpu: Some(CpuDeviceInfo::default()),
        last_diagnostic: None,
        peaks: Vec::new(),
    }
}

fn plan(level: u8, faults: &[Fault]) -> Plan {
    Plan {
        faults: faults.to_vec(),
        memory_test_max_bytes: Some(SMALL),
        ..Plan::new(level, 2.0)
    }
}

/// Runs the CPU's checks, keeping every report.
fn run(plan: &Plan) -> (Vec<CheckResult>, Vec<CheckResult>) {
    let mut reports = Vec::new();
    let checks = run_device(&cpu(), Target::Cpu, plan, &mut |c| reports.push(c.clone()));
    (checks, reports)
}

fn check<'a>(checks: &'a [CheckResult], id: &str) -> &'a CheckResult {
    checks
        .iter()
        .find(|c| c.check == id)
        .unwrap_or_else(|| panic!("no check {id} in {checks:#?}"))
}

fn evidence<'a>(check: &'a CheckResult, name: &str) -> &'a Evidence {
    check
        .evidence
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no evidence {name} in {check:#?}"))
}

/// Every check ended, with evidence, and a reason whenever it did not pass.
fn assert_well_formed(checks: &[CheckResult]) {
    for c in checks {
        assert_eq!(c.state, CheckState::Done, "{c:#?}");
        assert!(!c.evidence.is_empty(), "{} has no evidence", c.check);
        assert!(!c.summary.is_empty(), "{} has no summary", c.check);
        for e in &c.evidence {
            assert!(e.source.is_some(), "{}: {} has no source", c.check, e.name);
        }
        if c.verdict != Some(Verdict::Pass) {
            assert!(c.reason.is_some(), "{} has no reason: {c:#?}", c.check);
        }
    }
}

/// A baseline of the figures of `checks`, scaled by `scale`.
fn baseline_of(checks: &[CheckResult], scale: f64) -> Baseline {
    let mut baseline = Baseline::default();
    for c in checks {
        for e in &c.evidence {
            if let Some(m) = e.measured {
                baseline.push(&c.check, &e.name, m * scale);
            }
        }
    }
    baseline
}

#[test]
fn the_levels_plan_more_checks_each_all_waiting() {
    let device = cpu();
    let counts: Vec<usize> = (1..=3)
        .map(|level| planned_checks(&device, level).len())
        .collect();
    assert!(counts[0] < counts[1] && counts[1] < counts[2], "{counts:?}");
    assert!(planned_checks(&device, 3)
        .iter()
        .all(|c| c.state == CheckState::Waiting && c.verdict.is_none()));
    let gpu = Device {
        kind: DeviceKind::Cuda,
        ..cpu()
    };
    let ids: Vec<String> = planned_checks(&gpu, 1)
        .into_iter()
        .map(|c| c.check)
        .collect();
    for id in [
        "libraries",
        "identity",
        "ecc",
        "memory_repair",
        "pcie_link",
        "processes",
    ] {
        assert!(ids.iter().any(|i| i == id), "{id} not in {ids:?}");
    }
}

#[test]
fn level_1_passes_and_reports_each_check_starting_and_ending() {
    let (checks, reports) = run(&plan(1, &[]));
    assert_well_formed(&checks);
    assert_eq!(check(&checks, "host").verdict, Some(Verdict::Pass));
    // A CPU-only host without CUDA libraries is not a failure.
    assert_ne!(
        check(&checks, "cuda_libraries").verdict,
        Some(Verdict::Fail)
    );
    assert_ne!(check(&checks, "throttle").verdict, Some(Verdict::Fail));
    assert!(reports
        .iter()
        .any(|r| r.check == "host" && r.state == CheckState::Running));
    let last = reports.iter().rfind(|r| r.check == "host").unwrap();
    assert_eq!(last.state, CheckState::Done);
}

#[test]
fn a_faked_thermal_throttle_warns_at_level_1() {
    let (checks, _) = run(&plan(1, &[Fault::ThermalThrottle]));
    let throttle = check(&checks, "throttle");
    assert_eq!(throttle.verdict, Some(Verdict::Warn), "{throttle:#?}");
    let reasons = evidence(throttle, "active throttle reasons");
    assert!(reasons
        .measured_text
        .as_deref()
        .unwrap()
        .contains("hw_thermal_slowdown"));
    assert!(throttle
        .reason
        .as_deref()
        .unwrap()
        .contains("hw_thermal_slowdown"));
}

#[test]
fn level_2_passes_on_healthy_memory_and_a_first_run_sets_the_baseline() {
    let (checks, _) = run(&plan(2, &[]));
    assert_well_formed(&checks);
    for id in ["memory_test", "memory_bandwidth", "gemm_repeatability"] {
        assert_eq!(check(&checks, id).verdict, Some(Verdict::Pass), "{id}");
    }
    let tested = evidence(check(&checks, "memory_test"), "bytes tested");
    assert_eq!(tested.measured, Some(SMALL as f64));
    assert!(tested.expected_text.as_deref().unwrap().contains("capped"));
    let copy = evidence(check(&checks, "memory_bandwidth"), "copy bandwidth");
    assert!(copy.measured.unwrap() > 0.0);
    assert_eq!(
        copy.source.as_deref(),
        Some("no history yet: this run sets the baseline")
    );
    let differing = evidence(check(&checks, "gemm_repeatability"), "differing results");
    assert_eq!(differing.measured, Some(0.0));
}

#[test]
fn a_flipped_bit_fails_the_memory_test_naming_its_address_and_bit() {
    let (checks, _) = run(&plan(2, &[Fault::MemoryBitFlip]));
    let memory = check(&checks, "memory_test");
    assert_eq!(memory.verdict, Some(Verdict::Fail), "{memory:#?}");
    let word = memtest::flipped_word((SMALL / 8) as usize) as u64;
    let name = format!("walking ones: error at offset {:#x}", word * 8);
    let error = evidence(memory, &name);
    assert!(error
        .measured_text
        .as_deref()
        .unwrap()
        .starts_with(&format!("bit {} differ", memtest::FLIPPED_BIT)));
    assert_eq!(
        evidence(memory, "walking ones: failing words").measured,
        Some(1.0)
    );
    // Only the memory test saw it.
    assert_eq!(
        check(&checks, "gemm_repeatability").verdict,
        Some(Verdict::Pass)
    );
}

#[test]
fn an_altered_gemm_result_fails_the_repeatability_check() {
    let (checks, _) = run(&plan(2, &[Fault::GemmMismatch]));
    let gemm = check(&checks, "gemm_repeatability");
    assert_eq!(gemm.verdict, Some(Verdict::Fail), "{gemm:#?}");
    assert_eq!(evidence(gemm, "differing results").measured, Some(1.0));
    assert!(gemm
        .evidence
        .iter()
        .any(|e| e.name.starts_with("first differing value")));
}

#[test]
fn a_tenth_of_the_throughput_fails_against_the_history_and_the_history_passes() {
    let (first, _) = run(&plan(2, &[]));
    // A hundredth of the first run's figures: the second run, on the same (shared, noisy)
    // machine, passes against 0.75 × that, however busy the machine is meanwhile.
    let mut healthy = plan(2, &[]);
    healthy.baseline = baseline_of(&first, 0.01);
    let (second, _) = run(&healthy);
    for id in ["memory_bandwidth", "gemm_repeatability"] {
        let c = check(&second, id);
        assert_eq!(c.verdict, Some(Verdict::Pass), "{c:#?}");
        assert!(c.evidence.iter().any(|e| e
            .source
            .as_deref()
            .unwrap()
            .starts_with("this device's history")));
    }
    // Ten times the first run's figures, and a tenth measured: 0.01 < 0.75 (unless this run
    // is 75 times as fast as the first, which a first run on a busy machine could not make
    // likely at 7.5).
    let mut slow = plan(2, &[Fault::SlowThroughput]);
    slow.baseline = baseline_of(&first, 10.0);
    let (third, _) = run(&slow);
    for id in ["memory_bandwidth", "gemm_repeatability"] {
        let c = check(&third, id);
        assert_eq!(c.verdict, Some(Verdict::Fail), "{c:#?}");
        assert!(c.reason.as_deref().unwrap().contains("expected at least"));
    }
}

#[test]
fn level_3_stresses_for_the_duration_sampling_each_second() {
    let (checks, reports) = run(&plan(3, &[]));
    let stress = check(&checks, "stress");
    assert!(stress.series.len() >= 2, "{stress:#?}");
    assert!(stress.duration_s.unwrap() >= 2.0);
    assert_eq!(
        evidence(stress, "results differing from the first").verdict,
        Verdict::Pass
    );
    assert!(stress.series.iter().all(|s| s.gflops > 0.0));
    // Each sample was reported while the check ran.
    let live = reports
        .iter()
        .filter(|r| r.check == "stress" && r.state == CheckState::Running)
        .map(|r| r.series.len())
        .max();
    assert!(live >= Some(1), "{live:?}");
}

#[test]
fn a_stress_run_fails_on_a_differing_result_and_on_throttling() {
    let (checks, _) = run(&plan(3, &[Fault::GemmMismatch, Fault::ThermalThrottle]));
    let stress = check(&checks, "stress");
    assert_eq!(stress.verdict, Some(Verdict::Fail), "{stress:#?}");
    assert_eq!(
        evidence(stress, "results differing from the first").measured,
        Some(1.0)
    );
    let throttled = evidence(stress, "seconds throttled (thermal or hardware)");
    assert_eq!(throttled.verdict, Verdict::Fail);
    assert!(throttled.measured.unwrap() >= 1.0);
    assert!(stress.series.iter().all(|s| s
        .throttle_reasons
        .iter()
        .any(|r| r == "hw_thermal_slowdown")));
}

#[test]
fn a_stress_whose_throughput_falls_fails() {
    // The verdict on the series itself: a fall of 20 % over the run.
    let mut check = waiting("stress", "Stress");
    let mut sink = |_: &CheckResult| {};
    let mut run = CheckRun::start(&mut check, &mut sink);
    cpu::judge_stress(
        &mut run,
        &Baseline::default(),
        None,
        &[100.0, 100.0, 95.0, 90.0, 80.0, 80.0],
        "SGEMM",
        6,
        0,
    );
    run.finish();
    assert_eq!(check.verdict, Some(Verdict::Fail), "{check:#?}");
    let kept = evidence(&check, "throughput at the end / at the start");
    assert!((kept.measured.unwrap() - 0.8).abs() < 1e-9);
}

#[test]
fn the_baseline_is_the_history_of_checks_that_did_not_fail() {
    let mut passed = waiting("memory_bandwidth", "x");
    passed.verdict = Some(Verdict::Pass);
    passed.evidence = vec![evidence::unjudged("copy bandwidth", 10.0, "GB/s", "-")];
    let mut failed = passed.clone();
    failed.verdict = Some(Verdict::Fail);
    failed.evidence[0].measured = Some(1.0);
    let run = |checks| DeviceDiagnostic {
        device: "cpu".into(),
        name: "cpu".into(),
        uuid: None,
        status: DiagnosticStatus::Finished,
        verdict: None,
        started_at: None,
        finished_at: None,
        checks,
        error: None,
    };
    let history = [
        run(vec![failed]),
        run(vec![passed.clone()]),
        run(vec![passed]),
    ];
    let baseline = Baseline::from_history(&history);
    assert_eq!(
        baseline.figures("memory_bandwidth", "copy bandwidth"),
        [10.0, 10.0]
    );
    let (expected, source) = baseline
        .expectation("memory_bandwidth", "copy bandwidth")
        .unwrap();
    assert_eq!(expected, 7.5);
    assert!(
        source.contains("0.75") && source.contains("median"),
        "{source}"
    );
    assert!(baseline.expectation("memory_bandwidth", "triad").is_none());

    // A plan, baseline included, goes to a worker as JSON and comes back the same.
    let plan = Plan {
        baseline,
        faults: vec![Fault::GemmMismatch],
        ..Plan::new(3, 60.0)
    };
    let json = serde_json::to_string(&plan).unwrap();
    assert!(json.contains(r#""check":"memory_bandwidth""#), "{json}");
    assert_eq!(serde_json::from_str::<Plan>(&json).unwrap(), plan);
}

#[test]
fn a_gpu_more_than_a_tenth_below_the_best_is_flagged() {
    let stressed = |device: &str, gflops: f64| {
        let mut check = waiting(gpu::STRESS_FP32, "stress");
        check.verdict = Some(Verdict::Pass);
        check.evidence = vec![evidence::unjudged(
            gpu::STRESS_GFLOPS,
            gflops,
            "GFLOP/s",
            "-",
        )];
        DeviceDiagnostic {
            device: device.into(),
            name: device.into(),
            uuid: None,
            status: DiagnosticStatus::Finished,
            verdict: Some(Verdict::Pass),
            started_at: None,
            finished_at: None,
            checks: vec![check],
            error: None,
        }
    };
    let mut cpu = stressed("cpu", 0.0);
    cpu.checks.clear();
    let mut devices = vec![
        stressed("cuda:0", 50_000.0),
        stressed("cuda:1", 46_000.0),
        stressed("cuda:2", 44_000.0),
        cpu,
    ];
    compare_devices(&mut devices);
    let verdicts: Vec<_> = devices.iter().map(|d| d.verdict).collect();
    assert_eq!(
        verdicts,
        [
            Some(Verdict::Pass),
            Some(Verdict::Pass),
            Some(Verdict::Fail),
            Some(Verdict::Pass)
        ]
    );
    assert!(devices[3].checks.is_empty(), "the CPU is not compared");
    let flagged = devices[2].checks.last().unwrap();
    assert_eq!(flagged.check, RELATIVE_THROUGHPUT);
    assert!(flagged.evidence[0]
        .source
        .as_deref()
        .unwrap()
        .contains("cuda:0"));
    // One GPU alone has nothing to be compared with.
    let mut alone = vec![stressed("cuda:0", 1.0)];
    compare_devices(&mut alone);
    assert_eq!(alone[0].checks.len(), 1);
}

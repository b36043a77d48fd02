//! Theoretical peaks, fraction of peak and the roofline, through the real server.

mod support;

use std::time::Duration;

use gpulab_shared::peaks::{PeakBasis, Roofline};
use gpulab_shared::{Device, DeviceKind, JobComparison, JobStatus, Problem};
use reqwest::StatusCode;
use serde_json::json;
use support::spawn_app;

/// The CPU device once its memory bandwidth has been measured (in the background, at
/// start): the measurement takes under 2 s, but the machine may be busy.
async fn cpu_with_measured_bandwidth(app: &support::TestApp) -> Device {
    for _ in 0..300 {
        let cpu: Device = app.get_json("/api/devices/cpu").await;
        if cpu.peaks.iter().any(|p| p.name == "memory_bandwidth") {
            return cpu;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the CPU's memory bandwidth was not measured within 30 s");
}

#[tokio::test]
async fn the_cpu_has_computed_arithmetic_peaks_and_a_measured_bandwidth() {
    let app = spawn_app().await;
    // The health check answers at once, measured or not.
    let health = app.get("/api/health").await;
    assert_eq!(health.status(), StatusCode::OK);
    let cpu = cpu_with_measured_bandwidth(&app).await;
    for peak in &cpu.peaks {
        eprintln!(
            "cpu peak {} = {:.1} {} ({:?}): {} [{}]",
            peak.name, peak.value, peak.unit, peak.basis, peak.formula, peak.source
        );
        assert!(peak.value > 0.0 && peak.value.is_finite(), "{peak:?}");
        assert!(
            !peak.formula.is_empty() && !peak.source.is_empty(),
            "{peak:?}"
        );
    }
    let find = |name: &str| cpu.peaks.iter().find(|p| p.name == name);
    let bandwidth = find("memory_bandwidth").unwrap();
    assert_eq!(bandwidth.basis, PeakBasis::Measured);
    assert_eq!(bandwidth.unit, "GB/s");
    assert!(bandwidth.formula.contains("triad") && bandwidth.source.contains("measured"));
    // Every x86-64 and aarch64 CPU has at least SSE2 or ASIMD and a clock in cpuinfo.
    let (fp32, fp64) = (find("fp32").unwrap(), find("fp64").unwrap());
    assert_eq!(
        (fp32.basis, fp64.basis),
        (PeakBasis::Computed, PeakBasis::Computed)
    );
    assert_eq!(fp32.unit, "GFLOP/s");
    assert!(
        (fp32.value / fp64.value - 2.0).abs() < 1e-9,
        "twice the lanes in fp32"
    );
    assert!(fp32.source.contains("assumed"), "{}", fp32.source);
    // The list carries the same peaks.
    let devices: Vec<Device> = app.get_json("/api/devices").await;
    let listed = devices.iter().find(|d| d.id == "cpu").unwrap();
    assert_eq!(listed.peaks, cpu.peaks);

    // On a GPU machine (the GPU check): each GPU's peaks are computed from its attributes.
    for gpu in devices.iter().filter(|d| d.kind == DeviceKind::Cuda) {
        for peak in &gpu.peaks {
            eprintln!(
                "{} ({}) peak {} = {:.1} {}: {} [{}]",
                gpu.id, gpu.name, peak.name, peak.value, peak.unit, peak.formula, peak.source
            );
            assert_eq!(peak.basis, PeakBasis::Computed, "{peak:?}");
            assert!(peak.value > 0.0 && !peak.formula.is_empty(), "{peak:?}");
        }
        for name in ["memory_bandwidth", "fp32", "fp64"] {
            assert!(
                gpu.peaks.iter().any(|p| p.name == name),
                "{}: no {name}",
                gpu.id
            );
        }
    }
}

/// On a GPU machine: the device-to-device copy and cuBLAS SGEMM against the GPU's computed
/// peaks, which no measurement may exceed.
#[tokio::test]
async fn gpu_results_stay_below_their_computed_peaks() {
    let app = spawn_app().await;
    let devices: Vec<Device> = app.get_json("/api/devices").await;
    let Some(gpu) = devices.iter().find(|d| d.kind == DeviceKind::Cuda) else {
        // Without a GPU, the CPU is the only device, and it has its arithmetic peaks.
        assert_eq!(devices.len(), 1);
        assert!(devices[0].peaks.iter().any(|p| p.name == "fp32"));
        return;
    };
    for (kernel, params, peak) in [
        ("bandwidth", json!({"size_mib": 1024}), "memory_bandwidth"),
        ("matmul", json!({"m": 4096, "n": 4096, "k": 4096}), "fp32"),
    ] {
        let job = app
            .submit(json!({"kernel": kernel, "device": gpu.id, "params": params,
                "repetitions": 5}))
            .await;
        let job = app.wait_status(job.id, JobStatus::Succeeded).await;
        let result = job.result.unwrap();
        let f = result.fraction_of_peak.expect("a fraction of peak");
        eprintln!(
            "{} {kernel}: {:.1} {} = {:.3} of {} {:.1} {}",
            gpu.name,
            result.throughput.value,
            result.throughput.unit,
            f.fraction,
            f.peak,
            f.peak_value,
            f.unit
        );
        assert_eq!(f.peak, peak);
        assert!(f.fraction > 0.0 && f.fraction < 1.0, "{f:?}");
    }
}

#[tokio::test]
async fn cpu_results_carry_their_fraction_of_peak_and_roofline_point() {
    let app = spawn_app().await;
    let cpu = cpu_with_measured_bandwidth(&app).await;
    let add = app
        .submit(json!({"kernel": "vector_add", "device": "cpu", "repetitions": 5}))
        .await;
    let mm = app
        .submit(
            json!({"kernel": "matmul", "device": "cpu", "repetitions": 3,
            "params": {"m": 512, "n": 512, "k": 512}}),
        )
        .await;
    let pi = app
        .submit(json!({"kernel": "monte_carlo_pi", "device": "cpu",
            "params": {"samples": 100000}}))
        .await;
    let add = app.wait_status(add.id, JobStatus::Succeeded).await;
    let mm = app.wait_status(mm.id, JobStatus::Succeeded).await;
    let pi = app.wait_status(pi.id, JobStatus::Succeeded).await;

    let add_result = add.result.as_ref().unwrap();
    let f = add_result
        .fraction_of_peak
        .as_ref()
        .expect("vector_add has a fraction");
    eprintln!(
        "vector_add n = 2^22: {:.2} GB/s = {:.3} of the measured {:.2} GB/s",
        add_result.throughput.value, f.fraction, f.peak_value
    );
    assert_eq!(
        (f.peak.as_str(), f.basis),
        ("memory_bandwidth", PeakBasis::Measured)
    );
    assert!(f.fraction > 0.0 && f.fraction.is_finite(), "{f:?}");
    assert!((f.fraction * f.peak_value - add_result.throughput.value).abs() < 1e-6);
    assert!(f.convention.contains("read + written"), "{}", f.convention);
    let point = add_result
        .roofline
        .as_ref()
        .expect("vector_add has a roofline point");
    assert_eq!(point.bytes, 12.0 * (1 << 22) as f64);
    assert!((point.arithmetic_intensity - 1.0 / 12.0).abs() < 1e-12);

    let mm_result = mm.result.as_ref().unwrap();
    let f = mm_result
        .fraction_of_peak
        .as_ref()
        .expect("matmul has a fraction");
    eprintln!(
        "matmul 512³: {:.2} GFLOP/s = {:.3} of the computed fp32 {:.1} GFLOP/s",
        mm_result.throughput.value, f.fraction, f.peak_value
    );
    assert_eq!((f.peak.as_str(), f.basis), ("fp32", PeakBasis::Computed));
    let fp32 = cpu.peaks.iter().find(|p| p.name == "fp32").unwrap();
    assert_eq!(f.peak_value, fp32.value);
    // Over 1 of a theoretical peak would mean a wrong peak or a wrong count.
    assert!(f.fraction > 0.0 && f.fraction < 1.0, "{f:?}");
    let point = mm_result
        .roofline
        .as_ref()
        .expect("matmul has a roofline point");
    assert_eq!(point.flops, 2.0 * 512f64.powi(3));
    assert!((point.achieved - mm_result.throughput.value).abs() < 1e-6 * point.achieved);
    assert_eq!(point.ceiling, "fp32");

    let pi_result = pi.result.as_ref().unwrap();
    assert_eq!(pi_result.fraction_of_peak, None, "samples have no peak");
    assert_eq!(pi_result.roofline, None);

    // The comparison carries each job's own fraction.
    let ids = format!("/api/jobs/compare?ids={},{}", add.id, mm.id);
    let comparison: JobComparison = app.get_json(&ids).await;
    assert_eq!(
        comparison.entries[0].fraction_of_peak,
        add_result.fraction_of_peak
    );
    assert_eq!(
        comparison.entries[1].fraction_of_peak,
        mm_result.fraction_of_peak
    );

    // The roofline: the slope, the ceilings highest first, both jobs newest first.
    let roofline: Roofline = app.get_json("/api/devices/cpu/roofline").await;
    assert_eq!(roofline.device, "cpu");
    assert_eq!(
        roofline.bandwidth.as_ref().unwrap().basis,
        PeakBasis::Measured
    );
    let ceilings: Vec<&str> = roofline.ceilings.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(ceilings, ["fp32", "fp64"]);
    let ids: Vec<i64> = roofline.points.iter().map(|p| p.job_id).collect();
    assert_eq!(ids, [mm.id, add.id], "the π job has no point");
    assert_eq!(roofline.points[0].label, "matmul cublas, n = 512, fp32");
    assert_eq!(roofline.points[1].label, "vector_add, n = 4194304, fp32");
    assert_eq!(&roofline.points[0].point, point);
}

#[tokio::test]
async fn the_roofline_of_an_unknown_device_is_a_404_problem() {
    let app = spawn_app().await;
    let resp = app.get("/api/devices/cuda:9/roofline").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let problem: Problem = resp.json().await.unwrap();
    assert!(problem.detail.contains("cuda:9"), "{}", problem.detail);
    // A device without jobs has an empty roofline, not an error.
    let roofline: Roofline = app.get_json("/api/devices/cpu/roofline").await;
    assert!(roofline.points.is_empty());
}

#[test]
fn gpulab_run_prints_the_fraction_of_peak_with_its_convention() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(support::gpulab_exe())
            .args(["run", "--device", "cpu", "--repetitions", "2"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (body, stderr)
    };
    let (body, stderr) = run(&["matmul", "-p", "m=128", "-p", "n=128", "-p", "k=128"]);
    let fraction = body["result"]["fraction_of_peak"]["fraction"]
        .as_f64()
        .unwrap();
    assert!(fraction > 0.0 && fraction < 1.0, "{body}");
    assert_eq!(body["result"]["fraction_of_peak"]["peak"], "fp32");
    assert!(
        stderr.contains("% of peak") && stderr.contains("2 FLOP per multiply-add"),
        "{stderr}"
    );
    assert_eq!(
        body["result"]["roofline"]["flops"],
        json!(2.0 * 128f64.powi(3))
    );
    // A GB/s figure is judged against the CPU's bandwidth, measured for the run.
    let (body, stderr) = run(&["vector_add", "-p", "n=100000"]);
    assert_eq!(body["result"]["fraction_of_peak"]["basis"], "measured");
    assert!(stderr.contains("bandwidthTest"), "{stderr}");
}

use gpulab_shared::{Throughput, Timing, Verification};
use serde_json::json;

use super::*;

fn peak(name: &str, value: f64, unit: &str, basis: PeakBasis) -> Peak {
    Peak {
        name: name.into(),
        value,
        unit: unit.into(),
        basis,
        formula: "f".into(),
        source: "s".into(),
    }
}

fn result(value: f64, unit: &str, median_ms: f64) -> JobResult {
    JobResult {
        throughput: Throughput {
            value,
            unit: unit.into(),
        },
        timing: Timing {
            repetitions: 3,
            min_ms: median_ms,
            median_ms,
            max_ms: median_ms,
        },
        verification: Verification {
            passed: true,
            max_abs_error: 0.0,
            max_rel_error: 0.0,
            tolerance: 0.0,
            method: "m".into(),
        },
        output: serde_json::Value::Null,
        has_artifact: false,
        fraction_of_peak: None,
        roofline: None,
    }
}

fn params(value: serde_json::Value) -> Params {
    serde_json::from_value(value).unwrap()
}

fn cpu_peaks() -> Vec<Peak> {
    vec![
        peak("memory_bandwidth", 20.0, "GB/s", PeakBasis::Measured),
        peak("fp64", 100.0, "GFLOP/s", PeakBasis::Computed),
        peak("fp32", 200.0, "GFLOP/s", PeakBasis::Computed),
    ]
}

#[test]
fn bytes_are_judged_against_the_bandwidth_and_flops_against_the_dtype() {
    // vector_add, n = 1000: 12 000 bytes and 1000 FLOP in 0.001 ms → 12 000 GB/s would be
    // silly, so say 1 ms: 0.012 GB/s and 0.001 GFLOP/s.
    let mut r = result(10.0, "GB/s", 1.0);
    annotate(
        &mut r,
        "vector_add",
        &params(json!({"n": 1000, "seed": 1})),
        &cpu_peaks(),
    );
    let f = r.fraction_of_peak.unwrap();
    assert_eq!(
        (f.peak.as_str(), f.fraction, f.basis),
        ("memory_bandwidth", 0.5, PeakBasis::Measured)
    );
    assert!(f.convention.contains("bandwidthTest"), "{}", f.convention);
    let point = r.roofline.unwrap();
    assert_eq!((point.flops, point.bytes), (1000.0, 12_000.0));
    assert!((point.arithmetic_intensity - 1.0 / 12.0).abs() < 1e-12);
    assert!((point.achieved - 1e-3).abs() < 1e-12, "{}", point.achieved);
    assert_eq!(point.ceiling, "fp32");

    let mut r = result(50.0, "GFLOP/s", 1.0);
    let mm = json!({"m": 64, "n": 32, "k": 16, "seed": 1, "variant": "cublas"});
    annotate(&mut r, "matmul", &params(mm.clone()), &cpu_peaks());
    let f = r.fraction_of_peak.unwrap();
    assert_eq!((f.peak.as_str(), f.fraction), ("fp32", 0.25));
    let point = r.roofline.unwrap();
    assert_eq!(point.flops, 2.0 * 64.0 * 32.0 * 16.0);
    assert_eq!(point.bytes, (64.0 * 16.0 + 16.0 * 32.0 + 64.0 * 32.0) * 4.0);

    // A job with a dtype is judged against that dtype's peak; none where the device has none.
    let mut with_dtype = mm.clone();
    with_dtype["dtype"] = json!("fp64");
    let mut r = result(50.0, "GFLOP/s", 1.0);
    annotate(&mut r, "matmul", &params(with_dtype), &cpu_peaks());
    assert_eq!(r.fraction_of_peak.unwrap().fraction, 0.5);
    let mut bf16 = mm;
    bf16["dtype"] = json!("bf16");
    let mut r = result(50.0, "GFLOP/s", 1.0);
    annotate(&mut r, "matmul", &params(bf16), &cpu_peaks());
    assert_eq!(r.fraction_of_peak, None, "the CPU has no bf16 peak");
}

#[test]
fn samples_pixels_and_unknown_peaks_have_no_fraction() {
    let mut r = result(1.0, "Gsamples/s", 1.0);
    annotate(
        &mut r,
        "monte_carlo_pi",
        &params(json!({"samples": 1000, "seed": 1})),
        &cpu_peaks(),
    );
    assert_eq!((r.fraction_of_peak, r.roofline), (None, None));
    // Before the CPU's bandwidth is measured, a GB/s figure has nothing to compare with.
    let mut r = result(1.0, "GB/s", 1.0);
    annotate(
        &mut r,
        "bandwidth",
        &params(json!({"size_mib": 1, "seed": 1})),
        &cpu_peaks()[1..],
    );
    assert_eq!((r.fraction_of_peak, r.roofline), (None, None));
}

#[test]
fn op_counts_follow_the_catalog_formulas() {
    let counts = |kernel: &str, p: serde_json::Value| {
        let (kernel, spec) = crate::kernels::find_with_spec(kernel).unwrap();
        let p = crate::kernels::ResolvedParams::resolve(&spec.params, Some(&params(p))).unwrap();
        kernel.configure(&p).unwrap().op_counts()
    };
    let saxpy = counts("saxpy", json!({"n": 10})).unwrap();
    assert_eq!((saxpy.flops, saxpy.bytes), (20.0, 120.0));
    let sum = counts("reduce_sum", json!({"n": 10})).unwrap();
    assert_eq!((sum.flops, sum.bytes), (10.0, 40.0));
    for none in ["bandwidth", "mandelbrot", "monte_carlo_pi"] {
        assert!(counts(none, json!({})).is_none(), "{none}");
    }
}

#[test]
fn the_roofline_sorts_ceilings_and_labels_points() {
    let mut r = result(10.0, "GFLOP/s", 2.0);
    let p = params(json!({"m": 8, "n": 8, "k": 8, "seed": 1, "variant": "tiled"}));
    annotate(&mut r, "matmul", &p, &cpu_peaks());
    let job = Job {
        id: 7,
        kernel: "matmul".into(),
        device: "cpu".into(),
        params: p,
        repetitions: 3,
        timeout_s: 60.0,
        status: gpulab_shared::JobStatus::Succeeded,
        created_at: chrono::Utc::now(),
        started_at: None,
        finished_at: None,
        progress: None,
        result: Some(r),
        error: None,
        owner: None,
    };
    let roofline = roofline("cpu", &cpu_peaks(), std::slice::from_ref(&job));
    assert_eq!(roofline.bandwidth.unwrap().value, 20.0);
    let names: Vec<&str> = roofline.ceilings.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["fp32", "fp64"]);
    assert_eq!(roofline.points.len(), 1);
    assert_eq!(roofline.points[0].label, "matmul tiled, n = 8, fp32");
    assert_eq!(roofline.points[0].job_id, 7);
}

//! The CUDA engine on a real GPU: every built-in kernel verified, custom kernels, and the
//! recovery after a fault or an endless loop.
//!
//! These need a CUDA GPU, so they are ignored by a plain `cargo test`, which lists them as
//! ignored with that reason. The GPU check (`cargo xtask gpu-bundle`, then `run.sh` on a GPU
//! machine) runs them with `--include-ignored`; run so on a host without a GPU, each fails
//! and says why none could be used.

mod support;

use gpulab_shared::{
    Device, DeviceKind, Health, Job, JobComparison, JobGroup, JobStatus, KernelSpec, Problem,
};
use serde_json::{json, Value};
use support::{spawn_app, TestApp};

const NEEDS_GPU: &str = "needs a CUDA GPU: the GPU check runs it";

/// A server and its CUDA devices' ids; fails with the server's reason when it has none.
async fn app_with_gpus() -> (TestApp, Vec<String>) {
    let app = spawn_app().await;
    let devices: Vec<Device> = app.get_json("/api/devices").await;
    let gpus: Vec<String> = devices
        .into_iter()
        .filter(|d| d.kind == DeviceKind::Cuda)
        .map(|d| d.id)
        .collect();
    if gpus.is_empty() {
        let health: Health = app.get_json("/api/health").await;
        panic!(
            "no CUDA device, so this GPU test cannot run: {}",
            health.cuda.reason.unwrap_or_default()
        );
    }
    (app, gpus)
}

async fn run(app: &TestApp, body: Value) -> Job {
    let job = app.submit(body).await;
    app.wait_finished(job.id).await
}

fn succeeded(job: &Job) {
    assert_eq!(
        job.status,
        JobStatus::Succeeded,
        "{} on {}: {:?}",
        job.kernel,
        job.device,
        job.error
    );
    let result = job.result.as_ref().expect("a succeeded job has a result");
    assert!(result.verification.passed, "{:?}", result.verification);
    assert!(result.timing.median_ms > 0.0, "{:?}", result.timing);
}

#[tokio::test]
#[ignore = "needs a CUDA GPU: the GPU check runs it"]
async fn every_builtin_kernel_verifies_on_every_gpu() {
    let (app, gpus) = app_with_gpus().await;
    let catalog: Vec<KernelSpec> = app.get_json("/api/kernels").await;
    // Every kernel of the catalog and every matmul variant, at sizes that are no multiple of
    // a block or a tile (n odd: matmul's register-tiled kernel loads B element by element)...
    let sizes = [
        ("n", 1003),
        ("m", 1000),
        ("k", 513),
        ("size_mib", 64),
        ("width", 640),
        ("height", 480),
        ("max_iter", 500),
        ("samples", 100_000_000),
    ];
    let mut cases = support::jobs_of_catalog(&catalog, "", &sizes);
    // ... then long vectors, and products whose k and n are multiples of 4 (float4 loads).
    cases.extend([
        json!({"kernel": "vector_add", "params": {"n": 10_000_003}}),
        json!({"kernel": "saxpy", "params": {"n": 10_000_001, "a": -1.25}}),
        json!({"kernel": "reduce_sum", "params": {"n": 10_000_002}}),
        json!({"kernel": "matmul", "params": {"m": 1000, "n": 776, "k": 516, "variant": "register_tiled"}}),
        json!({"kernel": "matmul", "params": {"m": 1024, "n": 1024, "k": 1024, "variant": "register_tiled"}}),
    ]);
    for gpu in &gpus {
        for case in &cases {
            let mut body = case.clone();
            body["device"] = json!(gpu);
            body["repetitions"] = json!(3);
            let job = run(&app, body).await;
            succeeded(&job);
            let output = &job.result.as_ref().unwrap().output;
            if job.kernel == "monte_carlo_pi" {
                let prefix = &output["exact_prefix"];
                assert_eq!(prefix["gpu_hits"], prefix["host_hits"], "{output}");
            }
            if job.kernel == "bandwidth" {
                let sweep = output["sweep"].as_array().unwrap();
                // 1 KiB to 64 MiB, five directions each.
                assert_eq!(sweep.len(), 17 * 5, "{output}");
                assert!(sweep.iter().all(|p| p["gb_per_s"].as_f64().unwrap() > 0.0));
            }
            if job.kernel == "mandelbrot" {
                let png = app.get(&format!("/api/jobs/{}/artifact", job.id)).await;
                assert_eq!(png.status(), 200);
                let bytes = png.bytes().await.unwrap();
                assert!(bytes.starts_with(b"\x89PNG"));
            }
            // Every kernel but cuBLAS (matmul's default variant) compiles a module.
            let variant = case["params"]["variant"].as_str().unwrap_or("cublas");
            if job.kernel != "matmul" || variant != "cublas" {
                let module = &output["modules"][0];
                assert!(
                    module["target"].as_str().unwrap().starts_with("sm_"),
                    "{output}"
                );
            }
        }
    }
}

fn custom(source: &str, entry: &str, n: u64, args: Value) -> Value {
    json!({
        "kernel": "custom",
        "params": {"source": source, "entry": entry, "n": n, "grid": null,
                   "block": [128, 1, 1], "shared_mem_bytes": 0, "args": args},
        "repetitions": 2,
    })
}

const VECTOR_ADD: &str = r#"extern "C" __global__ void vector_add(const float* a, const float* b, float* c, unsigned n) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}"#;

fn vector_add(gpu: &str) -> Value {
    let mut body = custom(
        VECTOR_ADD,
        "vector_add",
        1000,
        json!([
            {"kind": "buffer", "type": "f32", "fill": "iota"},
            {"kind": "buffer", "type": "f32", "fill": "ones"},
            {"kind": "buffer", "type": "f32", "fill": "zeros", "output": true},
            {"kind": "scalar", "type": "u32", "value": 1000},
        ]),
    );
    body["device"] = json!(gpu);
    body
}

#[tokio::test]
#[ignore = "needs a CUDA GPU: the GPU check runs it"]
async fn hole3_a_custom_kernel_reports_its_outputs_and_runs_in_a_fresh_worker() {
    let (app, gpus) = app_with_gpus().await;
    // A built-in job first, so the device's worker has a context, modules and memory.
    succeeded(
        &run(
            &app,
            json!({"kernel": "vector_add", "device": gpus[0], "params": {"n": 1_000_000}}),
        )
        .await,
    );
    let first = run(&app, vector_add(&gpus[0])).await;
    succeeded(&first);
    let output = &first.result.as_ref().unwrap().output;
    let c = &output["buffers"][0];
    assert_eq!(c["arg"], 2);
    assert_eq!(c["first"][0], 1.0);
    assert_eq!(c["first"][63], 64.0);
    assert_eq!(c["min"], 1.0);
    assert_eq!(c["max"], 1000.0);
    assert_eq!(c["mean"], 500.5);
    assert_eq!(output["grid"], json!([8, 1, 1]));
    assert_eq!(output["modules"][0]["cache_hit"], false);
    // The same source again: a new worker, whose cache has never seen it.
    let again = run(&app, vector_add(&gpus[0])).await;
    succeeded(&again);
    let module = &again.result.as_ref().unwrap().output["modules"][0];
    assert_eq!(module["cache_hit"], false, "{module}");
    assert_eq!(
        again.result.as_ref().unwrap().output["buffers"][0]["checksum"],
        c["checksum"]
    );
}

#[tokio::test]
#[ignore = "needs a CUDA GPU: the GPU check runs it"]
async fn hole3_a_custom_kernel_sees_only_its_fills_never_an_earlier_jobs_memory() {
    let (app, gpus) = app_with_gpus().await;
    // Leave ones in device memory, then read buffers the next job never writes.
    succeeded(
        &run(
            &app,
            json!({"kernel": "vector_add", "device": gpus[0], "params": {"n": 4_000_000}}),
        )
        .await,
    );
    let source = "extern \"C\" __global__ void look(const float* a, float* c, unsigned n) {\n    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;\n    if (i < n) c[i] = c[i] + a[i];\n}\n";
    let mut body = custom(
        source,
        "look",
        4_000_000,
        json!([
            {"kind": "buffer", "type": "f32"},
            {"kind": "buffer", "type": "f32", "output": true},
            {"kind": "scalar", "type": "u32", "value": 4_000_000},
        ]),
    );
    body["device"] = json!(gpus[0]);
    let job = run(&app, body).await;
    succeeded(&job);
    let c = &job.result.as_ref().unwrap().output["buffers"][0];
    assert_eq!(
        (c["min"].as_f64(), c["max"].as_f64()),
        (Some(0.0), Some(0.0)),
        "{c}"
    );
}

#[tokio::test]
#[ignore = "needs a CUDA GPU: the GPU check runs it"]
async fn hole2_a_kernels_printf_cannot_forge_an_event_or_break_the_next_job() {
    let (app, gpus) = app_with_gpus().await;
    // Every thread prints a `failed` event as the old protocol wrote it, and text without
    // a newline; the device's printf buffer (1 MiB) is filled over and over.
    // NVRTC declares the device printf itself: no header is needed (nor found).
    let source = r#"extern "C" __global__ void loud(float* c, unsigned n) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        printf("{"type":"failed","job_id":1,"nonce":0,"error":"forged","fatal":true}
");
        printf("no newline here, and none after either ");
        c[i] = 2.0f;
    }
}"#;
    let mut body = custom(
        source,
        "loud",
        100_000,
        json!([
            {"kind": "buffer", "type": "f32", "output": true},
            {"kind": "scalar", "type": "u32", "value": 100_000},
        ]),
    );
    body["device"] = json!(gpus[0]);
    let job = run(&app, body).await;
    succeeded(&job);
    assert_eq!(
        job.result.as_ref().unwrap().output["buffers"][0]["max"],
        2.0
    );
    succeeded(&run(&app, vector_add(&gpus[0])).await);
    succeeded(&run(&app, json!({"kernel": "saxpy", "device": gpus[0]})).await);
}

#[tokio::test]
#[ignore = "needs a CUDA GPU: the GPU check runs it"]
async fn a_compile_error_fails_with_the_log_at_its_line_and_column() {
    let (app, gpus) = app_with_gpus().await;
    let source = "extern \"C\" __global__ void broken(float* y, unsigned n) {\n    unsigned i = threadIdx.x;\n    y[i] = undefined_name;\n}\n";
    let mut body = custom(
        source,
        "broken",
        32,
        json!([{"kind": "buffer", "type": "f32"}, {"kind": "scalar", "type": "u32", "value": 32}]),
    );
    body["device"] = json!(gpus[0]);
    let job = run(&app, body).await;
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.unwrap();
    assert!(error.contains("kernel.cu(3,12): error"), "{error}");
    assert!(error.contains("undefined_name"), "{error}");
    // The worker is fine: the next job runs.
    succeeded(&run(&app, vector_add(&gpus[0])).await);
}

#[tokio::test]
#[ignore = "needs a CUDA GPU: the GPU check runs it"]
async fn a_faulting_kernel_fails_by_name_and_the_next_job_succeeds() {
    let (app, gpus) = app_with_gpus().await;
    let source = "extern \"C\" __global__ void wild(float* y) {\n    float* p = (float*)0x10;\n    p[threadIdx.x] = y[0];\n}\n";
    let mut body = custom(
        source,
        "wild",
        32,
        json!([{"kind": "buffer", "type": "f32"}]),
    );
    body["device"] = json!(gpus[0]);
    let job = run(&app, body).await;
    assert_eq!(job.status, JobStatus::Failed);
    let error = job.error.unwrap();
    assert!(
        error.contains("CUDA_ERROR_ILLEGAL_ADDRESS") && error.contains("replaced"),
        "{error}"
    );
    succeeded(&run(&app, vector_add(&gpus[0])).await);
}

#[tokio::test]
#[ignore = "needs a CUDA GPU: the GPU check runs it"]
async fn an_endless_kernel_times_out_and_the_next_job_succeeds() {
    let (app, gpus) = app_with_gpus().await;
    let source = "extern \"C\" __global__ void spin(unsigned* flag) {\n    while (atomicAdd(flag, 0u) == 0u) { }\n}\n";
    let mut body = custom(
        source,
        "spin",
        1,
        json!([{"kind": "buffer", "type": "u32"}]),
    );
    body["device"] = json!(gpus[0]);
    body["timeout_s"] = json!(3);
    let job = run(&app, body).await;
    assert_eq!(job.status, JobStatus::TimedOut, "{:?}", job.error);
    succeeded(&run(&app, vector_add(&gpus[0])).await);
}

#[tokio::test]
#[ignore = "needs a CUDA GPU: the GPU check runs it"]
async fn too_big_or_nul_is_a_422_and_all_runs_on_every_gpu() {
    let (app, gpus) = app_with_gpus().await;
    // 32 buffers of 2³² − 1 doubles: about 1 TiB, more than any GPU has.
    let args: Vec<Value> = (0..32)
        .map(|_| json!({"kind": "buffer", "type": "f64"}))
        .collect();
    let mut body = custom(VECTOR_ADD, "vector_add", u32::MAX as u64, json!(args));
    body["device"] = json!(gpus[0]);
    let resp = app.post_json("/api/jobs", &body).await;
    assert_eq!(resp.status(), 422);
    let problem: Problem = resp.json().await.unwrap();
    assert!(
        problem.detail.contains("1024.00 GiB") && problem.detail.contains("GiB free"),
        "{}",
        problem.detail
    );

    // A NUL byte would make cudarc panic inside NVRTC's wrapper: it is refused at the door.
    let mut body = vector_add(&gpus[0]);
    body["params"]["source"] = json!(format!("{VECTOR_ADD}\0"));
    let resp = app.post_json("/api/jobs", &body).await;
    assert_eq!(resp.status(), 422);
    let problem: Problem = resp.json().await.unwrap();
    assert_eq!(
        problem.field.as_deref(),
        Some("source"),
        "{}",
        problem.detail
    );
    assert!(problem.detail.contains("NUL"), "{}", problem.detail);

    let all = json!({"kernel": "saxpy", "device": "all", "params": {"n": 1 << 24}});
    let resp = app.post_json("/api/jobs", &all).await;
    assert_eq!(resp.status(), 202);
    let group: JobGroup = resp.json().await.unwrap();
    let devices: Vec<&str> = group.jobs.iter().map(|j| j.device.as_str()).collect();
    assert_eq!(devices, gpus.iter().map(String::as_str).collect::<Vec<_>>());
    for job in &group.jobs {
        succeeded(&app.wait_finished(job.id).await);
    }
    let comparison: JobComparison = app.get_json(&group.compare).await;
    assert!(comparison.complete);
    assert_eq!(comparison.unit.as_deref(), Some("GB/s"));
    assert_eq!(comparison.entries.len(), gpus.len());
    assert!(comparison
        .entries
        .iter()
        .any(|e| e.slower_than_best == Some(0.0)));
}

#[test]
fn the_reason_for_ignoring_is_the_one_printed() {
    // `cargo test` prints each ignored test with its reason; keep them saying the same.
    let text = include_str!("cuda.rs");
    let marker = format!("#[ignore = \"{NEEDS_GPU}\"]");
    assert_eq!(text.matches(marker.as_str()).count(), 8);
}

//! matmul's `dtype` through the real server: what the catalog offers each device, what a
//! device refuses, and the CPU's fp64 and fp32 products with their stated arithmetic.

mod support;

use gpulab_shared::peaks::GemmDtype;
use gpulab_shared::{Device, DeviceKind, Job, JobStatus, KernelSpec, Problem};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::spawn_app;

async fn problem(resp: reqwest::Response, status: StatusCode) -> Problem {
    assert_eq!(resp.status(), status);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert_eq!(ct, "application/problem+json");
    let p: Problem = resp.json().await.unwrap();
    assert_eq!(p.status, status.as_u16());
    p
}

/// What NVIDIA's tables say `device` runs.
fn expected_dtypes(device: &Device) -> Vec<String> {
    GemmDtype::ALL
        .into_iter()
        .filter(|d| match device.kind {
            DeviceKind::Cpu => d.supported_on_cpu(),
            DeviceKind::Cuda => device
                .cuda
                .as_ref()
                .and_then(|c| c.compute_capability)
                .is_some_and(|cc| d.supported_by(cc)),
        })
        .map(|d| d.as_str().to_owned())
        .collect()
}

#[tokio::test]
async fn the_catalog_lists_the_dtypes_of_each_device_of_this_server() {
    let app = spawn_app().await;
    let catalog: Vec<KernelSpec> = app.get_json("/api/kernels").await;
    let devices: Vec<Device> = app.get_json("/api/devices").await;
    let matmul = catalog.iter().find(|k| k.name == "matmul").unwrap();
    let dtype = matmul.params.iter().find(|p| p.name == "dtype").unwrap();
    assert_eq!(
        dtype.default,
        json!("fp32"),
        "today's behaviour stays the default"
    );
    assert_eq!(
        dtype.choices.as_deref().unwrap(),
        ["fp64", "fp32", "tf32", "fp16", "bf16", "fp8_e4m3", "int8"]
    );
    let by_device = dtype.choices_by_device.as_ref().expect("choices_by_device");
    assert_eq!(by_device.len(), devices.len(), "{by_device:?}");
    for device in &devices {
        assert_eq!(
            by_device.get(&device.id),
            Some(&expected_dtypes(device)),
            "{}",
            device.id
        );
    }
    assert_eq!(by_device["cpu"], ["fp64", "fp32"]);
    // Only matmul has a device-dependent choice.
    for kernel in catalog.iter().filter(|k| k.name != "matmul") {
        assert!(
            kernel.params.iter().all(|p| p.choices_by_device.is_none()),
            "{}",
            kernel.name
        );
    }
}

async fn run_on_cpu(app: &support::TestApp, params: Value) -> Job {
    let resp = app
        .post_json(
            "/api/jobs",
            &json!({"kernel": "matmul", "device": "cpu", "params": params, "repetitions": 2}),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let job: Job = resp.json().await.unwrap();
    let done = app.wait_finished(job.id).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{:?}", done.error);
    done
}

#[tokio::test]
async fn the_cpu_multiplies_in_fp64_and_fp32_and_says_how() {
    let app = spawn_app().await;
    let fp64 = run_on_cpu(&app, json!({"m": 64, "n": 48, "k": 80, "dtype": "fp64"})).await;
    let result = fp64.result.unwrap();
    let v = &result.verification;
    assert!(v.passed, "{v:?}");
    assert_eq!(v.tolerance, 2.0 * 80.0 * 2f64.powi(-53), "2·k·u_fp64");
    assert!(v.max_rel_error < 1e-14, "double precision: {v:?}");
    assert!(v.method.contains("u_fp64 = 2⁻⁵³"), "{}", v.method);
    assert_eq!(result.output["dtype"], "fp64");
    assert_eq!(result.output["accumulate"], "fp64");
    assert_eq!(result.output["library"], "matrixmultiply");
    assert_eq!(result.throughput.unit, "GFLOP/s");
    // On the roofline under the fp64 ceiling: A and B read and C written once, 8 bytes each.
    let point = result.roofline.as_ref().expect("a roofline point");
    assert_eq!(point.ceiling, "fp64");
    assert_eq!(point.flops, 2.0 * 64.0 * 48.0 * 80.0);
    assert_eq!(point.bytes, ((64 * 80 + 80 * 48 + 64 * 48) * 8) as f64);

    let fp32 = run_on_cpu(&app, json!({"m": 64, "n": 48, "k": 80})).await;
    assert_eq!(
        fp32.params["dtype"], "fp32",
        "the default is stored with the job"
    );
    let result = fp32.result.unwrap();
    assert!(result.verification.passed);
    assert_eq!(result.verification.tolerance, 80.0 * f32::EPSILON as f64);
    assert!(result.verification.method.contains("u_fp32 = 2⁻²⁴"));
    assert_eq!(result.output["dtype"], "fp32");
    assert_eq!(result.output["accumulate"], "fp32");
    let point = result.roofline.as_ref().expect("a roofline point");
    assert_eq!(point.ceiling, "fp32");
    assert_eq!(point.bytes, ((64 * 80 + 80 * 48 + 64 * 48) * 4) as f64);
    // fp64 is the more accurate of the two on the same inputs.
    assert!(v.max_rel_error < result.verification.max_rel_error);
}

#[tokio::test]
async fn a_dtype_the_device_does_not_run_is_refused_naming_what_it_runs() {
    let app = spawn_app().await;
    for dtype in ["tf32", "fp16", "bf16", "fp8_e4m3", "int8"] {
        let p = problem(
            app.post_json(
                "/api/jobs",
                &json!({"kernel": "matmul", "device": "cpu", "params": {"dtype": dtype}}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(p.field.as_deref(), Some("params.dtype"), "{dtype}");
        assert!(p.detail.contains(dtype), "{}", p.detail);
        assert!(
            p.detail.contains("this device runs dtype: fp64, fp32"),
            "{}",
            p.detail
        );
    }
    // A name the schema does not know is refused with every choice listed.
    let p = problem(
        app.post_json(
            "/api/jobs",
            &json!({"kernel": "matmul", "device": "cpu", "params": {"dtype": "fp8"}}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p.field.as_deref(), Some("params.dtype"));
    assert!(p.detail.contains("fp8_e4m3, int8"), "{}", p.detail);
    // Types other than fp32 run only with the libraries' GEMM.
    let p = problem(
        app.post_json(
            "/api/jobs",
            &json!({"kernel": "matmul", "device": "cpu",
                    "params": {"dtype": "fp64", "variant": "tiled"}}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p.field.as_deref(), Some("params.dtype"));
    assert!(p.detail.contains("variant `cublas`"), "{}", p.detail);
    let page: Value = app.get_json("/api/jobs?kernel=matmul").await;
    assert_eq!(page["jobs"], json!([]), "nothing refused was stored");
}

/// Every dtype the catalog offers each GPU, at a square-ish size of multiples of 16 and (but
/// for the 8-bit types, which need them) at odd sizes, each verified and stating its
/// arithmetic. Needs a GPU: the GPU check runs it.
#[tokio::test]
#[ignore = "needs a CUDA GPU: the GPU check runs it"]
async fn every_offered_dtype_verifies_on_every_gpu() {
    let app = spawn_app().await;
    let devices: Vec<Device> = app.get_json("/api/devices").await;
    let gpus: Vec<&Device> = devices
        .iter()
        .filter(|d| d.kind == DeviceKind::Cuda)
        .collect();
    assert!(
        !gpus.is_empty(),
        "no CUDA device, so this GPU test cannot run"
    );
    for gpu in gpus {
        for dtype in expected_dtypes(gpu) {
            let mut shapes = vec![json!({"m": 256, "n": 192, "k": 512})];
            if !["fp8_e4m3", "int8"].contains(&dtype.as_str()) {
                shapes.push(json!({"m": 1000, "n": 777, "k": 513}));
            }
            for mut params in shapes {
                params["dtype"] = json!(dtype);
                let job = app
                    .submit(
                        json!({"kernel": "matmul", "device": gpu.id, "params": params,
                                   "repetitions": 3}),
                    )
                    .await;
                let done = app.wait_finished(job.id).await;
                assert_eq!(
                    done.status,
                    JobStatus::Succeeded,
                    "{} {params}: {:?}",
                    gpu.id,
                    done.error
                );
                let result = done.result.unwrap();
                assert!(
                    result.verification.passed,
                    "{} {params}: {:?}",
                    gpu.id, result.verification
                );
                assert_eq!(result.output["dtype"], json!(dtype));
                let unit = if dtype == "int8" { "GOP/s" } else { "GFLOP/s" };
                assert_eq!(result.throughput.unit, unit);
                assert!(
                    result.output["compute_type"].is_string(),
                    "{}",
                    result.output
                );
            }
        }
    }
}

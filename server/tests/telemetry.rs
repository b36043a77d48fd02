//! Integration tests of live telemetry: the real `gpulab` binary samples its devices once a
//! second, answers their history and streams each new sample as a server-sent event.

mod support;

use std::time::{Duration, Instant};

use gpulab_shared::{Device, DeviceKind, DeviceTelemetry, Problem, TelemetrySample};
use reqwest::StatusCode;
use support::{spawn_app, TestApp};

/// Polls the telemetry of `device` until its history has `count` samples (10 s at most).
async fn telemetry_with_history(app: &TestApp, device: &str, count: usize) -> DeviceTelemetry {
    let path = format!("/api/devices/{device}/telemetry");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let telemetry: DeviceTelemetry = app.get_json(&path).await;
        if telemetry.history.len() >= count || Instant::now() > deadline {
            return telemetry;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn cpu_telemetry_has_the_latest_sample_and_a_second_by_second_history() {
    let app = spawn_app().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let telemetry = telemetry_with_history(&app, "cpu", 2).await;
    assert_eq!(telemetry.device, "cpu");
    assert_eq!(telemetry.interval_s, 1.0);
    assert_eq!(telemetry.window_s, 600);
    assert!(
        telemetry.history.len() >= 2,
        "{} samples",
        telemetry.history.len()
    );
    for pair in telemetry.history.windows(2) {
        assert!(
            pair[0].at < pair[1].at,
            "{} then {}",
            pair[0].at,
            pair[1].at
        );
    }

    let latest = telemetry.latest.expect("a latest sample");
    assert_eq!(Some(&latest), telemetry.history.last());
    assert_eq!(latest.device, "cpu");
    assert!(latest.gpu.is_none());
    let cpu = latest.cpu.expect("cpu figures");
    assert!(cpu.memory_used_bytes.unwrap() > 0);
    assert!(cpu.memory_total_bytes.unwrap() >= cpu.memory_used_bytes.unwrap());
    let ratio = cpu
        .utilization_ratio
        .expect("utilisation once two samples exist");
    assert!((0.0..=1.0).contains(&ratio), "{ratio}");
    let load = cpu.load_average.expect("a load average");
    assert!(load.iter().all(|l| *l >= 0.0), "{load:?}");
    if let Some(celsius) = cpu.temperature_celsius {
        assert!(celsius > 0.0 && celsius < 150.0, "{celsius}");
    } else {
        assert!(
            telemetry.notes.iter().any(|n| n.contains("temperature")),
            "a null temperature is explained: {:?}",
            telemetry.notes
        );
    }
}

#[tokio::test]
async fn every_gpu_has_telemetry_or_says_why_not() {
    let app = spawn_app().await;
    let devices: Vec<Device> = app.get_json("/api/devices").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for device in devices.iter().filter(|d| d.kind == DeviceKind::Cuda) {
        let telemetry: DeviceTelemetry = app
            .get_json(&format!("/api/devices/{}/telemetry", device.id))
            .await;
        match telemetry.latest {
            Some(sample) => {
                let gpu = sample.gpu.expect("gpu figures");
                if let Some(ratio) = gpu.utilization_ratio {
                    assert!((0.0..=1.0).contains(&ratio), "{ratio}");
                }
                assert!(telemetry.notes.iter().any(|n| n.contains("PID")));
            }
            None => assert!(!telemetry.notes.is_empty(), "{}: no note", device.id),
        }
    }
}

#[tokio::test]
async fn telemetry_of_an_unknown_device_is_a_404_problem() {
    let app = spawn_app().await;
    let resp = app.get("/api/devices/cuda:99/telemetry").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/problem+json");
    let problem: Problem = resp.json().await.unwrap();
    assert_eq!(problem.status, 404);
    assert!(problem.detail.contains("cuda:99"), "{}", problem.detail);
}

#[tokio::test]
async fn the_event_stream_delivers_cpu_telemetry_within_three_seconds() {
    let app = spawn_app().await;
    let mut resp = app.get("/api/events").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut text = String::new();
    loop {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no cpu telemetry event within 3 s; got {text:?}"))
            .expect("the stream stays open")
            .expect("the stream does not end");
        text.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(sample) = cpu_telemetry_event(&text) {
            assert!(sample.cpu.is_some());
            return;
        }
    }
}

/// The first complete `telemetry` event of `cpu` in raw `text/event-stream` text.
fn cpu_telemetry_event(text: &str) -> Option<TelemetrySample> {
    let complete = &text[..text.rfind("\n\n")?];
    complete.split("\n\n").find_map(|event| {
        let mut lines = event.lines();
        if !lines.clone().any(|line| line == "event: telemetry") {
            return None;
        }
        let data = lines.find_map(|line| line.strip_prefix("data: "))?;
        let sample: TelemetrySample = serde_json::from_str(data).ok()?;
        (sample.device == "cpu").then_some(sample)
    })
}

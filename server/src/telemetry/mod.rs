//! Live telemetry: one sampler thread for the whole server reads every device once a second
//! (NVML for GPUs, the OS for the CPU) and keeps the last ten minutes in memory.
//!
//! NVML calls and `/proc` reads block, so the sampler is a dedicated OS thread rather than
//! a task on the async executor. It publishes each sample to the per-device [`History`] and
//! to a broadcast channel (the `/api/events` stream); readers only clone what it stored.
//! The thread ends at its next tick once every [`TelemetryHub`] clone is dropped.

pub(crate) mod cpu;
mod history;
pub(crate) mod nvml;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use chrono::Utc;
use gpulab_shared::{DeviceKind, DeviceTelemetry, TelemetrySample};
use tokio::sync::broadcast;

use crate::devices::DeviceInventory;
use cpu::CpuSampler;
use history::History;
use nvml::GpuTarget;

/// The shortest interval the sampler accepts: a zero interval would spin.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// The sampler's results, shared by the API, the event stream and the metrics. Cheap to clone.
#[derive(Clone)]
pub struct TelemetryHub {
    inner: Arc<Inner>,
}

struct Inner {
    interval: Duration,
    window: Duration,
    samples: broadcast::Sender<TelemetrySample>,
    /// One entry per inventory device, in inventory order.
    devices: Mutex<Vec<DeviceRecord>>,
}

struct DeviceRecord {
    id: String,
    history: History,
    notes: Vec<String>,
}

impl TelemetryHub {
    /// Starts the one sampler thread, which samples every device of `inventory` each
    /// `interval` and keeps the samples of the last `window`.
    ///
    /// Returns at once: NVML is opened by the sampler thread, which then publishes each
    /// GPU's notes (why its figures are missing, what its process PIDs mean) before its
    /// first sample. Needs no async runtime.
    pub fn start(inventory: Arc<DeviceInventory>, interval: Duration, window: Duration) -> Self {
        let interval = interval.max(MIN_INTERVAL);
        let devices = inventory
            .devices
            .iter()
            .map(|device| DeviceRecord {
                id: device.id.clone(),
                history: History::new(interval, window),
                notes: Vec::new(),
            })
            .collect::<Vec<_>>();
        // Room for several ticks of every device, so a briefly slow client skips nothing.
        let (samples, _) = broadcast::channel((devices.len() * 8).max(64));
        let inner = Arc::new(Inner {
            interval,
            window,
            samples,
            devices: Mutex::new(devices),
        });
        let hub = Arc::downgrade(&inner);
        let spawned = std::thread::Builder::new()
            .name("gpulab-telemetry".to_owned())
            .spawn(move || run_sampler(hub, &inventory, interval));
        if let Err(error) = spawned {
            tracing::error!("cannot start the telemetry sampler thread: {error}");
        }
        TelemetryHub { inner }
    }

    /// The latest sample and the history of `device`, or `None` for an unknown device.
    ///
    /// A known device that has no sample (a GPU NVML cannot read) has `latest: null`, an
    /// empty history and notes that say why.
    pub fn telemetry(&self, device: &str) -> Option<DeviceTelemetry> {
        let devices = self.inner.devices();
        let record = devices.iter().find(|record| record.id == device)?;
        let history = record.history.to_vec();
        Some(DeviceTelemetry {
            device: record.id.clone(),
            interval_s: self.inner.interval.as_secs_f64(),
            window_s: self.inner.window.as_secs(),
            latest: history.last().cloned(),
            history,
            notes: record.notes.clone(),
        })
    }

    /// A device's free memory in its latest sample: NVML's for a GPU, total less used for
    /// the CPU.
    pub fn free_memory_bytes(&self, device: &str) -> Option<u64> {
        let records = self.inner.devices();
        let record = records.iter().find(|r| r.id == device)?;
        let latest = record.history.latest()?;
        match (&latest.gpu, &latest.cpu) {
            (Some(gpu), _) => gpu.memory_free_bytes,
            (None, Some(cpu)) => cpu
                .memory_total_bytes
                .zip(cpu.memory_used_bytes)
                .map(|(total, used)| total.saturating_sub(used)),
            (None, None) => None,
        }
    }

    /// The latest sample of every device that has one.
    pub fn latest_all(&self) -> Vec<TelemetrySample> {
        self.inner
            .devices()
            .iter()
            .filter_map(|record| record.history.latest().cloned())
            .collect()
    }

    /// New samples as they are taken.
    pub fn subscribe(&self) -> broadcast::Receiver<TelemetrySample> {
        self.inner.samples.subscribe()
    }
}

impl Inner {
    fn devices(&self) -> MutexGuard<'_, Vec<DeviceRecord>> {
        // A panic elsewhere cannot leave a history half-written: push is one call.
        self.devices.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_notes(&self, notes: Vec<(String, Vec<String>)>) {
        let mut devices = self.devices();
        for (device, device_notes) in notes {
            if let Some(record) = devices.iter_mut().find(|record| record.id == device) {
                record.notes = device_notes;
            }
        }
    }

    /// Stores the samples of one tick, then broadcasts them, so a listener that reads the
    /// history on hearing of a sample finds it there.
    fn record(&self, taken: Instant, batch: &mut Vec<TelemetrySample>) {
        // Nobody listening (no browser open) is the common case: then nothing is cloned.
        let to_send = if self.samples.receiver_count() > 0 {
            batch.clone()
        } else {
            Vec::new()
        };
        let mut devices = self.devices();
        for sample in batch.drain(..) {
            if let Some(record) = devices.iter_mut().find(|r| r.id == sample.device) {
                record.history.push(taken, sample);
            }
        }
        drop(devices);
        for sample in to_send {
            // An error only means that the last listener has just gone.
            let _ = self.samples.send(sample);
        }
    }
}

/// The sampler thread: finds the devices' sources once, then samples each tick until the
/// hub is dropped.
fn run_sampler(hub: Weak<Inner>, inventory: &DeviceInventory, interval: Duration) {
    let mut cpu = inventory
        .devices
        .iter()
        .find(|device| device.kind == DeviceKind::Cpu)
        .map(|device| (device.id.clone(), CpuSampler::new()));
    let targets: Vec<GpuTarget> = inventory
        .devices
        .iter()
        .filter(|device| device.kind == DeviceKind::Cuda)
        .map(|device| GpuTarget {
            device: device.id.clone(),
            uuid: device.cuda.as_ref().and_then(|info| info.uuid.clone()),
            pci_bus_id: device
                .cuda
                .as_ref()
                .and_then(|info| info.pci_bus_id.clone()),
        })
        .collect();
    // A host without GPUs never loads NVML.
    let nvml = if targets.is_empty() {
        Err("no GPU to read".to_owned())
    } else {
        let opened = nvml::open();
        if let Err(why) = &opened {
            tracing::warn!("no GPU telemetry: {why}");
        }
        opened
    };
    let gpus = nvml::attach(&nvml, &targets);
    {
        let Some(hub) = hub.upgrade() else { return };
        let mut notes = gpus.notes.clone();
        if let Some((id, sampler)) = &cpu {
            notes.push((id.clone(), sampler.notes()));
        }
        hub.set_notes(notes);
    }

    let mut batch = Vec::with_capacity(1 + gpus.gpus.len());
    let mut next_tick = Instant::now();
    loop {
        let Some(hub) = hub.upgrade() else { return };
        let taken = Instant::now();
        if let Some((id, sampler)) = &mut cpu {
            let at = Utc::now();
            batch.push(TelemetrySample {
                device: id.clone(),
                at,
                cpu: Some(sampler.sample()),
                gpu: None,
            });
        }
        for (id, device) in &gpus.gpus {
            let at = Utc::now();
            batch.push(TelemetrySample {
                device: id.clone(),
                at,
                cpu: None,
                gpu: Some(nvml::sample(device)),
            });
        }
        hub.record(taken, &mut batch);
        drop(hub);

        // Ticks stay on the interval's grid; a tick that overran skips the ones it missed
        // rather than sampling twice in a row.
        next_tick += interval;
        let now = Instant::now();
        while next_tick <= now {
            next_tick += interval;
        }
        std::thread::sleep(next_tick - now);
    }
}

#[cfg(test)]
mod tests {
    use gpulab_shared::{CpuDeviceInfo, CudaDeviceInfo, CudaStatus, Device};

    use super::*;

    fn inventory() -> Arc<DeviceInventory> {
        let gpu = Device {
            id: "cuda:0".to_owned(),
            kind: DeviceKind::Cuda,
            last_diagnostic: None,
            peaks: Vec::new(),
            name: "A GPU no NVML lists".to_owned(),
            total_memory_bytes: None,
            free_memory_bytes: None,
            cuda: Some(CudaDeviceInfo {
                ordinal: 0,
                uuid: Some("GPU-00000000-0000-0000-0000-000000000000".to_owned()),
                pci_bus_id: Some("0000:ff:1f.7".to_owned()),
                ..CudaDeviceInfo::default()
            }),
            cpu: None,
        };
        let cpu = Device {
            id: "cpu".to_owned(),
            kind: DeviceKind::Cpu,
            last_diagnostic: None,
            peaks: Vec::new(),
            name: "CPU".to_owned(),
            total_memory_bytes: None,
            free_memory_bytes: None,
            cuda: None,
            cpu: Some(CpuDeviceInfo::default()),
        };
        let status = CudaStatus {
            available: true,
            driver_version: None,
            reason: None,
            libraries: Default::default(),
        };
        Arc::new(DeviceInventory::from_parts(vec![gpu, cpu], status))
    }

    /// Polls `hub` until the cpu device has `count` samples, for at most five seconds.
    fn wait_for_cpu_samples(hub: &TelemetryHub, count: usize) -> DeviceTelemetry {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let telemetry = hub.telemetry("cpu").expect("cpu is known");
            if telemetry.history.len() >= count || Instant::now() > deadline {
                return telemetry;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_cpu_is_sampled_each_interval_with_increasing_timestamps() {
        let hub = TelemetryHub::start(
            inventory(),
            Duration::from_millis(20),
            Duration::from_secs(60),
        );
        let telemetry = wait_for_cpu_samples(&hub, 3);
        assert!(telemetry.history.len() >= 3, "{}", telemetry.history.len());
        assert_eq!(telemetry.interval_s, 0.02);
        assert_eq!(telemetry.window_s, 60);
        assert_eq!(telemetry.latest.as_ref(), telemetry.history.last());
        for pair in telemetry.history.windows(2) {
            assert!(
                pair[0].at < pair[1].at,
                "{} then {}",
                pair[0].at,
                pair[1].at
            );
        }
        let first = telemetry.history[0].cpu.as_ref().unwrap();
        assert_eq!(
            first.utilization_ratio, None,
            "no earlier sample to compare"
        );
        let later = telemetry.history[2].cpu.as_ref().unwrap();
        if let Some(ratio) = later.utilization_ratio {
            assert!((0.0..=1.0).contains(&ratio), "{ratio}");
        }
        assert!(later.memory_used_bytes.unwrap() > 0);
        assert!(telemetry.history.iter().all(|s| s.gpu.is_none()));
        assert!(!telemetry.notes.is_empty());
    }

    #[test]
    fn a_gpu_without_nvml_data_is_known_has_no_samples_and_says_why() {
        let hub = TelemetryHub::start(
            inventory(),
            Duration::from_millis(20),
            Duration::from_secs(60),
        );
        wait_for_cpu_samples(&hub, 2);
        let gpu = hub.telemetry("cuda:0").expect("cuda:0 is in the inventory");
        assert_eq!(gpu.latest, None);
        assert!(gpu.history.is_empty());
        // No NVML here, or (on a GPU host) no GPU with the made-up UUID and address.
        let note = gpu.notes.join(" ");
        assert!(
            note.contains("libnvidia-ml.so.1 not found") || note.contains("NVML lists no GPU"),
            "{note}"
        );
        assert!(hub.telemetry("cuda:1").is_none());
        assert!(hub.telemetry("").is_none());
        let latest: Vec<String> = hub.latest_all().into_iter().map(|s| s.device).collect();
        assert_eq!(latest, ["cpu"]);
    }

    #[test]
    fn history_is_bounded_by_the_window() {
        let hub = TelemetryHub::start(
            inventory(),
            Duration::from_millis(10),
            Duration::from_millis(40),
        );
        wait_for_cpu_samples(&hub, 4);
        std::thread::sleep(Duration::from_millis(100));
        // 40 ms of 10 ms ticks; fewer when a busy machine made the sampler skip ticks.
        let kept = hub.telemetry("cpu").unwrap().history.len();
        assert!((1..=4).contains(&kept), "{kept}");
    }

    #[tokio::test]
    async fn subscribers_hear_each_new_sample() {
        let hub = TelemetryHub::start(
            inventory(),
            Duration::from_millis(20),
            Duration::from_secs(60),
        );
        let mut samples = hub.subscribe();
        let sample = tokio::time::timeout(Duration::from_secs(5), samples.recv())
            .await
            .expect("a sample within five seconds")
            .expect("the channel is open");
        assert_eq!(sample.device, "cpu");
        assert!(sample.cpu.is_some());
        // Stored before it was sent.
        let history = hub.telemetry("cpu").unwrap().history;
        assert!(history.contains(&sample));
    }

    #[test]
    fn the_sampler_does_not_keep_a_dropped_hub_alive() {
        let hub = TelemetryHub::start(
            inventory(),
            Duration::from_millis(10),
            Duration::from_secs(60),
        );
        wait_for_cpu_samples(&hub, 1);
        let inner = Arc::downgrade(&hub.inner);
        drop(hub);
        // The thread holds the hub only during a tick, and ends at the next one.
        let deadline = Instant::now() + Duration::from_secs(5);
        while inner.upgrade().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(inner.upgrade().is_none());
    }
}

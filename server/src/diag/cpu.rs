//! The CPU device's checks. The CPU has no datasheet here: its speeds are judged against its
//! own history ([`Baseline`](super::Baseline)), and a first run sets that history.

use std::time::{Duration, Instant};

use gpulab_shared::diag::{Fault, StressSample, Verdict};
use gpulab_shared::Device;
use rayon::prelude::*;

use super::evidence::{self, against_baseline};
use super::sensors::{self, CpuSensors, Sensors};
use super::{memtest, spec, CheckRun, CheckSpec, Plan};
use crate::cuda::{library_present, Library};
use crate::devices::host_memory::{self, gib};
use crate::kernels::rng;

pub(super) const CHECKS: &[CheckSpec] = &[
    spec("host", "Host: CPUs and memory", 1),
    spec("cuda_libraries", "CUDA libraries", 1),
    spec("throttle", "Thermal throttling", 1),
    spec("memory_test", "Memory test", 2),
    spec("memory_bandwidth", "Memory bandwidth", 2),
    spec("gemm_repeatability", "SGEMM run twice, bit for bit", 2),
    spec("stress", "Sustained SGEMM stress", 3),
];

/// The memory test's largest buffer.
const MEMORY_TEST_MAX: u64 = 1 << 30;
/// The memory test's share of the available memory.
const MEMORY_TEST_SHARE: f64 = 0.25;
/// Each of the bandwidth test's three arrays.
const BANDWIDTH_ARRAY_MAX: u64 = 64 << 20;
/// Timed repetitions of each bandwidth kernel; the best counts, as STREAM reports it.
const BANDWIDTH_REPETITIONS: usize = 5;
/// The side of the square SGEMM.
pub(super) const GEMM_N: usize = 256;
/// A stress run whose throughput at the end is below this share of the start fails.
const STRESS_KEEP: f64 = 0.90;

pub(super) struct Context<'a> {
    device: &'a Device,
    plan: &'a Plan,
    sensors: Sensors<'static>,
    has_counters: bool,
}

impl<'a> Context<'a> {
    pub(super) fn new(device: &'a Device, plan: &'a Plan) -> Self {
        let mut cpu = CpuSensors::new();
        let has_counters = cpu.has_throttle_counters();
        let sensors = Sensors::new(
            "/sys/devices/system/cpu/cpu*/thermal_throttle counters and the CPU temperature \
             sensors of /sys/class",
            plan.injects(Fault::ThermalThrottle),
            move || cpu.read(),
        );
        Context {
            device,
            plan,
            sensors,
            has_counters,
        }
    }

    pub(super) fn run(&mut self, run: &mut CheckRun<'_>) {
        match run.id() {
            "host" => self.host(run),
            "cuda_libraries" => cuda_libraries(run),
            "throttle" => self.throttle(run),
            "memory_test" => self.memory_test(run),
            "memory_bandwidth" => self.bandwidth(run),
            "gemm_repeatability" => self.gemm_repeatability(run),
            "stress" => self.stress(run),
            other => run.skip(format!("no CPU check is called `{other}`")),
        }
    }

    fn host(&self, run: &mut CheckRun<'_>) {
        let usable = std::thread::available_parallelism().map_or(0, |n| n.get());
        run.evidence(evidence::at_least(
            "usable CPUs",
            usable as f64,
            "threads",
            1.0,
            "std::thread::available_parallelism (CPU affinity and cgroup quota)",
            Verdict::Fail,
        ));
        let info = self.device.cpu.clone().unwrap_or_default();
        if let Some(threads) = info.logical_threads {
            run.evidence(evidence::unjudged(
                "logical threads",
                threads.into(),
                "threads",
                "/proc/cpuinfo",
            ));
        }
        let available = host_memory::available().or(info.available_memory_bytes);
        let floor = 2 * host_memory::MARGIN_BYTES;
        match available {
            Some(bytes) => run.evidence(evidence::at_least(
                "available memory",
                bytes as f64,
                "B",
                floor as f64,
                format!(
                    "twice the {} gpulab keeps back for itself (MemAvailable of /proc/meminfo)",
                    gib(host_memory::MARGIN_BYTES)
                ),
                Verdict::Warn,
            )),
            None => run.evidence(evidence::text(
                "available memory",
                "not reported",
                format!("at least {}", gib(floor)),
                "/proc/meminfo has no MemAvailable",
                Verdict::Warn,
            )),
        }
        run.summary(format!(
            "{}: {usable} usable CPU(s), {} available",
            info.model.as_deref().unwrap_or(&self.device.name),
            available.map_or("unknown memory".into(), gib)
        ));
    }

    fn throttle(&mut self, run: &mut CheckRun<'_>) {
        // Two readings: a counter that rises between them is throttling now.
        self.sensors.read();
        std::thread::sleep(Duration::from_millis(200));
        let reading = self.sensors.read();
        match reading.throttle_reasons {
            Some(reasons) => {
                let trouble = sensors::troubling(&reasons);
                run.evidence(evidence::text(
                    "active throttle reasons",
                    if reasons.is_empty() {
                        "none".to_owned()
                    } else {
                        reasons.join(", ")
                    },
                    "none that means trouble (thermal, power brake, hardware slowdown)",
                    self.sensors.described(),
                    if trouble.is_empty() {
                        Verdict::Pass
                    } else {
                        Verdict::Warn
                    },
                ));
                run.summary(if trouble.is_empty() {
                    "not throttled".to_owned()
                } else {
                    format!("throttled now: {}", trouble.join(", "))
                });
            }
            None => {
                run.evidence(evidence::text(
                    "active throttle reasons",
                    "not reported",
                    "none that means trouble",
                    self.sensors.described(),
                    Verdict::Skip,
                ));
                run.skip(if self.has_counters {
                    "the thermal_throttle counters could not be read".to_owned()
                } else {
                    "this CPU exposes no thermal_throttle counters \
                     (/sys/devices/system/cpu/cpu*/thermal_throttle)"
                        .to_owned()
                });
            }
        }
        if let Some(celsius) = reading.temperature_celsius {
            run.evidence(evidence::unjudged(
                "temperature",
                celsius,
                "°C",
                "the hottest CPU sensor of /sys/class (judged by the throttle counters)",
            ));
        }
    }

    /// The memory test's size and the rule that chose it.
    fn memory_test_bytes(&self) -> (u64, String) {
        let available = host_memory::available().unwrap_or(0);
        let mut bytes = MEMORY_TEST_MAX.min((available as f64 * MEMORY_TEST_SHARE) as u64);
        let mut rule = format!("min(1 GiB, 25 % of the {} available)", gib(available));
        if let Some(cap) = self.plan.memory_test_max_bytes {
            if cap < bytes {
                bytes = cap;
                rule = format!("{rule}, capped at {cap} bytes for this run");
            }
        }
        (bytes / 8 * 8, rule)
    }

    fn memory_test(&self, run: &mut CheckRun<'_>) {
        let (bytes, rule) = self.memory_test_bytes();
        if bytes < 8 {
            run.evidence(evidence::text(
                "bytes tested",
                "0",
                rule,
                "/proc/meminfo",
                Verdict::Skip,
            ));
            run.skip("no memory is available to test");
            return;
        }
        let mut words = vec![0u64; (bytes / 8) as usize];
        let results = memtest::run_host(
            &mut words,
            self.plan.injects(Fault::MemoryBitFlip),
            &mut |done| run.progress(done),
        );
        drop(words);
        let errors: u64 = results.iter().map(|r| r.errors).sum();
        for e in memtest::evidence(bytes, &rule, &results) {
            run.evidence(e);
        }
        run.summary(format!(
            "{} tested with {} patterns: {errors} failing word(s)",
            gib(bytes),
            results.len()
        ));
    }

    fn bandwidth(&self, run: &mut CheckRun<'_>) {
        let cap = self.plan.memory_test_max_bytes.unwrap_or(u64::MAX) / 3;
        let available = host_memory::available().unwrap_or(u64::MAX);
        let array = BANDWIDTH_ARRAY_MAX
            .min(cap)
            .min((available as f64 * MEMORY_TEST_SHARE / 3.0) as u64)
            .max(8 << 10);
        let len = (array / 8) as usize;
        let a = vec![1.0f64; len];
        let mut b = vec![2.0f64; len];
        let mut c = vec![0.0f64; len];
        let chunk = (1 << 17).min(len.max(1));
        let mut best = [f64::MAX; 2];
        for rep in 0..BANDWIDTH_REPETITIONS {
            let started = Instant::now();
            c.par_chunks_mut(chunk)
                .zip(a.par_chunks(chunk))
                .for_each(|(c, a)| c.copy_from_slice(a));
            best[0] = best[0].min(started.elapsed().as_secs_f64());
            let started = Instant::now();
            b.par_chunks_mut(chunk)
                .zip(a.par_chunks(chunk).zip(c.par_chunks(chunk)))
                .for_each(|(b, (a, c))| {
                    for ((b, a), c) in b.iter_mut().zip(a).zip(c) {
                        *b = a + 3.0 * c;
                    }
                });
            best[1] = best[1].min(started.elapsed().as_secs_f64());
            run.progress((rep + 1) as f64 / BANDWIDTH_REPETITIONS as f64);
        }
        // The triad's result proves the loops ran: b = 1 + 3 × 1 = 4 everywhere.
        let triad_value = b[len / 2];
        let copy = self.plan.throughput(16.0 * len as f64 / best[0] / 1e9);
        let triad = self.plan.throughput(24.0 * len as f64 / best[1] / 1e9);
        let baseline = &self.plan.baseline;
        run.evidence(against_baseline(
            baseline,
            run.id(),
            "copy bandwidth",
            copy,
            "GB/s",
        ));
        run.evidence(against_baseline(
            baseline,
            run.id(),
            "triad bandwidth",
            triad,
            "GB/s",
        ));
        run.evidence(evidence::text(
            "triad result",
            evidence::figure(triad_value),
            "4",
            "b = a + 3c with a = 1 and c the copy of a",
            if triad_value == 4.0 {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
        ));
        run.summary(format!(
            "copy {copy:.1} GB/s, triad {triad:.1} GB/s on {} threads ({} per array, best of {BANDWIDTH_REPETITIONS})",
            rayon::current_num_threads(),
            gib(array)
        ));
    }

    fn gemm_repeatability(&self, run: &mut CheckRun<'_>) {
        let gemm = Gemm::new(GEMM_N);
        let started = Instant::now();
        let first = gemm.run();
        let seconds = started.elapsed().as_secs_f64();
        run.progress(0.5);
        let mut second = gemm.run();
        let differing = judge_repeat(
            run,
            self.plan,
            &first,
            &mut second,
            "the same inputs give the same bits: each output's summation order is fixed",
        );
        let gflops = self.plan.throughput(gemm.flops() / seconds / 1e9);
        run.evidence(against_baseline(
            &self.plan.baseline,
            run.id(),
            "SGEMM throughput",
            gflops,
            "GFLOP/s",
        ));
        run.summary(format!(
            "{n}×{n} SGEMM on {} threads twice: {} differing value(s), {gflops:.2} GFLOP/s",
            rayon::current_num_threads(),
            differing,
            n = GEMM_N
        ));
    }

    fn stress(&mut self, run: &mut CheckRun<'_>) {
        let gemm = Gemm::new(GEMM_N);
        let duration = Duration::from_secs_f64(self.plan.duration_s.max(0.0));
        let started = Instant::now();
        let first = gemm.run();
        let mut window = (Instant::now(), 0u64);
        let mut results = 1u64;
        let mut differing_results = 0u64;
        let mut first_difference_at = None;
        let mut altered = !self.plan.injects(Fault::GemmMismatch);
        let mut throttled_seconds = 0u32;
        let mut max_temperature: Option<f64> = None;
        let mut reported_reasons = false;
        self.sensors.read();
        loop {
            let mut c = gemm.run();
            results += 1;
            window.1 += 1;
            if !altered {
                alter(&mut c);
                altered = true;
            }
            let d = differing(&first, &c);
            if d.count > 0 {
                differing_results += 1;
                if first_difference_at.is_none() {
                    first_difference_at = d.first.map(|i| (i, c));
                }
            }
            let elapsed = started.elapsed();
            let window_s = window.0.elapsed().as_secs_f64();
            let finished = elapsed >= duration;
            if window_s >= 1.0 || finished {
                let reading = self.sensors.read();
                let reasons = reading.throttle_reasons.clone().unwrap_or_default();
                reported_reasons |= reading.throttle_reasons.is_some();
                if !sensors::troubling(&reasons).is_empty() {
                    throttled_seconds += 1;
                }
                if let Some(t) = reading.temperature_celsius {
                    max_temperature = Some(max_temperature.map_or(t, |m: f64| m.max(t)));
                }
                let sample = StressSample {
                    t_s: elapsed.as_secs_f64(),
                    gflops: self
                        .plan
                        .throughput(gemm.flops() * window.1 as f64 / window_s / 1e9),
                    sm_clock_mhz: reading.sm_clock_mhz,
                    temperature_celsius: reading.temperature_celsius,
                    power_watts: reading.power_watts,
                    throttle_reasons: reasons,
                };
                let done = (elapsed.as_secs_f64() / duration.as_secs_f64().max(1e-9)).min(1.0);
                run.sample(sample, done);
                window = (Instant::now(), 0);
            }
            if finished {
                break;
            }
        }
        let series: Vec<f64> = run_series(run);
        judge_stress(
            run,
            &self.plan.baseline,
            None,
            &series,
            "SGEMM",
            results,
            differing_results,
        );
        if let Some((index, c)) = first_difference_at {
            run.evidence(first_difference(index, &first, &c));
        }
        run.evidence(if reported_reasons {
            evidence::at_most(
                "seconds throttled (thermal or hardware)",
                throttled_seconds.into(),
                "s",
                0.0,
                self.sensors.described(),
                Verdict::Fail,
            )
        } else {
            evidence::text(
                "seconds throttled (thermal or hardware)",
                "not reported",
                "0",
                self.sensors.described(),
                Verdict::Skip,
            )
        });
        if let Some(t) = max_temperature {
            run.evidence(evidence::unjudged(
                "highest temperature",
                t,
                "°C",
                "the hottest CPU sensor of /sys/class, once a second",
            ));
        }
    }
}

/// The throughput of each second of the stress run so far.
fn run_series(run: &CheckRun<'_>) -> Vec<f64> {
    run.check.series.iter().map(|s| s.gflops).collect()
}

/// The verdicts of a stress run common to the CPU and the GPU: every result equal to the
/// first, the throughput held to the end, and the sustained figure against `expectation`
/// (a GPU's) or else the device's history.
pub(super) fn judge_stress(
    run: &mut CheckRun<'_>,
    baseline: &super::Baseline,
    expectation: Option<&super::expectations::Expectation>,
    series: &[f64],
    what: &str,
    results: u64,
    differing_results: u64,
) {
    run.evidence(evidence::at_most(
        "results differing from the first",
        differing_results as f64,
        "results",
        0.0,
        format!(
            "the same inputs give the same bits: every {what} result is compared with the first"
        ),
        Verdict::Fail,
    ));
    let sustained = super::median(series).unwrap_or(0.0);
    let id = run.id().to_owned();
    let name = super::gpu::STRESS_GFLOPS;
    run.evidence(match expectation {
        Some(e) => evidence::at_least(
            name,
            sustained,
            "GFLOP/s",
            e.expected,
            e.source.clone(),
            Verdict::Fail,
        ),
        None => against_baseline(baseline, &id, name, sustained, "GFLOP/s"),
    });
    if let Some(kept) = held(series) {
        run.evidence(evidence::at_least(
            "throughput at the end / at the start",
            kept,
            "",
            STRESS_KEEP,
            "the mean of the last third of the seconds over the first third: a fall of more \
             than 10 % fails",
            Verdict::Fail,
        ));
    }
    run.summary(format!(
        "{results} {what} results, {differing_results} differing from the first; \
         {sustained:.2} GFLOP/s sustained (median of {} one-second samples)",
        series.len()
    ));
}

/// The mean of the last third of `series` over the mean of its first third; `None` with
/// fewer than two samples.
fn held(series: &[f64]) -> Option<f64> {
    if series.len() < 2 {
        return None;
    }
    let third = (series.len() / 3).max(1);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let start = mean(&series[..third]);
    let end = mean(&series[series.len() - third..]);
    (start > 0.0).then(|| end / start)
}

fn cuda_libraries(run: &mut CheckRun<'_>) {
    let libraries = crate::cuda::libraries();
    let driver = library_present(Library::Driver);
    let mut found = 0;
    let mut line = |name: &str, present: bool, version: Option<String>, error: Option<String>| {
        if present {
            found += 1;
        }
        run.evidence(evidence::text(
            name,
            match (present, version) {
                (true, Some(v)) => format!("found, version {v}"),
                (true, None) => format!("found ({})", error.unwrap_or_default()),
                (false, _) => "not found".to_owned(),
            },
            "not needed by the CPU device",
            "the dynamic loader's library path (as the GPU workers load them)",
            if present {
                Verdict::Pass
            } else {
                Verdict::Skip
            },
        ));
    };
    line("CUDA driver (libcuda.so.1)", driver, None, None);
    line(
        "NVRTC",
        libraries.nvrtc.found,
        libraries.nvrtc.version.clone(),
        libraries.nvrtc.error.clone(),
    );
    line(
        "cuBLAS",
        libraries.cublas.found,
        libraries.cublas.version.clone(),
        libraries.cublas.error.clone(),
    );
    if found == 0 {
        run.skip("no CUDA library on this host: the CPU device needs none");
    } else {
        let version = |status: &gpulab_shared::LibraryStatus| {
            status.version.clone().unwrap_or_else(|| "missing".into())
        };
        run.summary(format!(
            "{found} of 3 CUDA libraries found: driver {}, NVRTC {}, cuBLAS {}",
            if driver { "found" } else { "missing" },
            version(&libraries.nvrtc),
            version(&libraries.cublas)
        ));
    }
}

/// A square single-precision matrix product whose every output is summed in the same order
/// (k ascending) whatever the number of threads: its result is a fixed function of its inputs.
pub(super) struct Gemm {
    n: usize,
    a: Vec<f32>,
    b: Vec<f32>,
}

impl Gemm {
    pub(super) fn new(n: usize) -> Self {
        let mut a = vec![0.0; n * n];
        let mut b = vec![0.0; n * n];
        rng::fill_uniform_f32(0x6469_6167, 0, &mut a, -1.0, 1.0);
        rng::fill_uniform_f32(0x6469_6167, 1, &mut b, -1.0, 1.0);
        Gemm { n, a, b }
    }

    pub(super) fn flops(&self) -> f64 {
        2.0 * (self.n as f64).powi(3)
    }

    /// C = A·B, rows shared among rayon's threads.
    pub(super) fn run(&self) -> Vec<f32> {
        let n = self.n;
        let mut c = vec![0.0f32; n * n];
        c.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
            let a_row = &self.a[i * n..(i + 1) * n];
            for (k, &aik) in a_row.iter().enumerate() {
                let b_row = &self.b[k * n..(k + 1) * n];
                for (cj, &bkj) in row.iter_mut().zip(b_row) {
                    *cj += aik * bkj;
                }
            }
        });
        c
    }
}

/// The run-twice judgement: `second` (altered once where the plan injects a GEMM mismatch)
/// must have the bits of `first`; the evidence counts the differing values and shows the
/// first of them. Returns how many values differ.
pub(super) fn judge_repeat(
    run: &mut CheckRun<'_>,
    plan: &Plan,
    first: &[f32],
    second: &mut [f32],
    why_equal: &str,
) -> usize {
    if plan.injects(Fault::GemmMismatch) {
        alter(second);
    }
    let d = differing(first, second);
    run.evidence(evidence::at_most(
        "differing results",
        d.count as f64,
        "values",
        0.0,
        why_equal,
        Verdict::Fail,
    ));
    if let Some(index) = d.first {
        run.evidence(first_difference(index, first, second));
    }
    d.count
}

/// The fault: one value of a GEMM result changed in its lowest bit.
fn alter(c: &mut [f32]) {
    if let Some(v) = c.get_mut(c.len() / 3) {
        *v = f32::from_bits(v.to_bits() ^ 1);
    }
}

struct Differing {
    count: usize,
    first: Option<usize>,
}

/// The values of two results whose bits differ.
fn differing(a: &[f32], b: &[f32]) -> Differing {
    let mut count = a.len().abs_diff(b.len());
    let mut first = None;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x.to_bits() != y.to_bits() {
            count += 1;
            first.get_or_insert(i);
        }
    }
    Differing { count, first }
}

fn first_difference(index: usize, first: &[f32], other: &[f32]) -> gpulab_shared::diag::Evidence {
    evidence::text(
        &format!("first differing value (index {index})"),
        format!("{:e} ({:#010x})", other[index], other[index].to_bits()),
        format!("{:e} ({:#010x})", first[index], first[index].to_bits()),
        "the first result",
        Verdict::Fail,
    )
}

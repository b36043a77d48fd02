//! Runs a prepared kernel: one warm-up run, then the timed repetitions, then the check.

use std::time::Instant;

use gpulab_shared::{JobResult, Timing};

use super::{Artifact, CpuRun, PreparedGpu, RunReport};
use crate::cuda::{self, Gpu, GpuError};

/// A finished run: the result for the API and the artifact to store beside it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub result: JobResult,
    pub artifact: Option<Artifact>,
}

/// Runs `run` once untimed, then `repetitions` timed times, calling `progress(done, total)`
/// after each timed repetition, and verifies the output.
pub fn time_cpu_run(
    mut run: Box<dyn CpuRun>,
    repetitions: u32,
    mut progress: impl FnMut(u32, u32),
) -> Outcome {
    let repetitions = repetitions.max(1);
    run.run();
    let mut times_ms = Vec::with_capacity(repetitions as usize);
    for done in 1..=repetitions {
        let start = Instant::now();
        run.run();
        times_ms.push(start.elapsed().as_secs_f64() * 1e3);
        progress(done, repetitions);
    }
    outcome(&times_ms, run.finish())
}

/// Runs a prepared GPU run: one untimed warm-up, then `repetitions` timed runs, each timed
/// by CUDA events on the stream, then the check. The module's compile and load times go
/// into `output.module`, apart from the kernel's.
pub fn time_gpu_run(
    prepared: PreparedGpu,
    gpu: &mut Gpu,
    repetitions: u32,
    progress: impl FnMut(u32, u32),
) -> Result<Outcome, GpuError> {
    let PreparedGpu { mut run, modules } = prepared;
    let times_ms = cuda::time_on_stream(gpu, repetitions, progress, |gpu| run.step(gpu))?;
    let mut report = run.finish(gpu)?;
    if let serde_json::Value::Object(output) = &mut report.output {
        let modules = serde_json::to_value(&modules).unwrap_or_default();
        output.insert("modules".into(), modules);
    }
    Ok(outcome(&times_ms, report))
}

fn outcome(times_ms: &[f64], report: RunReport) -> Outcome {
    let timing = timing(times_ms);
    Outcome {
        result: JobResult {
            throughput: report.work.throughput(timing.median_ms / 1e3),
            timing,
            verification: report.verification,
            output: report.output,
            has_artifact: report.artifact.is_some(),
            fraction_of_peak: None,
            roofline: None,
        },
        artifact: report.artifact,
    }
}

/// Min, median and max of a non-empty list of times.
pub fn timing(times_ms: &[f64]) -> Timing {
    let mut sorted = times_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median_ms = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Timing {
        repetitions: n as u32,
        min_ms: sorted[0],
        median_ms,
        max_ms: sorted[n - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let t = timing(&[3.0, 1.0, 2.0]);
        assert_eq!(
            (t.min_ms, t.median_ms, t.max_ms, t.repetitions),
            (1.0, 2.0, 3.0, 3)
        );
        let t = timing(&[4.0, 1.0, 2.0, 3.0]);
        assert_eq!(t.median_ms, 2.5);
    }
}

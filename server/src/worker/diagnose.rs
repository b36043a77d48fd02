//! A diagnostic part in the worker: the engine's checks on this worker's device, each
//! check sent to the server as it changes.

use std::panic::{catch_unwind, AssertUnwindSafe};

use gpulab_shared::diag::Fault;

use super::protocol::{Event, PastFigures};
use super::Device;
use crate::cuda::panic_message;
use crate::diag::{Baseline, Plan, Target};

/// With test faults on, the memory test covers at most this many bytes: tests keep it
/// small, on machines shared with other builds.
pub const MEMORY_TEST_BYTES_VAR: &str = "GPULAB_TEST_MEMORY_TEST_BYTES";

/// One device's part, as the server asked for it.
pub struct Part {
    pub diag_id: i64,
    pub nonce: u64,
    pub device: gpulab_shared::Device,
    pub level: u8,
    pub duration_s: f64,
    pub faults: Vec<Fault>,
    pub baseline: Vec<PastFigures>,
}

/// The device's context is broken: this worker must exit.
pub struct Poisoned;

/// Runs the part and reports it: `diagnostic_started`, a `diagnostic_check` at every
/// change of a check, then `diagnostic_finished` with every check, or `diagnostic_failed`.
pub fn run(
    owned: &mut Device,
    part: Part,
    test_faults: bool,
    emit: &dyn Fn(&Event),
) -> Result<(), Poisoned> {
    let (diag_id, nonce) = (part.diag_id, part.nonce);
    emit(&Event::DiagnosticStarted { diag_id, nonce });
    let failed = |error: String, fatal: bool| {
        emit(&Event::DiagnosticFailed {
            diag_id,
            nonce,
            error,
            fatal,
        })
    };
    if !part.faults.is_empty() && !test_faults {
        // The server refuses `inject` without the flag; a worker never trusts that alone.
        failed(
            "faults can only be injected when the server runs with --enable-test-faults".into(),
            false,
        );
        return Ok(());
    }
    let target = match owned {
        Device::Cpu => Target::Cpu,
        Device::Cuda(Ok(gpu)) => Target::Gpu(gpu),
        Device::Cuda(Err(reason)) => {
            failed(format!("the GPU cannot be used: {reason}"), false);
            return Ok(());
        }
    };
    let on_gpu = matches!(target, Target::Gpu(_));
    let plan = Plan {
        level: part.level,
        duration_s: part.duration_s,
        faults: part.faults,
        baseline: baseline(part.baseline),
        memory_test_max_bytes: test_faults
            .then(|| std::env::var(MEMORY_TEST_BYTES_VAR).ok()?.parse().ok())
            .flatten(),
    };
    let mut report = |check: &gpulab_shared::diag::CheckResult| {
        emit(&Event::DiagnosticCheck {
            diag_id,
            nonce,
            check: Box::new(check.clone()),
        })
    };
    let checks = catch_unwind(AssertUnwindSafe(|| {
        crate::diag::run_device(&part.device, target, &plan, &mut report)
    }));
    match checks {
        Ok(checks) => {
            // A driver error ended the run: the server replaces this worker after every
            // part anyway, but nothing more may run in this context meanwhile.
            let broken = crate::diag::context_broken(&checks);
            emit(&Event::DiagnosticFinished {
                diag_id,
                nonce,
                checks,
            });
            if broken {
                Err(Poisoned)
            } else {
                Ok(())
            }
        }
        Err(panic) => {
            failed(
                format!("the checks panicked: {}", panic_message(panic.as_ref())),
                on_gpu,
            );
            // A panic in the middle of GPU work leaves its state unknown.
            if on_gpu {
                Err(Poisoned)
            } else {
                Ok(())
            }
        }
    }
}

/// The engine's baseline from the figures on the wire.
fn baseline(figures: Vec<PastFigures>) -> Baseline {
    let mut baseline = Baseline::default();
    for figure in figures {
        for measured in figure.measured {
            baseline.push(&figure.check, &figure.evidence, measured);
        }
    }
    baseline
}

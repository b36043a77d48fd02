//! The worker: a child process (`gpulab worker --device ID`, the same binary) that owns
//! one device and runs that device's jobs one at a time.
//!
//! Jobs run in a separate process because a CUDA kernel that faults leaves its context
//! unusable until the process exits, and a hung kernel cannot be stopped from inside: the
//! supervisor in the server kills the worker and starts a new one instead.

mod diagnose;
pub use diagnose::MEMORY_TEST_BYTES_VAR;
mod landlock;
pub mod protocol;

use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gpulab_shared::{DeviceKind, Params};

use crate::cuda::{custom, library_present, panic_message, Gpu, GpuError, Library};
use crate::devices::host_memory;
use crate::kernels::{self, harness::Outcome, ResolvedParams};
use protocol::{Event, Request, WireArtifact};

/// The hidden kernel that tests use to make a worker hang or crash. The server only knows it
/// when started with the hidden `--enable-test-faults` flag.
pub const TEST_FAULT_KERNEL: &str = "_test_fault";
/// With test faults on, a worker waits this many milliseconds before it says it is ready.
pub const SLOW_START_VAR: &str = "GPULAB_TEST_WORKER_START_DELAY_MS";

/// How often a running job reports progress at most.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(50);

/// Why a job did not run to the end.
#[derive(Debug, Clone, PartialEq)]
pub struct JobError {
    pub message: String,
    /// The device context is broken: this process must not run another job.
    pub fatal: bool,
}

impl JobError {
    fn new(message: impl Into<String>) -> Self {
        JobError {
            message: message.into(),
            fatal: false,
        }
    }
}

impl From<GpuError> for JobError {
    fn from(e: GpuError) -> Self {
        JobError {
            fatal: e.is_fatal(),
            message: e.to_string(),
        }
    }
}

/// The device a worker owns: the CPU, or a GPU opened once for all its jobs (or why it
/// could not be opened, which every job then reports).
pub enum Device {
    Cpu,
    Cuda(Result<Gpu, String>),
}

impl Device {
    /// Opens `cpu` or `cuda:N`.
    pub fn open(id: &str) -> anyhow::Result<Self> {
        match device_kind(id) {
            Some(DeviceKind::Cpu) => Ok(Device::Cpu),
            Some(DeviceKind::Cuda) => {
                let ordinal: usize = id["cuda:".len()..].parse()?;
                Ok(Device::Cuda(open_gpu(ordinal)))
            }
            None => anyhow::bail!("unknown device id {id:?}: expected cpu or cuda:N"),
        }
    }
}

/// Opens GPU `ordinal`, or says why it cannot be: the driver library is checked first,
/// since cudarc panics when it is missing.
fn open_gpu(ordinal: usize) -> Result<Gpu, String> {
    if !library_present(Library::Driver) {
        return Err(crate::devices::NO_DRIVER_REASON.to_owned());
    }
    if !library_present(Library::Nvrtc) {
        return Err(
            "NVRTC (libnvrtc.so.12 or .13) is not installed: CUDA kernels are compiled \
                    at run time with it; the nvidia/cuda runtime images include it"
                .to_owned(),
        );
    }
    catch_unwind(|| Gpu::open(ordinal))
        .map_err(|panic| {
            format!(
                "the CUDA driver could not be used: {}",
                panic_message(panic.as_ref())
            )
        })?
        .map_err(|e| e.to_string())
}

/// Runs the worker loop on the channel (fd 3) until the server closes it. `server_pid` is
/// the process that started this worker: the worker dies with it. `deny` (the server's data
/// directory and token file) is kept from it, where the kernel has Landlock.
pub fn run(
    device: &str,
    server_pid: u32,
    test_faults: bool,
    deny: &[PathBuf],
) -> anyhow::Result<()> {
    die_with_server(server_pid);
    if !deny.is_empty() {
        // Before any thread is started (CUDA starts some): Landlock restricts the calling
        // thread and what it starts later.
        confine(deny)?;
    }
    let channel = take_channel()?;
    let mut owned = Device::open(device)?;
    if let Device::Cuda(Err(reason)) = &owned {
        tracing::warn!(%device, "the GPU cannot be used: {reason}");
    }
    let emit = |event: &Event| {
        // A closed channel means the server is gone; the next read ends the loop.
        let _ = (&channel).write_all(&protocol::encode(event));
    };
    if test_faults {
        // A worker that starts slowly, as one creating a CUDA context can: tests of what
        // the server does meanwhile (a cancel must not wait for it).
        if let Some(ms) = std::env::var(SLOW_START_VAR)
            .ok()
            .and_then(|ms| ms.parse::<u64>().ok())
        {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
    emit(&Event::Ready {
        device: device.to_string(),
    });
    while let Some(request) = protocol::read_blocking::<Request>(&mut &channel)
        .map_err(|e| anyhow::anyhow!("bad request from the server: {e}"))?
    {
        let (job_id, nonce, kernel, params, repetitions) = match request {
            Request::Run {
                job_id,
                nonce,
                kernel,
                params,
                repetitions,
            } => (job_id, nonce, kernel, params, repetitions),
            Request::Diagnose {
                diag_id,
                nonce,
                device: described,
                level,
                duration_s,
                faults,
                baseline,
            } => {
                let part = diagnose::Part {
                    diag_id,
                    nonce,
                    device: *described,
                    level,
                    duration_s,
                    faults,
                    baseline,
                };
                if diagnose::run(&mut owned, part, test_faults, &emit).is_err() {
                    // The context is poisoned: nothing further may run in it.
                    std::process::exit(3);
                }
                continue;
            }
        };
        emit(&Event::Started { job_id, nonce });
        if test_faults && kernel == TEST_FAULT_KERNEL {
            let error = inject_fault(&params, &channel, job_id, nonce);
            emit(&Event::Failed {
                job_id,
                nonce,
                error,
                fatal: false,
            });
            continue;
        }
        let mut last = Instant::now();
        let progress = |done: u32, total: u32| {
            if done == total || last.elapsed() >= PROGRESS_INTERVAL {
                last = Instant::now();
                emit(&Event::Progress {
                    job_id,
                    nonce,
                    done,
                    total,
                });
            }
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            execute(&mut owned, &kernel, params, repetitions, progress)
        }))
        .unwrap_or_else(|panic| {
            Err(JobError {
                message: format!("the kernel panicked: {}", panic_message(panic.as_ref())),
                // A panic in the middle of GPU work leaves its state unknown.
                fatal: matches!(owned, Device::Cuda(_)),
            })
        });
        match outcome {
            Ok(outcome) => emit(&Event::Finished {
                job_id,
                nonce,
                artifact: outcome.artifact.as_ref().map(WireArtifact::from),
                result: outcome.result,
            }),
            Err(error) => {
                emit(&Event::Failed {
                    job_id,
                    nonce,
                    error: error.message,
                    fatal: error.fatal,
                });
                if error.fatal {
                    // The context is poisoned: no further job may run in it.
                    std::process::exit(3);
                }
            }
        }
    }
    Ok(())
}

/// Keeps this process out of `paths`; without Landlock, says so once and goes on.
fn confine(paths: &[PathBuf]) -> anyhow::Result<()> {
    let shown = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    match landlock::deny(paths) {
        Ok(abi) => {
            tracing::info!("confined by Landlock (ABI {abi}): no access to {shown}");
            Ok(())
        }
        Err(landlock::NotConfined::Unavailable(e)) => {
            tracing::warn!(
                "not confined: this kernel offers no Landlock ({e}), so jobs can read {shown}"
            );
            Ok(())
        }
        Err(landlock::NotConfined::Failed(e)) => {
            Err(e.context(format!("cannot keep the worker out of {shown}")))
        }
    }
}

/// The channel to the server, which starts every worker with it as fd 3.
fn take_channel() -> anyhow::Result<UnixStream> {
    // SAFETY: fstat writes into the zeroed struct we own; a bad descriptor is an error.
    let is_socket = unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        libc::fstat(protocol::CHANNEL_FD, &mut stat) == 0
            && stat.st_mode & libc::S_IFMT == libc::S_IFSOCK
    };
    anyhow::ensure!(
        is_socket,
        "file descriptor {} is not the server's channel: workers are started by `gpulab serve`, \
         not by hand",
        protocol::CHANNEL_FD
    );
    // SAFETY: fd 3 is an open socket (checked above) that nothing else in this process
    // owns; the server passed it for this worker alone. FD_CLOEXEC keeps it from any
    // process the worker might start.
    unsafe {
        libc::fcntl(protocol::CHANNEL_FD, libc::F_SETFD, libc::FD_CLOEXEC);
        Ok(UnixStream::from_raw_fd(protocol::CHANNEL_FD))
    }
}

/// Runs one job on this process's device: warm-up, timed repetitions and verification. A
/// catalog kernel's `params` must be resolved already; a custom kernel's are checked here
/// again. Used by the worker and by `gpulab run`.
pub fn execute(
    device: &mut Device,
    kernel: &str,
    params: Params,
    repetitions: u32,
    progress: impl FnMut(u32, u32),
) -> Result<Outcome, JobError> {
    if kernel == custom::KERNEL {
        let job = custom::CustomJob::parse(Some(&params))
            .map_err(|e| JobError::new(format!("{}: {}", e.field, e.detail)))?;
        let gpu = gpu_of(device, kernel)?;
        fits_on_host(kernel, job.host_bytes())?;
        let prepared = job.prepare(gpu)?;
        return Ok(kernels::harness::time_gpu_run(
            prepared,
            gpu,
            repetitions,
            progress,
        )?);
    }
    let k =
        kernels::find(kernel).ok_or_else(|| JobError::new(format!("unknown kernel `{kernel}`")))?;
    let job = k
        .configure(&ResolvedParams::trusted(params))
        .map_err(|e| JobError::new(format!("{}: {}", e.field, e.detail)))?;
    // The host may have less memory now than when the job was queued: check before any
    // buffer is allocated (a GPU path fills its inputs and checks its outputs on the host).
    fits_on_host(kernel, job.memory_bytes())?;
    match device {
        Device::Cpu => {
            let run = job.prepare_cpu().map_err(JobError::new)?;
            Ok(kernels::harness::time_cpu_run(run, repetitions, progress))
        }
        Device::Cuda(_) => {
            let gpu = gpu_of(device, kernel)?;
            let prepared = job.prepare_cuda(gpu)?;
            Ok(kernels::harness::time_gpu_run(
                prepared,
                gpu,
                repetitions,
                progress,
            )?)
        }
    }
}

fn fits_on_host(kernel: &str, needed: u64) -> Result<(), JobError> {
    host_memory::ensure_fits(kernel, needed, host_memory::available()).map_err(JobError::new)
}

fn gpu_of<'d>(device: &'d mut Device, kernel: &str) -> Result<&'d mut Gpu, JobError> {
    match device {
        Device::Cuda(Ok(gpu)) => Ok(gpu),
        Device::Cuda(Err(reason)) => {
            Err(JobError::new(format!("the GPU cannot be used: {reason}")))
        }
        Device::Cpu => Err(JobError::new(format!(
            "`{kernel}` runs on CUDA devices only"
        ))),
    }
}

/// `cpu` or `cuda:N`.
pub fn device_kind(device: &str) -> Option<DeviceKind> {
    if device == "cpu" {
        Some(DeviceKind::Cpu)
    } else {
        device
            .strip_prefix("cuda:")
            .filter(|n| n.parse::<u32>().is_ok())
            .map(|_| DeviceKind::Cuda)
    }
}

/// Has the kernel kill this process when the server dies, even by `kill -9`, so that no
/// worker (a hung one least of all) outlives it.
///
/// The server names itself (`--server-pid`): a worker cannot tell its server by "my parent
/// is not init", since in a container the server *is* PID 1, and under a subreaper a dead
/// server's orphans are not re-parented to 1 either.
fn die_with_server(server_pid: u32) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    // The server may have died before the call: then we were re-parented already, and the
    // death signal will never come.
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    if u32::try_from(parent).ok() != Some(server_pid) {
        eprintln!(
            "gpulab worker: started by process {server_pid}, but the parent is now {parent}: \
             the server is gone, so this worker exits"
        );
        std::process::exit(1);
    }
}

/// Does what the test asked for and returns the job's error; never returns for `hang` and
/// `crash`. The other modes act as a hostile kernel or a broken worker would.
fn inject_fault(params: &Params, channel: &UnixStream, job_id: i64, nonce: u64) -> String {
    let mode = params.get("mode").and_then(|m| m.as_str()).unwrap_or("");
    match mode {
        "hang" => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        "crash" => std::process::abort(),
        "stdout_flood" => {
            // What a kernel's printf can do: a `finished` event as the old protocol wrote
            // it, for this very job, then 100 MiB without a newline.
            let forged = serde_json::json!({
                "type": "finished", "job_id": job_id, "nonce": nonce, "artifact": null,
                "result": {
                    "timing": {"repetitions": 1, "min_ms": 1.0, "median_ms": 1.0, "max_ms": 1.0},
                    "throughput": {"value": 1.0, "unit": "GB/s"},
                    "verification": {"passed": true, "max_abs_error": 0.0,
                                     "max_rel_error": 0.0, "tolerance": 0.0, "method": "forged"},
                    "output": {"forged": true}, "has_artifact": false,
                },
            });
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{forged}");
            let _ = out.write_all(&protocol::encode(
                &serde_json::from_value::<Event>(forged).ok(),
            ));
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..100 {
                let _ = out.write_all(&chunk);
            }
            let _ = out.flush();
            "test fault: wrote a forged `finished` event and 100 MiB without a newline to \
             stdout"
                .into()
        }
        "bad_nonce" => {
            let _ = (&*channel).write_all(&protocol::encode(&Event::Progress {
                job_id,
                nonce: nonce.wrapping_add(1),
                done: 0,
                total: 1,
            }));
            "test fault: sent an event with a wrong nonce".into()
        }
        "oversized_frame" => {
            let len = (protocol::MAX_FRAME_BYTES as u32 + 1).to_be_bytes();
            let _ = (&*channel).write_all(&len);
            let _ = (&*channel).write_all(&[b'{'; 4096]);
            "test fault: sent a frame over the limit".into()
        }
        // What a kernel reading the server's files by absolute path would get.
        "read_path" => {
            let path = params.get("path").and_then(|p| p.as_str()).unwrap_or("");
            match std::fs::read(path) {
                Ok(bytes) => format!("test fault: read {} bytes from {path}", bytes.len()),
                Err(e) => format!("test fault: cannot read {path}: {e}"),
            }
        }
        other => format!("test fault: mode `{other}` does nothing in the worker"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_parse() {
        assert_eq!(device_kind("cpu"), Some(DeviceKind::Cpu));
        assert_eq!(device_kind("cuda:3"), Some(DeviceKind::Cuda));
        assert_eq!(device_kind("cuda:x"), None);
        assert_eq!(device_kind("gpu0"), None);
    }

    #[test]
    fn protocol_lines_round_trip() {
        let req = Request::Run {
            job_id: 7,
            nonce: 99,
            kernel: "saxpy".into(),
            params: Params::new(),
            repetitions: 3,
        };
        let frame = protocol::encode(&req);
        let line = std::str::from_utf8(&frame[4..]).unwrap();
        assert!(line.contains(r#""type":"run""#), "{line}");
        assert_eq!(
            protocol::read_blocking::<Request>(&mut &frame[..]).unwrap(),
            Some(req)
        );
        let art = kernels::Artifact {
            content_type: "image/png".into(),
            bytes: vec![0, 255, 7],
        };
        let wire = WireArtifact::from(&art);
        assert_eq!(kernels::Artifact::try_from(wire).unwrap(), art);
    }
}

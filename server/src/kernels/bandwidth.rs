//! `bandwidth`: a memory-to-memory copy of `size_mib` MiB, the plain measure of memory
//! bandwidth. On a GPU the timed copy is device to device (the driver's `cuMemcpyDtoD`), and
//! the result adds a sweep of sizes from 1 KiB to `size_mib` MiB in every direction: host to
//! device and device to host from pinned and from pageable memory, and device to device, as
//! CUDA's bandwidthTest measures them.

use gpulab_shared::{DeviceKind, KernelSpec, Verification};
use rayon::prelude::*;
use serde_json::json;

use super::gpu::{self, BLOCK};
use super::params::{spec, FromParams, ParamError};
use super::{
    cuda_source, rng, CpuRun, CudaSource, GpuRun, Kernel, PreparedGpu, ResolvedParams, RunReport,
    Work,
};
use crate::cuda::{DriverContext, Gpu, GpuError, Options};
use cudarc::driver::{CudaFunction, CudaSlice, PinnedHostSlice, PushKernelArg};

/// Words per rayon task: 1 MiB, long enough for the hardware prefetchers to get going.
const CHUNK: usize = (1 << 20) / WORD;

/// Bytes per word of the buffers.
const WORD: usize = std::mem::size_of::<u64>();

/// The random stream the source is filled from.
const STREAM_SRC: u64 = 0;

/// The CUDA source of the GPU path, with the entry points it launches.
const CUDA: &[CudaSource] = &[cuda_source!("bandwidth.cu", ["copy_kernel"])];

/// Buffer-to-buffer copy.
pub struct Bandwidth;

/// The parameters of a `bandwidth` job.
pub struct BandwidthParams {
    size_mib: u64,
    seed: u64,
}

impl FromParams for BandwidthParams {
    fn from_params(params: &ResolvedParams) -> Result<Self, ParamError> {
        Ok(BandwidthParams {
            size_mib: params.integer("size_mib")?,
            seed: params.integer("seed")?,
        })
    }
}

impl Kernel for Bandwidth {
    type Params = BandwidthParams;

    fn spec(&self) -> KernelSpec {
        KernelSpec {
            name: "bandwidth".into(),
            description: "Copies a buffer of random bytes into another one of the same size: \
                          the memory bandwidth a plain copy reaches."
                .into(),
            devices: vec![DeviceKind::Cpu, DeviceKind::Cuda],
            params: vec![
                spec::integer(
                    "size_mib",
                    256,
                    1,
                    16384,
                    Some("MiB"),
                    "Size of the buffer copied.",
                ),
                spec::seed(),
            ],
            throughput_formula: "2 × size bytes (read + written) / median time (GB/s)".into(),
        }
    }

    fn cuda_sources(&self) -> &'static [CudaSource] {
        CUDA
    }

    fn memory_bytes(&self, params: &BandwidthParams) -> u64 {
        2 * (params.size_mib << 20)
    }

    fn prepare_cpu(&self, params: &BandwidthParams) -> Result<Box<dyn CpuRun>, String> {
        let words = params.size_mib as usize * (1 << 20) / WORD;
        let mut src = vec![0u64; words];
        rng::fill_u64(params.seed, STREAM_SRC, &mut src);
        Ok(Box::new(BandwidthRun {
            src,
            dst: vec![0; words],
        }))
    }

    fn prepare_cuda(
        &self,
        params: &BandwidthParams,
        gpu: &mut Gpu,
    ) -> Result<PreparedGpu, GpuError> {
        gpu.ensure_fits(self.memory_bytes(params), "bandwidth")?;
        let (module, report) = gpu.module(CUDA[0].file, CUDA[0].source, &Options::default())?;
        let bytes = params.size_mib as usize * (1 << 20);
        let words = bytes / WORD;
        let mut src = vec![0u64; words];
        rng::fill_u64(params.seed, STREAM_SRC, &mut src);
        let run = BandwidthGpu {
            copy_kernel: Gpu::function(&module, "copy_kernel")?,
            src_device: gpu::upload(gpu, &src)?,
            dst_device: gpu::zeros(gpu, words)?,
            src,
        };
        Ok(PreparedGpu::new(run, vec![report]))
    }

    fn roofline_note(&self) -> &'static str {
        "none: a copy does no arithmetic (its figure is judged against the memory bandwidth)"
    }
}

struct BandwidthGpu {
    copy_kernel: CudaFunction,
    /// The source on the host (pageable), for the sweep and the check.
    src: Vec<u64>,
    src_device: CudaSlice<u64>,
    dst_device: CudaSlice<u64>,
}

/// A direction of the sweep, as the result names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    HostToDevicePinned,
    HostToDevicePageable,
    DeviceToHostPinned,
    DeviceToHostPageable,
    DeviceToDevice,
}

impl Direction {
    const ALL: [Direction; 5] = [
        Direction::HostToDevicePinned,
        Direction::HostToDevicePageable,
        Direction::DeviceToHostPinned,
        Direction::DeviceToHostPageable,
        Direction::DeviceToDevice,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Direction::HostToDevicePinned => "h2d_pinned",
            Direction::HostToDevicePageable => "h2d_pageable",
            Direction::DeviceToHostPinned => "d2h_pinned",
            Direction::DeviceToHostPageable => "d2h_pageable",
            Direction::DeviceToDevice => "d2d",
        }
    }

    /// Bytes counted per byte copied: a device-to-device copy reads and writes the GPU's
    /// memory, and bandwidthTest counts both.
    fn bytes_factor(self) -> f64 {
        if self == Direction::DeviceToDevice {
            2.0
        } else {
            1.0
        }
    }
}

/// The largest size of the sweep: 1 GiB, as bandwidthTest's range mode goes.
const SWEEP_MAX: usize = 1 << 30;

/// The sizes of the sweep: every power of two from 1 KiB to `max` bytes.
fn sweep_sizes(max: usize) -> Vec<usize> {
    std::iter::successors(Some(1usize << 10), |s| Some(s * 2))
        .take_while(|&s| s <= max)
        .collect()
}

/// Copies per point of the sweep: enough to move 256 MiB, at least 3 and at most 50.
fn sweep_repetitions(size: usize) -> u32 {
    ((256usize << 20) / size).clamp(3, 50) as u32
}

impl BandwidthGpu {
    /// The median GB/s of copying `size` bytes in `direction`.
    fn measure(
        &mut self,
        gpu: &Gpu,
        direction: Direction,
        size: usize,
        pinned: &mut PinnedHostSlice<u64>,
        pageable: &mut [u64],
    ) -> Result<f64, GpuError> {
        let words = size / WORD;
        let repetitions = sweep_repetitions(size);
        let src_host = &self.src[..words];
        let src_device = &self.src_device;
        let dst_device = &mut self.dst_device;
        let times = crate::cuda::time_on_stream(
            gpu,
            repetitions,
            |_, _| {},
            |gpu| {
                let stream = &gpu.stream;
                let what = "copying in the bandwidth sweep";
                match direction {
                    Direction::HostToDevicePinned => {
                        let pinned = pinned.as_slice().during(what)?;
                        stream
                            .memcpy_htod(&pinned[..words], &mut dst_device.slice_mut(..words))
                            .during(what)
                    }
                    Direction::HostToDevicePageable => stream
                        .memcpy_htod(src_host, &mut dst_device.slice_mut(..words))
                        .during(what),
                    Direction::DeviceToHostPinned => {
                        let pinned = pinned.as_mut_slice().during(what)?;
                        stream
                            .memcpy_dtoh(&src_device.slice(..words), &mut pinned[..words])
                            .during(what)
                    }
                    Direction::DeviceToHostPageable => stream
                        .memcpy_dtoh(&src_device.slice(..words), &mut pageable[..words])
                        .during(what),
                    Direction::DeviceToDevice => stream
                        .memcpy_dtod(
                            &src_device.slice(..words),
                            &mut dst_device.slice_mut(..words),
                        )
                        .during(what),
                }
            },
        )?;
        let median_s = super::harness::timing(&times).median_ms / 1e3;
        Ok(direction.bytes_factor() * size as f64 / median_s / 1e9)
    }

    /// The GB/s of the copy kernel over the whole buffer, counted as a device-to-device copy.
    fn measure_kernel(&mut self, gpu: &Gpu) -> Result<f64, GpuError> {
        let words16 = (self.src.len() * WORD / 16) as u64;
        let function = self.copy_kernel.clone();
        let (src, dst) = (&self.src_device, &mut self.dst_device);
        let times = crate::cuda::time_on_stream(
            gpu,
            10,
            |_, _| {},
            |gpu| {
                let mut launch = gpu.stream.launch_builder(&function);
                launch.arg(src).arg(&mut *dst).arg(&words16);
                // SAFETY: copy_kernel(const uint4*, uint4*, unsigned long long) copies `words16`
                // 16-byte words, which both buffers (size_mib MiB each) hold.
                unsafe { launch.launch(Gpu::linear_launch(words16, BLOCK)) }
                    .during("launching copy_kernel")?;
                Ok(())
            },
        )?;
        let median_s = super::harness::timing(&times).median_ms / 1e3;
        Ok(2.0 * (words16 * 16) as f64 / median_s / 1e9)
    }
}

impl GpuRun for BandwidthGpu {
    fn step(&mut self, gpu: &Gpu) -> Result<(), GpuError> {
        gpu.stream
            .memcpy_dtod(&self.src_device, &mut self.dst_device)
            .during("copying device to device")
    }

    fn finish(mut self: Box<Self>, gpu: &mut Gpu) -> Result<RunReport, GpuError> {
        let dst = gpu::download(gpu, &self.dst_device)?;
        let verification = verify(&self.src, &dst[..self.src.len()]);
        let bytes = self.src.len() * WORD;
        let kernel_gb_per_s = self.measure_kernel(gpu)?;
        let sweep_max = bytes.min(SWEEP_MAX);
        // SAFETY: the pinned buffer is only read after the sweep's device-to-host copies
        // have filled it, or is the source of host-to-device copies, whose bytes don't matter.
        let mut pinned = unsafe { gpu.ctx.alloc_pinned_with_flags::<u64>(sweep_max / WORD, 0) }
            .during("allocating pinned host memory")?;
        let mut pageable = vec![0u64; sweep_max / WORD];
        let mut sweep = Vec::new();
        for size in sweep_sizes(sweep_max) {
            for direction in Direction::ALL {
                let gb_per_s = self.measure(gpu, direction, size, &mut pinned, &mut pageable)?;
                sweep.push(json!({
                    "bytes": size,
                    "gb_per_s": gb_per_s,
                    "direction": direction.as_str(),
                }));
            }
        }
        Ok(RunReport {
            work: Work::Bytes(2.0 * bytes as f64),
            verification,
            output: json!({
                "size_bytes": bytes,
                "copy": "cuMemcpyDtoD",
                "copy_kernel_gb_per_s": kernel_gb_per_s,
                "sweep": sweep,
                "convention": "GB/s are 10⁹ bytes per second. Host↔device copies count the \
                               bytes once; device-to-device copies (the timed copy, the \
                               copy kernel and the sweep's d2d) count them twice, read and \
                               written, as CUDA's bandwidthTest does. Each point is the \
                               median of event-timed copies after one warm-up.",
            }),
            artifact: None,
        })
    }
}

struct BandwidthRun {
    src: Vec<u64>,
    dst: Vec<u64>,
}

impl CpuRun for BandwidthRun {
    fn run(&mut self) {
        self.dst
            .par_chunks_mut(CHUNK)
            .zip(self.src.par_chunks(CHUNK))
            .for_each(|(dst, src)| dst.copy_from_slice(src));
    }

    fn finish(self: Box<Self>) -> RunReport {
        let bytes = self.src.len() * WORD;
        RunReport {
            // Each byte is read once and written once, as CUDA's bandwidthTest counts a
            // device-to-device copy.
            work: Work::Bytes(2.0 * bytes as f64),
            verification: verify(&self.src, &self.dst),
            output: json!({ "size_bytes": bytes }),
            artifact: None,
        }
    }
}

/// Compares the whole destination with the source, word by word.
fn verify(src: &[u64], dst: &[u64]) -> Verification {
    let differing =
        src.iter().zip(dst).filter(|(s, d)| s != d).count() + src.len().abs_diff(dst.len());
    let words = src.len().max(dst.len()).max(1);
    Verification {
        passed: differing == 0,
        max_abs_error: differing as f64,
        max_rel_error: differing as f64 / words as f64,
        tolerance: 0.0,
        method: "The whole destination compared with the source, 8 bytes at a time; the error \
                 is the number (absolute) and fraction (relative) of words that differ, and a \
                 copy must be exact."
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_doubles_from_1_kib_to_the_buffer() {
        let sizes = sweep_sizes(1 << 20);
        assert_eq!(sizes.first(), Some(&1024));
        assert_eq!(sizes.last(), Some(&(1 << 20)));
        assert_eq!(sizes.len(), 11);
        assert!(sweep_sizes(1000).is_empty());
        assert_eq!(sweep_sizes(SWEEP_MAX).len(), 21);
        assert_eq!(sweep_repetitions(1024), 50);
        assert_eq!(sweep_repetitions(1 << 30), 3);
        assert_eq!(Direction::DeviceToDevice.bytes_factor(), 2.0);
        assert_eq!(Direction::HostToDevicePinned.bytes_factor(), 1.0);
    }
    use crate::kernels::harness;

    #[test]
    fn a_copy_passes_and_counts_both_directions() {
        let params = serde_json::from_value(json!({ "size_mib": 2, "seed": 3 })).unwrap();
        let params = ResolvedParams::resolve(&Bandwidth.spec().params, Some(&params)).unwrap();
        let params = BandwidthParams::from_params(&params).unwrap();
        assert_eq!(Bandwidth.memory_bytes(&params), 4 << 20);
        let outcome = harness::time_cpu_run(Bandwidth.prepare_cpu(&params).unwrap(), 2, |_, _| {});
        let v = &outcome.result.verification;
        assert!(v.passed && v.max_abs_error == 0.0, "{v:?}");
        assert_eq!(outcome.result.output["size_bytes"], 2 << 20);
        let t = &outcome.result.throughput;
        let expected = 2.0 * (2 << 20) as f64 / (outcome.result.timing.median_ms / 1e3) / 1e9;
        assert!((t.value - expected).abs() <= 1e-9 * expected, "{t:?}");
    }

    #[test]
    fn one_wrong_word_is_caught() {
        let mut src = vec![0u64; 1000];
        rng::fill_u64(1, STREAM_SRC, &mut src);
        let mut dst = src.clone();
        assert!(verify(&src, &dst).passed);
        dst[999] ^= 1 << 63;
        let v = verify(&src, &dst);
        assert!(!v.passed);
        assert_eq!((v.max_abs_error, v.max_rel_error), (1.0, 0.001));
        assert!(!verify(&src, &src[..999]).passed);
    }
}

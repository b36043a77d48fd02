//! `reduce_sum`: the sum of `n` single-precision floats, summed as a tree.
//!
//! Each chunk of [`CHUNK`] elements is summed by [`LANES`] independent accumulators (which the
//! compiler turns into SIMD registers), the lanes are folded pairwise, and the chunk sums are
//! added pairwise too, level by level. The tree is fixed by `n` alone, so the result is the
//! same bit for bit on any number of threads, and no element passes through more than
//! [`chain_length`] additions, which bounds the rounding error.

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
use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

/// Elements per chunk: 64 KiB, one rayon task.
const CHUNK: usize = 1 << 14;

/// Independent accumulators per chunk: enough to fill the SIMD registers and hide the
/// latency of the additions.
const LANES: usize = 32;

/// The random stream the inputs are drawn from, in `[0, 1)`.
const STREAM_X: u64 = 0;

/// The CUDA source of the GPU path, with the entry points it launches.
const CUDA: &[CudaSource] = &[cuda_source!(
    "reduce_sum.cu",
    ["reduce_partial", "reduce_final"]
)];

/// Sum of a vector.
pub struct ReduceSum;

/// The parameters of a `reduce_sum` job.
pub struct ReduceSumParams {
    n: usize,
    seed: u64,
}

impl FromParams for ReduceSumParams {
    fn from_params(params: &ResolvedParams) -> Result<Self, ParamError> {
        Ok(ReduceSumParams {
            n: params.count("n")?,
            seed: params.integer("seed")?,
        })
    }
}

impl Kernel for ReduceSum {
    type Params = ReduceSumParams;

    fn spec(&self) -> KernelSpec {
        KernelSpec {
            name: "reduce_sum".into(),
            description: "Sums n single-precision floats drawn uniformly from [0, 1) with a \
                          parallel tree reduction: a memory-bandwidth test that reads one stream."
                .into(),
            devices: vec![DeviceKind::Cpu, DeviceKind::Cuda],
            params: vec![
                spec::integer(
                    "n",
                    1 << 22,
                    1,
                    1 << 30,
                    Some("elements"),
                    "Number of floats to sum.",
                ),
                spec::seed(),
            ],
            throughput_formula: "n × 4 bytes / median time (GB/s)".into(),
        }
    }

    fn cuda_sources(&self) -> &'static [CudaSource] {
        CUDA
    }

    fn memory_bytes(&self, params: &ReduceSumParams) -> u64 {
        let n = params.n as u64;
        (n + n.div_ceil(CHUNK as u64)) * 4
    }

    fn prepare_cpu(&self, params: &ReduceSumParams) -> Result<Box<dyn CpuRun>, String> {
        let n = params.n;
        let mut x = vec![0.0; n];
        rng::fill_uniform_f32(params.seed, STREAM_X, &mut x, 0.0, 1.0);
        Ok(Box::new(ReduceSumRun {
            partials: vec![0.0; n.div_ceil(CHUNK)],
            x,
            sum: f32::NAN,
        }))
    }

    fn prepare_cuda(
        &self,
        params: &ReduceSumParams,
        gpu: &mut Gpu,
    ) -> Result<PreparedGpu, GpuError> {
        gpu.ensure_fits(self.memory_bytes(params), "reduce_sum")?;
        let (module, report) = gpu.module(CUDA[0].file, CUDA[0].source, &Options::default())?;
        let n = params.n;
        let mut x = vec![0.0; n];
        rng::fill_uniform_f32(params.seed, STREAM_X, &mut x, 0.0, 1.0);
        // Enough blocks to fill the GPU, no more than the float4s need.
        let blocks = (n as u64 / 4)
            .div_ceil(BLOCK as u64)
            .clamp(1, gpu::resident_blocks(gpu) as u64) as u32;
        let run = ReduceSumGpu {
            partial_fn: Gpu::function(&module, "reduce_partial")?,
            final_fn: Gpu::function(&module, "reduce_final")?,
            blocks,
            n,
            x_device: gpu::upload(gpu, &x)?,
            partial: gpu::zeros(gpu, blocks as usize)?,
            sum: gpu::zeros(gpu, 1)?,
            x,
        };
        Ok(PreparedGpu::new(run, vec![report]))
    }

    /// One add per element read (n − 1 in all, counted n); the partial sums are negligible.
    fn op_counts(&self, params: &Self::Params) -> Option<super::OpCounts> {
        let n = params.n as f64;
        Some(super::OpCounts {
            flops: n,
            bytes: n * 4.0,
            ceiling: "fp32",
        })
    }

    fn roofline_note(&self) -> &'static str {
        "n FLOP over n × 4 bytes (1/4 FLOP/byte)"
    }
}

/// Threads of the block that adds the partial sums.
const FINAL_BLOCK: u32 = 1024;

struct ReduceSumGpu {
    partial_fn: CudaFunction,
    final_fn: CudaFunction,
    blocks: u32,
    n: usize,
    /// The input, kept on the host for the reference sum.
    x: Vec<f32>,
    x_device: CudaSlice<f32>,
    partial: CudaSlice<f32>,
    sum: CudaSlice<f32>,
}

impl GpuRun for ReduceSumGpu {
    fn step(&mut self, gpu: &Gpu) -> Result<(), GpuError> {
        let n = self.n as u64;
        let mut first = gpu.stream.launch_builder(&self.partial_fn);
        first.arg(&self.x_device).arg(&n).arg(&mut self.partial);
        let cfg = LaunchConfig {
            grid_dim: (self.blocks, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: reduce_partial(const float*, unsigned long long, float*) reads n floats
        // and writes one partial sum per block, `blocks` of which `partial` holds.
        unsafe { first.launch(cfg) }.during("launching reduce_partial")?;
        let mut second = gpu.stream.launch_builder(&self.final_fn);
        second
            .arg(&self.partial)
            .arg(&self.blocks)
            .arg(&mut self.sum);
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (FINAL_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: reduce_final(const float*, unsigned int, float*) reads `blocks` partial
        // sums and writes one float.
        unsafe { second.launch(cfg) }.during("launching reduce_final")?;
        Ok(())
    }

    fn finish(self: Box<Self>, gpu: &mut Gpu) -> Result<RunReport, GpuError> {
        let sum = gpu::download(gpu, &self.sum)?[0];
        let k = gpu_chain_length(self.n, self.blocks);
        let method = format!(
            "The sum compared with a sequential double-precision sum, error relative to Σ|x|; \
             the tolerance γ_k = k·ε_f32 bounds the rounding of a sum in which no element \
             passes through more than k = {k} additions (its thread's share of float4s in \
             one of four accumulators, the four added, 5 + 5 levels of warp shuffles in a \
             block of {BLOCK}, then the {} partial sums in one block of {FINAL_BLOCK}).",
            self.blocks
        );
        Ok(RunReport {
            work: Work::Bytes(self.n as f64 * 4.0),
            output: json!({
                "n": self.n,
                "sum": sum,
                "reference": reference_sum(&self.x),
                "blocks": self.blocks,
            }),
            verification: verify_with(&self.x, sum, k, method),
            artifact: None,
        })
    }
}

/// The most additions an element passes through in the GPU's tree: `reduce_partial`'s
/// grid-stride share per accumulator, the tail, the two additions that join the four
/// accumulators, two warp-shuffle levels of five, then the same in `reduce_final`.
fn gpu_chain_length(n: usize, blocks: u32) -> u32 {
    let threads = blocks as u64 * BLOCK as u64;
    let per_accumulator = (n as u64 / 4).div_ceil(threads) as u32;
    let first = per_accumulator + 1 + 2 + 5 + 5;
    let second = blocks.div_ceil(FINAL_BLOCK) + 5 + 5;
    first + second
}

struct ReduceSumRun {
    x: Vec<f32>,
    /// One sum per chunk, allocated once so that the timed runs only read `x`.
    partials: Vec<f32>,
    sum: f32,
}

impl CpuRun for ReduceSumRun {
    fn run(&mut self) {
        self.partials
            .par_iter_mut()
            .zip(self.x.par_chunks(CHUNK))
            .for_each(|(partial, chunk)| *partial = chunk_sum(chunk));
        self.sum = pairwise_total(&mut self.partials);
    }

    fn finish(self: Box<Self>) -> RunReport {
        let verification = verify(&self.x, self.sum);
        RunReport {
            work: Work::Bytes(self.x.len() as f64 * 4.0),
            output: json!({
                "n": self.x.len(),
                "sum": self.sum,
                "reference": reference_sum(&self.x),
            }),
            verification,
            artifact: None,
        }
    }
}

fn chunk_sum(chunk: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut blocks = chunk.chunks_exact(LANES);
    for block in &mut blocks {
        for (lane, x) in lanes.iter_mut().zip(block) {
            *lane += x;
        }
    }
    for (lane, x) in lanes.iter_mut().zip(blocks.remainder()) {
        *lane += x;
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
    }
    lanes[0]
}

/// Adds neighbours pairwise, level by level, in place; `values` must not be empty.
fn pairwise_total(values: &mut [f32]) -> f32 {
    let mut len = values.len();
    while len > 1 {
        for i in 0..len / 2 {
            values[i] = values[2 * i] + values[2 * i + 1];
        }
        if len % 2 == 1 {
            values[len / 2] = values[len - 1];
        }
        len = len.div_ceil(2);
    }
    values[0]
}

/// The most additions any element passes through on its way into the sum of `n` elements.
fn chain_length(n: usize) -> u32 {
    let in_lane = CHUNK.min(n).div_ceil(LANES) as u32;
    let across_lanes = LANES.ilog2();
    let across_chunks = n.div_ceil(CHUNK).next_power_of_two().ilog2();
    in_lane + across_lanes + across_chunks
}

/// The sum in double precision, sequentially: its own rounding error, below n·2⁻⁵³ of Σ|x|,
/// is far under the tolerance.
fn reference_sum(x: &[f32]) -> f64 {
    x.iter().map(|&v| v as f64).sum()
}

/// Compares `sum` with the sequential double-precision sum of `x`.
///
/// Summation with at most `k` additions per element errs by at most γ_k·Σ|x| with
/// γ_k = k·u/(1 − k·u) and u = ε/2 (Higham, *Accuracy and Stability of Numerical Algorithms*,
/// §4.2); `k·ε` is above that whenever `k·u < 1/2`, and is the tolerance.
fn verify(x: &[f32], sum: f32) -> Verification {
    let k = chain_length(x.len());
    let method = format!(
        "The sum compared with a sequential double-precision sum, error relative to Σ|x|; \
         the tolerance γ_k = k·ε_f32 bounds the rounding of a sum in which no element \
         passes through more than k = {k} additions ({CHUNK}/{LANES} in a lane, \
         log₂ {LANES} across lanes, log₂ of the chunk count across chunks)."
    );
    verify_with(x, sum, k, method)
}

/// Compares `sum` with the sequential double-precision sum of `x`, allowing the rounding of
/// a tree in which no element passes through more than `k` additions.
fn verify_with(x: &[f32], sum: f32, k: u32, method: String) -> Verification {
    let reference = reference_sum(x);
    let magnitude: f64 = x.iter().map(|&v| (v as f64).abs()).sum();
    // NaN and ∞ become f64::MAX: JSON has no number for them, and they must fail the check.
    let abs = (sum as f64 - reference).abs().min(f64::MAX);
    let rel = (abs / magnitude.max(f64::MIN_POSITIVE)).min(f64::MAX);
    let tolerance = k as f64 * f32::EPSILON as f64;
    Verification {
        passed: rel <= tolerance,
        max_abs_error: abs,
        max_rel_error: rel,
        tolerance,
        method,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GPU's order of additions, replayed on the host: each thread's four accumulators
    /// over its grid-stride share, joined, then pairwise levels as the shuffles do.
    fn gpu_order_sum(x: &[f32], blocks: u32) -> (f32, u32) {
        let threads = (blocks * BLOCK) as usize;
        let n4 = x.len() / 4;
        let mut thread_sums = Vec::with_capacity(threads);
        let mut longest = 0u32;
        for t in 0..threads {
            let mut acc = [0.0f32; 4];
            let mut adds = 0;
            let mut i = t;
            while i < n4 {
                for (lane, a) in acc.iter_mut().enumerate() {
                    *a += x[4 * i + lane];
                }
                adds += 1;
                i += threads;
            }
            let mut j = 4 * n4 + t;
            while j < x.len() {
                acc[0] += x[j];
                adds += 1;
                j += threads;
            }
            longest = longest.max(adds + 2);
            thread_sums.push((acc[0] + acc[1]) + (acc[2] + acc[3]));
        }
        let tree = |values: &mut Vec<f32>| {
            while values.len() > 1 {
                let half = values.len().div_ceil(2);
                for i in 0..values.len() / 2 {
                    values[i] = values[2 * i] + values[2 * i + 1];
                }
                if values.len() % 2 == 1 {
                    values[half - 1] = values[values.len() - 1];
                }
                values.truncate(half);
            }
        };
        let mut partials: Vec<f32> = thread_sums
            .chunks(BLOCK as usize)
            .map(|block| {
                let mut b = block.to_vec();
                tree(&mut b);
                b[0]
            })
            .collect();
        tree(&mut partials);
        (partials[0], longest)
    }

    #[test]
    fn the_gpu_tree_stays_within_its_chain_bound() {
        // Uneven: a tail of 3 elements, threads with one more float4 than others.
        for (n, blocks) in [(100_003usize, 8u32), (4 * 256 * 3 + 1, 3), (5, 1)] {
            let mut x = vec![0.0; n];
            rng::fill_uniform_f32(9, STREAM_X, &mut x, 0.0, 1.0);
            let (sum, longest) = gpu_order_sum(&x, blocks);
            let k = gpu_chain_length(n, blocks);
            // The deepest chain: a thread's own additions, then the block's tree and the
            // tree of the blocks' partial sums.
            let depth = longest + BLOCK.ilog2() + blocks.next_power_of_two().ilog2();
            assert!(depth <= k, "n={n}: depth {depth} past the bound {k}");
            let v = verify_with(&x, sum, k, String::new());
            assert!(v.passed, "n={n}: {v:?}");
        }
        // A sum off by far more than the tree's rounding fails.
        let x = vec![1.0f32; 1 << 16];
        assert!(
            !verify_with(
                &x,
                65536.0 * 1.001,
                gpu_chain_length(1 << 16, 4),
                String::new()
            )
            .passed
        );
    }
    use crate::kernels::harness;

    fn run(params: serde_json::Value) -> harness::Outcome {
        let params = serde_json::from_value(params).unwrap();
        let params = ResolvedParams::resolve(&ReduceSum.spec().params, Some(&params)).unwrap();
        let params = ReduceSumParams::from_params(&params).unwrap();
        harness::time_cpu_run(ReduceSum.prepare_cpu(&params).unwrap(), 2, |_, _| {})
    }

    #[test]
    fn the_sum_of_uniform_floats_is_near_half_of_n() {
        // Five chunks and a ragged last one, so the tree has an odd level.
        let n = 5 * CHUNK + 7;
        let outcome = run(json!({ "n": n, "seed": 11 }));
        let v = &outcome.result.verification;
        assert!(v.passed, "{v:?}");
        let sum = outcome.result.output["sum"].as_f64().unwrap();
        let reference = outcome.result.output["reference"].as_f64().unwrap();
        // Five standard deviations of a sum of n U(0, 1) values.
        assert!(
            (sum - n as f64 / 2.0).abs() < 5.0 * (n as f64 / 12.0).sqrt(),
            "{sum}"
        );
        assert!((sum - reference).abs() <= v.tolerance * reference);
    }

    #[test]
    fn tiny_inputs_sum_exactly() {
        let outcome = run(json!({ "n": 1 }));
        let v = &outcome.result.verification;
        assert!(v.passed && v.max_abs_error == 0.0, "{v:?}");
        assert_eq!(chain_length(1), 1 + 5);
    }

    #[test]
    fn the_tree_adds_every_element_once() {
        let mut ones = vec![1.0f32; 7];
        assert_eq!(pairwise_total(&mut ones), 7.0);
        let x: Vec<f32> = (0..CHUNK + LANES + 3).map(|i| (i % 7) as f32).collect();
        let exact: f32 = x.iter().map(|&v| v as f64).sum::<f64>() as f32;
        assert_eq!(chunk_sum(&x[..CHUNK]) + chunk_sum(&x[CHUNK..]), exact);
    }

    #[test]
    fn a_dropped_element_or_nan_is_caught() {
        let x: Vec<f32> = (0..10_000).map(|i| rng::uniform_f32(1, i)).collect();
        let mut partials = vec![0.0; x.len().div_ceil(CHUNK)];
        for (p, chunk) in partials.iter_mut().zip(x.chunks(CHUNK)) {
            *p = chunk_sum(chunk);
        }
        let sum = pairwise_total(&mut partials);
        assert!(verify(&x, sum).passed);
        let largest = x.iter().copied().fold(0.0, f32::max);
        assert!(!verify(&x, sum - largest).passed);
        assert!(!verify(&x, f32::NAN).passed);
    }
}

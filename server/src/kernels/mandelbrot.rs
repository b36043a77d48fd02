//! `mandelbrot`: the escape time of every pixel of a view of the Mandelbrot set, in double
//! precision, rendered to a PNG.

use std::f64::consts::TAU;

use gpulab_shared::{DeviceKind, KernelSpec, Verification};
use rayon::prelude::*;
use serde_json::json;

use super::gpu;
use super::params::{spec, FromParams, ParamError};
use super::{
    cuda_source, rng, Artifact, CpuRun, CudaSource, GpuRun, Kernel, PreparedGpu, ResolvedParams,
    RunReport, Work,
};
use crate::cuda::{DriverContext, Gpu, GpuError, Options};
use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

/// Pixels iterated together by one thread.
const LANES: usize = 8;

/// Pixels recomputed by the check.
const SAMPLE: usize = 4096;

/// The sequence that picks the checked pixels; fixed, so every run checks the same ones.
const SAMPLE_SEED: u64 = 0x6D61_6E64_656C;

/// The largest fraction of checked pixels whose iteration count may differ from the
/// reference. The CPU matches exactly; a GPU that fuses `x·y + c` into an FMA rounds
/// differently, which changes the count of a few pixels on chaotic orbits near the boundary.
const MISMATCH_TOLERANCE: f64 = 0.001;

/// The CUDA source of the GPU path, with the entry points it launches.
const CUDA: &[CudaSource] = &[cuda_source!("mandelbrot.cu", ["mandelbrot"])];

/// Escape-time rendering of the Mandelbrot set.
pub struct Mandelbrot;

impl Kernel for Mandelbrot {
    type Params = View;

    fn spec(&self) -> KernelSpec {
        KernelSpec {
            name: "mandelbrot".into(),
            description: "Counts, for every pixel of a view of the Mandelbrot set, the iterations \
                          of z ← z² + c before |z| > 2, in double precision, and renders them \
                          as a PNG image: a compute-bound test with uneven work per pixel."
                .into(),
            devices: vec![DeviceKind::Cpu, DeviceKind::Cuda],
            params: vec![
                spec::integer(
                    "width",
                    1024,
                    16,
                    8192,
                    Some("pixels"),
                    "Width of the image.",
                ),
                spec::integer(
                    "height",
                    768,
                    16,
                    8192,
                    Some("pixels"),
                    "Height of the image.",
                ),
                spec::integer(
                    "max_iter",
                    256,
                    1,
                    100_000,
                    Some("iterations"),
                    "Iterations after which a point counts as inside the set.",
                ),
                spec::number(
                    "center_x",
                    -0.5,
                    -4.0,
                    4.0,
                    None,
                    "Real part of the centre of the view.",
                ),
                spec::number(
                    "center_y",
                    0.0,
                    -4.0,
                    4.0,
                    None,
                    "Imaginary part of the centre of the view.",
                ),
                spec::number(
                    "span",
                    3.0,
                    1e-12,
                    10.0,
                    None,
                    "Width of the view in the complex plane; smaller zooms in.",
                ),
            ],
            throughput_formula: "width × height pixels / median time (Mpixels/s)".into(),
        }
    }

    fn cuda_sources(&self) -> &'static [CudaSource] {
        CUDA
    }

    fn memory_bytes(&self, params: &View) -> u64 {
        // Iteration counts (4 bytes), the RGB image (3) and, at most, its PNG (3 more).
        params.width as u64 * params.height as u64 * 10
    }

    fn prepare_cpu(&self, params: &View) -> Result<Box<dyn CpuRun>, String> {
        let view = *params;
        Ok(Box::new(MandelbrotRun {
            view,
            iterations: vec![0; view.width * view.height],
        }))
    }

    fn prepare_cuda(&self, params: &View, gpu: &mut Gpu) -> Result<PreparedGpu, GpuError> {
        gpu.ensure_fits(self.memory_bytes(params), "mandelbrot")?;
        // Each product rounded on its own, as on the host, so the counts match the
        // reference's exactly.
        let options = Options { no_fmad: true };
        let (module, report) = gpu.module(CUDA[0].file, CUDA[0].source, &options)?;
        let view = *params;
        let run = MandelbrotGpu {
            function: Gpu::function(&module, "mandelbrot")?,
            view,
            iterations: gpu::zeros(gpu, view.width * view.height)?,
        };
        Ok(PreparedGpu::new(run, vec![report]))
    }

    fn roofline_note(&self) -> &'static str {
        "none: the FLOPs per pixel depend on how many iterations each point takes to escape"
    }
}

/// The blocks of the CUDA kernel: 16 × 16 pixels.
const TILE: u32 = 16;

struct MandelbrotGpu {
    function: CudaFunction,
    view: View,
    iterations: CudaSlice<u32>,
}

impl GpuRun for MandelbrotGpu {
    fn step(&mut self, gpu: &Gpu) -> Result<(), GpuError> {
        let v = self.view;
        let (width, height, max_iter) = (v.width as u32, v.height as u32, v.max_iter);
        let mut launch = gpu.stream.launch_builder(&self.function);
        launch
            .arg(&mut self.iterations)
            .arg(&width)
            .arg(&height)
            .arg(&max_iter)
            .arg(&v.center_x)
            .arg(&v.center_y)
            .arg(&v.span);
        let cfg = LaunchConfig {
            grid_dim: (width.div_ceil(TILE), height.div_ceil(TILE), 1),
            block_dim: (TILE, TILE, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: mandelbrot(unsigned int*, unsigned int, unsigned int, unsigned int,
        // double, double, double) writes one count per pixel of the width × height buffer
        // and skips the threads outside it.
        unsafe { launch.launch(cfg) }.during("launching mandelbrot")?;
        Ok(())
    }

    fn finish(self: Box<Self>, gpu: &mut Gpu) -> Result<RunReport, GpuError> {
        let mut iterations = gpu::download(gpu, &self.iterations)?;
        iterations.truncate(self.view.width * self.view.height);
        Ok(report(self.view, &iterations))
    }
}

/// What part of the plane is drawn, and how finely: `span` wide across the image, with
/// square pixels and the imaginary axis pointing up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    width: usize,
    height: usize,
    max_iter: u32,
    center_x: f64,
    center_y: f64,
    span: f64,
}

impl FromParams for View {
    fn from_params(params: &ResolvedParams) -> Result<Self, ParamError> {
        let max_iter = params.integer("max_iter")?;
        Ok(View {
            width: params.count("width")?,
            height: params.count("height")?,
            max_iter: u32::try_from(max_iter).map_err(|_| ParamError {
                field: "params.max_iter".into(),
                detail: format!("`max_iter` must fit 32 bits, got {max_iter}"),
            })?,
            center_x: params.number("center_x")?,
            center_y: params.number("center_y")?,
            span: params.number("span")?,
        })
    }
}

impl View {
    /// The point at the centre of pixel `(px, py)`.
    fn point(&self, px: usize, py: usize) -> (f64, f64) {
        let step = self.span / self.width as f64;
        let x = self.center_x + (px as f64 + 0.5 - self.width as f64 / 2.0) * step;
        let y = self.center_y - (py as f64 + 0.5 - self.height as f64 / 2.0) * step;
        (x, y)
    }
}

struct MandelbrotRun {
    view: View,
    /// Row-major escape times; `max_iter` means the orbit never left the disc of radius 2.
    iterations: Vec<u32>,
}

impl CpuRun for MandelbrotRun {
    fn run(&mut self) {
        let view = self.view;
        // Rows are stolen one by one, which evens out the rows that cross the set and cost
        // `max_iter` iterations per pixel.
        self.iterations
            .par_chunks_mut(view.width)
            .enumerate()
            .for_each(|(py, row)| {
                for (group, counts) in row.chunks_mut(LANES).enumerate() {
                    // A short last group repeats the row's last pixel and drops its copies.
                    let c = std::array::from_fn(|lane| {
                        view.point((group * LANES + lane).min(view.width - 1), py)
                    });
                    let times = escape_times(c, view.max_iter);
                    counts.copy_from_slice(&times[..counts.len()]);
                }
            });
    }

    fn finish(self: Box<Self>) -> RunReport {
        report(self.view, &self.iterations)
    }
}

/// The check, the figures and the image of a finished run, whichever device ran it.
fn report(view: View, iterations: &[u32]) -> RunReport {
    {
        let inside = iterations.iter().filter(|&&i| i >= view.max_iter).count();
        let artifact = match render_png(view, iterations) {
            Ok(bytes) => Some(Artifact {
                content_type: "image/png".into(),
                bytes,
            }),
            Err(e) => {
                tracing::error!("could not encode the Mandelbrot image: {e}");
                None
            }
        };
        RunReport {
            work: Work::Pixels((view.width * view.height) as f64),
            verification: verify(view, iterations),
            output: json!({
                "width": view.width,
                "height": view.height,
                "max_iter": view.max_iter,
                "inside_fraction": inside as f64 / iterations.len() as f64,
            }),
            artifact,
        }
    }
}

/// The escape times of [`LANES`] neighbouring points `c`, iterated side by side.
///
/// One orbit is a chain of dependent multiplications and additions that leaves most of a
/// core idle; several independent ones fill its pipelines (and SIMD registers). A lane stays
/// active while its count equals the iteration number, so once it escapes it is counted no
/// more, and every count is the one the point alone would get.
fn escape_times(c: [(f64, f64); LANES], max_iter: u32) -> [u32; LANES] {
    let (mut x, mut y) = ([0.0f64; LANES], [0.0f64; LANES]);
    let mut counts = [0u32; LANES];
    for i in 0..max_iter {
        let mut any_active = false;
        for lane in 0..LANES {
            let (x2, y2) = (x[lane] * x[lane], y[lane] * y[lane]);
            let active = counts[lane] == i && x2 + y2 <= 4.0;
            counts[lane] += u32::from(active);
            any_active |= active;
            y[lane] = 2.0 * x[lane] * y[lane] + c[lane].1;
            x[lane] = x2 - y2 + c[lane].0;
        }
        if !any_active {
            break;
        }
    }
    counts
}

/// The escape time of pixel `(px, py)`, written apart from the kernel as plain complex
/// arithmetic but with the same roundings, so that on the CPU both agree exactly.
fn reference_escape_time(view: &View, px: usize, py: usize) -> u32 {
    let pixel = view.span / view.width as f64;
    let (half_w, half_h) = (0.5 * view.width as f64, 0.5 * view.height as f64);
    let c_re = view.center_x + pixel * ((px as f64 + 0.5) - half_w);
    let c_im = view.center_y - pixel * ((py as f64 + 0.5) - half_h);
    let (mut z_re, mut z_im) = (0.0f64, 0.0f64);
    for n in 0..view.max_iter {
        if z_re * z_re + z_im * z_im > 4.0 {
            return n;
        }
        let re = z_re * z_re - z_im * z_im + c_re;
        z_im = (z_re + z_re) * z_im + c_im;
        z_re = re;
    }
    view.max_iter
}

/// Recomputes a fixed sample of pixels (the four corners among them) one at a time and
/// counts those whose iteration count differs.
fn verify(view: View, iterations: &[u32]) -> Verification {
    let (w, h) = (view.width, view.height);
    let corners = [0, w - 1, (h - 1) * w, w * h - 1];
    let sample = rng::sample_indices(SAMPLE_SEED, w * h, SAMPLE, &corners);
    let (mut mismatched, mut largest) = (0usize, 0u32);
    for &index in &sample {
        let want = reference_escape_time(&view, index % w, index / w);
        let got = iterations.get(index).copied().unwrap_or(u32::MAX);
        if got != want {
            mismatched += 1;
            largest = largest.max(got.abs_diff(want));
        }
    }
    let fraction = mismatched as f64 / sample.len() as f64;
    Verification {
        passed: fraction <= MISMATCH_TOLERANCE && iterations.len() == w * h,
        max_abs_error: largest as f64,
        max_rel_error: fraction,
        tolerance: MISMATCH_TOLERANCE,
        method: format!(
            "{} pixels, the corners among them, recomputed one by one with the same arithmetic; \
             the error is the largest difference in iterations (absolute) and the fraction of \
             pixels that differ (relative), up to 0.1% of which may, because a GPU's fused \
             multiply-adds round differently on chaotic orbits.",
            sample.len()
        ),
    }
}

/// The image as an 8-bit RGB PNG: points inside the set black, the others coloured by their
/// escape time on a logarithmic scale, which keeps the bands near the set apart.
fn render_png(view: View, iterations: &[u32]) -> Result<Vec<u8>, png::EncodingError> {
    let palette: Vec<[u8; 3]> = (0..=view.max_iter)
        .map(|i| colour(i, view.max_iter))
        .collect();
    let rgb: Vec<u8> = iterations
        .iter()
        .flat_map(|&i| palette[i.min(view.max_iter) as usize])
        .collect();
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, view.width as u32, view.height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&rgb)?;
    writer.finish()?;
    Ok(bytes)
}

/// A cosine palette (after Íñigo Quílez): deep blue far out, through pale blue and cream,
/// to orange and brown at the boundary.
fn colour(iteration: u32, max_iter: u32) -> [u8; 3] {
    if iteration >= max_iter {
        return [0, 0, 0];
    }
    let t = (1.0 + iteration as f64).ln() / (1.0 + max_iter as f64).ln();
    let phases = [0.0, 0.10, 0.20];
    phases.map(|phase| {
        let c = 0.5 + 0.5 * (TAU * (t + phase + 0.5)).cos();
        (255.0 * (0.1 + 0.9 * c)).round() as u8
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::harness;

    fn small_view() -> View {
        View {
            width: 64,
            height: 48,
            max_iter: 100,
            center_x: -0.5,
            center_y: 0.0,
            span: 3.0,
        }
    }

    fn iterations(view: View) -> Vec<u32> {
        let mut run = MandelbrotRun {
            view,
            iterations: vec![0; view.width * view.height],
        };
        run.run();
        run.iterations
    }

    #[test]
    fn a_small_view_renders_and_passes() {
        // 100 is not a multiple of the lanes, so every row ends with a short group.
        let params =
            serde_json::from_value(json!({ "width": 100, "height": 64, "max_iter": 100 })).unwrap();
        let params = ResolvedParams::resolve(&Mandelbrot.spec().params, Some(&params)).unwrap();
        let params = View::from_params(&params).unwrap();
        let outcome = harness::time_cpu_run(Mandelbrot.prepare_cpu(&params).unwrap(), 2, |_, _| {});
        let v = &outcome.result.verification;
        assert!(v.passed && v.max_rel_error == 0.0, "{v:?}");
        let out = &outcome.result.output;
        assert_eq!(
            (out["width"].as_u64(), out["height"].as_u64()),
            (Some(100), Some(64))
        );
        // The set covers about 1.5 of the 5.8 square units in view.
        let inside = out["inside_fraction"].as_f64().unwrap();
        assert!((0.2..0.35).contains(&inside), "{inside}");

        let artifact = outcome.artifact.expect("a PNG image");
        assert_eq!(artifact.content_type, "image/png");
        assert_eq!(&artifact.bytes[..8], b"\x89PNG\r\n\x1a\n");
        let mut reader = png::Decoder::new(std::io::Cursor::new(&artifact.bytes))
            .read_info()
            .unwrap();
        let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
        let frame = reader.next_frame(&mut rgb).unwrap();
        assert_eq!(
            (frame.width, frame.height, frame.color_type),
            (100, 64, png::ColorType::Rgb)
        );
        let pixel = |x: usize, y: usize| &rgb[(y * 100 + x) * 3..][..3];
        // The centre, c ≈ -0.5, lies in the main cardioid; the corner, c ≈ -2 + i, escapes.
        assert_eq!(pixel(50, 32), [0, 0, 0]);
        assert_ne!(pixel(0, 0), [0, 0, 0]);
    }

    #[test]
    fn lanes_count_exactly_as_the_reference_near_the_boundary() {
        // Seahorse valley: long, chaotic orbits next to escaping ones in every lane group.
        let view = View {
            width: 37,
            height: 29,
            max_iter: 2000,
            center_x: -0.7436,
            center_y: 0.1318,
            span: 0.01,
        };
        let counts = iterations(view);
        let v = verify(view, &counts);
        assert!(v.passed && v.max_rel_error == 0.0, "{v:?}");
        assert!(counts.contains(&view.max_iter) && counts.iter().any(|&i| i > 100 && i < 2000));
    }

    #[test]
    fn the_view_is_centred_and_square() {
        let view = small_view();
        let (x, y) = view.point(0, 0);
        let step = 3.0 / 64.0;
        assert_eq!((x, y), (-2.0 + step / 2.0, 1.125 - step / 2.0));
        let (x, y) = view.point(63, 47);
        assert_eq!((x, y), (1.0 - step / 2.0, -1.125 + step / 2.0));
    }

    #[test]
    fn wrong_counts_beyond_the_allowance_are_caught() {
        let view = small_view();
        let good = iterations(view);
        assert!(verify(view, &good).passed);

        // One pixel in 3072 is within the allowance a GPU's FMA needs, and is reported.
        let mut one = good.clone();
        one[100] += 3;
        let v = verify(view, &one);
        assert!(v.passed);
        assert_eq!((v.max_abs_error, v.max_rel_error), (3.0, 1.0 / 3072.0));

        let mut many = good.clone();
        many.iter_mut()
            .step_by(50)
            .for_each(|i| *i = i.saturating_sub(1));
        assert!(!verify(view, &many).passed);

        // An image of another view is wrong, although every count is plausible.
        let shifted = View {
            center_x: -0.4,
            ..view
        };
        assert!(!verify(view, &iterations(shifted)).passed);
        assert!(!verify(view, &good[1..]).passed);
    }

    #[test]
    fn the_palette_keeps_black_for_the_inside() {
        assert_eq!(colour(256, 256), [0, 0, 0]);
        for i in 0..256 {
            assert_ne!(colour(i, 256), [0, 0, 0], "iteration {i}");
        }
    }
}

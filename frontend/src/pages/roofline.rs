use std::collections::BTreeSet;

use gpulab_shared::peaks::Roofline;
use gpulab_shared::{Device, DeviceKind, Job, JobStatus, KernelSpec};
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

use crate::api::{self, ApiError, JobFilter};
use crate::components::{error_list, RooflineChart};
use crate::format;
use crate::hooks::use_title;
use crate::kernel_form::enum_choices;
use crate::live::use_live_events;
use crate::roofline::{self, Rung};

/// The newest matmul jobs the ladder looks through.
const LADDER_JOBS: u32 = 500;

/// `/devices/:id/roofline`: the device's roofline with every finished job on it, and the
/// matmul ladder from the naive kernel to the tensor cores.
#[component]
pub fn RooflinePage() -> impl IntoView {
    let params = use_params_map();
    let id = Memo::new(move |_| params.with(|p| p.get("id").unwrap_or_default()));
    use_title(move || format!("Roofline of {}", id.get()));
    let data = LocalResource::new(move || {
        let id = id.get();
        async move {
            let device = api::device(&id).await?;
            let roofline = api::device_roofline(&id).await?;
            let filter = JobFilter {
                status: Some(JobStatus::Succeeded),
                device: Some(id.clone()),
                kernel: Some("matmul".to_owned()),
            };
            let matmuls = api::jobs(filter, None, LADDER_JOBS).await?.jobs;
            let kernels = api::kernels().await?;
            let rungs = rungs_on(&kernels, &id);
            Ok::<_, ApiError>((device, roofline, matmuls, rungs))
        }
    });
    view! {
        <h1>{move || format!("Roofline of {}", id.get())}</h1>
        <Suspense fallback=|| view! { <p class="loading">"Loading the roofline…"</p> }>
            <ErrorBoundary fallback=error_list>
                {move || Suspend::new(async move {
                    let (device, roofline, matmuls, rungs) = data.await?;
                    let redraw = Callback::new(move |()| data.refetch());
                    Ok::<_, ApiError>(view! { <RooflineView device roofline matmuls rungs redraw /> })
                })}
            </ErrorBoundary>
        </Suspense>
    }
}

#[component]
fn RooflineView(
    device: Device,
    roofline: Roofline,
    matmuls: Vec<Job>,
    rungs: Vec<Rung>,
    /// Fetches the roofline again, with the jobs that finished since.
    redraw: Callback<()>,
) -> impl IntoView {
    // Jobs of this device that finished with a roofline point after it was drawn, as the
    // event stream reports them: the page offers to redraw rather than moving the markers
    // under the pointer.
    let live = use_live_events();
    let drawn: BTreeSet<i64> = roofline.points.iter().map(|p| p.job_id).collect();
    let device_id = device.id.clone();
    let newer = Memo::new(move |_| {
        live.with_jobs(|jobs| {
            jobs.values()
                .filter(|j| j.device == device_id && j.status == JobStatus::Succeeded)
                .filter(|j| j.result.as_ref().is_some_and(|r| r.roofline.is_some()))
                .filter(|j| !drawn.contains(&j.id))
                .count()
        })
    });
    let no_peaks = roofline.bandwidth.is_none() && roofline.ceilings.is_empty();
    let no_points = roofline.points.is_empty();
    let launch = |kernel: &str| format!("/launch?device={}&kernel={kernel}", device.id);
    view! {
        <p class="help">
            {format!("{} ({}). ", device.name, device.id)}
            "Each point is a finished job at its arithmetic intensity (FLOPs per byte of memory \
             traffic, by the kernel's formula) and the throughput it reached. Left of the ridge \
             point a kernel is limited by memory bandwidth (the slope), right of it by \
             arithmetic (the ceiling of its data type). Both axes are logarithmic."
        </p>
        {no_peaks.then(|| view! {
            <p class="notice warn" data-testid="roofline-no-peaks">
                "The server knows no peaks for this device, so there is no roof to draw: it \
                 works them out from the clocks, core counts and memory bus the device reports \
                 and from its architecture table (for the CPU, from a measured memory \
                 bandwidth), and none of these was available here. The jobs are still drawn at \
                 what they reached."
            </p>
        })}
        {no_points.then(|| view! {
            <p class="notice info" data-testid="roofline-no-points">
                "No finished job is on this roofline yet. Run "
                <a href=launch("matmul")>"matmul"</a>
                " (arithmetic-bound: it lands under a ceiling) or "
                <a href=launch("vector_add")>"vector_add"</a>
                " (memory-bound: it lands on the slope) on this device, then come back."
            </p>
        })}
        <Show when=move || { newer.get() > 0 }>
            <p class="notice info" data-testid="roofline-newer" role="status">
                {move || match newer.get() {
                    1 => "1 more job has finished on this device since the roofline was drawn. "
                        .to_owned(),
                    n => format!("{n} more jobs have finished on this device since the roofline was drawn. "),
                }}
                <button type="button" data-testid="roofline-redraw" on:click=move |_| redraw.run(())>
                    "Redraw"
                </button>
            </p>
        </Show>
        <div class="cards">
            <RooflineChart roofline />
            <Ladder device matmuls rungs />
        </div>
    }
}

/// The matmul ladder of one square size: each step's best share of its peak, so that the
/// distance from the teaching kernels to the libraries shows.
#[component]
fn Ladder(device: Device, matmuls: Vec<Job>, rungs: Vec<Rung>) -> impl IntoView {
    let launch = format!("/launch?device={}&kernel=matmul", device.id);
    let body = if device.kind == DeviceKind::Cpu {
        view! {
            <p class="help" data-testid="ladder-cpu">
                "The ladder is a GPU lesson: on the CPU every matmul variant runs the same \
                 SGEMM (the matrixmultiply crate), so there are no steps to climb. Its matmul \
                 jobs are on the roofline above; open a GPU's roofline for the ladder."
            </p>
        }
        .into_any()
    } else {
        let sizes = roofline::ladder_sizes(&matmuls);
        match sizes.first().copied() {
            None => view! {
                <p class="help" data-testid="ladder-empty">
                    "No finished square matmul (m = n = k) on this device yet. "
                    <a href=launch>"Launch matmul"</a>
                    " with the same n (m = n = k) for each step: "
                    {rungs.iter().map(|r| r.how()).collect::<Vec<_>>().join("; ")}
                    "."
                </p>
            }
            .into_any(),
            Some(n) => ladder_of_size(&device.id, &matmuls, n, &sizes, &rungs).into_any(),
        }
    };
    view! {
        <section class="card ladder" aria-labelledby="ladder-heading" data-testid="ladder">
            <h2 id="ladder-heading">"Matmul ladder"</h2>
            {body}
        </section>
    }
}

fn ladder_of_size(
    device: &str,
    jobs: &[Job],
    n: u64,
    sizes: &[u64],
    rungs: &[Rung],
) -> impl IntoView {
    let steps = roofline::ladder(jobs, n, rungs);
    let others = (sizes.len() > 1).then(|| {
        let others: Vec<String> = sizes.iter().skip(1).map(u64::to_string).collect();
        format!(" Other sizes run: n = {}.", others.join(", "))
    });
    let rows = steps
        .into_iter()
        .map(|step| {
            let launch = format!("/launch?device={device}&kernel=matmul");
            let (share, width, job) = match &step.job {
                Some(job) => {
                    let fraction = job
                        .result
                        .as_ref()
                        .and_then(|r| r.fraction_of_peak.as_ref());
                    let share = fraction.map(roofline::fraction_line).unwrap_or_default();
                    let width = fraction.map_or(0.0, |f| f.fraction.clamp(0.0, 1.0) * 100.0);
                    let throughput = job
                        .result
                        .as_ref()
                        .map(|r| roofline::rate(r.throughput.value, &r.throughput.unit))
                        .unwrap_or_else(|| format::UNKNOWN.to_owned());
                    let link = view! {
                        <a href=format!("/jobs/{}", job.id)>{format!("job {}", job.id)}</a>
                        {format!(", {throughput}")}
                    }
                    .into_any();
                    (share, width, link)
                }
                None => (
                    String::new(),
                    0.0,
                    view! {
                        "not run yet: "
                        <a href=launch>"launch matmul"</a>
                        {format!(" with m = n = k = {n}, {}", step.rung.how())}
                    }
                    .into_any(),
                ),
            };
            view! {
                <li class="bar-row" data-rung=rung_id(step.rung)>
                    <div class="bar-label">
                        <strong>{step.rung.title()}</strong>
                        " "
                        {job}
                    </div>
                    <div class="bar-track" aria-hidden="true">
                        <div class="bar-fill" style=format!("width: {width:.1}%")></div>
                    </div>
                    <span class="bar-figure">{share}</span>
                </li>
            }
        })
        .collect_view();
    view! {
        <p class="help">
            {format!(
                "Square matmuls of n = {n}, each step's best job as a share of its own peak \
                 (the SIMT fp32 peak for the fp32 steps, the tensor-core type's for the tensor cores)."
            )}
            {others}
        </p>
        <ul class="bars">{rows}</ul>
    }
}

/// The ladder's rungs on device `id`: the matmul variants of the catalog, and the tensor
/// cores where the device runs a tensor-core `dtype`.
fn rungs_on(kernels: &[KernelSpec], id: &str) -> Vec<Rung> {
    let Some(matmul) = kernels.iter().find(|k| k.name == "matmul") else {
        return Vec::new();
    };
    let param = |name: &str| matmul.params.iter().find(|p| p.name == name);
    let variants = param("variant").map_or_else(Vec::new, |p| enum_choices(p, &[]));
    let dtypes = param("dtype").map_or_else(Vec::new, |p| enum_choices(p, &[id.to_owned()]));
    roofline::offered_rungs(&variants, &dtypes)
}

fn rung_id(rung: Rung) -> &'static str {
    match rung {
        Rung::Naive => "naive",
        Rung::Tiled => "tiled",
        Rung::RegisterTiled => "register_tiled",
        Rung::Cublas => "cublas",
        Rung::TensorCores => "tensor_cores",
    }
}

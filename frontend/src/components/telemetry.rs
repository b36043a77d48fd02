use gpulab_shared::{DeviceKind, TelemetrySample};
use leptos::prelude::*;

use super::sparkline::{Series, Sparkline};
use crate::api;
use crate::format::{self, UNKNOWN};
use crate::live::{use_live_events, TelemetryTrack};

/// What a device is doing now: its latest readings, and the main ones over the last minutes.
///
/// The history comes from `GET /api/devices/{id}/telemetry` (again after each reconnection
/// of the event stream, to fill the gap) and grows with every `telemetry` event.
#[component]
pub fn TelemetryPanel(device: String, kind: DeviceKind) -> impl IntoView {
    let live = use_live_events();
    let track = live.telemetry(&device);
    let history = LocalResource::new({
        let device = device.clone();
        move || {
            let synced = live.sync().is_some();
            let device = device.clone();
            async move {
                if !synced {
                    return None;
                }
                let fetched = api::device_telemetry(&device).await.map(|telemetry| {
                    // The card may be gone by now; then there is nothing to fill.
                    track.try_update(|track| track.merge(telemetry.history));
                    telemetry.notes
                });
                Some(fetched)
            }
        }
    });
    // Drawn again only when they change, so a reconnection does not fold them up again.
    let notes = Memo::new(move |_| history.get().flatten());
    let has_processes = Memo::new(move |_| {
        track.with(|t| {
            t.latest()
                .and_then(|s| s.gpu.as_ref()?.processes.as_ref())
                .is_some_and(|p| !p.is_empty())
        })
    });
    let (charts, facts) = match kind {
        DeviceKind::Cpu => (&CPU_CHARTS[..], &CPU_FACTS[..]),
        DeviceKind::Cuda => (&GPU_CHARTS[..], &GPU_FACTS[..]),
    };
    let as_of = move || {
        track.with(|t| {
            t.latest()
                .map(|s| format!("as of {}", format::local_clock(&s.at)))
        })
    };
    let heading_id = format!("telemetry-heading-{device}");
    let labelled_by = heading_id.clone();
    view! {
        <section
            class="telemetry"
            data-testid=format!("telemetry-{device}")
            aria-labelledby=labelled_by
        >
            <div class="telemetry-header">
                <h3 id=heading_id>"Now"</h3>
                <span class="help">{as_of}</span>
            </div>
            <div class="charts">
                {charts.iter().map(|chart| view! { <ChartView chart track /> }).collect_view()}
            </div>
            <dl class="facts">
                {facts
                    .iter()
                    .map(|fact| {
                        let value = Memo::new(move |_| {
                            track.with(|t| t.latest().and_then(fact.value))
                        });
                        view! {
                            <dt>{fact.label}</dt>
                            <dd>{move || value.get().unwrap_or_else(|| UNKNOWN.to_owned())}</dd>
                        }
                    })
                    .collect_view()}
            </dl>
            <Show when=move || has_processes.get()>
                <p class="help">
                    "Process IDs are the host's as the driver reports them: inside a container \
                     they differ from the container's own unless it runs with --pid=host."
                </p>
            </Show>
            {move || match notes.get() {
                None => None,
                Some(Ok(notes)) if notes.is_empty() => None,
                // What the figures cannot say matters once, not at every glance: folded away.
                Some(Ok(notes)) => Some(
                    view! {
                        <details class="notes">
                            <summary>"About these figures"</summary>
                            {notes
                                .into_iter()
                                .map(|note| view! { <p class="help">{note}</p> })
                                .collect_view()}
                        </details>
                    }
                        .into_any(),
                ),
                Some(Err(error)) => Some(
                    view! { <p class="help">{format!("No telemetry history: {error}")}</p> }
                        .into_any(),
                ),
            }}
        </section>
    }
}

/// A metric drawn as a sparkline, under its name and latest value.
struct Chart {
    /// The sparkline is `sparkline-<id>`, the value `value-<id>`.
    id: &'static str,
    /// Its name on the card.
    caption: &'static str,
    /// Its name for a screen reader, which may hear it apart from the card.
    name: &'static str,
    /// The value drawn, from one sample.
    value: fn(&TelemetrySample) -> Option<f64>,
    /// The top of the scale, from the latest sample; without one the scale fits the values.
    ceiling: fn(&TelemetrySample) -> Option<f64>,
    /// Whether the scale starts at zero rather than at the lowest value.
    from_zero: bool,
    /// The least span of a scale that fits the values, from the latest sample.
    min_span: fn(&TelemetrySample) -> f64,
    /// How a value of the line reads.
    show: fn(f64) -> String,
    /// The latest value as the card shows it.
    current: fn(&TelemetrySample) -> Option<String>,
    /// A word on the latest value, beside the name, such as the power limit.
    note: fn(&TelemetrySample) -> Option<String>,
}

impl Chart {
    fn series(&self, track: &TelemetryTrack) -> Series {
        let Some(origin) = track.samples().next().map(|s| s.at) else {
            return Series::default();
        };
        let points = track
            .samples()
            .filter_map(|s| {
                let t = (s.at - origin).num_milliseconds() as f64 / 1000.0;
                (self.value)(s).filter(|v| v.is_finite()).map(|v| (t, v))
            })
            .collect();
        Series {
            points,
            floor: self.from_zero.then_some(0.0),
            ceiling: track.latest().and_then(self.ceiling),
            min_span: track.latest().map_or(0.0, self.min_span),
        }
    }
}

#[component]
fn ChartView(chart: &'static Chart, track: RwSignal<TelemetryTrack>) -> impl IntoView {
    let series = Memo::new(move |_| track.with(|t| chart.series(t)));
    let current = Memo::new(move |_| track.with(|t| t.latest().and_then(chart.current)));
    let note = Memo::new(move |_| track.with(|t| t.latest().and_then(chart.note)));
    view! {
        <figure class="chart">
            <figcaption>
                <span class="name">
                    <span>{chart.caption}</span>
                    <span class="note">{note}</span>
                </span>
                <span class="value" data-testid=format!("value-{}", chart.id)>
                    {move || current.get().unwrap_or_else(|| UNKNOWN.to_owned())}
                </span>
            </figcaption>
            <Sparkline metric=chart.id name=chart.name.to_owned() series show=chart.show />
        </figure>
    }
}

/// A latest reading shown as text.
struct Fact {
    label: &'static str,
    value: fn(&TelemetrySample) -> Option<String>,
}

fn percent(ratio: f64) -> String {
    format::percent(ratio / 100.0)
}

fn bytes(n: f64) -> String {
    format::bytes(n.max(0.0) as u64)
}

static CPU_CHARTS: [Chart; 2] = [
    Chart {
        id: "utilization",
        caption: "Utilisation",
        name: "CPU utilisation",
        value: |s| Some(s.cpu.as_ref()?.utilization_ratio? * 100.0),
        ceiling: |_| Some(100.0),
        from_zero: true,
        min_span: |_| 0.0,
        show: percent,
        current: |s| Some(format::percent(s.cpu.as_ref()?.utilization_ratio?)),
        note: |_| None,
    },
    Chart {
        id: "memory",
        caption: "Memory used",
        name: "Host memory used",
        value: |s| Some(s.cpu.as_ref()?.memory_used_bytes? as f64),
        // Fitted, so a job's allocation shows on a host with far more memory than it uses.
        ceiling: |_| None,
        from_zero: false,
        min_span: |s| {
            s.cpu
                .as_ref()
                .and_then(|c| c.memory_total_bytes)
                .map_or(0.0, |total| total as f64 / 20.0)
        },
        show: bytes,
        current: |s| Some(format::bytes(s.cpu.as_ref()?.memory_used_bytes?)),
        note: |_| None,
    },
];

static CPU_FACTS: [Fact; 2] = [
    Fact {
        label: "Load (1, 5, 15 min)",
        value: |s| {
            let [one, five, fifteen] = s.cpu.as_ref()?.load_average?;
            Some(format!("{one:.2} · {five:.2} · {fifteen:.2}"))
        },
    },
    Fact {
        label: "Temperature",
        value: |s| Some(format::celsius(s.cpu.as_ref()?.temperature_celsius?)),
    },
];

static GPU_CHARTS: [Chart; 4] = [
    Chart {
        id: "utilization",
        caption: "Utilisation",
        name: "GPU utilisation",
        value: |s| Some(s.gpu.as_ref()?.utilization_ratio? * 100.0),
        ceiling: |_| Some(100.0),
        from_zero: true,
        min_span: |_| 0.0,
        show: percent,
        current: |s| Some(format::percent(s.gpu.as_ref()?.utilization_ratio?)),
        note: |_| None,
    },
    Chart {
        id: "memory",
        caption: "Memory used",
        name: "GPU memory used",
        value: |s| Some(s.gpu.as_ref()?.memory_used_bytes? as f64),
        ceiling: |_| None,
        from_zero: false,
        min_span: |s| {
            s.gpu
                .as_ref()
                .and_then(|g| g.memory_total_bytes)
                .map_or(0.0, |total| total as f64 / 20.0)
        },
        show: bytes,
        current: |s| Some(format::bytes(s.gpu.as_ref()?.memory_used_bytes?)),
        note: |_| None,
    },
    Chart {
        id: "power",
        caption: "Power",
        name: "GPU power draw",
        value: |s| s.gpu.as_ref()?.power_watts,
        ceiling: |s| s.gpu.as_ref()?.power_limit_watts,
        from_zero: true,
        min_span: |_| 0.0,
        show: format::watts,
        current: |s| Some(format::watts(s.gpu.as_ref()?.power_watts?)),
        note: |s| {
            Some(format!(
                "limit {}",
                format::watts(s.gpu.as_ref()?.power_limit_watts?)
            ))
        },
    },
    Chart {
        id: "temperature",
        caption: "Temperature",
        name: "GPU temperature",
        value: |s| s.gpu.as_ref()?.temperature_celsius,
        ceiling: |_| None,
        from_zero: false,
        min_span: |_| 10.0,
        show: format::celsius,
        current: |s| Some(format::celsius(s.gpu.as_ref()?.temperature_celsius?)),
        note: |_| None,
    },
];

static GPU_FACTS: [Fact; 10] = [
    Fact {
        label: "Memory activity",
        value: |s| Some(format::percent(s.gpu.as_ref()?.memory_utilization_ratio?)),
    },
    Fact {
        label: "Clocks",
        value: |s| {
            let gpu = s.gpu.as_ref()?;
            let mhz = |v: Option<u32>| format::or_dash(v.map(|v| format!("{v} MHz")));
            (gpu.sm_clock_mhz.is_some() || gpu.memory_clock_mhz.is_some()).then(|| {
                format!(
                    "SM {} · memory {}",
                    mhz(gpu.sm_clock_mhz),
                    mhz(gpu.memory_clock_mhz)
                )
            })
        },
    },
    Fact {
        label: "Performance state",
        value: |s| Some(format!("P{}", s.gpu.as_ref()?.performance_state?)),
    },
    Fact {
        label: "Throttle reasons",
        value: |s| {
            let reasons = s.gpu.as_ref()?.throttle_reasons.as_ref()?;
            Some(if reasons.is_empty() {
                "none".to_owned()
            } else {
                reasons
                    .iter()
                    .map(|r| r.replace('_', " "))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        },
    },
    Fact {
        label: "Fan",
        value: |s| Some(format::percent(s.gpu.as_ref()?.fan_speed_ratio?)),
    },
    Fact {
        label: "PCIe link",
        value: |s| {
            let gpu = s.gpu.as_ref()?;
            (gpu.pcie_generation.is_some() || gpu.pcie_width.is_some()).then(|| {
                format!(
                    "Gen {} ×{}",
                    format::or_dash(gpu.pcie_generation),
                    format::or_dash(gpu.pcie_width)
                )
            })
        },
    },
    Fact {
        label: "PCIe traffic",
        value: |s| {
            let gpu = s.gpu.as_ref()?;
            let rate = |r: Option<f64>| format::or_dash(r.map(format::bytes_per_second));
            (gpu.pcie_tx_bytes_per_second.is_some() || gpu.pcie_rx_bytes_per_second.is_some()).then(
                || {
                    format!(
                        "{} out · {} in",
                        rate(gpu.pcie_tx_bytes_per_second),
                        rate(gpu.pcie_rx_bytes_per_second)
                    )
                },
            )
        },
    },
    Fact {
        label: "ECC errors",
        value: |s| {
            let gpu = s.gpu.as_ref()?;
            (gpu.ecc_corrected_errors.is_some() || gpu.ecc_uncorrected_errors.is_some()).then(
                || {
                    format!(
                        "{} corrected · {} uncorrected",
                        format::or_dash(gpu.ecc_corrected_errors),
                        format::or_dash(gpu.ecc_uncorrected_errors)
                    )
                },
            )
        },
    },
    Fact {
        label: "Retired memory",
        value: |s| {
            let gpu = s.gpu.as_ref()?;
            match (&gpu.remapped_rows, gpu.retired_pages) {
                (Some(rows), _) => {
                    let mut text = format!(
                        "{} correctable · {} uncorrectable rows remapped",
                        rows.correctable, rows.uncorrectable
                    );
                    if rows.pending {
                        text.push_str(" · remap pending (reset the GPU)");
                    }
                    if rows.failed {
                        text.push_str(" · a remap failed");
                    }
                    Some(text)
                }
                (None, Some(pages)) => Some(format!("{pages} pages retired")),
                (None, None) => None,
            }
        },
    },
    Fact {
        label: "Processes",
        value: |s| {
            let processes = s.gpu.as_ref()?.processes.as_ref()?;
            Some(if processes.is_empty() {
                "none".to_owned()
            } else {
                processes
                    .iter()
                    .map(|p| {
                        format!(
                            "PID {} ({})",
                            p.pid,
                            format::or_dash(p.used_memory_bytes.map(format::bytes))
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
        },
    },
];

use std::time::Duration;

use gpulab_shared::diag::Verdict;
use gpulab_shared::fleet::{Fleet, FleetDevice, FleetNode};
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::api::{self, ApiError};
use crate::components::ErrorNotice;
use crate::format::{self, UNKNOWN};
use crate::hooks::use_title;

/// How often the page asks the server again.
const REFRESH_PERIOD: Duration = Duration::from_secs(5);

/// `/fleet`: every gpulab node the server's Prometheus scrapes, up or down, with each
/// device's figures, asked again every few seconds. A failed refresh keeps the last fleet
/// shown under the error.
#[component]
pub fn FleetPage() -> impl IntoView {
    use_title(|| "Fleet".to_owned());
    let fleet = RwSignal::new(None::<Fleet>);
    let error = RwSignal::new(None::<ApiError>);
    // A slow Prometheus (the server waits 5 s for it) must not pile up requests.
    let asking = StoredValue::new(false);
    let refresh = move || {
        if asking.get_value() {
            return;
        }
        asking.set_value(true);
        spawn_local(async move {
            match api::fleet().await {
                Ok(answer) => {
                    fleet.set(Some(answer));
                    error.set(None);
                }
                Err(e) => error.set(Some(e)),
            }
            asking.set_value(false);
        });
    };
    refresh();
    match set_interval_with_handle(refresh, REFRESH_PERIOD) {
        Ok(handle) => on_cleanup(move || handle.clear()),
        Err(err) => leptos::logging::warn!("the fleet is not refreshed: {err:?}"),
    }

    view! {
        <h1>"Fleet"</h1>
        {move || error.get().map(|error| view! { <ErrorNotice error /> })}
        {move || match fleet.get() {
            None if error.with(Option::is_none) => {
                view! { <p class="loading">"Asking Prometheus…"</p> }.into_any()
            }
            None => ().into_any(),
            Some(fleet) if !fleet.configured => view! { <SetUp fleet /> }.into_any(),
            Some(fleet) => view! { <FleetView fleet /> }.into_any(),
        }}
    }
}

/// The server has no Prometheus: what to do about it.
#[component]
fn SetUp(fleet: Fleet) -> impl IntoView {
    view! {
        <section class="notice warn" data-testid="fleet-setup">
            <p>
                <strong>"No Prometheus is set. "</strong>
                {fleet.setup}
            </p>
            <p>"For example:"</p>
            <pre>"gpulab serve --prometheus-url http://prometheus:9090"</pre>
            <p>
                "Prometheus scrapes each node's " <code>"/metrics"</code>
                "; a node's link here is " <code>"http://{instance}/"</code>
                " unless " <code>"--fleet-node-url"</code> " says otherwise."
            </p>
        </section>
    }
}

#[component]
fn FleetView(fleet: Fleet) -> impl IntoView {
    let up = fleet.nodes.iter().filter(|n| n.up).count();
    let down = fleet.nodes.len() - up;
    let source = fleet.prometheus_url.clone().unwrap_or_default();
    let when = fleet
        .queried_at
        .as_ref()
        .map(format::local_clock)
        .unwrap_or_default();
    let empty = fleet.nodes.is_empty();
    view! {
        <p class="summary">
            <span data-testid="fleet-count">
                {format!("{} node(s): {up} up, {down} down", fleet.nodes.len())}
            </span>
            <span class="help">
                " · from Prometheus at " <code>{source}</code> {format!(" at {when}, every {} s", REFRESH_PERIOD.as_secs())}
            </span>
        </p>
        {empty.then(|| view! {
            <p class="notice warn" data-testid="fleet-empty">
                "Prometheus knows no gpulab node: none of its targets has served "
                <code>"gpulab_build_info"</code>
                " in the last hour. Add each node's /metrics to its scrape configuration."
            </p>
        })}
        <div class="fleet-nodes">
            {fleet.nodes.into_iter().map(|node| view! { <NodeCard node /> }).collect_view()}
        </div>
    }
}

#[component]
fn NodeCard(node: FleetNode) -> impl IntoView {
    let heading = format!(
        "node-{}",
        node.instance
            .replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    );
    let (state, symbol, class) = if node.up {
        ("up", "▲", "badge node-up")
    } else {
        ("down", "▼", "badge node-down")
    };
    let name = match node.url.clone() {
        Some(url) => {
            view! { <a href=url data-testid="fleet-node-link">{node.instance.clone()}</a> }
                .into_any()
        }
        None => view! { <span>{node.instance.clone()}</span> }.into_any(),
    };
    let down_note = (!node.up).then(|| {
        view! {
            <p class="notice error" data-testid="fleet-node-down">
                "Prometheus cannot scrape this node: its gpulab is down or unreachable. "
                "The devices below are the last it reported; their figures are unknown."
            </p>
        }
    });
    let devices = node.devices;
    let heading_ref = heading.clone();
    view! {
        <article
            class="card fleet-node"
            data-testid="fleet-node"
            data-instance=node.instance.clone()
            data-up=node.up.to_string()
            aria-labelledby=heading_ref
        >
            <header class="card-header">
                <h2 id=heading>{name}</h2>
                <span class=class data-testid="fleet-node-state">
                    <span aria-hidden="true">{symbol}" "</span>
                    {state}
                </span>
            </header>
            <p class="device-id">"job " <code>{node.job}</code></p>
            {down_note}
            <div class="table-scroll">
                <table class="jobs fleet-devices">
                    <thead>
                        <tr>
                            <th scope="col">"Device"</th>
                            <th scope="col">"Model"</th>
                            <th scope="col" class="num">"Temperature"</th>
                            <th scope="col" class="num">"Power"</th>
                            <th scope="col" class="num">"Utilisation"</th>
                            <th scope="col" class="num">"Memory used"</th>
                            <th scope="col">"Last diagnostic"</th>
                        </tr>
                    </thead>
                    <tbody>
                        {devices.into_iter().map(|device| view! { <DeviceRow device up=node.up /> }).collect_view()}
                    </tbody>
                </table>
            </div>
        </article>
    }
}

#[component]
fn DeviceRow(device: FleetDevice, up: bool) -> impl IntoView {
    let absent = (!device.reported).then(|| {
        let text = if up {
            "gone from its inventory"
        } else {
            "last seen"
        };
        view! { " " <span class="badge status-interrupted">{text}</span> }
    });
    let memory = match (device.memory_used_bytes, device.memory_total_bytes) {
        (Some(used), Some(total)) if total > 0 => format!(
            "{} of {} ({})",
            format::bytes(used),
            format::bytes(total),
            format::percent(used as f64 / total as f64)
        ),
        (Some(used), _) => format::bytes(used),
        _ => UNKNOWN.to_owned(),
    };
    let diagnostic = match device.diagnostic {
        Some(d) => {
            let when = d
                .finished_at
                .as_ref()
                .map(|t| format!(", {}", format::local_time(t)))
                .unwrap_or_default();
            let class = match d.verdict {
                Verdict::Pass => "badge status-succeeded",
                Verdict::Warn => "badge status-cancelled",
                Verdict::Fail => "badge status-failed",
                Verdict::Skip => "badge",
            };
            view! {
                <span class=class>{d.verdict.as_str()}</span>
                <span class="help">{format!(" level {}{when}", d.level)}</span>
            }
            .into_any()
        }
        None => view! { <span class="help">"unknown"</span> }.into_any(),
    };
    let uuid = device
        .uuid
        .clone()
        .map(|uuid| view! { <br /><small class="help">{uuid}</small> });
    let id = device.id.clone();
    view! {
        <tr data-testid="fleet-device" data-device=id data-reported=device.reported.to_string()>
            <td><code>{device.id}</code></td>
            <td>{device.name}{absent}{uuid}</td>
            <td class="num">{format::or_dash(device.temperature_celsius.map(format::celsius))}</td>
            <td class="num">{format::or_dash(device.power_watts.map(format::watts))}</td>
            <td class="num">{format::or_dash(device.utilization_ratio.map(format::percent))}</td>
            <td class="num">{memory}</td>
            <td>{diagnostic}</td>
        </tr>
    }
}

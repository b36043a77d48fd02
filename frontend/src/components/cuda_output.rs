//! What a CUDA job's output says beyond its figures: how its module was obtained (compiled
//! by NVRTC now, or from the worker's cache) and, for a custom kernel, what its output
//! buffers hold.

use leptos::prelude::*;
use serde_json::Value;

use crate::format;

/// One sentence per module of `output.modules`, such as
/// `cubin sm_90: compiled by NVRTC in 16.0 ms, loaded in 0.093 ms`.
pub fn module_lines(output: &Value) -> Vec<String> {
    let Some(modules) = output.get("modules").and_then(Value::as_array) else {
        return Vec::new();
    };
    modules
        .iter()
        .map(|m| {
            let image = m["image"].as_str().unwrap_or("module");
            let target = m["target"].as_str().unwrap_or("?");
            let load = m["load_ms"]
                .as_f64()
                .map(format::millis)
                .unwrap_or_default();
            if m["cache_hit"].as_bool() == Some(true) {
                format!("{image} {target}: from this worker's cache, found in {load}")
            } else {
                let compile = m["compile_ms"]
                    .as_f64()
                    .map(format::millis)
                    .unwrap_or_default();
                format!("{image} {target}: compiled by NVRTC in {compile}, loaded in {load}")
            }
        })
        .collect()
}

/// An output buffer of a custom kernel, as `output.buffers` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct BufferRow {
    /// The argument's position in the kernel's parameter list, from 0.
    pub arg: u64,
    pub ty: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    /// Elements that are NaN or ∞.
    pub non_finite: u64,
    pub checksum: String,
    /// The first elements; `None` where the value was NaN or ∞.
    pub first: Vec<Option<f64>>,
}

pub fn buffer_rows(output: &Value) -> Vec<BufferRow> {
    let Some(buffers) = output.get("buffers").and_then(Value::as_array) else {
        return Vec::new();
    };
    buffers
        .iter()
        .map(|b| BufferRow {
            arg: b["arg"].as_u64().unwrap_or_default(),
            ty: b["type"].as_str().unwrap_or("?").to_owned(),
            min: b["min"].as_f64(),
            max: b["max"].as_f64(),
            mean: b["mean"].as_f64(),
            non_finite: b["non_finite"].as_u64().unwrap_or_default(),
            checksum: b["checksum"].as_str().unwrap_or_default().to_owned(),
            first: b["first"]
                .as_array()
                .map(|values| values.iter().map(Value::as_f64).collect())
                .unwrap_or_default(),
        })
        .collect()
}

/// `[32, 1, 1]` as `32 × 1 × 1`.
fn dims(value: &Value) -> String {
    value
        .as_array()
        .map(|d| {
            d.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(" × ")
        })
        .unwrap_or_else(|| value.to_string())
}

fn figure(x: Option<f64>) -> String {
    x.map(format::number).unwrap_or_else(|| "—".to_owned())
}

/// The module sentences and the buffers' table; nothing for a job that has neither (a CPU
/// job).
#[component]
pub fn CudaOutput(output: Value) -> impl IntoView {
    let modules = module_lines(&output);
    let buffers = buffer_rows(&output);
    let launch = output
        .get("grid")
        .zip(output.get("block"))
        .map(|(grid, block)| {
            format!(
                "{} blocks of {} threads, {} launches (the warm-up among them)",
                dims(grid),
                dims(block),
                output["launches"].as_u64().unwrap_or_default()
            )
        });
    (!modules.is_empty() || !buffers.is_empty()).then(|| {
        view! {
            <section class="card cuda" aria-labelledby="cuda-heading" data-testid="job-cuda">
                <h2 id="cuda-heading">"CUDA"</h2>
                <ul class="module-lines">
                    {modules.into_iter().map(|line| view! { <li>{line}</li> }).collect_view()}
                    {launch.map(|line| view! { <li>{line}</li> })}
                </ul>
                {(!buffers.is_empty()).then(|| view! {
                    <div class="table-scroll">
                        <table class="buffers" data-testid="job-buffers">
                            <caption>"Output buffers, read after the last launch"</caption>
                            <thead>
                                <tr>
                                    <th scope="col">"Argument"</th>
                                    <th scope="col">"Type"</th>
                                    <th scope="col">"Min"</th>
                                    <th scope="col">"Max"</th>
                                    <th scope="col">"Mean"</th>
                                    <th scope="col">"NaN or ∞"</th>
                                    <th scope="col">"FNV-1a"</th>
                                </tr>
                            </thead>
                            <tbody>
                                {buffers.iter().map(|b| view! {
                                    <tr>
                                        <td>{b.arg}</td>
                                        <td>{b.ty.clone()}</td>
                                        <td>{figure(b.min)}</td>
                                        <td>{figure(b.max)}</td>
                                        <td>{figure(b.mean)}</td>
                                        <td>{b.non_finite}</td>
                                        <td><code>{b.checksum.clone()}</code></td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    </div>
                    {buffers.into_iter().map(|b| {
                        let values = b.first.iter().map(|v| figure(*v)).collect::<Vec<_>>().join(", ");
                        view! {
                            <details class="buffer-values">
                                <summary>{format!("Argument {}: the first {} elements", b.arg, b.first.len())}</summary>
                                <p class="mono">{values}</p>
                            </details>
                        }
                    }).collect_view()}
                })}
            </section>
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn modules_say_whether_they_were_compiled_or_cached() {
        let output = json!({"modules": [
            {"cache_hit": false, "compile_ms": 16.04, "load_ms": 0.093, "image": "cubin", "target": "sm_90"},
            {"cache_hit": true, "load_ms": 0.0017, "image": "ptx", "target": "compute_90"},
        ]});
        let lines = module_lines(&output);
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("cubin sm_90: compiled by NVRTC in 16"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("loaded in 0.093 ms"), "{}", lines[0]);
        assert!(
            lines[1].starts_with("ptx compute_90: from this worker's cache"),
            "{}",
            lines[1]
        );
        assert!(module_lines(&json!({"n": 5})).is_empty());
    }

    #[test]
    fn buffers_keep_nan_as_missing_values() {
        let output = json!({"buffers": [{
            "arg": 2, "type": "f32", "first": [1.0, null, 3.0], "min": 1.0, "max": 3.0,
            "mean": 2.0, "non_finite": 1, "checksum": "00ff00ff00ff00ff"
        }]});
        let rows = buffer_rows(&output);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].arg, 2);
        assert_eq!(rows[0].first, vec![Some(1.0), None, Some(3.0)]);
        assert_eq!(rows[0].non_finite, 1);
        assert_eq!(figure(None), "—");
        assert_eq!(dims(&json!([32, 1, 1])), "32 × 1 × 1");
        assert!(buffer_rows(&json!({})).is_empty());
    }
}

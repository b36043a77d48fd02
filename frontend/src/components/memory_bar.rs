use leptos::prelude::*;

use crate::format;

/// How much of a device's memory is in use, as a bar with the numbers beside it.
#[component]
pub fn MemoryBar(
    #[prop(into)] total: Signal<Option<u64>>,
    #[prop(into)] free: Signal<Option<u64>>,
) -> impl IntoView {
    move || {
        let Some(total) = total.get().filter(|&t| t > 0) else {
            return view! { <p class="memory">"Memory: " {format::UNKNOWN}</p> }.into_any();
        };
        let Some(free) = free.get().map(|f| f.min(total)) else {
            return view! {
                <p class="memory">{format!("Memory: {} total", format::bytes(total))}</p>
            }
            .into_any();
        };
        let used = total - free;
        let percent = used as f64 * 100.0 / total as f64;
        let label = format!("{} free of {}", format::bytes(free), format::bytes(total));
        view! {
            <div class="memory">
                <div class="memory-label">
                    <span>"Memory"</span>
                    <span>{label.clone()}</span>
                </div>
                <div
                    class="bar"
                    role="meter"
                    aria-label="Memory in use"
                    aria-valuemin="0"
                    aria-valuemax=total.to_string()
                    aria-valuenow=used.to_string()
                    aria-valuetext=label
                >
                    <div class="bar-fill" style=format!("width: {percent:.1}%")></div>
                </div>
            </div>
        }
        .into_any()
    }
}

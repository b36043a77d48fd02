use leptos::prelude::*;

use crate::hooks::use_title;

/// Any path the UI does not know.
#[component]
pub fn NotFoundPage() -> impl IntoView {
    use_title(|| "Not found".to_owned());
    view! {
        <h1>"Not found"</h1>
        <p>"There is no page here. " <a href="/">"See the devices"</a> " instead."</p>
    }
}

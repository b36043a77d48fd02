//! Behaviour shared by the pages.

use leptos::prelude::*;

/// Keeps `document.title` at `"<title> · gpulab"` while the calling page is shown.
pub fn use_title(title: impl Fn() -> String + 'static) {
    Effect::new(move |_| document().set_title(&format!("{} · gpulab", title())));
}

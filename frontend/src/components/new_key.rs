use gpulab_shared::lab::UserWithKey;
use leptos::prelude::*;

use super::copy_curl::write_to_clipboard;

/// A fresh API key, shown this once: the server keeps only its hash. With a copy button,
/// and the key selectable by hand where the browser has no clipboard.
#[component]
pub fn NewKey(made: UserWithKey) -> impl IntoView {
    let UserWithKey { user, api_key } = made;
    let copied = RwSignal::new(None::<bool>);
    let key = api_key.clone();
    let on_copy = move |_| {
        let key = key.clone();
        leptos::task::spawn_local(async move {
            copied.set(Some(write_to_clipboard(&key).await.is_ok()));
        });
    };
    view! {
        <div class="notice warn new-key" data-testid="new-key" data-user=user.name.clone()>
            <p>
                <strong>{format!("The API key of {}, shown once.", user.name)}</strong>
                " Copy it now: the server keeps only its hash, and no page shows it again. \
                 A lost key can only be replaced (rotate it)."
            </p>
            <p>
                <code class="api-key" data-testid="new-key-value">{api_key}</code>
                " "
                <button type="button" data-testid="new-key-copy" on:click=on_copy>
                    "Copy"
                </button>
                " "
                <span class="help" role="status">
                    {move || match copied.get() {
                        None => "",
                        Some(true) => "Copied to the clipboard.",
                        Some(false) => "This browser does not allow copying here: select the key and copy it by hand.",
                    }}
                </span>
            </p>
        </div>
    }
}

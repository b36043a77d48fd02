use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// What happened to the last click.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copied {
    Not,
    Yes,
    /// The browser has no clipboard here (a page not served over HTTPS or from localhost
    /// has none) or refused to write to it.
    Refused,
}

/// "Copy as curl": copies a curl command to the clipboard, then shows the command, so the
/// user sees what was copied, or can copy it by hand where the browser refuses. The command
/// may change (the API token is set): what is shown is always what a click copies.
#[component]
pub fn CopyAsCurl(#[prop(into)] command: Signal<String>) -> impl IntoView {
    let copied = RwSignal::new(Copied::Not);
    let shown = NodeRef::<leptos::html::Pre>::new();
    // A changed command was not copied yet.
    Effect::new(move |first_run: Option<()>| {
        command.track();
        if first_run.is_some() {
            copied.set(Copied::Not);
        }
    });
    let on_click = move |_| {
        let text = command.get_untracked();
        leptos::task::spawn_local(async move {
            let outcome = match write_to_clipboard(&text).await {
                Ok(()) => Copied::Yes,
                Err(()) => Copied::Refused,
            };
            copied.set(outcome);
            if outcome == Copied::Refused {
                select_text_of(shown);
            }
        });
    };
    view! {
        <div class="copy-command">
            <button type="button" data-testid="copy-curl" on:click=on_click>
                "Copy as curl"
            </button>
            <span class="help" role="status">
                {move || match copied.get() {
                    Copied::Not => "",
                    Copied::Yes => "Copied to the clipboard.",
                    Copied::Refused => "This browser does not allow copying here: the command is selected below, copy it with Ctrl+C (⌘C).",
                }}
            </span>
            <pre
                class="command"
                data-testid="curl-command"
                node_ref=shown
                hidden=move || copied.get() == Copied::Not
            >
                {move || command.get()}
            </pre>
        </div>
    }
}

pub(super) async fn write_to_clipboard(text: &str) -> Result<(), ()> {
    let navigator = window().navigator();
    // `navigator.clipboard` is undefined outside secure contexts; calling it would throw.
    let clipboard = js_sys::Reflect::get(&navigator, &"clipboard".into()).map_err(|_| ())?;
    if clipboard.is_undefined() || clipboard.is_null() {
        return Err(());
    }
    let clipboard: web_sys::Clipboard = clipboard.unchecked_into();
    JsFuture::from(clipboard.write_text(text))
        .await
        .map(|_| ())
        .map_err(|_| ())
}

/// Selects the text of `node`, ready for the user to copy.
fn select_text_of(node: NodeRef<leptos::html::Pre>) {
    let (Some(pre), Ok(Some(selection))) = (node.get_untracked(), window().get_selection()) else {
        return;
    };
    let _ = selection.select_all_children(&pre);
}

//! A code editor for CUDA C: CodeMirror 6 (frontend/editor-js/, bundled into
//! `/codemirror.js`), imported the first time an editor is shown, so that the other pages
//! never download it.

use leptos::html::Div;
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use crate::custom_kernel::compile_log::CompileDiagnostic;

// A snippet rather than `new Function("return import(…)")`: no eval, and the bundle's URL is
// written once.
#[wasm_bindgen(
    inline_js = "export function importCodeEditor() { return import('/codemirror.js'); }"
)]
extern "C" {
    #[wasm_bindgen(js_name = importCodeEditor)]
    fn import_code_editor() -> js_sys::Promise;
}

// The API of frontend/editor-js/editor.js.
#[wasm_bindgen]
extern "C" {
    type EditorModule;

    /// `create(parent, doc, onChange)`: an editor in `parent` holding `doc`.
    #[wasm_bindgen(method, catch)]
    fn create(
        this: &EditorModule,
        parent: &JsValue,
        doc: &str,
        on_change: &Closure<dyn FnMut(String)>,
    ) -> Result<EditorHandle, JsValue>;

    type EditorHandle;

    #[wasm_bindgen(method, js_name = getValue)]
    fn get_value(this: &EditorHandle) -> String;

    #[wasm_bindgen(method, js_name = setValue)]
    fn set_value(this: &EditorHandle, text: &str);

    /// Takes `[{line, column?, severity, message}]`, as [`CompileDiagnostic`] serialises.
    #[wasm_bindgen(method, js_name = setDiagnostics)]
    fn set_diagnostics(this: &EditorHandle, list: &JsValue);

    #[wasm_bindgen(method)]
    fn destroy(this: &EditorHandle);
}

/// A mounted editor and the callback it calls, which must live as long as it does.
struct Mounted {
    handle: EditorHandle,
    _on_change: Closure<dyn FnMut(String)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Loading {
    Pending,
    Ready,
    /// The bundle did not load: the page falls back to a plain text area.
    Failed(String),
}

/// An editor with line numbers and C/CUDA highlighting, bound both ways to `source`, that
/// marks `diagnostics` at their lines. Should the editor fail to load, a plain text area
/// edits `source` instead, so the page stays usable.
#[component]
pub fn CodeEditor(
    source: RwSignal<String>,
    #[prop(into)] diagnostics: Signal<Vec<CompileDiagnostic>>,
    /// The accessible name of the text area of the fallback.
    label: &'static str,
) -> impl IntoView {
    let host = NodeRef::<Div>::new();
    let loading = RwSignal::new(Loading::Pending);
    let mounted = StoredValue::new_local(None::<Mounted>);

    Effect::new(move |started: Option<bool>| {
        let Some(host) = host.get() else {
            return false;
        };
        let host: JsValue = host.into();
        if started != Some(true) {
            spawn_local(async move {
                match mount(&host, source).await {
                    Ok(editor) => {
                        // The page may have gone while the bundle loaded.
                        if let Some(Some(editor)) = mounted.try_set_value(Some(editor)) {
                            editor.handle.destroy();
                        } else {
                            loading.try_set(Loading::Ready);
                        }
                    }
                    Err(message) => {
                        leptos::logging::warn!("the code editor did not load: {message}");
                        loading.try_set(Loading::Failed(message));
                    }
                }
            });
        }
        true
    });
    // A new text from outside (a template) goes into the editor; the editor's own edits come
    // back equal, and are left alone.
    Effect::new(move |_| {
        let text = source.get();
        loading.track();
        mounted.with_value(|editor| {
            if let Some(editor) = editor {
                if editor.handle.get_value() != text {
                    editor.handle.set_value(&text);
                }
            }
        });
    });
    Effect::new(move |_| {
        let list = diagnostics.get();
        loading.track();
        mounted.with_value(|editor| {
            if let Some(editor) = editor {
                editor.handle.set_diagnostics(&to_js(&list));
            }
        });
    });
    on_cleanup(move || {
        if let Some(Some(editor)) = mounted.try_update_value(Option::take) {
            editor.handle.destroy();
        }
    });

    view! {
        <div
            class="code-editor"
            data-testid="code-editor"
            data-state=move || match loading.get() {
                Loading::Pending => "loading",
                Loading::Ready => "ready",
                Loading::Failed(_) => "failed",
            }
        >
            // CodeMirror's own: Leptos renders nothing inside it.
            <div class="code-editor-host" node_ref=host></div>
            {move || {
                (loading.get() == Loading::Pending)
                    .then(|| view! { <p class="loading">"Loading the editor…"</p> })
            }}
            {move || match loading.get() {
                Loading::Failed(message) => Some(view! {
                    <p class="notice warn">
                        "The code editor did not load (" {message} "): edit the source as plain text."
                    </p>
                    <textarea
                        class="code-fallback"
                        aria-label=label
                        spellcheck="false"
                        prop:value=move || source.get()
                        on:input=move |ev| source.set(event_target_value(&ev))
                    ></textarea>
                }),
                _ => None,
            }}
        </div>
    }
}

/// Imports the bundle and creates the editor in `host`, holding `source`.
async fn mount(host: &JsValue, source: RwSignal<String>) -> Result<Mounted, String> {
    let module: EditorModule = JsFuture::from(import_code_editor())
        .await
        .map_err(js_message)?
        .unchecked_into();
    let on_change = Closure::<dyn FnMut(String)>::new(move |text: String| {
        source.try_set(text);
    });
    let handle = module
        .create(host, &source.get_untracked(), &on_change)
        .map_err(js_message)?;
    Ok(Mounted {
        handle,
        _on_change: on_change,
    })
}

/// The diagnostics as the JavaScript array `setDiagnostics` takes.
fn to_js(list: &[CompileDiagnostic]) -> JsValue {
    serde_json::to_string(list)
        .ok()
        .and_then(|json| js_sys::JSON::parse(&json).ok())
        .unwrap_or_else(|| js_sys::Array::new().into())
}

/// What a JavaScript exception says.
fn js_message(error: JsValue) -> String {
    error
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| error.as_string())
        .unwrap_or_else(|| "unknown error".to_owned())
}

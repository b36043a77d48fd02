//! The API token: what a server with a token (given, or made up at start and printed to its
//! log) asks for in `Authorization: Bearer <token>` on every change (POST and DELETE), and
//! on reads where it protects them. The user enters it once in the header's "API token"
//! panel, or opens the link the server's log prints (`/?token=…`, which the page takes and
//! then removes from the address bar); it is kept in this browser's localStorage and sent
//! by [`crate::api`] with every request. It is also kept in a cookie that only this site
//! gets (`SameSite=Strict`), for what the browser fetches by itself (the event stream,
//! images); the server takes the cookie for reads only.

use std::cell::RefCell;

use leptos::html::Input;
use leptos::prelude::*;

/// The localStorage key.
const STORAGE_KEY: &str = "gpulab.apiToken";
/// The cookie the server reads for protected reads (`server/src/api/security.rs`).
const COOKIE: &str = "gpulab_token";

thread_local! {
    /// The token the API calls send; localStorage is only read once, at start.
    static CURRENT: RefCell<Option<String>> = RefCell::new(load());
}

/// What the user typed, as the token to send: surrounding blanks and a pasted `Bearer `
/// prefix are dropped, and nothing left means no token.
pub fn normalize(typed: &str) -> Option<String> {
    let token = typed.trim_start();
    let token = token
        .strip_prefix("Bearer ")
        .or_else(|| token.strip_prefix("bearer "))
        .unwrap_or(token)
        .trim();
    (!token.is_empty()).then(|| token.to_owned())
}

/// The token to send now, if the user set one.
pub fn current() -> Option<String> {
    CURRENT.with(|current| current.borrow().clone())
}

fn load() -> Option<String> {
    if let Some(token) = take_from_address() {
        store_outside(Some(&token));
        return Some(token);
    }
    let storage = window().local_storage().ok().flatten()?;
    let token = normalize(&storage.get_item(STORAGE_KEY).ok().flatten()?);
    // A cookie from before may be gone (cleared, expired): write it again.
    set_cookie(token.as_deref());
    token
}

/// The `token` of the page's address (`/?token=…`, the link the server prints), which is
/// then removed from the address bar and the history, so that it is not bookmarked or
/// shared by accident.
fn take_from_address() -> Option<String> {
    let location = window().location();
    let search = location.search().ok()?;
    let params = web_sys::UrlSearchParams::new_with_str(&search).ok()?;
    let token = normalize(&params.get("token")?);
    params.delete("token");
    let rest = String::from(params.to_string());
    let path = location.pathname().unwrap_or_else(|_| "/".into());
    let hash = location.hash().unwrap_or_default();
    let clean = if rest.is_empty() {
        format!("{path}{hash}")
    } else {
        format!("{path}?{rest}{hash}")
    };
    if let Ok(history) = window().history() {
        let _ = history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&clean));
    }
    token
}

/// Keeps `token` in the cookie the server reads for protected reads.
fn set_cookie(token: Option<&str>) {
    use wasm_bindgen::JsCast;
    let Some(document) = window()
        .document()
        .and_then(|d| d.dyn_into::<web_sys::HtmlDocument>().ok())
    else {
        return;
    };
    let secure = window().location().protocol().is_ok_and(|p| p == "https:");
    let cookie = match token {
        Some(token) => format!(
            "{COOKIE}={}; Path=/; SameSite=Strict{}",
            String::from(js_sys::encode_uri_component(token)),
            if secure { "; Secure" } else { "" }
        ),
        None => format!("{COOKIE}=; Path=/; SameSite=Strict; Max-Age=0"),
    };
    let _ = document.set_cookie(&cookie);
}

/// Keeps `token` in localStorage and the cookie.
fn store_outside(token: Option<&str>) {
    if let Ok(Some(storage)) = window().local_storage() {
        let _ = match token {
            Some(token) => storage.set_item(STORAGE_KEY, token),
            None => storage.remove_item(STORAGE_KEY),
        };
    }
    set_cookie(token);
}

/// Keeps `token` for the API calls and in localStorage (where the browser allows it: in a
/// private window it may refuse, and the token then lasts as long as the page).
fn store(token: Option<String>) {
    store_outside(token.as_deref());
    CURRENT.with(|current| *current.borrow_mut() = token);
}

/// The token as the UI follows it, shared through the context: whether one is set, and
/// whether the header's panel is open (an "unauthorized" notice opens it).
#[derive(Debug, Clone, Copy)]
pub struct ApiToken {
    token: RwSignal<Option<String>>,
    pub open: RwSignal<bool>,
    /// The panel's text field, which the notice focuses.
    pub input: NodeRef<Input>,
}

impl ApiToken {
    /// The token now, tracked.
    pub fn get(&self) -> Option<String> {
        self.token.get()
    }

    /// Sets (or, with `None`, forgets) the token.
    pub fn set(&self, token: Option<String>) {
        store(token.clone());
        self.token.set(token);
    }

    /// Opens the header's panel and puts the keyboard focus in its field.
    pub fn ask(&self) {
        self.open.set(true);
        if let Some(input) = self.input.get_untracked() {
            // Opened at once rather than when the signal's effect runs: a field in a closed
            // panel cannot take the focus.
            if let Ok(Some(panel)) = input.closest("details") {
                let _ = panel.set_attribute("open", "");
            }
            let _ = input.focus();
            input.select();
        }
    }
}

/// Makes the token available to every page; called once by the app.
pub fn provide_api_token() {
    provide_context(ApiToken {
        token: RwSignal::new(current()),
        open: RwSignal::new(false),
        input: NodeRef::new(),
    });
}

/// The token shared by [`provide_api_token`].
pub fn use_api_token() -> ApiToken {
    expect_context::<ApiToken>()
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn a_typed_token_loses_blanks_and_a_pasted_bearer_prefix() {
        assert_eq!(normalize("  s3cret \n").as_deref(), Some("s3cret"));
        assert_eq!(normalize("Bearer s3cret").as_deref(), Some("s3cret"));
        assert_eq!(normalize("bearer  s3cret").as_deref(), Some("s3cret"));
        // Only a prefix is dropped: a token may hold the word.
        assert_eq!(normalize("myBearer x").as_deref(), Some("myBearer x"));
        assert_eq!(normalize(""), None);
        assert_eq!(normalize("   "), None);
        assert_eq!(normalize("Bearer "), None);
    }
}

//! The API token: what a server started with `--token` (or `GPULAB_TOKEN`) asks for in
//! `Authorization: Bearer <token>` on every change (POST and DELETE). The user enters it
//! once in the header's "API token" panel; it is kept in this browser's localStorage and
//! sent by [`crate::api`] with every mutating request.

use std::cell::RefCell;

use leptos::html::Input;
use leptos::prelude::*;

/// The localStorage key.
const STORAGE_KEY: &str = "gpulab.apiToken";

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
    let storage = window().local_storage().ok().flatten()?;
    normalize(&storage.get_item(STORAGE_KEY).ok().flatten()?)
}

/// Keeps `token` for the API calls and in localStorage (where the browser allows it: in a
/// private window it may refuse, and the token then lasts as long as the page).
fn store(token: Option<String>) {
    if let Ok(Some(storage)) = window().local_storage() {
        let _ = match &token {
            Some(token) => storage.set_item(STORAGE_KEY, token),
            None => storage.remove_item(STORAGE_KEY),
        };
    }
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

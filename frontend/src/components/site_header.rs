use leptos::prelude::*;
use leptos_router::components::A;

use super::LiveIndicator;
use crate::session::use_session;
use crate::token::{normalize, use_api_token};

/// The header on every page: the name, the main navigation, whether updates are live, and
/// the API token (in lab mode: the signed-in user and "Sign out").
#[component]
pub fn SiteHeader() -> impl IntoView {
    view! {
        <header class="site-header">
            <a class="brand" href="/">
                "gpulab"
            </a>
            <nav aria-label="Main">
                <A href="/" exact=true>
                    "Devices"
                </A>
                <A href="/launch">"Launch"</A>
                <A href="/jobs">"Jobs"</A>
                <A href="/compare">"Compare"</A>
                <A href="/editor">"Editor"</A>
                <A href="/diagnostics">"Diagnostics"</A>
                <A href="/fleet">"Fleet"</A>
                <LabLinks />
            </nav>
            <LiveIndicator />
            <Credentials />
        </header>
    }
}

/// The pages of lab mode: Usage for everyone signed in, Users for admins only.
#[component]
fn LabLinks() -> impl IntoView {
    let session = use_session();
    let signed_in = Memo::new(move |_| session.user().is_some());
    let admin = Memo::new(move |_| session.is_admin());
    view! {
        <Show when=move || signed_in.get()>
            <A href="/usage">"Usage"</A>
        </Show>
        <Show when=move || admin.get()>
            <A href="/admin/users">"Users"</A>
        </Show>
    }
}

/// In single mode the API token's panel, as before; in lab mode who is signed in, with a
/// link to their account and "Sign out".
#[component]
fn Credentials() -> impl IntoView {
    let session = use_session();
    let lab = Memo::new(move |_| session.is_lab());
    let name = Memo::new(move |_| session.user().map(|user| user.name));
    let sign_out = Action::new_local(|_: &()| crate::api::sign_out());
    Effect::new(move |_| {
        // A session that was over anyway answers 401, which signs out by itself (api.rs).
        if let Some(Ok(())) = sign_out.value().get() {
            session.signed_out();
        }
    });
    view! {
        <Show when=move || lab.get() fallback=|| view! { <TokenSettings /> }>
            {move || {
                name.get()
                    .map(|name| {
                        view! {
                            <div class="account" data-testid="account-menu">
                                <a href="/account" data-testid="signed-in-user" title="Your account">
                                    {name}
                                </a>
                                <button
                                    type="button"
                                    data-testid="sign-out"
                                    disabled=move || sign_out.pending().get()
                                    on:click=move |_| {
                                        sign_out.dispatch(());
                                    }
                                >
                                    "Sign out"
                                </button>
                            </div>
                        }
                    })
            }}
        </Show>
    }
}

/// "API token": a disclosure in the header with a field for the token that a server started
/// with `--token` asks for. What is saved is kept in localStorage and sent with every launch
/// and cancel.
#[component]
fn TokenSettings() -> impl IntoView {
    let token = use_api_token();
    let typed = RwSignal::new(crate::token::current().unwrap_or_default());
    let saved = RwSignal::new(None::<&'static str>);
    let on_submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let value = normalize(&typed.get_untracked());
        typed.set(value.clone().unwrap_or_default());
        saved.set(Some(if value.is_some() {
            "Saved: launches and cancels now send it."
        } else {
            "No token: launches and cancels are sent without one."
        }));
        token.set(value);
    };
    let on_forget = move |_| {
        typed.set(String::new());
        token.set(None);
        saved.set(Some("Forgotten: this browser keeps no token now."));
    };
    // Escape closes the panel, as it would a menu, and the focus goes back to its toggle.
    let toggle = NodeRef::<leptos::html::Summary>::new();
    let on_keydown = move |ev: leptos::ev::KeyboardEvent| {
        if ev.key() == "Escape" && token.open.get_untracked() {
            token.open.set(false);
            if let Some(toggle) = toggle.get_untracked() {
                let _ = toggle.focus();
            }
        }
    };
    view! {
        <details
            class="token-settings"
            data-testid="token-settings"
            prop:open=move || token.open.get()
            on:toggle=move |ev| {
                let open = js_sys::Reflect::get(&event_target::<web_sys::EventTarget>(&ev), &"open".into())
                    .ok()
                    .and_then(|open| open.as_bool())
                    .unwrap_or(false);
                token.open.set(open);
                if !open {
                    saved.set(None);
                }
            }
            on:keydown=on_keydown
        >
            <summary data-testid="token-toggle" node_ref=toggle>
                "API token"
                <span class="token-state" data-set=move || token.get().is_some().to_string()>
                    {move || if token.get().is_some() { "set" } else { "none" }}
                </span>
            </summary>
            <form class="token-form" on:submit=on_submit>
                <label for="api-token">"API token"</label>
                <input
                    id="api-token"
                    type="password"
                    autocomplete="off"
                    spellcheck="false"
                    data-testid="token-input"
                    aria-describedby="api-token-help"
                    node_ref=token.input
                    prop:value=move || typed.get()
                    on:input=move |ev| {
                        typed.set(event_target_value(&ev));
                        saved.set(None);
                    }
                />
                <small class="help" id="api-token-help">
                    "Only for a server started with " <code>"--token"</code>
                    " (or GPULAB_TOKEN): sent as " <code>"Authorization: Bearer …"</code>
                    " with every launch and cancel. Kept in this browser only."
                </small>
                <div class="token-actions">
                    <button type="submit" class="primary" data-testid="token-save">
                        "Save"
                    </button>
                    <button type="button" data-testid="token-forget" on:click=on_forget>
                        "Forget"
                    </button>
                </div>
                <p class="help token-saved" role="status">
                    {move || saved.get()}
                </p>
            </form>
        </details>
    }
}

use gpulab_shared::lab::SignIn;
use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos_router::hooks::{use_navigate, use_query_map};
use leptos_router::NavigateOptions;

use crate::api::{self, ApiError};
use crate::hooks::use_title;
use crate::session::{return_path, use_session, SessionState};

/// `/signin`: name and API key, for a server in lab mode. `?next=` is the page to go back
/// to, where a page or a refused request sent the user from.
#[component]
pub fn SignInPage() -> impl IntoView {
    use_title(|| "Sign in".to_owned());
    let session = use_session();
    let navigate = use_navigate();
    let next = move || return_path(use_query_map().get_untracked().get("next").as_deref());
    let next = StoredValue::new(next());
    let name = RwSignal::new(String::new());
    let key = RwSignal::new(String::new());
    let sign_in = Action::new_local(|request: &SignIn| api::sign_in(request.clone()));
    // Signed in (now, or already): on to where the user was going.
    Effect::new(move |_| {
        if let SessionState::SignedIn(_) | SessionState::Single = session.get() {
            navigate(
                &next.get_value(),
                NavigateOptions {
                    replace: true,
                    ..Default::default()
                },
            );
        }
    });
    Effect::new(move |_| {
        if let Some(Ok(answer)) = sign_in.value().get() {
            session.accept(answer);
        }
    });
    let on_submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        if sign_in.pending().get_untracked() {
            return;
        }
        sign_in.dispatch(SignIn {
            name: name.get_untracked().trim().to_owned(),
            key: key.get_untracked().trim().to_owned(),
        });
    };
    let error = move || sign_in.value().get().and_then(Result::err);
    view! {
        <h1>"Sign in"</h1>
        <p class="help">
            "This gpulab has accounts. Sign in with your name and the API key your admin gave you."
        </p>
        <form class="sign-in-form" data-testid="sign-in-form" on:submit=on_submit>
            {move || error().map(|error| view! { <SignInError error /> })}
            <div class="field">
                <label for="sign-in-name">"Name"</label>
                <input
                    id="sign-in-name"
                    name="name"
                    autocomplete="username"
                    spellcheck="false"
                    required
                    prop:value=move || name.get()
                    on:input=move |ev| name.set(event_target_value(&ev))
                />
            </div>
            <div class="field">
                <label for="sign-in-key">"API key"</label>
                <input
                    id="sign-in-key"
                    name="key"
                    type="password"
                    autocomplete="current-password"
                    spellcheck="false"
                    required
                    prop:value=move || key.get()
                    on:input=move |ev| key.set(event_target_value(&ev))
                />
                <small class="help">
                    "The key is sent once to sign in and never kept by this browser; the \
                     session lasts in a cookie that pages cannot read."
                </small>
            </div>
            <button type="submit" class="primary" data-testid="sign-in-submit" disabled=move || sign_in.pending().get()>
                {move || if sign_in.pending().get() { "Signing in…" } else { "Sign in" }}
            </button>
        </form>
    }
}

/// Why the sign-in failed, in the server's words.
#[component]
fn SignInError(error: ApiError) -> impl IntoView {
    let (title, detail) = match error {
        ApiError::Problem(problem) => (problem.title, problem.detail),
        ApiError::Transport(message) => ("No answer from the server".to_owned(), message),
    };
    view! {
        <div class="notice error" role="alert" data-testid="sign-in-error">
            <strong>{title}</strong>
            " "
            <span>{detail}</span>
        </div>
    }
}

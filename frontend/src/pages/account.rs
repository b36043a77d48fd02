use leptos::prelude::*;

use crate::components::{ErrorNotice, NewKey};
use crate::format;
use crate::hooks::use_title;
use crate::lab;
use crate::session::use_session;

/// `/account`: who is signed in, their quota, and a new API key for themselves.
#[component]
pub fn AccountPage() -> impl IntoView {
    use_title(|| "Account".to_owned());
    let session = use_session();
    session.refresh();
    let rotate = Action::new_local(move |name: &String| {
        let name = name.clone();
        async move { session.rotate_key(&name).await }
    });
    view! {
        <h1>"Account"</h1>
        {move || match session.user() {
            None => view! {
                <p class="help">"This gpulab has no accounts: everyone who reaches it is the same user."</p>
            }
            .into_any(),
            Some(user) => {
                let name = user.name.clone();
                let quota = match &user.quota {
                    Some(quota) => format!(
                        "{}: {} used, {} left, renews {}.",
                        lab::quota_words(quota),
                        lab::device_time(user.used_seconds),
                        lab::device_time(lab::remaining(quota, user.used_seconds)),
                        format::local_time(&lab::renews_at(quota.period, lab::now())),
                    ),
                    None => format!(
                        "No quota. {} of device time used today.",
                        lab::device_time(user.used_seconds)
                    ),
                };
                view! {
                    <dl class="facts" data-testid="account">
                        <dt>"Name"</dt>
                        <dd data-testid="account-name">{user.name.clone()}</dd>
                        <dt>"Role"</dt>
                        <dd>{format!("{:?}", user.role).to_lowercase()}</dd>
                        <dt>"Quota"</dt>
                        <dd data-testid="account-quota">{quota}</dd>
                    </dl>
                    <h2>"API key"</h2>
                    <p class="help">
                        "A new key replaces yours at once: scripts and other browsers \
                         that use the old one are refused. This browser signs in again with the new one."
                    </p>
                    <button
                        type="button"
                        data-testid="rotate-own-key"
                        disabled=move || rotate.pending().get()
                        on:click=move |_| {
                            rotate.dispatch(name.clone());
                        }
                    >
                        "Make a new API key"
                    </button>
                }
                .into_any()
            }
        }}
        {move || match rotate.value().get() {
            Some(Ok(made)) => view! { <NewKey made /> }.into_any(),
            Some(Err(error)) => view! { <ErrorNotice error /> }.into_any(),
            None => ().into_any(),
        }}
    }
}

use leptos::prelude::*;

use crate::api::{ApiError, UNAUTHORIZED_HINT};
use crate::token::use_api_token;

/// An API error, as a person should read it. A refusal for want of the API token (401) says
/// so, and offers to enter the token.
#[component]
pub fn ErrorNotice(error: ApiError) -> impl IntoView {
    if error.is_unauthorized() {
        return view! { <UnauthorizedNotice /> }.into_any();
    }
    let (title, detail) = match error {
        ApiError::Problem(problem) => (problem.title, problem.detail),
        ApiError::Transport(message) => ("No answer from the server".to_owned(), message),
    };
    view! {
        <div class="notice error" role="alert">
            <strong>{title}</strong>
            " "
            <span>{detail}</span>
        </div>
    }
    .into_any()
}

/// The server answered 401: no token was sent, or the wrong one. Its detail (the header it
/// wants) is left out for the user's words: what happened and where to enter the token.
#[component]
fn UnauthorizedNotice() -> impl IntoView {
    let token = use_api_token();
    // The token sent with the refused request; a token entered since then is not the one
    // that was refused.
    let had_token = crate::token::current().is_some();
    let title = if had_token {
        "The server refused the API token."
    } else {
        "The server needs an API token."
    };
    view! {
        <div class="notice error" role="alert" data-testid="unauthorized">
            <strong>{title}</strong>
            " It answered 401 Unauthorized to this change. "
            {UNAUTHORIZED_HINT}
            " "
            <button type="button" class="notice-action" on:click=move |_| token.ask()>
                {if had_token { "Change the API token" } else { "Enter the API token" }}
            </button>
        </div>
    }
}

/// The fallback of an `<ErrorBoundary>`: every error it caught, one per line.
pub fn error_list(errors: ArcRwSignal<Errors>) -> impl IntoView {
    view! {
        <div class="notice error" role="alert">
            <ul>
                {move || {
                    errors
                        .get()
                        .into_iter()
                        .map(|(_, error)| view! { <li>{error.to_string()}</li> })
                        .collect_view()
                }}
            </ul>
        </div>
    }
}

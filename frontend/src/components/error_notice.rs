use leptos::prelude::*;

use gpulab_shared::Problem;

use crate::api::{ApiError, UNAUTHORIZED_HINT};
use crate::session::use_session;
use crate::token::use_api_token;
use crate::{format, lab};

/// An API error, as a person should read it. A refusal for want of the API token (401) says
/// so, and offers to enter the token.
#[component]
pub fn ErrorNotice(error: ApiError) -> impl IntoView {
    // In lab mode a 401 means the session is over, and the app goes to the sign-in page.
    if error.is_unauthorized() && !use_session().is_lab() {
        return view! { <UnauthorizedNotice /> }.into_any();
    }
    if let Some(problem) = error.problem().filter(|p| p.status == 429) {
        return view! { <QuotaNotice problem=problem.clone() /> }.into_any();
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

/// The server refused a job for the user's quota (429): how much is left, and when the
/// quota renews, as the problem says.
#[component]
fn QuotaNotice(problem: Problem) -> impl IntoView {
    let left = problem.remaining_seconds.map(|s| {
        format!(
            "{} of device time left in this period.",
            lab::device_time(s)
        )
    });
    let renews = problem
        .renews_at
        .map(|at| format!("The quota renews {}.", format::local_time(&at)));
    view! {
        <div class="notice error quota-refused" role="alert" data-testid="quota-refused">
            <p>
                <strong>{problem.title}</strong>
                " "
                <span>{problem.detail}</span>
            </p>
            <p>
                <strong data-testid="quota-remaining">{left}</strong>
                " "
                <span data-testid="quota-renews">{renews}</span>
                " "
                <a href="/usage">"See your usage"</a>
            </p>
        </div>
    }
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

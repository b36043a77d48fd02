use leptos::prelude::*;

use crate::api::ApiError;

/// An API error, as a person should read it.
#[component]
pub fn ErrorNotice(error: ApiError) -> impl IntoView {
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

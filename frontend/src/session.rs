//! Who the browser is. At start the UI asks `GET /api/session`: in single mode (no accounts)
//! it works as before, with the API token of [`crate::token`]; in lab mode a user signs in
//! with their name and API key, and the server keeps the session in its `gpulab_session`
//! cookie, which is HttpOnly: this code never sees it, and the key is never kept anywhere.
//!
//! What the UI keeps is the session's CSRF token, which [`crate::api`] sends as the
//! `x-csrf-token` header with every change. It lives in memory only (a thread-local of this
//! page), not in localStorage nor sessionStorage: a reload asks `GET /api/session` again,
//! which answers it afresh for as long as the cookie lasts.

use std::cell::{Cell, RefCell};

use gpulab_shared::lab::{LabMode, Role, Session, SignIn, User, UserWithKey};
use leptos::prelude::*;
use leptos_router::hooks::{use_location, use_navigate};
use leptos_router::NavigateOptions;

use crate::api;

/// The path of the sign-in page.
pub const SIGN_IN_PATH: &str = "/signin";

thread_local! {
    /// The CSRF token of the session now, sent with every change.
    static CSRF: RefCell<Option<String>> = const { RefCell::new(None) };
    /// The state the app follows, for [`crate::api`] to end a session the server ended.
    static STATE: Cell<Option<RwSignal<SessionState>>> = const { Cell::new(None) };
}

/// Where the browser stands.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionState {
    /// `GET /api/session` has not answered yet.
    Loading,
    /// No accounts: the one anonymous user, as before lab mode.
    Single,
    /// Lab mode with nobody signed in.
    SignedOut,
    /// Lab mode with this user signed in.
    SignedIn(User),
}

impl SessionState {
    /// The state a session answer describes.
    pub fn from_session(session: Session) -> Self {
        match (session.mode, session.user) {
            (LabMode::Single, _) => SessionState::Single,
            (LabMode::Lab, None) => SessionState::SignedOut,
            (LabMode::Lab, Some(user)) => SessionState::SignedIn(user),
        }
    }

    /// Whose pages may be shown: `Some(None)` for single mode, `Some(Some(name))` for a
    /// signed-in user, `None` while nobody may see any.
    pub fn identity(&self) -> Option<Option<String>> {
        match self {
            SessionState::Single => Some(None),
            SessionState::SignedIn(user) => Some(Some(user.name.clone())),
            SessionState::Loading | SessionState::SignedOut => None,
        }
    }
}

/// The CSRF token to send with a change, when a user is signed in.
pub fn csrf_token() -> Option<String> {
    CSRF.with(|csrf| csrf.borrow().clone())
}

fn set_csrf(token: Option<String>) {
    CSRF.with(|csrf| *csrf.borrow_mut() = token);
}

/// The server answered 401: in lab mode the session is over (expired, signed out elsewhere,
/// the user disabled), and the UI goes to the sign-in page, which brings the user back.
/// In single mode a 401 is about the API token, and the pages say so themselves.
pub fn server_refused() {
    if let Some(state) = STATE.with(Cell::get) {
        if matches!(state.get_untracked(), SessionState::SignedIn(_)) {
            set_csrf(None);
            state.set(SessionState::SignedOut);
        }
    }
}

/// The session as the UI follows it, shared through the context. Cheap to copy.
#[derive(Debug, Clone, Copy)]
pub struct SessionContext {
    state: RwSignal<SessionState>,
}

impl SessionContext {
    /// The state now, tracked.
    pub fn get(&self) -> SessionState {
        self.state.get()
    }

    /// Whether accounts are on (tracked).
    pub fn is_lab(&self) -> bool {
        self.state
            .with(|s| matches!(s, SessionState::SignedIn(_) | SessionState::SignedOut))
    }

    /// The signed-in user (tracked).
    pub fn user(&self) -> Option<User> {
        self.state.with(|s| match s {
            SessionState::SignedIn(user) => Some(user.clone()),
            _ => None,
        })
    }

    /// Whether the signed-in user is an admin (tracked).
    pub fn is_admin(&self) -> bool {
        self.state
            .with(|s| matches!(s, SessionState::SignedIn(u) if u.role == Role::Admin))
    }

    /// Takes the answer of a sign-in or of `GET /api/session`.
    pub fn accept(&self, session: Session) {
        set_csrf(session.csrf_token.clone());
        self.state.set(SessionState::from_session(session));
    }

    /// After a sign-out.
    pub fn signed_out(&self) {
        set_csrf(None);
        self.state.set(SessionState::SignedOut);
    }

    /// `POST /api/users/{name}/key`: a new key for `name`. The server then ends that
    /// user's sessions; when the user is the one signed in here, the browser signs in again
    /// with the new key at once, and stays signed in.
    pub async fn rotate_key(&self, name: &str) -> api::ApiResult<UserWithKey> {
        let made = api::rotate_key(name).await?;
        if self
            .state
            .with_untracked(|s| matches!(s, SessionState::SignedIn(u) if u.name == name))
        {
            let session = api::sign_in(SignIn {
                name: made.user.name.clone(),
                key: made.api_key.clone(),
            })
            .await?;
            self.accept(session);
        }
        Ok(made)
    }

    /// Asks the server again (for the user's quota and usage, which change).
    pub fn refresh(&self) {
        let this = *self;
        leptos::task::spawn_local(async move {
            if let Ok(session) = api::session().await {
                this.accept(session);
            }
        });
    }
}

/// Asks the server who the browser is and shares the answer with every component; called
/// once by the app. A server that does not know `/api/session` (older than lab mode), or
/// refuses it for want of its API token, is in single mode.
pub fn provide_session() {
    let state = RwSignal::new(SessionState::Loading);
    STATE.with(|s| s.set(Some(state)));
    let context = SessionContext { state };
    provide_context(context);
    leptos::task::spawn_local(async move {
        match api::session().await {
            Ok(session) => context.accept(session),
            Err(_) => state.set(SessionState::Single),
        }
    });
}

/// The session shared by [`provide_session`].
pub fn use_session() -> SessionContext {
    expect_context::<SessionContext>()
}

/// Where the sign-in page sends the user back to: `next` when it is a path of this site,
/// else the devices page. A full URL or `//host` (another site) is never followed.
pub fn return_path(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.starts_with("/\\")
                && !path.starts_with(SIGN_IN_PATH) =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// The path and query of a page, to come back to: the router's `search` comes without
/// its `?`.
pub fn address(path: &str, search: &str) -> String {
    match search.trim_start_matches('?') {
        "" => path.to_owned(),
        query => format!("{path}?{query}"),
    }
}

/// The pages, shown only to whom may see them: in lab mode with nobody signed in, any page
/// but the sign-in page sends the browser there, with the way back in `?next=`.
#[component]
pub fn SessionGate(children: ChildrenFn) -> impl IntoView {
    let session = use_session();
    let location = use_location();
    let navigate = use_navigate();
    let on_sign_in = move || location.pathname.with(|p| p == SIGN_IN_PATH);
    Effect::new(move |_| {
        if session.get() == SessionState::SignedOut && !on_sign_in() {
            let here = address(
                &location.pathname.get_untracked(),
                &location.search.get_untracked(),
            );
            let next = String::from(js_sys::encode_uri_component(&here));
            navigate(
                &format!("{SIGN_IN_PATH}?next={next}"),
                NavigateOptions {
                    replace: true,
                    ..Default::default()
                },
            );
        }
    });
    // Each identity gets its pages drawn afresh: nothing of one user's stays for the next.
    let shown = Memo::new(move |_| match session.get() {
        SessionState::Loading => Shown::Loading,
        state => match state.identity() {
            Some(identity) => Shown::Pages(identity),
            None if on_sign_in() => Shown::Pages(None),
            None => Shown::Nothing,
        },
    });
    view! {
        <main id="main">
            {move || match shown.get() {
                Shown::Loading => view! { <p class="loading">"Loading…"</p> }.into_any(),
                Shown::Nothing => ().into_any(),
                Shown::Pages(_) => children().into_any(),
            }}
        </main>
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Shown {
    Loading,
    Nothing,
    Pages(Option<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_way_back_after_sign_in_stays_on_this_site() {
        assert_eq!(return_path(Some("/jobs/3?x=1")), "/jobs/3?x=1");
        assert_eq!(return_path(Some("/usage")), "/usage");
        assert_eq!(return_path(None), "/");
        assert_eq!(return_path(Some("https://evil.example/")), "/");
        assert_eq!(return_path(Some("//evil.example/")), "/");
        assert_eq!(return_path(Some("/\\evil.example/")), "/");
        assert_eq!(return_path(Some("/signin?next=/jobs")), "/");
        assert_eq!(return_path(Some("")), "/");
    }

    #[test]
    fn the_address_to_come_back_to_keeps_the_query() {
        assert_eq!(
            address("/jobs", "status=succeeded"),
            "/jobs?status=succeeded"
        );
        assert_eq!(
            address("/jobs", "?status=succeeded"),
            "/jobs?status=succeeded"
        );
        assert_eq!(address("/usage", ""), "/usage");
    }

    #[test]
    fn only_a_signed_in_user_or_single_mode_sees_pages() {
        let user = User {
            name: "ada".to_owned(),
            role: Role::User,
            disabled: false,
            created_at: chrono::DateTime::UNIX_EPOCH,
            quota: None,
            used_seconds: 0.0,
        };
        let lab = |user: Option<User>| Session {
            mode: LabMode::Lab,
            user,
            csrf_token: None,
        };
        assert_eq!(
            SessionState::from_session(lab(Some(user.clone()))).identity(),
            Some(Some("ada".to_owned()))
        );
        assert_eq!(SessionState::from_session(lab(None)).identity(), None);
        let single = Session {
            mode: LabMode::Single,
            user: Some(user),
            csrf_token: None,
        };
        assert_eq!(SessionState::from_session(single), SessionState::Single);
        assert_eq!(SessionState::Loading.identity(), None);
    }
}

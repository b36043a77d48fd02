use gpulab_shared::lab::{
    AuditPage, NewUser, Quota, QuotaPeriod, Role, User, UserChange, UserWithKey,
};
use leptos::ev::SubmitEvent;
use leptos::prelude::*;

use crate::api::{self, ApiResult};
use crate::components::{ErrorNotice, NewKey};
use crate::format;
use crate::hooks::use_title;
use crate::lab;
use crate::session::use_session;

/// How many audit entries one page shows.
const AUDIT_PAGE_SIZE: u32 = 20;

/// What the last change on the page came to.
#[derive(Debug, Clone)]
enum Outcome {
    /// A user added or a key rotated: the key, shown this once.
    Key(UserWithKey),
    /// A user changed: what happened, in words.
    Changed(String),
}

/// `/admin/users` (admins): the accounts, adding one, disabling, keys, quotas, and the
/// audit log. Not in the navigation of other users, and the server refuses them anyway.
#[component]
pub fn AdminUsersPage() -> impl IntoView {
    use_title(|| "Users".to_owned());
    let session = use_session();
    // Bumped after every change, to fetch the list and the log again.
    let changes = RwSignal::new(0u32);
    let users = LocalResource::new(move || {
        changes.track();
        api::users()
    });
    let outcome = RwSignal::new(None::<ApiResult<Outcome>>);
    let act = Act { outcome, changes };

    view! {
        <h1>"Users"</h1>
        <Show
            when=move || session.is_admin()
            fallback=|| view! { <p class="notice error" role="alert">"Only admins manage users."</p> }
        >
            {move || match outcome.get() {
                Some(Ok(Outcome::Key(made))) => view! { <NewKey made /> }.into_any(),
                Some(Ok(Outcome::Changed(words))) => view! {
                    <p class="notice info" role="status" data-testid="admin-outcome">{words}</p>
                }
                .into_any(),
                Some(Err(error)) => view! { <ErrorNotice error /> }.into_any(),
                None => ().into_any(),
            }}
            <AddUser act />
            <h2>"Accounts"</h2>
            {move || match users.get() {
                None => view! { <p class="loading">"Loading users…"</p> }.into_any(),
                Some(Err(error)) => view! { <ErrorNotice error /> }.into_any(),
                Some(Ok(users)) => view! { <UserTable users act /> }.into_any(),
            }}
            <AuditLog changes />
        </Show>
    }
}

/// Runs the page's changes: shows what each came to, then fetches the list and the log
/// again. Cheap to copy.
#[derive(Debug, Clone, Copy)]
struct Act {
    outcome: RwSignal<Option<ApiResult<Outcome>>>,
    changes: RwSignal<u32>,
}

impl Act {
    fn run(self, change: impl std::future::Future<Output = ApiResult<Outcome>> + 'static) {
        leptos::task::spawn_local(async move {
            let result = change.await;
            self.outcome.set(Some(result));
            self.changes.update(|n| *n += 1);
        });
    }
}

#[component]
fn AddUser(act: Act) -> impl IntoView {
    let name = RwSignal::new(String::new());
    let admin = RwSignal::new(false);
    let on_submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        let request = NewUser {
            name: name.get_untracked().trim().to_owned(),
            admin: admin.get_untracked(),
        };
        name.set(String::new());
        admin.set(false);
        act.run(async move { api::create_user(request).await.map(Outcome::Key) });
    };
    view! {
        <form class="add-user" data-testid="add-user" on:submit=on_submit>
            <h2>"Add a user"</h2>
            <div class="field inline">
                <label for="new-user-name">"Name"</label>
                <input
                    id="new-user-name"
                    name="name"
                    spellcheck="false"
                    autocomplete="off"
                    aria-describedby="new-user-help"
                    prop:value=move || name.get()
                    on:input=move |ev| name.set(event_target_value(&ev))
                />
            </div>
            <div class="field inline">
                <label>
                    <input
                        type="checkbox"
                        name="admin"
                        prop:checked=move || admin.get()
                        on:change=move |ev| admin.set(event_target_checked(&ev))
                    />
                    " Admin"
                </label>
            </div>
            <button type="submit" class="primary" data-testid="add-user-submit">"Add"</button>
            <small class="help" id="new-user-help">
                "1 to 32 characters: lowercase letters, digits, -, _ and .; starting with a letter. \
                 The new API key is shown once."
            </small>
        </form>
    }
}

#[component]
fn UserTable(users: Vec<User>, act: Act) -> impl IntoView {
    view! {
        <div class="table-scroll">
            <table class="jobs users" data-testid="users-table">
                <thead>
                    <tr>
                        <th scope="col">"Name"</th>
                        <th scope="col">"Role"</th>
                        <th scope="col">"State"</th>
                        <th scope="col">"Quota"</th>
                        <th scope="col" class="num">"Used"</th>
                        <th scope="col">"Actions"</th>
                    </tr>
                </thead>
                <tbody>
                    {users.into_iter().map(|user| view! { <UserRow user act /> }).collect_view()}
                </tbody>
            </table>
        </div>
    }
}

#[component]
fn UserRow(user: User, act: Act) -> impl IntoView {
    let name = StoredValue::new(user.name.clone());
    let disabled = user.disabled;
    let change = move |change: UserChange, words: String| {
        let name = name.get_value();
        act.run(async move {
            api::change_user(&name, change)
                .await
                .map(|_| Outcome::Changed(words))
        });
    };
    let on_toggle = move |_| {
        let who = name.get_value();
        change(
            UserChange {
                disabled: Some(!disabled),
                ..Default::default()
            },
            if disabled {
                format!("{who} is enabled.")
            } else {
                format!("{who} is disabled: refused at once, everywhere.")
            },
        );
    };
    let session = use_session();
    let on_rotate = move |_| {
        let name = name.get_value();
        act.run(async move { session.rotate_key(&name).await.map(Outcome::Key) });
    };
    let period = RwSignal::new(user.quota.as_ref().map_or(QuotaPeriod::Daily, |q| q.period));
    let seconds = RwSignal::new(
        user.quota
            .as_ref()
            .map(|q| q.seconds.to_string())
            .unwrap_or_default(),
    );
    let quota_error = RwSignal::new(None::<String>);
    let on_quota = move |ev: SubmitEvent| {
        ev.prevent_default();
        match lab::parse_seconds(&seconds.get_untracked()) {
            Err(message) => quota_error.set(Some(message)),
            Ok(secs) => {
                quota_error.set(None);
                let quota = Quota {
                    period: period.get_untracked(),
                    seconds: secs,
                };
                let words = format!(
                    "{}'s quota is {}.",
                    name.get_value(),
                    lab::quota_words(&quota)
                );
                change(
                    UserChange {
                        quota: Some(Some(quota)),
                        ..Default::default()
                    },
                    words,
                );
            }
        }
    };
    let has_quota = user.quota.is_some();
    let on_remove_quota = move |_| {
        let words = format!("{} has no quota now.", name.get_value());
        change(
            UserChange {
                quota: Some(None),
                ..Default::default()
            },
            words,
        );
    };
    let id = format!("quota-{}", user.name);
    let error_id = format!("quota-error-{}", user.name);
    view! {
        <tr data-testid="user-row" data-user=user.name.clone() data-disabled=disabled.to_string()>
            <th scope="row">{user.name.clone()}</th>
            <td>{match user.role { Role::Admin => "admin", Role::User => "user" }}</td>
            <td>{if disabled { "disabled" } else { "active" }}</td>
            <td data-testid="user-quota">{user.quota.as_ref().map_or_else(|| "none".to_owned(), lab::quota_words)}</td>
            <td class="num">{lab::device_time(user.used_seconds)}</td>
            <td class="user-actions">
                <button type="button" data-testid="toggle-disabled" on:click=on_toggle>
                    {if disabled { "Enable" } else { "Disable" }}
                </button>
                " "
                <button type="button" data-testid="rotate-key" on:click=on_rotate>
                    "Rotate key"
                </button>
                <form class="quota-form" on:submit=on_quota>
                    <label for=id.clone()>"Quota"</label>
                    <input
                        id=id
                        name="seconds"
                        inputmode="decimal"
                        placeholder="seconds, 30 min, 2 h"
                        aria-describedby=error_id.clone()
                        prop:value=move || seconds.get()
                        on:input=move |ev| seconds.set(event_target_value(&ev))
                    />
                    <select
                        name="period"
                        aria-label="Quota period"
                        on:change=move |ev| {
                            period.set(if event_target_value(&ev) == "weekly" { QuotaPeriod::Weekly } else { QuotaPeriod::Daily })
                        }
                    >
                        <option value="daily" selected=move || period.get() == QuotaPeriod::Daily>"per day"</option>
                        <option value="weekly" selected=move || period.get() == QuotaPeriod::Weekly>"per week"</option>
                    </select>
                    <button type="submit" data-testid="set-quota">"Set"</button>
                    <Show when=move || has_quota>
                        <button type="button" data-testid="remove-quota" on:click=on_remove_quota>"Remove"</button>
                    </Show>
                    <span class="field-error" id=error_id role="alert">{move || quota_error.get()}</span>
                </form>
            </td>
        </tr>
    }
}

/// The audit log, newest first, a page at a time.
#[component]
fn AuditLog(changes: RwSignal<u32>) -> impl IntoView {
    let newer = RwSignal::new(Vec::<Option<String>>::new());
    let cursor = RwSignal::new(None::<String>);
    // A change goes back to the first page, where it shows.
    Effect::new(move |first: Option<()>| {
        changes.track();
        if first.is_some() {
            newer.set(Vec::new());
            cursor.set(None);
        }
    });
    let page = LocalResource::new(move || {
        changes.track();
        let cursor = cursor.get();
        async move { api::audit(cursor, AUDIT_PAGE_SIZE).await }
    });
    let older = move || {
        page.get()
            .and_then(Result::ok)
            .and_then(|page: AuditPage| page.next_cursor)
    };
    view! {
        <h2>"Audit log"</h2>
        {move || match page.get() {
            None => view! { <p class="loading">"Loading the audit log…"</p> }.into_any(),
            Some(Err(error)) => view! { <ErrorNotice error /> }.into_any(),
            Some(Ok(page)) if page.entries.is_empty() => {
                view! { <p class="empty">"No admin actions yet."</p> }.into_any()
            }
            Some(Ok(page)) => view! {
                <div class="table-scroll">
                    <table class="jobs audit" data-testid="audit-table">
                        <thead>
                            <tr>
                                <th scope="col">"When"</th>
                                <th scope="col">"Who"</th>
                                <th scope="col">"Action"</th>
                                <th scope="col">"On"</th>
                                <th scope="col">"Detail"</th>
                            </tr>
                        </thead>
                        <tbody>
                            {page
                                .entries
                                .into_iter()
                                .map(|entry| view! {
                                    <tr data-testid="audit-row" data-action=entry.action.clone()>
                                        <td>{format::local_time(&entry.at)}</td>
                                        <td>{entry.actor.unwrap_or_else(|| "command line".to_owned())}</td>
                                        <td>{entry.action.replace('_', " ")}</td>
                                        <td>{entry.target}</td>
                                        <td>{format::or_dash(entry.detail)}</td>
                                    </tr>
                                })
                                .collect_view()}
                        </tbody>
                    </table>
                </div>
            }
            .into_any(),
        }}
        <nav class="pager" aria-label="Pages of the audit log">
            <span class="help">{move || format!("Page {}", newer.with(Vec::len) + 1)}</span>
            <button
                type="button"
                disabled=move || newer.with(Vec::is_empty)
                on:click=move |_| {
                    let previous = newer.try_update(|stack| stack.pop()).flatten().flatten();
                    cursor.set(previous);
                }
            >
                "← Newer"
            </button>
            <button
                type="button"
                disabled=move || older().is_none()
                on:click=move |_| {
                    if let Some(next) = older() {
                        newer.update(|stack| stack.push(cursor.get_untracked()));
                        cursor.set(Some(next));
                    }
                }
            >
                "Older →"
            </button>
        </nav>
    }
}

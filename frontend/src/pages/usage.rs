use chrono::NaiveDate;
use gpulab_shared::lab::{UsageReport, User};
use leptos::prelude::*;

use crate::api::{self, UsageQuery};
use crate::components::ErrorNotice;
use crate::format;
use crate::hooks::use_title;
use crate::lab::{self, DayTotal};
use crate::session::use_session;

/// How many days the page shows at first.
const FIRST_DAYS: u64 = 7;

/// `/usage`: device time used, by day, device and kernel, over a range of days: a user's
/// own, or for an admin everyone's (or one user's) with totals per day. With the quota and
/// a CSV download of the same rows.
#[component]
pub fn UsagePage() -> impl IntoView {
    use_title(|| "Usage".to_owned());
    let session = use_session();
    // The user's quota and what is used of it change with every job.
    session.refresh();
    let (first, last) = lab::last_days(lab::today_utc(), FIRST_DAYS);
    let from = RwSignal::new(first.to_string());
    let to = RwSignal::new(last.to_string());
    let user = RwSignal::new(None::<String>);
    let range = Memo::new(move |_| lab::parse_range(&from.get(), &to.get()));
    // The last valid range: a wrong field leaves the table as it was.
    let query = Memo::new(move |previous: Option<&UsageQuery>| match range.get() {
        Ok((from, to)) => UsageQuery {
            from: from.to_string(),
            to: to.to_string(),
            user: user.get(),
        },
        Err(_) => previous.cloned().unwrap_or(UsageQuery {
            from: first.to_string(),
            to: last.to_string(),
            user: None,
        }),
    });
    let report = LocalResource::new(move || {
        let query = query.get();
        async move { api::usage(&query).await }
    });
    let is_admin = Memo::new(move |_| session.is_admin());
    // The admin's choice of user; a failed list leaves "everyone", which the table shows.
    let users = LocalResource::new(move || {
        let admin = is_admin.get();
        async move {
            if admin {
                api::users().await.unwrap_or_default()
            } else {
                Vec::new()
            }
        }
    });
    let set_days = move |(first, last): (NaiveDate, NaiveDate)| {
        from.set(first.to_string());
        to.set(last.to_string());
    };

    view! {
        <h1>"Usage"</h1>
        <QuotaSummary />
        <form class="filters usage-range" aria-label="Days and user" on:submit=|ev| ev.prevent_default()>
            <div class="field inline">
                <label for="usage-from">"From"</label>
                <input
                    type="date"
                    id="usage-from"
                    name="from"
                    prop:value=move || from.get()
                    on:change=move |ev| from.set(event_target_value(&ev))
                    aria-describedby="usage-range-error"
                />
            </div>
            <div class="field inline">
                <label for="usage-to">"To"</label>
                <input
                    type="date"
                    id="usage-to"
                    name="to"
                    prop:value=move || to.get()
                    on:change=move |ev| to.set(event_target_value(&ev))
                    aria-describedby="usage-range-error"
                />
            </div>
            <div class="field inline usage-presets">
                <button type="button" on:click=move |_| set_days(lab::last_days(lab::today_utc(), 1))>
                    "Today"
                </button>
                <button type="button" on:click=move |_| set_days(lab::last_days(lab::today_utc(), 7))>
                    "7 days"
                </button>
                <button type="button" on:click=move |_| set_days(lab::last_days(lab::today_utc(), 30))>
                    "30 days"
                </button>
                <button type="button" on:click=move |_| set_days(lab::this_month(lab::today_utc()))>
                    "This month"
                </button>
            </div>
            <Show when=move || is_admin.get()>
                <UserFilter users=Signal::derive(move || users.get().unwrap_or_default()) user />
            </Show>
            <p class="field-error" id="usage-range-error" role="alert">
                {move || range.get().err()}
            </p>
        </form>
        <p>
            <a
                class="button"
                data-testid="usage-csv"
                href=move || api::usage_csv_url(&query.get())
                download=move || query.with(|q| format!("gpulab-usage-{}-{}.csv", q.from, q.to))
            >
                "Download CSV"
            </a>
        </p>
        {move || match report.get() {
            None => view! { <p class="loading">"Loading usage…"</p> }.into_any(),
            Some(Err(error)) => view! { <ErrorNotice error /> }.into_any(),
            Some(Ok(report)) => view! { <UsageTables report everyone=is_admin.get() /> }.into_any(),
        }}
    }
}

/// The admin's choice of whose usage to see.
#[component]
fn UserFilter(users: Signal<Vec<User>>, user: RwSignal<Option<String>>) -> impl IntoView {
    view! {
        <div class="field inline">
            <label for="usage-user">"User"</label>
            <select
                id="usage-user"
                name="user"
                on:change=move |ev| {
                    let value = event_target_value(&ev);
                    user.set((!value.is_empty()).then_some(value));
                }
            >
                <option value="">"everyone"</option>
                {move || {
                    users
                        .get()
                        .into_iter()
                        .map(|u| view! { <option value=u.name.clone()>{u.name.clone()}</option> })
                        .collect_view()
                }}
            </select>
        </div>
    }
}

/// The signed-in user's quota: how much is left and when it renews.
#[component]
fn QuotaSummary() -> impl IntoView {
    let session = use_session();
    move || {
        let user = session.user()?;
        let text = match &user.quota {
            Some(quota) => format!(
                "Your quota: {}. Used {}, {} left; it renews {}.",
                lab::quota_words(quota),
                lab::device_time(user.used_seconds),
                lab::device_time(lab::remaining(quota, user.used_seconds)),
                format::local_time(&lab::renews_at(quota.period, lab::now())),
            ),
            None => format!(
                "You have no quota. Used today: {} of device time.",
                lab::device_time(user.used_seconds)
            ),
        };
        Some(view! { <p class="notice info" data-testid="quota-summary">{text}</p> })
    }
}

#[component]
fn UsageTables(report: UsageReport, everyone: bool) -> impl IntoView {
    if report.rows.is_empty() {
        return view! {
            <p class="empty" data-testid="usage-empty">
                {format!("No device time used from {} to {}.", report.from, report.to)}
            </p>
        }
        .into_any();
    }
    let days = lab::totals_per_day(&report.rows);
    let chart = lab::every_day(&report.from, &report.to, &days);
    let UsageReport { rows, totals, .. } = report;
    let seconds = |s: f64| format!("{s:.2}");
    view! {
        <UsageChart days=chart />
        <h2>"By day, device and kernel"</h2>
        <div class="table-scroll">
            <table class="jobs usage" data-testid="usage-table">
                <thead>
                    <tr>
                        <th scope="col">"Day"</th>
                        <th scope="col">"User"</th>
                        <th scope="col">"Device"</th>
                        <th scope="col">"Kernel"</th>
                        <th scope="col" class="num">"Jobs"</th>
                        <th scope="col" class="num">"GPU seconds"</th>
                        <th scope="col" class="num">"CPU seconds"</th>
                    </tr>
                </thead>
                <tbody>
                    {rows
                        .into_iter()
                        .map(|row| view! {
                            <tr data-testid="usage-row">
                                <td>{row.day}</td>
                                <td>{format::or_dash(row.user)}</td>
                                <td><code>{row.device}</code></td>
                                <td>{row.kernel}</td>
                                <td class="num" data-label="Jobs">{row.jobs}</td>
                                <td class="num" data-label="GPU seconds">{seconds(row.gpu_seconds)}</td>
                                <td class="num" data-label="CPU seconds">{seconds(row.cpu_seconds)}</td>
                            </tr>
                        })
                        .collect_view()}
                </tbody>
            </table>
        </div>
        <h2>"Totals"</h2>
        <div class="table-scroll">
            <table class="jobs usage" data-testid="usage-totals">
                <thead>
                    <tr>
                        <th scope="col">"User"</th>
                        <th scope="col" class="num">"Jobs"</th>
                        <th scope="col" class="num">"GPU seconds"</th>
                        <th scope="col" class="num">"CPU seconds"</th>
                    </tr>
                </thead>
                <tbody>
                    {totals
                        .into_iter()
                        .map(|total| view! {
                            <tr data-testid="usage-total">
                                <td>{format::or_dash(total.user)}</td>
                                <td class="num" data-label="Jobs">{total.jobs}</td>
                                <td class="num" data-label="GPU seconds">{seconds(total.gpu_seconds)}</td>
                                <td class="num" data-label="CPU seconds">{seconds(total.cpu_seconds)}</td>
                            </tr>
                        })
                        .collect_view()}
                </tbody>
            </table>
        </div>
        <Show when=move || everyone>
            <h2>"Totals per day"</h2>
            <DayTable days=days.clone() />
        </Show>
    }
    .into_any()
}

#[component]
fn DayTable(days: Vec<DayTotal>) -> impl IntoView {
    view! {
        <div class="table-scroll">
            <table class="jobs usage" data-testid="usage-days">
                <thead>
                    <tr>
                        <th scope="col">"Day"</th>
                        <th scope="col" class="num">"Jobs"</th>
                        <th scope="col" class="num">"GPU seconds"</th>
                        <th scope="col" class="num">"CPU seconds"</th>
                    </tr>
                </thead>
                <tbody>
                    {days
                        .into_iter()
                        .map(|day| view! {
                            <tr>
                                <td>{day.day}</td>
                                <td class="num">{day.jobs}</td>
                                <td class="num">{format!("{:.2}", day.gpu_seconds)}</td>
                                <td class="num">{format!("{:.2}", day.cpu_seconds)}</td>
                            </tr>
                        })
                        .collect_view()}
                </tbody>
            </table>
        </div>
    }
}

/// Device time per day as bars, GPU stacked on CPU. The tables carry the same figures for
/// screen readers; the figure is described in one sentence.
#[component]
fn UsageChart(days: Vec<DayTotal>) -> impl IntoView {
    let top = days
        .iter()
        .map(DayTotal::device_seconds)
        .fold(0.0, f64::max)
        .max(f64::EPSILON);
    let width = 100.0 / days.len().max(1) as f64;
    let busiest = days
        .iter()
        .max_by(|a, b| a.device_seconds().total_cmp(&b.device_seconds()));
    let span = match days.len() {
        1 => "one day".to_owned(),
        n => format!("{n} days"),
    };
    let description = match busiest {
        Some(day) => format!(
            "Device time per day over {span}; the busiest, {}, used {}.",
            day.day,
            lab::device_time(day.device_seconds())
        ),
        None => "No device time.".to_owned(),
    };
    let bars = days
        .into_iter()
        .enumerate()
        .map(|(i, day)| {
            let x = i as f64 * width + width * 0.1;
            let w = width * 0.8;
            let cpu_h = day.cpu_seconds / top * 100.0;
            let gpu_h = day.gpu_seconds / top * 100.0;
            let label = format!(
                "{}: GPU {}, CPU {}",
                day.day,
                lab::device_time(day.gpu_seconds),
                lab::device_time(day.cpu_seconds)
            );
            view! {
                <g>
                    <title>{label}</title>
                    <rect class="cpu" x=format!("{x:.2}") width=format!("{w:.2}") y=format!("{:.2}", 100.0 - cpu_h) height=format!("{cpu_h:.2}") />
                    <rect class="gpu" x=format!("{x:.2}") width=format!("{w:.2}") y=format!("{:.2}", 100.0 - cpu_h - gpu_h) height=format!("{gpu_h:.2}") />
                </g>
            }
        })
        .collect_view();
    view! {
        <figure class="usage-chart" data-testid="usage-chart">
            <svg viewBox="0 0 100 100" preserveAspectRatio="none" role="img" aria-label=description.clone()>
                {bars}
            </svg>
            <figcaption class="help">
                {description} " " <span class="swatch gpu"></span> " GPU " <span class="swatch cpu"></span> " CPU"
            </figcaption>
        </figure>
    }
}

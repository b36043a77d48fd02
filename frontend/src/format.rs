//! How numbers, sizes and times read in the UI. Unknown values read as "—".

use std::fmt::Display;

use chrono::{DateTime, Utc};
use wasm_bindgen::JsValue;

/// What the UI shows for a value the server does not know.
pub const UNKNOWN: &str = "—";

/// `value` as text, or "—" when unknown.
pub fn or_dash<T: Display>(value: Option<T>) -> String {
    value.map_or_else(|| UNKNOWN.to_owned(), |v| v.to_string())
}

/// A byte count in binary units, such as `"15.6 GiB"`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{} {}", number(value), UNITS[unit])
    }
}

/// A measured quantity with three significant digits, such as `"12.3"` or `"0.0456"`.
pub fn number(x: f64) -> String {
    let magnitude = x.abs();
    if x == 0.0 {
        "0".to_owned()
    } else if !x.is_finite() {
        x.to_string()
    } else if magnitude >= 100.0 {
        format!("{x:.0}")
    } else if magnitude >= 10.0 {
        format!("{x:.1}")
    } else if magnitude >= 1.0 {
        format!("{x:.2}")
    } else if magnitude >= 0.001 {
        format!("{:.3}", x).trim_end_matches('0').to_owned()
    } else {
        format!("{x:.2e}")
    }
}

/// A share from 0 to 1 as a whole percentage: `"42 %"`.
pub fn percent(ratio: f64) -> String {
    format!("{:.0} %", ratio * 100.0)
}

/// A temperature: `"64 °C"`.
pub fn celsius(degrees: f64) -> String {
    format!("{degrees:.0} °C")
}

/// A power: `"245 W"`.
pub fn watts(w: f64) -> String {
    format!("{} W", number(w))
}

/// A rate of transfer: `"1.5 MiB/s"`.
pub fn bytes_per_second(rate: f64) -> String {
    format!("{}/s", bytes(rate.max(0.0) as u64))
}

/// A stretch of time in words, such as `"40 seconds"` or `"5 minutes"`.
pub fn span(seconds: f64) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    if seconds < 90.0 {
        plural(seconds.round() as i64, "second")
    } else {
        plural((seconds / 60.0).round() as i64, "minute")
    }
}

/// A small error or tolerance, in scientific notation: `"1.19e-7"`.
pub fn scientific(x: f64) -> String {
    if x == 0.0 {
        "0".to_owned()
    } else {
        format!("{x:.2e}")
    }
}

/// Milliseconds, such as `"3.14 ms"`.
pub fn millis(ms: f64) -> String {
    format!("{} ms", number(ms))
}

/// A point in time in the browser's time zone: `"2025-11-26 14:03:12"`.
pub fn local_time(t: &DateTime<Utc>) -> String {
    // chrono has no time zone database in the browser; the JS Date knows the user's zone.
    let date = js_sys::Date::new(&JsValue::from_f64(t.timestamp_millis() as f64));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        date.get_full_year(),
        date.get_month() + 1,
        date.get_date(),
        date.get_hours(),
        date.get_minutes(),
        date.get_seconds()
    )
}

/// The time of day in the browser's time zone: `"14:03:12"`.
pub fn local_clock(t: &DateTime<Utc>) -> String {
    let date = js_sys::Date::new(&JsValue::from_f64(t.timestamp_millis() as f64));
    format!(
        "{:02}:{:02}:{:02}",
        date.get_hours(),
        date.get_minutes(),
        date.get_seconds()
    )
}

/// The time from `start` to `end`, such as `"850 ms"` or `"2.5 s"`.
pub fn elapsed(start: &DateTime<Utc>, end: &DateTime<Utc>) -> String {
    let ms = (*end - *start).num_milliseconds().max(0);
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{} s", number(ms as f64 / 1000.0))
    }
}

/// A JSON parameter value as a person writes it: strings without quotes.
pub fn json_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

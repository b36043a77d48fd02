//! Building the figures behind a verdict: each one judged where it is made.

use gpulab_shared::diag::{Bound, Evidence, Verdict};

/// A number that must reach `expected`; below it, the evidence is `below`.
pub fn at_least(
    name: &str,
    measured: f64,
    unit: &str,
    expected: f64,
    source: impl Into<String>,
    below: Verdict,
) -> Evidence {
    number(
        name,
        measured,
        unit,
        expected,
        Bound::AtLeast,
        source,
        if measured >= expected {
            Verdict::Pass
        } else {
            below
        },
    )
}

/// A number that may not pass `expected`; above it, the evidence is `above`.
pub fn at_most(
    name: &str,
    measured: f64,
    unit: &str,
    expected: f64,
    source: impl Into<String>,
    above: Verdict,
) -> Evidence {
    number(
        name,
        measured,
        unit,
        expected,
        Bound::AtMost,
        source,
        if measured <= expected {
            Verdict::Pass
        } else {
            above
        },
    )
}

/// A number judged elsewhere.
pub fn number(
    name: &str,
    measured: f64,
    unit: &str,
    expected: f64,
    bound: Bound,
    source: impl Into<String>,
    verdict: Verdict,
) -> Evidence {
    Evidence {
        name: name.to_owned(),
        measured: Some(measured),
        measured_text: None,
        unit: (!unit.is_empty()).then(|| unit.to_owned()),
        expected: Some(expected),
        expected_text: None,
        bound: Some(bound),
        source: Some(source.into()),
        verdict,
    }
}

/// A number with no expectation yet (a first run sets the CPU's baseline): passes, and its
/// source says why there is nothing to compare with.
pub fn unjudged(name: &str, measured: f64, unit: &str, why: impl Into<String>) -> Evidence {
    Evidence {
        name: name.to_owned(),
        measured: Some(measured),
        measured_text: None,
        unit: (!unit.is_empty()).then(|| unit.to_owned()),
        expected: None,
        expected_text: None,
        bound: None,
        source: Some(why.into()),
        verdict: Verdict::Pass,
    }
}

/// A finding in words (a version, a mode, a UUID), judged by the caller.
pub fn text(
    name: &str,
    measured: impl Into<String>,
    expected: impl Into<String>,
    source: impl Into<String>,
    verdict: Verdict,
) -> Evidence {
    Evidence {
        name: name.to_owned(),
        measured: None,
        measured_text: Some(measured.into()),
        unit: None,
        expected: None,
        expected_text: Some(expected.into()),
        bound: Some(Bound::Equal),
        source: Some(source.into()),
        verdict,
    }
}

/// A figure measured against a threshold taken from the device's history when there is one,
/// else recorded as the first of that history.
pub fn against_baseline(
    baseline: &super::Baseline,
    check: &str,
    name: &str,
    measured: f64,
    unit: &str,
) -> Evidence {
    match baseline.expectation(check, name) {
        Some((expected, source)) => at_least(name, measured, unit, expected, source, Verdict::Fail),
        None => unjudged(
            name,
            measured,
            unit,
            "no history yet: this run sets the baseline",
        ),
    }
}

/// One line for the reason of a check: the figure and what it was held against.
pub fn describe(evidence: &Evidence) -> String {
    let unit = evidence
        .unit
        .as_deref()
        .map(|u| format!(" {u}"))
        .unwrap_or_default();
    let measured = match (&evidence.measured_text, evidence.measured) {
        (Some(text), _) => text.clone(),
        (None, Some(value)) => format!("{}{unit}", figure(value)),
        (None, None) => "nothing".to_owned(),
    };
    let expected = match (&evidence.expected_text, evidence.expected, evidence.bound) {
        (Some(text), _, _) => format!(", expected {text}"),
        (None, Some(value), Some(Bound::AtLeast)) => {
            format!(", expected at least {}{unit}", figure(value))
        }
        (None, Some(value), Some(Bound::AtMost)) => {
            format!(", expected at most {}{unit}", figure(value))
        }
        (None, Some(value), _) => format!(", expected {}{unit}", figure(value)),
        (None, None, _) => String::new(),
    };
    format!("{}: {measured}{expected}", evidence.name)
}

/// A number as people read it: no trailing zeros for whole numbers, 3 significant digits
/// for the rest.
pub fn figure(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else if value.abs() >= 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

//! Reading NVRTC's compile log, so the editor can mark each error at its line.

use serde::Serialize;

/// How bad a compiler message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One message of the compiler about one line of the source, as the code editor's
/// `setDiagnostics` takes it: lines and columns count from 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompileDiagnostic {
    /// The file the compiler names, such as `kernel.cu`, or a header it included.
    #[serde(skip)]
    pub file: String,
    pub line: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    pub severity: Severity,
    pub message: String,
}

/// The errors and warnings in a compile log such as NVRTC writes it:
///
/// ```text
/// kernel.cu(12): error: identifier "x" is undefined
/// kernel.cu(3,14): warning #177-D: variable "y" was declared but never referenced
/// default_program(1): catastrophic error: cannot open source file "missing.h"
/// ```
///
/// Every other line (the source line the compiler echoes, its caret, the closing count of
/// errors, remarks) is left out, so any text that holds a log can be passed.
pub fn parse(log: &str) -> Vec<CompileDiagnostic> {
    log.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<CompileDiagnostic> {
    let line = line.trim_start();
    // The file name may itself hold parentheses; the position is the last `(…): ` group
    // before the severity, so try each `(` until one fits.
    line.match_indices('(').find_map(|(open, _)| {
        if open == 0 {
            return None;
        }
        let rest = &line[open + 1..];
        let (position, rest) = rest.split_once("): ")?;
        let (line_number, column) = match position.split_once(',') {
            Some((l, c)) => (number(l)?, Some(number(c)?)),
            None => (number(position)?, None),
        };
        let (kind, message) = rest.split_once(": ")?;
        // `error`, `catastrophic error`, `error #20`, `warning #177-D`; remarks are left out.
        let kind = kind.split(" #").next()?.trim();
        let severity = if kind == "error" || kind.ends_with(" error") {
            Severity::Error
        } else if kind == "warning" {
            Severity::Warning
        } else {
            return None;
        };
        let message = message.trim();
        (line_number > 0 && !message.is_empty()).then(|| CompileDiagnostic {
            file: line[..open].trim().to_owned(),
            line: line_number,
            column: column.filter(|&c| c > 0),
            severity,
            message: message.to_owned(),
        })
    })
}

/// A line or column number: ASCII digits only.
fn number(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(line: u32, column: Option<u32>, message: &str) -> CompileDiagnostic {
        CompileDiagnostic {
            file: "kernel.cu".to_owned(),
            line,
            column,
            severity: Severity::Error,
            message: message.to_owned(),
        }
    }

    #[test]
    fn reads_an_nvrtc_log_with_its_echoed_source_and_summary() {
        let log = r#"kernel.cu(12): error: identifier "x" is undefined
        x = 1;
        ^

kernel.cu(14): warning #177-D: variable "y" was declared but never referenced
    int y;
        ^

Remark: The warnings can be suppressed with "-diag-suppress <warning-number>"

1 error detected in the compilation of "kernel.cu".
"#;
        assert_eq!(
            parse(log),
            [
                error(12, None, "identifier \"x\" is undefined"),
                CompileDiagnostic {
                    file: "kernel.cu".to_owned(),
                    line: 14,
                    column: None,
                    severity: Severity::Warning,
                    message: "variable \"y\" was declared but never referenced".to_owned(),
                },
            ]
        );
    }

    #[test]
    fn reads_a_line_and_column() {
        assert_eq!(
            parse("kernel.cu(7,21): error: expected a \";\""),
            [error(7, Some(21), "expected a \";\"")]
        );
    }

    #[test]
    fn reads_numbered_and_catastrophic_errors_of_any_file_name() {
        assert_eq!(
            parse(
                "default_program(1): catastrophic error: cannot open source file \"x.h\"\n\
                 my kernel (copy).cu(30): error #20: identifier \"blockIdx\" is undefined"
            ),
            [
                CompileDiagnostic {
                    file: "default_program".to_owned(),
                    ..error(1, None, "cannot open source file \"x.h\"")
                },
                CompileDiagnostic {
                    file: "my kernel (copy).cu".to_owned(),
                    ..error(30, None, "identifier \"blockIdx\" is undefined")
                },
            ]
        );
    }

    #[test]
    fn finds_the_log_inside_a_longer_error_message() {
        let message = "compiling the kernel failed:\n  kernel.cu(3): error: expected a \")\"";
        assert_eq!(parse(message), [error(3, None, "expected a \")\"")]);
    }

    #[test]
    fn leaves_out_what_is_not_a_message_about_a_line() {
        for text in [
            "",
            "no CUDA device: start the container with --gpus all",
            "kernel.cu(): error: nothing",
            "kernel.cu(0): error: line zero",
            "kernel.cu(x): error: not a number",
            "(12): error: no file",
            "kernel.cu(12): remark #550-D: set but never used",
            "kernel.cu(12): error: ",
            "f(12) returned an error: something",
        ] {
            assert_eq!(parse(text), [], "{text:?}");
        }
    }
}

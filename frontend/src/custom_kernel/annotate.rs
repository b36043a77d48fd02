//! A custom kernel's source with the compiler's messages put on the lines they are about,
//! for the job page of a job whose compilation failed.
//!
//! NVRTC counts lines and columns in the source as it was sent (`params.source`), from 1.

use super::compile_log::{CompileDiagnostic, Severity};

/// The source, line by line, each with the messages about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotated {
    pub lines: Vec<SourceLine>,
    /// Messages about no line of this source: a header it included, or a line past its end.
    pub elsewhere: Vec<CompileDiagnostic>,
}

impl Annotated {
    /// How many errors and warnings there are, wherever they point.
    pub fn counts(&self) -> (usize, usize) {
        let severities = self
            .lines
            .iter()
            .flat_map(|line| line.notes.iter().map(|note| note.severity))
            .chain(self.elsewhere.iter().map(|d| d.severity));
        severities.fold((0, 0), |(errors, warnings), severity| match severity {
            Severity::Error => (errors + 1, warnings),
            Severity::Warning => (errors, warnings + 1),
        })
    }
}

/// One line of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLine {
    /// From 1.
    pub number: u32,
    /// The line's text split where a message points at a column, so that the character there
    /// can be marked.
    pub segments: Vec<Segment>,
    /// The messages about this line, in the compiler's order.
    pub notes: Vec<Note>,
}

impl SourceLine {
    /// The worst severity among the line's messages.
    pub fn severity(&self) -> Option<Severity> {
        let severities = || self.notes.iter().map(|note| note.severity);
        severities()
            .find(|&s| s == Severity::Error)
            .or_else(|| severities().next())
    }
}

/// A piece of a line: marked when a message points at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub text: String,
    pub mark: Option<Severity>,
}

/// A compiler message under its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub severity: Severity,
    pub message: String,
    /// The column the compiler named, from 1, in characters.
    pub column: Option<u32>,
}

/// Puts each message of `diagnostics` on its line of `source`.
pub fn annotate(source: &str, diagnostics: &[CompileDiagnostic]) -> Annotated {
    let texts: Vec<&str> = source.lines().collect();
    let mut lines: Vec<SourceLine> = (1..)
        .take(texts.len())
        .map(|number| SourceLine {
            number,
            segments: Vec::new(),
            notes: Vec::new(),
        })
        .collect();
    let mut elsewhere = Vec::new();
    for diagnostic in diagnostics {
        let index = diagnostic
            .line
            .checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
            .unwrap_or(usize::MAX);
        match lines.get_mut(index) {
            Some(line) if !is_other_file(&diagnostic.file) => line.notes.push(Note {
                severity: diagnostic.severity,
                message: diagnostic.message.clone(),
                column: diagnostic.column,
            }),
            _ => elsewhere.push(diagnostic.clone()),
        }
    }
    for (line, text) in lines.iter_mut().zip(&texts) {
        line.segments = segments(text, &line.notes);
    }
    Annotated { lines, elsewhere }
}

/// Whether `file` is not the kernel's source but something it included: a header, or a path
/// (the source itself is compiled under a bare name such as `kernel.cu`).
fn is_other_file(file: &str) -> bool {
    let header = [".h", ".hh", ".hpp", ".cuh", ".inl"]
        .iter()
        .any(|ext| file.ends_with(ext));
    header || file.contains('/')
}

/// `text` cut at the columns the notes point at, marked with the worst severity pointing
/// there: the identifier that starts at the column (NVRTC points at the start of the name it
/// means), else the one character. A column past the end of the line marks nothing.
fn segments(text: &str, notes: &[Note]) -> Vec<Segment> {
    let chars: Vec<char> = text.chars().collect();
    let mut marks: Vec<Option<Severity>> = vec![None; chars.len()];
    let is_word = |c: &char| c.is_alphanumeric() || *c == '_';
    for note in notes {
        let Some(start) = note
            .column
            .and_then(|c| usize::try_from(c).ok()?.checked_sub(1))
        else {
            continue;
        };
        let Some(first) = chars.get(start) else {
            continue;
        };
        let len = if is_word(first) {
            chars[start..].iter().take_while(|c| is_word(c)).count()
        } else {
            1
        };
        for mark in &mut marks[start..start + len] {
            if *mark != Some(Severity::Error) {
                *mark = Some(note.severity);
            }
        }
    }
    let mut segments: Vec<Segment> = Vec::new();
    for (c, mark) in chars.into_iter().zip(marks) {
        match segments.last_mut() {
            Some(last) if last.mark == mark => last.text.push(c),
            _ => segments.push(Segment {
                text: c.to_string(),
                mark,
            }),
        }
    }
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diagnostic(
        line: u32,
        column: Option<u32>,
        severity: Severity,
        message: &str,
    ) -> CompileDiagnostic {
        CompileDiagnostic {
            file: "kernel.cu".to_owned(),
            line,
            column,
            severity,
            message: message.to_owned(),
        }
    }

    fn plain(text: &str) -> Segment {
        Segment {
            text: text.to_owned(),
            mark: None,
        }
    }

    const SOURCE: &str = "__global__ void k(float *out, unsigned n) {\n\
                          \tunsigned i = threadIdx.x;\n\
                          \tif (i < n) out[i] = x;\n\
                          }\n";

    #[test]
    fn puts_each_message_under_its_line_with_its_column_marked() {
        let annotated = annotate(
            SOURCE,
            &crate::custom_kernel::compile_log::parse(
                "kernel.cu(3,22): error: identifier \"x\" is undefined\n\
                 \tif (i < n) out[i] = x;\n\
                 \t                    ^\n\
                 kernel.cu(2): warning #550-D: variable \"i\" was set but never used",
            ),
        );
        assert_eq!(annotated.lines.len(), 4);
        assert_eq!(annotated.elsewhere, []);
        assert_eq!(annotated.counts(), (1, 1));

        let first = &annotated.lines[0];
        assert_eq!(first.number, 1);
        assert_eq!(first.notes, []);
        assert_eq!(first.severity(), None);
        assert_eq!(
            first.segments,
            [plain("__global__ void k(float *out, unsigned n) {")]
        );

        let warned = &annotated.lines[1];
        assert_eq!(warned.severity(), Some(Severity::Warning));
        assert_eq!(
            warned.notes,
            [Note {
                severity: Severity::Warning,
                message: "variable \"i\" was set but never used".to_owned(),
                column: None,
            }]
        );
        assert_eq!(warned.segments, [plain("\tunsigned i = threadIdx.x;")]);

        let failed = &annotated.lines[2];
        assert_eq!(failed.number, 3);
        assert_eq!(failed.severity(), Some(Severity::Error));
        assert_eq!(failed.notes[0].column, Some(22));
        assert_eq!(
            failed.segments,
            [
                plain("\tif (i < n) out[i] = "),
                Segment {
                    text: "x".to_owned(),
                    mark: Some(Severity::Error),
                },
                plain(";"),
            ]
        );
    }

    #[test]
    fn several_messages_on_one_line_keep_their_order_and_the_worst_mark_wins() {
        let annotated = annotate(
            "a b",
            &[
                diagnostic(1, Some(3), Severity::Warning, "w"),
                diagnostic(1, Some(3), Severity::Error, "e"),
                diagnostic(1, Some(1), Severity::Warning, "w2"),
            ],
        );
        let line = &annotated.lines[0];
        let messages: Vec<_> = line.notes.iter().map(|n| n.message.as_str()).collect();
        assert_eq!(messages, ["w", "e", "w2"]);
        assert_eq!(line.severity(), Some(Severity::Error));
        assert_eq!(
            line.segments,
            [
                Segment {
                    text: "a".to_owned(),
                    mark: Some(Severity::Warning)
                },
                plain(" "),
                Segment {
                    text: "b".to_owned(),
                    mark: Some(Severity::Error)
                },
            ]
        );
    }

    #[test]
    fn the_mark_covers_the_name_that_starts_at_the_column() {
        let annotated = annotate(
            "out[i] = factor * in[i];",
            &[diagnostic(
                1,
                Some(10),
                Severity::Error,
                "identifier \"factor\" is undefined",
            )],
        );
        assert_eq!(
            annotated.lines[0].segments,
            [
                plain("out[i] = "),
                Segment {
                    text: "factor".to_owned(),
                    mark: Some(Severity::Error)
                },
                plain(" * in[i];"),
            ]
        );
    }

    #[test]
    fn a_column_past_the_end_of_its_line_marks_nothing_but_keeps_the_message() {
        let annotated = annotate("int x", &[diagnostic(1, Some(9), Severity::Error, "e")]);
        let line = &annotated.lines[0];
        assert_eq!(line.segments, [plain("int x")]);
        assert_eq!(line.notes[0].column, Some(9));
        assert_eq!(line.severity(), Some(Severity::Error));
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let annotated = annotate(
            "// π ≈ 3\nfloat y = z;",
            &[
                diagnostic(1, Some(6), Severity::Warning, "w"),
                diagnostic(2, Some(11), Severity::Error, "e"),
            ],
        );
        assert_eq!(
            annotated.lines[0].segments,
            [
                plain("// π "),
                Segment {
                    text: "≈".to_owned(),
                    mark: Some(Severity::Warning)
                },
                plain(" 3"),
            ]
        );
        assert_eq!(annotated.lines[1].segments[1].text, "z");
    }

    #[test]
    fn messages_about_other_files_or_missing_lines_are_kept_apart() {
        let header = CompileDiagnostic {
            file: "cuda_fp16.h".to_owned(),
            ..diagnostic(1, None, Severity::Error, "in a header")
        };
        let path = CompileDiagnostic {
            file: "/usr/include/x".to_owned(),
            ..diagnostic(2, None, Severity::Warning, "in a path")
        };
        let past_the_end = diagnostic(40, Some(2), Severity::Error, "too far");
        let annotated = annotate(
            "line one\r\nline two\n",
            &[header.clone(), path.clone(), past_the_end.clone()],
        );
        assert_eq!(
            annotated.lines.len(),
            2,
            "CRLF and a last newline read as two lines"
        );
        assert!(annotated.lines.iter().all(|l| l.notes.is_empty()));
        assert_eq!(annotated.elsewhere, [header, path, past_the_end]);
        assert_eq!(annotated.counts(), (2, 1));
    }

    #[test]
    fn an_empty_source_has_no_lines() {
        let annotated = annotate("", &[diagnostic(1, None, Severity::Error, "e")]);
        assert_eq!(annotated.lines, []);
        assert_eq!(annotated.elsewhere.len(), 1);
    }
}

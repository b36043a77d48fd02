//! Refuses every way a kernel source could make NVRTC read a file of this host.
//!
//! NVRTC opens whatever an `#include` names, absolute paths and the worker's current
//! directory included, and echoes the lines it read into the compile log that goes back to
//! the user: `#include "/etc/passwd"` would print the file, `#include "/dev/zero"` would read
//! without end, and `__has_include("/x")` tells whether a file exists. The NVRTC builds
//! gpulab runs with (12.8, 13.5) resolve no header internally, not even `cuda_fp16.h`, and
//! gpulab gives them no include path, so no `#include` can name anything a kernel may use:
//! the allow-list is empty and every include is refused before NVRTC sees the source.
//!
//! The scan is deliberately stricter than the preprocessor, so that no spelling slips past
//! it: `#` and its digraph `%:` are checked wherever they stand outside comments and
//! literals (not only at the start of a line), comments between `#` and the directive name
//! are skipped as the preprocessor skips them, line continuations are joined first, and the
//! spellings whose meaning depends on the compiler's mode (trigraphs `??=` and `??/`, a
//! backslash followed by blanks at a line's end, a lone carriage return, raw string literals,
//! universal character names outside literals) are refused outright. Token pasting is
//! refused where it could build `__has_include` out of the source's own identifiers, since
//! NVRTC honours a pasted one.

use super::compile::CompileError;

/// The headers a kernel may include. NVRTC 12.8 and 13.5 have no built-in headers (each
/// answers `#include <cuda_fp16.h>` with "no directories in search list"), so none.
pub const ALLOWED_INCLUDES: &[&str] = &[];

/// Directives that make the preprocessor open a file, in some compiler mode or other.
const FILE_DIRECTIVES: [&str; 4] = ["include", "include_next", "import", "embed"];

/// Checks `source` (named `name` in messages) for anything that would read a host file.
/// The error reads like NVRTC's own, `name(line,column): error: …`, so the editor marks it.
pub fn check(source: &str, name: &str) -> Result<(), CompileError> {
    scan(source).map_err(|refusal| CompileError::Source {
        status: "not run: the source was refused".to_owned(),
        log: format!(
            "{name}({},{}): error: {}",
            refusal.line, refusal.column, refusal.message
        ),
    })
}

/// Why a source was refused, and where (line and column from 1).
#[derive(Debug, PartialEq)]
struct Refusal {
    line: usize,
    column: usize,
    message: String,
}

/// One character after line continuations are joined, with its place in the source.
#[derive(Clone, Copy)]
struct Char {
    c: char,
    line: usize,
    column: usize,
}

fn refuse(at: Char, message: impl Into<String>) -> Refusal {
    Refusal {
        line: at.line,
        column: at.column,
        message: message.into(),
    }
}

fn includes_message() -> String {
    if ALLOWED_INCLUDES.is_empty() {
        "#include is not available: this server's NVRTC has no built-in headers and no include \
         path, so a kernel must be self-contained (paste the declarations it needs into the \
         source)"
            .to_owned()
    } else {
        format!("includes are limited to: {}", ALLOWED_INCLUDES.join(", "))
    }
}

/// The source's characters with their positions, continuations (`\` newline) removed.
/// Spellings that one compiler mode would join or split differently are refused.
fn splice(source: &str) -> Result<Vec<Char>, Refusal> {
    let raw: Vec<char> = source.chars().collect();
    let mut out = Vec::with_capacity(raw.len());
    let (mut line, mut column) = (1, 1);
    let mut i = 0;
    while i < raw.len() {
        let here = Char {
            c: raw[i],
            line,
            column,
        };
        if raw[i] == '?'
            && raw.get(i + 1) == Some(&'?')
            && matches!(raw.get(i + 2), Some('=' | '/'))
        {
            return Err(refuse(
                here,
                "trigraphs (`??=`, `??/`) are not accepted: write `#` or `\\`",
            ));
        }
        if raw[i] == '\r' && raw.get(i + 1) != Some(&'\n') {
            return Err(refuse(
                here,
                "a carriage return must be followed by a line feed",
            ));
        }
        if raw[i] == '\\' {
            let mut j = i + 1;
            while matches!(raw.get(j), Some(' ' | '\t' | '\u{b}' | '\u{c}')) {
                j += 1;
            }
            if raw.get(j) == Some(&'\r') {
                j += 1;
            }
            if raw.get(j) == Some(&'\n') {
                if raw[i + 1..j].iter().any(|&c| c != '\r') {
                    return Err(refuse(
                        here,
                        "a backslash followed by blanks at the end of a line is ambiguous: \
                         remove the blanks or the backslash",
                    ));
                }
                i = j + 1;
                line += 1;
                column = 1;
                continue;
            }
        }
        out.push(here);
        if raw[i] == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
        i += 1;
    }
    Ok(out)
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == '$' || c == '\\' || !c.is_ascii()
}

fn is_ident_char(c: char) -> bool {
    is_ident_start(c) || c.is_ascii_digit()
}

fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{b}' | '\u{c}' | '\r')
}

fn scan(source: &str) -> Result<(), Refusal> {
    let s = splice(source)?;
    let at = |i: usize| s.get(i).map(|ch| ch.c);
    // Token pasting can build `__has_include` out of pieces (`__has_ ## include`), and EDG
    // honours the result: the identifiers of the source, and where the first paste stands.
    let mut identifiers = std::collections::HashSet::new();
    let mut first_paste = None;
    let mut i = 0;
    while i < s.len() {
        let c = s[i].c;
        match c {
            '/' if at(i + 1) == Some('/') => {
                while i < s.len() && s[i].c != '\n' {
                    i += 1;
                }
            }
            '/' if at(i + 1) == Some('*') => i = skip_block_comment(&s, i),
            '"' | '\'' => i = skip_literal(&s, i),
            '#' => {
                if at(i + 1) == Some('#') {
                    first_paste.get_or_insert(i);
                }
                check_directive(&s, i, i + 1)?;
                i += 1;
            }
            '%' if at(i + 1) == Some(':') => {
                if at(i + 2) == Some('%') && at(i + 3) == Some(':') {
                    first_paste.get_or_insert(i);
                }
                check_directive(&s, i, i + 2)?;
                i += 2;
            }
            c if c.is_ascii_digit()
                || (c == '.' && at(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                i = skip_pp_number(&s, i);
            }
            c if is_ident_start(c) => {
                let start = i;
                while at(i).is_some_and(is_ident_char) {
                    i += 1;
                }
                let ident: String = s[start..i].iter().map(|ch| ch.c).collect();
                if ident.contains('\\') {
                    return Err(refuse(
                        s[start],
                        "universal character names (`\\u…`) are accepted only inside literals",
                    ));
                }
                if FILE_OPERATORS.iter().any(|op| ident.starts_with(op)) {
                    return Err(refuse(
                        s[start],
                        format!(
                            "`{ident}` is not available: it would look for files on the server"
                        ),
                    ));
                }
                if at(i) == Some('"') && matches!(ident.as_str(), "R" | "u8R" | "uR" | "UR" | "LR")
                {
                    return Err(refuse(
                        s[start],
                        "raw string literals are not accepted in kernel sources",
                    ));
                }
                identifiers.insert(ident);
            }
            _ => i += 1,
        }
    }
    if let Some(paste) = first_paste {
        for operator in FILE_OPERATORS {
            if can_be_pasted(operator, &identifiers) {
                return Err(refuse(
                    s[paste],
                    format!(
                        "token pasting here could build `{operator}` out of this source's \
                         identifiers, and it would look for files on the server: rename them"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The operators that look for files; an identifier starting with one of them is refused.
const FILE_OPERATORS: [&str; 3] = ["__has_include", "__has_include_next", "__has_embed"];

/// Whether `target` is a concatenation of `pieces`: pasting joins whole tokens only, and the
/// tokens it can join are the source's own (macro arguments included).
fn can_be_pasted(target: &str, pieces: &std::collections::HashSet<String>) -> bool {
    let mut reachable = vec![false; target.len() + 1];
    reachable[0] = true;
    for end in 1..=target.len() {
        reachable[end] =
            (0..end).any(|start| reachable[start] && pieces.contains(&target[start..end]));
    }
    reachable[target.len()]
}

/// Past the `/* … */` that starts at `i` (to the end when it is not closed).
fn skip_block_comment(s: &[Char], i: usize) -> usize {
    let mut j = i + 2;
    while j < s.len() {
        if s[j].c == '*' && s.get(j + 1).is_some_and(|ch| ch.c == '/') {
            return j + 2;
        }
        j += 1;
    }
    s.len()
}

/// Past the string or character literal that opens at `i`: at its closing quote, or at the
/// end of the line where it is left open, as the preprocessor ends it.
fn skip_literal(s: &[Char], i: usize) -> usize {
    let quote = s[i].c;
    let mut j = i + 1;
    while j < s.len() {
        match s[j].c {
            '\\' => j += 2,
            '\n' => return j,
            c if c == quote => return j + 1,
            _ => j += 1,
        }
    }
    s.len()
}

/// Past the preprocessing number at `i`, with its digit separators (`1'000`) and exponent
/// signs (`1e+5`), so that a separator is not taken for a character literal.
fn skip_pp_number(s: &[Char], i: usize) -> usize {
    let at = |j: usize| s.get(j).map(|ch| ch.c);
    let mut j = i + 1;
    while let Some(c) = at(j) {
        let exponent_sign =
            matches!(c, 'e' | 'E' | 'p' | 'P') && matches!(at(j + 1), Some('+' | '-'));
        let separator =
            c == '\'' && at(j + 1).is_some_and(|d| d.is_ascii_alphanumeric() || d == '_');
        if exponent_sign || separator {
            j += 2;
        } else if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            j += 1;
        } else {
            break;
        }
    }
    j
}

/// Checks the directive name after a `#` (at `hash`) that ends at `after`: blanks and
/// comments may stand between them, as in `# /* */ include`.
fn check_directive(s: &[Char], hash: usize, after: usize) -> Result<(), Refusal> {
    let mut j = after;
    loop {
        match s.get(j).map(|ch| ch.c) {
            Some(c) if is_blank(c) => j += 1,
            Some('/') if s.get(j + 1).is_some_and(|ch| ch.c == '*') => {
                j = skip_block_comment(s, j);
            }
            _ => break,
        }
    }
    let start = j;
    while s.get(j).is_some_and(|ch| is_ident_char(ch.c)) {
        j += 1;
    }
    let name: String = s[start..j].iter().map(|ch| ch.c).collect();
    if !name.is_ascii() || name.contains('\\') {
        return Err(refuse(
            s[hash],
            "a directive name must be plain ASCII letters",
        ));
    }
    if FILE_DIRECTIVES.contains(&name.as_str()) {
        return Err(refuse(s[hash], includes_message()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(source: &str) -> Refusal {
        scan(source).expect_err(source)
    }

    #[test]
    fn every_spelling_of_an_include_is_refused_where_it_stands() {
        for (source, line, column) in [
            ("#include \"/etc/passwd\"\n", 1, 1),
            ("int a;\n  #  include </etc/passwd>\n", 2, 3),
            ("%:include \"/etc/passwd\"\n", 1, 1),
            ("# /* hidden */ include \"/etc/passwd\"\n", 1, 1),
            (
                "#/* a\n comment over two lines */include \"/etc/passwd\"\n",
                1,
                1,
            ),
            ("#\\\ninclude \"/etc/passwd\"\n", 1, 1),
            ("#inc\\\nlude \"/etc/passwd\"\n", 1, 1),
            ("#define F \"/etc/passwd\"\n#include F\n", 2, 1),
            ("#include_next \"/etc/passwd\"\n", 1, 1),
            ("#import \"/etc/passwd\"\n", 1, 1),
            ("#embed \"/dev/zero\"\n", 1, 1),
            ("#if 0\n#include \"/etc/passwd\"\n#endif\n", 2, 1),
            ("int x = 1'000; // '\n#include \"/etc/passwd\"\n", 2, 1),
        ] {
            let refusal = refused(source);
            assert_eq!((refusal.line, refusal.column), (line, column), "{source:?}");
            assert!(
                refusal.message.contains("#include is not available"),
                "{source:?}: {}",
                refusal.message
            );
        }
    }

    #[test]
    fn tricks_whose_meaning_depends_on_the_compiler_are_refused() {
        for (source, says) in [
            ("??=include \"/etc/passwd\"\n", "trigraphs"),
            ("#define X ??/\ninclude\n", "trigraphs"),
            (
                "#if __has_include(\"/etc/passwd\")\n#endif\n",
                "__has_include",
            ),
            ("#\\u0069nclude \"/etc/passwd\"\n", "plain ASCII"),
            (
                "#define P(a, b) a##b\n#if P(__has_, include)(\"/etc/passwd\")\n#endif\n",
                "token pasting",
            ),
            (
                "#define P(a, b) a %:%: b\n#if P(P(__h, as_), include)(\"/x\")\n#endif\n",
                "token pasting",
            ),
            ("int \\u0061 = 1;\n", "universal character"),
            (
                "const char* s = R\"x(/*)x\";\n#include \"/etc/passwd\"\n",
                "raw string",
            ),
            (
                "#define A 1 \\ \n#include \"/etc/passwd\"\n",
                "backslash followed by blanks",
            ),
            ("int a;\r#include \"/etc/passwd\"\n", "carriage return"),
        ] {
            let refusal = refused(source);
            assert!(
                refusal.message.contains(says),
                "{source:?}: {}",
                refusal.message
            );
        }
    }

    #[test]
    fn ordinary_kernels_pass() {
        for source in [
            "extern \"C\" __global__ void k(float* y) {\n#pragma unroll\n  for (int i = 0; i < 4; ++i) y[i] = 1.0e+5f;\n}\n",
            "#define STR(x) #x\n#define CAT(a, b) a##b\nint CAT(has_, include);\nconst char* s = \"#include \\\"x\\\"\"; // #include \"y\"\n/* #include \"z\" */\nchar c = '#';\n",
            "#define LONG_MACRO(a) \\\n  ((a) + 1)\r\nint b = 0x1'00;\n",
        ] {
            assert_eq!(scan(source), Ok(()), "{source:?}");
        }
    }

    #[test]
    fn the_error_reads_like_nvrtcs_so_the_editor_marks_it() {
        let err = check("int a;\n #include \"/etc/passwd\"\n", "kernel.cu").unwrap_err();
        let CompileError::Source { log, .. } = err else {
            panic!("not a source error: {err:?}");
        };
        assert!(
            log.starts_with("kernel.cu(2,2): error: #include is not available"),
            "{log}"
        );
    }
}

//! Run-time compilation with NVRTC: CUDA C source to a CUBIN for the device's exact
//! architecture, or to PTX where this NVRTC does not know the architecture.
//!
//! A CUBIN needs no JIT compilation by the driver, so it loads even where the driver is older
//! than the NVRTC that built it; PTX is only the fallback, and a driver too old for it is
//! reported as such when the module is loaded.

use std::ffi::{c_char, c_int, CString};
use std::time::Instant;

use cudarc::nvrtc::{result as nvrtc, sys};

/// What NVRTC produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Cubin,
    Ptx,
}

impl ImageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageKind::Cubin => "cubin",
            ImageKind::Ptx => "ptx",
        }
    }
}

/// A compiled module, ready for `cuModuleLoadData`.
#[derive(Debug, Clone)]
pub struct Image {
    pub kind: ImageKind,
    /// The CUBIN, or the PTX text with its terminating NUL.
    pub bytes: Vec<u8>,
    /// `sm_90` for a CUBIN, `compute_90` for PTX.
    pub target: String,
    /// NVRTC's log: warnings, or empty.
    pub log: String,
    pub compile_ms: f64,
}

/// Why a source did not compile.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompileError {
    /// The source is wrong: NVRTC's log, with columns added where it marked them.
    #[error("compilation failed (NVRTC {status}):\n{log}")]
    Source { status: String, log: String },
    /// NVRTC itself could not be used.
    #[error("{0}")]
    Nvrtc(String),
}

/// Options of one compilation.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Contract `a * b + c` into fused multiply-adds (NVRTC's default), or round each step.
    pub no_fmad: bool,
}

/// The NVRTC version, such as `(13, 0)`.
pub fn version() -> Result<(i32, i32), String> {
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: both pointers are live c_ints for NVRTC to write.
    let status = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    check(status).map_err(|e| format!("nvrtcVersion failed: {e}"))?;
    Ok((major, minor))
}

/// The architectures (`90` for sm_90) this NVRTC can build CUBINs for.
pub fn supported_archs() -> Result<Vec<i32>, String> {
    let mut count: c_int = 0;
    // SAFETY: `count` is a live c_int for NVRTC to write.
    check(unsafe { sys::nvrtcGetNumSupportedArchs(&mut count) })
        .map_err(|e| format!("nvrtcGetNumSupportedArchs failed: {e}"))?;
    let mut archs = vec![0 as c_int; count.max(0) as usize];
    // SAFETY: `archs` holds `count` c_ints, as many as NVRTC writes.
    check(unsafe { sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) })
        .map_err(|e| format!("nvrtcGetSupportedArchs failed: {e}"))?;
    Ok(archs)
}

/// Compiles `source` (named `name` in the log, such as `kernel.cu`) for compute capability
/// `arch` (`(9, 0)`): a CUBIN for exactly that architecture when NVRTC knows it, else PTX for
/// the newest virtual architecture NVRTC has below it.
pub fn compile(
    source: &str,
    name: &str,
    arch: (u32, u32),
    options: &Options,
) -> Result<Image, CompileError> {
    if source.contains('\0') {
        return Err(CompileError::Nvrtc(
            "the source holds a NUL byte, which CUDA C cannot contain".into(),
        ));
    }
    // Before NVRTC opens anything: an include would read the server's own files.
    super::includes::check(source, name)?;
    let wanted = (arch.0 * 10 + arch.1) as i32;
    let supported = supported_archs().map_err(CompileError::Nvrtc)?;
    // GPULAB_NVRTC_PTX=1 asks for PTX even where a CUBIN could be built: a diagnostic, and
    // how the GPU check exercises the fallback on a GPU that NVRTC knows.
    let force_ptx = std::env::var_os("GPULAB_NVRTC_PTX").is_some_and(|v| v == "1");
    let (kind, target) = if supported.contains(&wanted) && !force_ptx {
        (ImageKind::Cubin, format!("sm_{wanted}"))
    } else {
        let best = supported
            .iter()
            .copied()
            .filter(|&a| a <= wanted)
            .max()
            .ok_or_else(|| {
                CompileError::Nvrtc(format!(
                    "NVRTC {} builds for none of the architectures up to sm_{wanted}: it knows {supported:?}",
                    version().map(|(a, b)| format!("{a}.{b}")).unwrap_or_default()
                ))
            })?;
        (ImageKind::Ptx, format!("compute_{best}"))
    };
    let mut args = vec![
        format!("--gpu-architecture={target}"),
        "--std=c++17".to_owned(),
        "--device-as-default-execution-space".to_owned(),
    ];
    if options.no_fmad {
        args.push("--fmad=false".to_owned());
    }

    let started = Instant::now();
    let src = CString::new(source).map_err(|e| CompileError::Nvrtc(e.to_string()))?;
    let cname = CString::new(name).map_err(|e| CompileError::Nvrtc(e.to_string()))?;
    let program = Program(
        nvrtc::create_program(&src, Some(&cname))
            .map_err(|e| CompileError::Nvrtc(format!("nvrtcCreateProgram failed: {e:?}")))?,
    );
    // SAFETY: the program is live; the options are owned strings that outlive the call.
    let compiled = unsafe { nvrtc::compile_program(program.0, &args) };
    let log = program.log();
    if let Err(e) = compiled {
        return Err(CompileError::Source {
            status: format!("{:?}", e.0),
            log: with_columns(&log, source),
        });
    }
    let bytes = match kind {
        ImageKind::Cubin => program.cubin(),
        ImageKind::Ptx => program.ptx(),
    }
    .map_err(CompileError::Nvrtc)?;
    Ok(Image {
        kind,
        bytes,
        target,
        log: with_columns(&log, source),
        compile_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

/// An NVRTC program, destroyed on drop.
struct Program(sys::nvrtcProgram);

impl Program {
    fn log(&self) -> String {
        // SAFETY: the program is live; the log comes back as a NUL-terminated buffer.
        match unsafe { nvrtc::get_program_log(self.0) } {
            Ok(raw) => c_chars_to_string(&raw),
            Err(e) => format!("(NVRTC's log could not be read: {e:?})"),
        }
    }

    fn cubin(&self) -> Result<Vec<u8>, String> {
        let mut size = 0usize;
        // SAFETY: the program is live and compiled; `size` is a live usize to write.
        check(unsafe { sys::nvrtcGetCUBINSize(self.0, &mut size) })
            .map_err(|e| format!("nvrtcGetCUBINSize failed: {e}"))?;
        let mut bytes = vec![0u8; size];
        // SAFETY: `bytes` holds the `size` bytes NVRTC writes.
        check(unsafe { sys::nvrtcGetCUBIN(self.0, bytes.as_mut_ptr() as *mut c_char) })
            .map_err(|e| format!("nvrtcGetCUBIN failed: {e}"))?;
        Ok(bytes)
    }

    fn ptx(&self) -> Result<Vec<u8>, String> {
        // SAFETY: the program is live and compiled.
        let raw =
            unsafe { nvrtc::get_ptx(self.0) }.map_err(|e| format!("nvrtcGetPTX failed: {e:?}"))?;
        Ok(raw.into_iter().map(|c| c as u8).collect())
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the program is live and destroyed only here.
        let _ = unsafe { nvrtc::destroy_program(self.0) };
    }
}

fn check(status: sys::nvrtcResult) -> Result<(), String> {
    if status == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(format!("{status:?}"))
    }
}

fn c_chars_to_string(raw: &[c_char]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).trim_end().to_owned()
}

/// NVRTC's log with the column of each message added, as `file(line,column): error: …`.
///
/// NVRTC names only the line (`kernel.cu(12): error: …`), then echoes that source line,
/// indented, and puts a caret under the place it means. The echo is found in `source` by its
/// line number: the caret's offset past the echo's indent is the column (from 1). Messages
/// without such an echo and caret keep their line alone.
pub fn with_columns(log: &str, source: &str) -> String {
    let source_lines: Vec<&str> = source.lines().collect();
    let lines: Vec<&str> = log.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let annotated = message_position(line).and_then(|(close, number)| {
            let source_line = source_lines.get(number.checked_sub(1)?)?;
            let echo = lines.get(i + 1)?;
            let caret = lines.get(i + 2)?;
            let column = caret_column(source_line, echo, caret)?;
            Some(format!("{},{column}{}", &line[..close], &line[close..]))
        });
        out.push(annotated.unwrap_or_else(|| (*line).to_owned()));
    }
    out.join("\n")
}

/// Where a message line (`name(12): error: …`) closes its line number, and that number.
fn message_position(line: &str) -> Option<(usize, usize)> {
    line.match_indices("): ").find_map(|(close, _)| {
        let open = line[..close].rfind('(')?;
        let digits = &line[open + 1..close];
        let rest = &line[close + 3..];
        let is_message = ["error", "warning", "catastrophic error"]
            .iter()
            .any(|kind| rest.starts_with(kind));
        if open == 0 || !is_message || digits.is_empty() {
            return None;
        }
        digits.parse().ok().map(|number| (close, number))
    })
}

/// The column, from 1, of `source_line` that the caret under its echo points at.
fn caret_column(source_line: &str, echo: &str, caret: &str) -> Option<usize> {
    let caret = caret.trim_end();
    if !caret.ends_with('^') || caret.trim_start() != "^" {
        return None;
    }
    let caret_at = caret.len() - 1;
    let source_line = source_line.trim_end();
    // The echo is the source line behind an indent of NVRTC's: the caret's offset past that
    // indent is the byte offset in the source line.
    let echo = echo.trim_end();
    let indent = echo.strip_suffix(source_line).map(str::len).or_else(|| {
        // Tabs expanded or the like: line up the first non-blank characters instead.
        let lead = source_line.len() - source_line.trim_start().len();
        let echo_lead = echo.len() - echo.trim_start().len();
        echo_lead.checked_sub(lead)
    })?;
    let offset = caret_at.checked_sub(indent)?;
    let column = source_line
        .char_indices()
        .take_while(|(byte, _)| *byte < offset)
        .count();
    Some(column + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_come_from_the_caret_under_the_echoed_line() {
        let source =
            "extern \"C\" __global__ void k(float* y) {\n    int i = 0;\n    y[i] = x;\n}\n";
        let log = "kernel.cu(3): error: identifier \"x\" is undefined\n      y[i] = x;\n             ^\n\n1 error detected in the compilation of \"kernel.cu\".";
        let annotated = with_columns(log, source);
        let first = annotated.lines().next().unwrap();
        // `x` is the 12th character of `    y[i] = x;`.
        assert_eq!(
            first,
            "kernel.cu(3,12): error: identifier \"x\" is undefined"
        );
        // Everything else is kept as NVRTC wrote it.
        assert_eq!(annotated.lines().count(), log.lines().count());
        assert!(annotated.ends_with("compilation of \"kernel.cu\"."));
    }

    #[test]
    fn messages_without_a_caret_keep_their_line_only() {
        let source = "#include \"nope.h\"\n\n\n\n\n\nint t;\n";
        let log = "kernel.cu(1): catastrophic error: cannot open source file \"nope.h\"\n  #include \"nope.h\"\n           ^\nmy (odd) name.cu(7): warning #177-D: variable \"t\" was declared but never referenced\n";
        let annotated = with_columns(log, source);
        let lines: Vec<&str> = annotated.lines().collect();
        assert_eq!(
            lines[0],
            "kernel.cu(1,10): catastrophic error: cannot open source file \"nope.h\""
        );
        assert_eq!(
            lines[3],
            "my (odd) name.cu(7): warning #177-D: variable \"t\" was declared but never referenced"
        );
    }

    #[test]
    fn a_line_number_past_the_source_or_a_missing_caret_adds_nothing() {
        let log = "k.cu(40): error: bad\n  x\n  ^";
        assert_eq!(with_columns(log, "x\n"), log);
        let log = "k.cu(1): error: bad\n  x\n  y";
        assert_eq!(with_columns(log, "x\n"), log);
    }

    #[test]
    fn message_lines_are_told_from_source_lines() {
        assert_eq!(message_position("k.cu(12): error: bad"), Some((7, 12)));
        assert!(message_position("k.cu(12): remark: fine").is_none());
        assert!(message_position("  f(a): error: looks like one").is_none());
        assert!(message_position("(12): error: no file").is_none());
    }

    #[test]
    fn a_nul_byte_is_refused_before_nvrtc_is_touched() {
        // No NVRTC library is needed for this refusal, so it holds on any host.
        let err = compile(
            "__global__ void k() {}\0",
            "k.cu",
            (9, 0),
            &Options::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
    }
}

//! The CPU's measured memory-bandwidth ceiling: STREAM's copy and triad (McCalpin) over
//! arrays beyond the last-level cache, on every core, measured once in the background when
//! the server starts.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gpulab_shared::peaks::{names, Peak, PeakBasis};
use rayon::prelude::*;

/// Elements per rayon task: 1 MiB of doubles.
const CHUNK: usize = 1 << 17;
/// Timed passes of each of copy and triad at most; the best counts, as in STREAM.
const PASSES: usize = 4;
/// Passes after the first stop once the measurement has run this long, so that a slow
/// machine (or an unoptimised debug build) is not held up for long.
const BUDGET: Duration = Duration::from_millis(1500);
/// Bounds of one array's size: STREAM asks for 4 × the last-level cache; the upper bound
/// keeps the measurement under 2 s and its memory small where the cache is huge.
const MIN_ARRAY: usize = 64 << 20;
const MAX_ARRAY: usize = 256 << 20;

static MEASURED: OnceLock<Peak> = OnceLock::new();
static STARTED: std::sync::Once = std::sync::Once::new();

/// Starts the measurement on a thread of its own, once per process; [`measured`] has the
/// figure when it is done. The arrays (up to 3 × 256 MiB) live in a child process
/// (`gpulab measure-bandwidth`): the server's own memory never grows by them, and a
/// container limit they would break ends the child, not the server. Outside the `gpulab`
/// binary (in tests of the library), in this process.
pub fn start() {
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("stream-bandwidth".into())
            .spawn(|| {
                let peak = match measured_by_child() {
                    Some(Ok(peak)) => peak,
                    Some(Err(why)) => {
                        tracing::warn!("the CPU memory-bandwidth measurement failed: {why}");
                        return;
                    }
                    None => measure(),
                };
                tracing::info!("CPU memory bandwidth (STREAM-style): {}", peak.formula);
                let _ = MEASURED.set(peak);
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the CPU memory-bandwidth measurement: {e}");
        }
    });
}

/// The peak as `gpulab measure-bandwidth` measures it; `None` outside the `gpulab` binary.
fn measured_by_child() -> Option<Result<Peak, String>> {
    let exe = match std::env::current_exe() {
        Ok(exe) if exe.file_stem().is_some_and(|stem| stem == "gpulab") => exe,
        _ => return None,
    };
    let output = std::process::Command::new(exe)
        .arg("measure-bandwidth")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output();
    Some(match output {
        Ok(output) if output.status.success() => serde_json::from_slice(&output.stdout)
            .map_err(|e| format!("the measurement answered no peak: {e}")),
        Ok(output) => Err(format!("the measurement ended with {}", output.status)),
        Err(e) => Err(format!("the measurement could not start: {e}")),
    })
}

/// The measured ceiling, once measured.
pub fn measured() -> Option<&'static Peak> {
    MEASURED.get()
}

/// Measures now (blocking for up to a couple of seconds) unless already measured.
pub fn measure_now() -> &'static Peak {
    MEASURED.get_or_init(measure)
}

/// Copy (`c = a`: 16 bytes per element) and triad (`a = b + q·c`: 24 bytes) over three
/// arrays of doubles, bytes counted as STREAM counts them: each array read or written once
/// per pass, without the write-allocate reads of the destination.
fn measure() -> Peak {
    let llc = last_level_cache_bytes();
    let available = crate::devices::host_memory::available();
    let mut array_bytes = llc.map_or(MIN_ARRAY, |l| 4 * l).clamp(MIN_ARRAY, MAX_ARRAY);
    if let Some(available) = available {
        array_bytes = array_bytes.min((available / 16) as usize).max(8 << 20);
    }
    // A debug build's loops are unoptimised: its figure is far below the hardware's
    // whatever the size, so it only keeps the tests quick.
    if cfg!(debug_assertions) {
        array_bytes = array_bytes.min(MIN_ARRAY);
    }
    let n = array_bytes / 8;
    let started = Instant::now();
    let mut a = vec![0.0f64; n];
    let mut b = vec![0.0f64; n];
    let mut c = vec![0.0f64; n];
    // First touch on every core, as STREAM's initialisation does.
    a.par_chunks_mut(CHUNK).for_each(|x| x.fill(1.0));
    b.par_chunks_mut(CHUNK).for_each(|x| x.fill(2.0));
    c.par_chunks_mut(CHUNK).for_each(|x| x.fill(0.0));
    let q = 3.0;
    let best = |f: &mut dyn FnMut()| {
        let mut passes = 0;
        let mut best = f64::MAX;
        while passes == 0 || (passes < PASSES && started.elapsed() < BUDGET) {
            let t = Instant::now();
            f();
            best = best.min(t.elapsed().as_secs_f64());
            passes += 1;
        }
        (best, passes)
    };
    let (copy_s, copy_passes) = best(&mut || {
        c.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .for_each(|(c, a)| c.copy_from_slice(a));
    });
    let (triad_s, triad_passes) = best(&mut || {
        a.par_chunks_mut(CHUNK)
            .zip(b.par_chunks(CHUNK).zip(c.par_chunks(CHUNK)))
            .for_each(|(a, (b, c))| {
                for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
                    *a = b + q * c;
                }
            });
    });
    // Keep the arrays observable, so that no pass is optimised away.
    std::hint::black_box((&a, &b, &c));
    let copy = 2.0 * array_bytes as f64 / copy_s / 1e9;
    let triad = 3.0 * array_bytes as f64 / triad_s / 1e9;
    let value = copy.max(triad);
    let mib = array_bytes >> 20;
    let llc_text = llc.map_or_else(
        || "last-level cache size unknown".to_owned(),
        |l| format!("last-level cache {} MiB", l >> 20),
    );
    Peak {
        name: names::MEMORY_BANDWIDTH.into(),
        value,
        unit: "GB/s".into(),
        basis: PeakBasis::Measured,
        formula: format!(
            "max(copy 2 × {mib} MiB / {:.2} ms = {copy:.1} GB/s, triad 3 × {mib} MiB / \
             {:.2} ms = {triad:.1} GB/s), best of {copy_passes} and {triad_passes} passes, {} \
             threads, arrays of {mib} MiB ({llc_text}); measured in {:.2} s{}",
            copy_s * 1e3,
            triad_s * 1e3,
            rayon::current_num_threads(),
            started.elapsed().as_secs_f64(),
            if cfg!(debug_assertions) {
                " (a debug build: unoptimised loops, far below the hardware)"
            } else {
                ""
            }
        ),
        source: "measured on this machine when the server started (STREAM-style copy and triad \
                 on every core; bytes counted as STREAM does, each array read or written once, \
                 read + write): a ceiling that was reached, not a datasheet figure"
            .into(),
    }
}

/// The largest cache of cpu0 in sysfs, in bytes.
fn last_level_cache_bytes() -> Option<usize> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    dir.flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("size")).ok())
        .filter_map(|size| parse_cache_size(&size))
        .max()
}

/// A sysfs cache size such as `32K`, `2048K` or `260M`.
fn parse_cache_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let (digits, scale) = match text.as_bytes().last()? {
        b'K' => (&text[..text.len() - 1], 1 << 10),
        b'M' => (&text[..text.len() - 1], 1 << 20),
        b'G' => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    digits.parse::<usize>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_parse() {
        assert_eq!(parse_cache_size("48K\n"), Some(48 << 10));
        assert_eq!(parse_cache_size("260M"), Some(260 << 20));
        assert_eq!(parse_cache_size("1024"), Some(1024));
        assert_eq!(parse_cache_size("big"), None);
    }
}

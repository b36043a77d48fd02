//! The host's available memory (`MemAvailable` of `/proc/meminfo`), checked before a job
//! allocates its host buffers: a job too big for the host is refused with a sentence that
//! says so, instead of being killed by the kernel's OOM killer with the worker.

/// What is kept back for the server, its workers and the allocator's rounding.
pub const MARGIN_BYTES: u64 = 256 << 20;

/// Bytes of memory the host can give now, without swapping; `None` when the operating
/// system does not say (no `/proc/meminfo`, or a kernel before 3.14).
pub fn available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    super::parse_meminfo(&text).available_bytes
}

/// `Err` with the sentence to show when `needed` bytes (plus [`MARGIN_BYTES`]) are more
/// than `available`; a host that does not report its memory is not refused.
pub fn ensure_fits(what: &str, needed: u64, available: Option<u64>) -> Result<(), String> {
    match available {
        Some(available) if needed.saturating_add(MARGIN_BYTES) > available => Err(format!(
            "`{what}` with these parameters needs {} of host memory, {} available; choose \
             a smaller problem",
            gib(needed),
            gib(available)
        )),
        _ => Ok(()),
    }
}

/// `bytes` as GiB with two decimals, as memory figures are given in errors.
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hole4_a_job_over_the_available_host_memory_is_refused_naming_both() {
        // n = 2^32 - 1 f64 elements: the 32 GiB host buffer of a custom job.
        let needed = (u32::MAX as u64) * 8;
        let err = ensure_fits("custom", needed, Some(16 << 30)).unwrap_err();
        assert!(err.contains("32.00 GiB of host memory"), "{err}");
        assert!(err.contains("16.00 GiB available"), "{err}");
        assert!(ensure_fits("custom", 1 << 30, Some(16 << 30)).is_ok());
        // The margin counts: a job that would leave nothing is refused.
        assert!(ensure_fits("custom", 16 << 30, Some(16 << 30)).is_err());
        assert!(ensure_fits("custom", needed, None).is_ok());
    }

    #[test]
    fn this_host_reports_its_available_memory() {
        if std::path::Path::new("/proc/meminfo").exists() {
            assert!(available().is_some_and(|b| b > 0));
        }
    }
}

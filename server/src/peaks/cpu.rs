//! The host CPU's theoretical arithmetic peaks: cores × vector lanes × FMA units × 2 FLOP ×
//! clock, from `/proc/cpuinfo`'s flags and cpufreq.

use std::fs;

use gpulab_shared::peaks::{Peak, PeakBasis};

/// The widest vector arithmetic the flags announce.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorUnits {
    /// The instruction set, as the flags name it.
    pub isa: &'static str,
    pub bits: u32,
    /// Whether it has fused multiply-add (2 FLOP per lane per instruction).
    pub fma: bool,
    /// Vector FMA (or, without FMA, multiply + add) pipes per core: not in cpuinfo, an
    /// assumption stated in the peak's source.
    pub units: u32,
    pub assumption: &'static str,
}

/// The vector units of the first processor of a `/proc/cpuinfo` text (x86 `flags`, ARM
/// `Features`); `sve_bits` is the SVE vector length where the kernel says it.
pub fn vector_units(cpuinfo: &str, sve_bits: Option<u32>) -> Option<VectorUnits> {
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            matches!(key.trim(), "flags" | "Features").then_some(value)
        })?
        .split_whitespace()
        .collect();
    let has = |flag: &str| flags.contains(&flag);
    let x86 = |isa, bits, fma| VectorUnits {
        isa,
        bits,
        fma,
        units: 2,
        assumption: "2 vector FMA units per core, as on AVX2 and AVX-512 server cores (Intel \
                     Xeon Scalable Gold/Platinum, AMD Zen); some Xeon Silver/Bronze parts have \
                     one 512-bit unit, and AVX-512 code may run below the maximum clock",
    };
    if has("avx512f") {
        return Some(x86("AVX-512", 512, true));
    }
    if has("avx2") && has("fma") {
        return Some(x86("AVX2 + FMA", 256, true));
    }
    if has("avx") {
        return Some(VectorUnits {
            assumption: "one 256-bit multiply and one 256-bit add pipe per core (no FMA)",
            units: 1,
            ..x86("AVX", 256, false)
        });
    }
    if has("sse2") {
        return Some(VectorUnits {
            assumption: "one 128-bit multiply and one 128-bit add pipe per core (no FMA)",
            units: 1,
            ..x86("SSE2", 128, false)
        });
    }
    if has("sve") {
        return Some(VectorUnits {
            isa: "SVE",
            bits: sve_bits.unwrap_or(128),
            fma: true,
            units: 2,
            assumption: "2 SVE FMA pipes per core (Neoverse V1, V2: Grace); the vector length \
                         from /proc/sys/abi/sve_default_vector_length, 128 bits if unreadable",
        });
    }
    if has("asimd") {
        return Some(VectorUnits {
            isa: "ASIMD (NEON)",
            bits: 128,
            fma: true,
            units: 2,
            assumption: "2 ASIMD FMA pipes per core (Neoverse N1, N2; V1 and V2 have 4)",
        });
    }
    None
}

/// The clock in MHz and where it was read: cpufreq's `cpuinfo_max_freq` (kHz, the highest
/// the core runs at) where the kernel has cpufreq, else the first `cpu MHz` of cpuinfo (the
/// clock at that moment; in a virtual machine, usually the host's nominal clock).
pub fn clock_mhz(cpufreq_max_khz: Option<&str>, cpuinfo: &str) -> Option<(f64, &'static str)> {
    if let Some(khz) = cpufreq_max_khz.and_then(|s| s.trim().parse::<f64>().ok()) {
        if khz > 0.0 {
            return Some((
                khz / 1e3,
                "cpufreq's cpuinfo_max_freq (the highest clock, turbo included)",
            ));
        }
    }
    let mhz = cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "cpu MHz").then(|| value.trim().parse::<f64>().ok())?
    })?;
    (mhz > 0.0).then_some((
        mhz,
        "/proc/cpuinfo's `cpu MHz` (the clock when read: no cpufreq here, so the turbo \
         clock is unknown and may be higher)",
    ))
}

/// The `fp64` and `fp32` peaks of `cores` cores.
pub fn peaks(cores: u32, units: &VectorUnits, clock: (f64, &str)) -> Vec<Peak> {
    let (mhz, clock_source) = clock;
    [("fp64", 64), ("fp32", 32)]
        .into_iter()
        .map(|(name, lane_bits)| {
            let lanes = units.bits / lane_bits;
            // FMA: 2 FLOP per lane per unit; without, a multiply pipe and an add pipe.
            let flop_per_lane = 2 * if units.fma { units.units } else { 1 };
            let value = cores as f64 * lanes as f64 * flop_per_lane as f64 * mhz / 1e3;
            let pipes = if units.fma {
                format!("{} FMA units × 2 FLOP/FMA", units.units)
            } else {
                "(1 multiply + 1 add) FLOP".to_owned()
            };
            Peak {
                name: name.into(),
                value,
                unit: "GFLOP/s".into(),
                basis: PeakBasis::Computed,
                formula: format!(
                    "{cores} cores × {lanes} {name} lanes ({} bits, {}) × {pipes} × {:.3} GHz \
                     = {value:.1} GFLOP/s",
                    units.bits,
                    units.isa,
                    mhz / 1e3
                ),
                source: format!(
                    "cores and vector width from /proc/cpuinfo (physical cores; flags); clock \
                     from {clock_source}; assumed: {}",
                    units.assumption
                ),
            }
        })
        .collect()
}

/// The CPU's arithmetic peaks from this host's files; empty where the flags or the clock
/// cannot be read.
pub fn detect(cores: Option<u32>) -> Vec<Peak> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let sve_bits = fs::read_to_string("/proc/sys/abi/sve_default_vector_length")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map(|bytes| bytes * 8);
    let max_khz = fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").ok();
    let (Some(cores), Some(units), Some(clock)) = (
        cores,
        vector_units(&cpuinfo, sve_bits),
        clock_mhz(max_khz.as_deref(), &cpuinfo),
    ) else {
        return Vec::new();
    };
    peaks(cores, &units, clock)
}

#[cfg(test)]
mod tests {
    use super::*;

    const XEON: &str = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n\
        cpu MHz\t\t: 2300.000\nflags\t\t: fpu sse sse2 fma avx avx2 avx512f avx512dq\n\n\
        processor\t: 1\ncpu MHz\t\t: 2300.000\nflags\t\t: fpu sse sse2 fma avx avx2 avx512f\n";

    #[test]
    fn an_avx512_xeon_peaks_at_32_fp32_flop_per_lane_clock() {
        let units = vector_units(XEON, None).unwrap();
        assert_eq!((units.isa, units.bits, units.units), ("AVX-512", 512, 2));
        let clock = clock_mhz(None, XEON).unwrap();
        assert_eq!(clock.0, 2300.0);
        assert!(clock.1.contains("cpu MHz"));
        let peaks = peaks(2, &units, clock);
        // 2 cores × 16 lanes × 2 FMA units × 2 FLOP × 2.3 GHz, and half for FP64.
        let fp32 = peaks.iter().find(|p| p.name == "fp32").unwrap();
        assert!((fp32.value - 294.4).abs() < 1e-9, "{}", fp32.value);
        let fp64 = peaks.iter().find(|p| p.name == "fp64").unwrap();
        assert!((fp64.value - 147.2).abs() < 1e-9, "{}", fp64.value);
        assert_eq!(fp32.basis, PeakBasis::Computed);
        assert!(
            fp32.formula.contains("2 cores × 16 fp32 lanes"),
            "{}",
            fp32.formula
        );
        assert!(
            fp32.source.contains("assumed: 2 vector FMA units"),
            "{}",
            fp32.source
        );
    }

    #[test]
    fn cpufreq_wins_over_cpu_mhz() {
        let (mhz, source) = clock_mhz(Some("3500000\n"), XEON).unwrap();
        assert_eq!(mhz, 3500.0);
        assert!(source.contains("cpuinfo_max_freq"));
        assert_eq!(clock_mhz(Some("junk"), XEON).unwrap().0, 2300.0);
        assert_eq!(clock_mhz(None, "processor: 0\n"), None);
    }

    #[test]
    fn narrower_isas_and_arm() {
        let avx2 = vector_units("flags : sse2 avx fma avx2", None).unwrap();
        assert_eq!((avx2.bits, avx2.fma), (256, true));
        let sse2 = vector_units("flags : fpu sse sse2", None).unwrap();
        assert_eq!((sse2.bits, sse2.fma, sse2.units), (128, false, 1));
        // Without FMA: one multiply and one add per lane per clock.
        let sse_peaks = peaks(1, &sse2, (1000.0, "test"));
        assert_eq!(sse_peaks[1].value, 8.0, "4 fp32 lanes × 2 FLOP × 1 GHz");
        let grace = vector_units("Features\t: fp asimd evtstrm sve sve2", Some(128)).unwrap();
        assert_eq!((grace.isa, grace.bits), ("SVE", 128));
        let n1 = vector_units("Features\t: fp asimd evtstrm", None).unwrap();
        assert_eq!(n1.isa, "ASIMD (NEON)");
        assert_eq!(vector_units("flags : fpu", None), None);
        assert_eq!(vector_units("", None), None);
    }
}

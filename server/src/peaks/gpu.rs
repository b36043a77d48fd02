//! A GPU's theoretical peaks from its attributes and the architecture table.

use gpulab_shared::peaks::{names, GemmDtype, Peak, PeakBasis};
use gpulab_shared::CudaDeviceInfo;

use super::arch;

/// How CUDA reports the memory clock, which the bandwidth formula relies on.
///
/// `CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE` is half the data rate of one pin, for HBM and
/// for GDDR alike: an H100 SXM (HBM3, 5.24 Gbit/s per pin) reports 2619 MHz, an A100
/// (HBM2, 2.43 Gbit/s) 1215 MHz, a GeForce RTX 4090 (GDDR6X, 21 Gbit/s) 10501 MHz. So
/// clock × 2 × bus width / 8 is the datasheet's bandwidth for both kinds: 3352, 1555 and
/// 1008 GB/s.
const MEMORY_CLOCK_SOURCE: &str = "CUDA's memory clock (CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE, \
     half the per-pin data rate for HBM and GDDR alike) and bus width; × 2 for double data rate";

/// Every peak of a GPU its attributes give: memory bandwidth, the PCIe link (`pcie`: its
/// generation and width, where known) and each data type of its architecture.
pub fn peaks(info: &CudaDeviceInfo, pcie: Option<(u32, u32)>) -> Vec<Peak> {
    let mut peaks = Vec::new();
    peaks.extend(memory_bandwidth(info));
    peaks.extend(pcie.and_then(|(generation, width)| pcie_link(generation, width)));
    for dtype in GemmDtype::ALL {
        peaks.extend(arithmetic(info, dtype));
    }
    peaks
}

/// Memory clock × bus width / 8 × 2, in GB/s.
pub fn memory_bandwidth(info: &CudaDeviceInfo) -> Option<Peak> {
    let clock = info.max_memory_clock_mhz?;
    let width = info.memory_bus_width_bits?;
    let value = clock as f64 * 1e6 * (width as f64 / 8.0) * 2.0 / 1e9;
    Some(Peak {
        name: names::MEMORY_BANDWIDTH.into(),
        value,
        unit: "GB/s".into(),
        basis: PeakBasis::Computed,
        formula: format!("{clock} MHz × {width} bits / 8 × 2 (double data rate) = {value:.0} GB/s"),
        source: MEMORY_CLOCK_SOURCE.into(),
    })
}

/// The peak of `dtype`: SMs × max SM clock × the architecture's rate per clock per SM.
pub fn arithmetic(info: &CudaDeviceInfo, dtype: GemmDtype) -> Option<Peak> {
    let cc = info.compute_capability?;
    if !dtype.supported_by(cc) {
        return None;
    }
    let arch = arch::lookup(cc.major, cc.minor)?;
    let (per_clock, tensor) = arch.per_clock(dtype)?;
    let sms = info.multiprocessor_count?;
    let clock = info.max_sm_clock_mhz?;
    let value = sms as f64 * clock as f64 * per_clock as f64 / 1e3;
    let (unit, op) = if dtype == GemmDtype::Int8 {
        ("GOP/s", "OP")
    } else {
        ("GFLOP/s", "FLOP")
    };
    Some(Peak {
        name: dtype.as_str().into(),
        value,
        unit: unit.into(),
        basis: PeakBasis::Computed,
        formula: format!(
            "{sms} SMs × {:.3} GHz × {per_clock} {op}/clock/SM ({}{}) = {:.1} T{op}/s",
            clock as f64 / 1e3,
            if tensor { "tensor cores, dense, " } else { "" },
            arch.name,
            value / 1e3
        ),
        source: format!(
            "SM count and max SM clock from CUDA; the rate from server/data/architectures.toml \
             (version {}), compute capability {}.{} ({}): {}",
            arch::table().version,
            cc.major,
            cc.minor,
            arch.name,
            arch.source
        ),
    })
}

/// A PCIe link of `generation` and `width` lanes, one direction, in GB/s.
pub fn pcie_link(generation: u32, width: u32) -> Option<Peak> {
    let value = crate::diag::expectations::pcie_link_gbps(generation, width)?;
    let (rate, encoding) = match generation {
        1 => ("2.5 GT/s", "8b/10b"),
        2 => ("5 GT/s", "8b/10b"),
        3 => ("8 GT/s", "128b/130b"),
        4 => ("16 GT/s", "128b/130b"),
        5 => ("32 GT/s", "128b/130b"),
        _ => ("64 GT/s", "242B/256B FLIT"),
    };
    Some(Peak {
        name: names::PCIE.into(),
        value,
        unit: "GB/s".into(),
        basis: PeakBasis::Computed,
        formula: format!(
            "gen {generation}: {rate} × {width} lanes × {encoding} / 8 = {value:.1} GB/s per direction"
        ),
        source: "the GPU's maximum link generation and width (Linux sysfs max_link_speed and \
                 max_link_width of its PCI function; the slot may offer less); rates and \
                 encodings of the PCI Express base specifications"
            .into(),
    })
}

/// The generation and width of a PCI function's maximum link, from sysfs
/// (`/sys/bus/pci/devices/0000:1b:00.0/max_link_speed`, `…/max_link_width`).
pub fn sysfs_link(pci_bus_id: &str) -> Option<(u32, u32)> {
    let dir = std::path::Path::new("/sys/bus/pci/devices").join(pci_bus_id.to_ascii_lowercase());
    let speed = std::fs::read_to_string(dir.join("max_link_speed")).ok()?;
    let width = std::fs::read_to_string(dir.join("max_link_width")).ok()?;
    Some((generation_of(&speed)?, width.trim().parse().ok()?))
}

/// The PCIe generation of a sysfs link speed such as `16.0 GT/s PCIe`.
fn generation_of(speed: &str) -> Option<u32> {
    let gts: f64 = speed.split_whitespace().next()?.parse().ok()?;
    [2.5, 5.0, 8.0, 16.0, 32.0, 64.0]
        .iter()
        .position(|r| (r - gts).abs() < 0.1)
        .map(|i| i as u32 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpulab_shared::ComputeCapability;

    fn gpu(cc: (u32, u32), sms: u32, clock: u32, memory_clock: u32, bus: u32) -> CudaDeviceInfo {
        CudaDeviceInfo {
            compute_capability: Some(ComputeCapability {
                major: cc.0,
                minor: cc.1,
            }),
            multiprocessor_count: Some(sms),
            max_sm_clock_mhz: Some(clock),
            max_memory_clock_mhz: Some(memory_clock),
            memory_bus_width_bits: Some(bus),
            ..CudaDeviceInfo::default()
        }
    }

    fn value(peaks: &[Peak], name: &str) -> f64 {
        peaks
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no {name} peak in {peaks:?}"))
            .value
    }

    /// `computed` is within `tolerance` (a fraction) of the datasheet's `datasheet`.
    fn near(computed: f64, datasheet: f64, tolerance: f64) {
        let off = computed / datasheet - 1.0;
        assert!(
            off.abs() <= tolerance,
            "computed {computed:.0}, datasheet {datasheet}: {:+.1} % (tolerance {:.0} %)",
            off * 100.0,
            tolerance * 100.0
        );
    }

    /// The attributes CUDA reports for an H100 SXM5 80 GB: 132 SMs, 1980 MHz, HBM3 at
    /// 2619 MHz on 5120 bits; against NVIDIA's H100 datasheet (SXM column, dense).
    #[test]
    fn h100_sxm_matches_its_datasheet() {
        let peaks = peaks(&gpu((9, 0), 132, 1980, 2619, 5120), Some((5, 16)));
        // Datasheets round: 3352 GB/s is printed 3.35 TB/s, 66.9 TFLOP/s 67.
        near(value(&peaks, "memory_bandwidth"), 3350.0, 0.01);
        near(value(&peaks, "fp32"), 67_000.0, 0.01);
        near(value(&peaks, "fp64"), 67_000.0, 0.01);
        // The datasheet's tensor figures are 132 SMs × 1830 MHz × the rate: at the 1980 MHz
        // CUDA reports we compute 8.2 % more (1070 and 2141 TFLOP/s).
        near(value(&peaks, "bf16"), 989_400.0, 0.09);
        near(value(&peaks, "fp16"), 989_400.0, 0.09);
        near(value(&peaks, "tf32"), 494_700.0, 0.09);
        near(value(&peaks, "fp8_e4m3"), 1_978_900.0, 0.09);
        near(value(&peaks, "int8"), 1_978_900.0, 0.09);
        assert!(
            value(&peaks, "bf16") > 989_400.0,
            "the clock difference goes one way"
        );
        near(value(&peaks, "pcie"), 63.0, 0.01);
        let bf16 = peaks.iter().find(|p| p.name == "bf16").unwrap();
        assert_eq!(bf16.basis, PeakBasis::Computed);
        assert!(
            bf16.formula.contains("132 SMs") && bf16.formula.contains("4096 FLOP/clock/SM"),
            "{}",
            bf16.formula
        );
        assert!(bf16.source.contains("(Hopper)") && bf16.source.contains("https://"));
        assert_eq!(
            peaks.iter().find(|p| p.name == "int8").unwrap().unit,
            "GOP/s"
        );
    }

    /// An H200 SXM reports HBM3e at 3201 MHz on 6144 bits (nvidia-smi's max memory clock):
    /// 4917 GB/s, 2.4 % above the datasheet's 4.8 TB/s, which is rounded down.
    #[test]
    fn h200_bandwidth_matches_its_datasheet() {
        let peaks = peaks(&gpu((9, 0), 132, 1980, 3201, 6144), None);
        near(value(&peaks, "memory_bandwidth"), 4800.0, 0.03);
        assert!(
            peaks.iter().all(|p| p.name != "pcie"),
            "no link, no pcie peak"
        );
    }

    /// A100 SXM4 40 GB: 108 SMs, 1410 MHz, HBM2 at 1215 MHz on 5120 bits.
    #[test]
    fn a100_matches_its_datasheet() {
        let peaks = peaks(&gpu((8, 0), 108, 1410, 1215, 5120), Some((4, 16)));
        near(value(&peaks, "memory_bandwidth"), 1555.0, 0.005);
        near(value(&peaks, "fp32"), 19_500.0, 0.005);
        near(value(&peaks, "fp64"), 19_500.0, 0.005);
        near(value(&peaks, "tf32"), 156_000.0, 0.005);
        near(value(&peaks, "bf16"), 312_000.0, 0.005);
        near(value(&peaks, "int8"), 624_000.0, 0.005);
        near(value(&peaks, "pcie"), 31.5, 0.01);
        assert!(
            peaks.iter().all(|p| p.name != "fp8_e4m3"),
            "no FP8 on Ampere"
        );
    }

    /// A GeForce RTX 4090 (GDDR6X): CUDA reports 10501 MHz on 384 bits, 128 SMs at 2520 MHz.
    #[test]
    fn rtx_4090_gddr6x_bandwidth_and_fp8() {
        let peaks = peaks(&gpu((8, 9), 128, 2520, 10501, 384), None);
        near(value(&peaks, "memory_bandwidth"), 1008.0, 0.005);
        near(value(&peaks, "fp32"), 82_600.0, 0.005);
        // The whitepaper's FP8 figure with FP16 accumulation (GeForce halves FP32's).
        near(value(&peaks, "fp8_e4m3"), 660_600.0, 0.005);
    }

    #[test]
    fn turing_has_no_bf16_and_an_unknown_architecture_no_arithmetic_peak() {
        let turing = peaks(&gpu((7, 5), 40, 1590, 5001, 256), None);
        assert!(turing.iter().any(|p| p.name == "fp16"));
        assert!(turing.iter().all(|p| p.name != "bf16" && p.name != "tf32"));
        near(value(&turing, "fp16"), 65_000.0, 0.01);
        let future = peaks(&gpu((99, 0), 10, 1000, 1000, 1024), None);
        assert_eq!(
            future.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["memory_bandwidth"]
        );
    }

    #[test]
    fn pcie_generations_from_sysfs_speeds() {
        assert_eq!(generation_of("16.0 GT/s PCIe\n"), Some(4));
        assert_eq!(generation_of("2.5 GT/s PCIe"), Some(1));
        assert_eq!(generation_of("32.0 GT/s PCIe"), Some(5));
        assert_eq!(generation_of("Unknown"), None);
        let gen2 = pcie_link(2, 16).unwrap();
        assert!((gen2.value - 8.0).abs() < 1e-9, "{}", gen2.value);
        assert!(gen2.formula.contains("8b/10b"), "{}", gen2.formula);
        assert!(pcie_link(3, 16).unwrap().formula.contains("128b/130b"));
    }
}

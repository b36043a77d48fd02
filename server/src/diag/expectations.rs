//! What a GPU should reach: the table of GPU models (`server/data/gpu-models.toml`, one
//! versioned file with the source of every number), or, for a model the table lacks, the
//! peaks computed from the GPU's own attributes ([`ArchRates`]).
//!
//! [`ArchRates`] and [`attribute_peaks`] are the "theoretical peak" of a GPU, usable beyond
//! the diagnostics.

use gpulab_shared::CudaDeviceInfo;
use serde::Deserialize;

/// The table, embedded.
const TABLE: &str = include_str!("../../data/gpu-models.toml");

/// A data type of the GEMM checks. TF32 has a peak (the table's, the architecture's) but no
/// check of its own yet: the theoretical peaks of a device list it.
#[allow(dead_code)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    Fp32,
    Tf32,
    Bf16,
    Fp16,
}

impl DataType {
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Fp32 => "FP32",
            DataType::Tf32 => "TF32",
            DataType::Bf16 => "BF16",
            DataType::Fp16 => "FP16",
        }
    }
}

/// The whole table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub version: u32,
    pub fractions: Fractions,
    #[serde(rename = "gpu")]
    pub gpus: Vec<GpuModel>,
}

/// The share of a datasheet figure a measurement must reach.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fractions {
    pub memory_bandwidth: f64,
    pub gemm: f64,
    pub pcie: f64,
}

/// One GPU model's datasheet figures.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuModel {
    pub model: String,
    /// Fragments of the name CUDA and NVML give, matched case-insensitively as whole words.
    pub names: Vec<String>,
    /// PCI device ids (the upper half of NVML's `pci_device_id`).
    pub pci_device_ids: Vec<u32>,
    pub memory_bandwidth_gbps: f64,
    pub fp32_gflops: f64,
    #[serde(default)]
    pub tf32_gflops: Option<f64>,
    #[serde(default)]
    pub bf16_gflops: Option<f64>,
    #[serde(default)]
    pub fp16_gflops: Option<f64>,
    pub source: String,
}

impl GpuModel {
    pub fn gflops(&self, data_type: DataType) -> Option<f64> {
        match data_type {
            DataType::Fp32 => Some(self.fp32_gflops),
            DataType::Tf32 => self.tf32_gflops,
            DataType::Bf16 => self.bf16_gflops,
            DataType::Fp16 => self.fp16_gflops,
        }
    }
}

/// The embedded table, parsed once.
pub fn table() -> &'static Table {
    static PARSED: std::sync::OnceLock<Table> = std::sync::OnceLock::new();
    PARSED.get_or_init(|| toml::from_str(TABLE).expect("server/data/gpu-models.toml is valid"))
}

impl Table {
    /// The row of a GPU: by PCI device id first, else by name.
    pub fn lookup(&self, name: &str, pci_device_id: Option<u32>) -> Option<&GpuModel> {
        if let Some(id) = pci_device_id {
            if let Some(row) = self.gpus.iter().find(|g| g.pci_device_ids.contains(&id)) {
                return Some(row);
            }
        }
        self.gpus
            .iter()
            .find(|g| g.names.iter().any(|fragment| contains_word(name, fragment)))
    }
}

/// Whether `fragment` occurs in `name` (ignoring case) not followed by a letter or digit:
/// `A100` is in `NVIDIA A100-SXM4-40GB`, `NVIDIA L4` is not in `NVIDIA L40S`.
fn contains_word(name: &str, fragment: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let fragment = fragment.to_ascii_lowercase();
    name.match_indices(&fragment).any(|(at, _)| {
        name[at + fragment.len()..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_ascii_alphanumeric())
    })
}

/// An expectation: the figure a measurement must reach and where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    pub expected: f64,
    pub source: String,
}

/// What the table or the attributes say of one GPU.
pub struct GpuExpectations<'a> {
    pub row: Option<&'a GpuModel>,
    pub info: Option<&'a CudaDeviceInfo>,
    pub fractions: Fractions,
    pub version: u32,
}

impl<'a> GpuExpectations<'a> {
    pub fn new(name: &str, pci_device_id: Option<u32>, info: Option<&'a CudaDeviceInfo>) -> Self {
        let table = table();
        GpuExpectations {
            row: table.lookup(name, pci_device_id),
            info,
            fractions: table.fractions,
            version: table.version,
        }
    }

    /// The device memory bandwidth a copy or triad must reach, GB/s.
    pub fn memory_bandwidth(&self) -> Option<Expectation> {
        let fraction = self.fractions.memory_bandwidth;
        if let Some(row) = self.row {
            return Some(Expectation {
                expected: fraction * row.memory_bandwidth_gbps,
                source: format!(
                    "{fraction} × {} GB/s, the {} row of gpu-models.toml (version {}): {}",
                    row.memory_bandwidth_gbps, row.model, self.version, row.source
                ),
            });
        }
        let (peak, method) = attribute_bandwidth(self.info?)?;
        Some(Expectation {
            expected: fraction * peak,
            source: format!("{fraction} × {peak:.0} GB/s, {method}"),
        })
    }

    /// The GEMM throughput of `data_type` that must be reached, GFLOP/s.
    pub fn gemm(&self, data_type: DataType) -> Option<Expectation> {
        let fraction = self.fractions.gemm;
        if let Some(row) = self.row {
            let peak = row.gflops(data_type)?;
            return Some(Expectation {
                expected: fraction * peak,
                source: format!(
                    "{fraction} × {peak} GFLOP/s {}, the {} row of gpu-models.toml (version {}): {}",
                    data_type.as_str(),
                    row.model,
                    self.version,
                    row.source
                ),
            });
        }
        let (peak, method) = attribute_peaks(self.info?, data_type)?;
        Some(Expectation {
            expected: fraction * peak,
            source: format!("{fraction} × {peak:.0} GFLOP/s, {method}"),
        })
    }
}

/// Peak memory bandwidth from the attributes: memory clock × bus width × 2 (double data
/// rate), in GB/s, and the method in words.
pub fn attribute_bandwidth(info: &CudaDeviceInfo) -> Option<(f64, String)> {
    let clock = info.max_memory_clock_mhz?;
    let width = info.memory_bus_width_bits?;
    // The devices' theoretical peak, whose source says how CUDA reports the clock.
    let peak = crate::peaks::gpu::memory_bandwidth(info)?.value;
    Some((
        peak,
        format!(
            "from the GPU's attributes (not in gpu-models.toml): memory clock {clock} MHz × \
             bus width {width} bits / 8 × 2 (double data rate)"
        ),
    ))
}

/// Arithmetic per clock per multiprocessor of an architecture (compute capability).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchRates {
    /// The architecture's name.
    pub name: &'static str,
    /// FP32 FLOP per clock per SM: 2 × the FP32 lanes (one fused multiply-add each).
    pub fp32: u32,
    /// Dense FP16 tensor-core FLOP per clock per SM with FP32 accumulation; `None` without
    /// tensor cores.
    pub fp16_tensor: Option<u32>,
    /// Whether the tensor cores take BF16 (and TF32, at half the FP16 rate).
    pub bf16: bool,
}

/// The rates of compute capability `major.minor`, from the architecture table
/// `server/data/architectures.toml` (NVIDIA's whitepapers, with the source of every number),
/// which the devices' theoretical peaks use too; `None` for one not known there.
///
/// GeForce parts of 8.6, 8.9 and 12.0 accumulate FP16 products in FP32 at half the rate
/// given here (the datacenter parts' rate).
pub fn arch_rates(major: u32, minor: u32) -> Option<ArchRates> {
    let arch = crate::peaks::arch::lookup(major, minor)?;
    Some(ArchRates {
        name: arch.name.as_str(),
        fp32: arch.fp32,
        fp16_tensor: arch.fp16,
        bf16: arch.bf16.is_some(),
    })
}

/// Peak GFLOP/s of `data_type` from the attributes: SMs × max SM clock × FLOP per clock per
/// SM of the architecture, and the method in words.
pub fn attribute_peaks(info: &CudaDeviceInfo, data_type: DataType) -> Option<(f64, String)> {
    let cc = info.compute_capability?;
    let arch = arch_rates(cc.major, cc.minor)?;
    let sms = info.multiprocessor_count?;
    let clock = info.max_sm_clock_mhz?;
    let per_clock = match data_type {
        DataType::Fp32 => arch.fp32,
        DataType::Fp16 => arch.fp16_tensor?,
        DataType::Bf16 if arch.bf16 => arch.fp16_tensor?,
        DataType::Tf32 if arch.bf16 => arch.fp16_tensor? / 2,
        _ => return None,
    };
    let peak = sms as f64 * clock as f64 * per_clock as f64 / 1e3;
    Some((
        peak,
        format!(
            "from the GPU's attributes (not in gpu-models.toml): {sms} SMs × {clock} MHz × {per_clock} \
             {} FLOP per clock per SM ({}, compute capability {}.{})",
            data_type.as_str(),
            arch.name,
            cc.major,
            cc.minor
        ),
    ))
}

/// The theoretical rate of a PCIe link in GB/s per direction: lanes × the generation's
/// transfer rate × its encoding's efficiency.
pub fn pcie_link_gbps(generation: u32, width: u32) -> Option<f64> {
    let per_lane = match generation {
        1 => 2.5 * 8.0 / 10.0,
        2 => 5.0 * 8.0 / 10.0,
        3 => 8.0 * 128.0 / 130.0,
        4 => 16.0 * 128.0 / 130.0,
        5 => 32.0 * 128.0 / 130.0,
        6 => 64.0 * 242.0 / 256.0,
        _ => return None,
    };
    Some(per_lane * width as f64 / 8.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpulab_shared::ComputeCapability;

    #[test]
    fn the_table_parses_and_every_row_has_a_source_and_figures() {
        let table = table();
        assert!(table.version >= 1);
        for required in [
            "H100 SXM5",
            "H100 PCIe",
            "H200 SXM",
            "A100 40GB",
            "L4",
            "L40S",
        ]
        .into_iter()
        .chain(["GeForce RTX 4090", "T4", "V100 SXM2"])
        {
            assert!(
                table.gpus.iter().any(|g| g.model == required),
                "{required} is missing"
            );
        }
        for row in &table.gpus {
            assert!(row.source.contains("NVIDIA"), "{}", row.model);
            assert!(row.memory_bandwidth_gbps > 100.0 && row.fp32_gflops > 1000.0);
            assert!(!row.names.is_empty(), "{}", row.model);
        }
        for f in [
            table.fractions.memory_bandwidth,
            table.fractions.gemm,
            table.fractions.pcie,
        ] {
            assert!(f > 0.0 && f <= 1.0);
        }
    }

    #[test]
    fn models_are_found_by_name_and_by_pci_id() {
        let table = table();
        let model = |name: &str, id| table.lookup(name, id).map(|g| g.model.as_str());
        assert_eq!(model("NVIDIA H100 80GB HBM3", None), Some("H100 SXM5"));
        assert_eq!(model("NVIDIA H100 PCIe", None), Some("H100 PCIe"));
        assert_eq!(model("NVIDIA H200", None), Some("H200 SXM"));
        assert_eq!(model("NVIDIA H200 NVL", None), Some("H200 NVL"));
        assert_eq!(model("NVIDIA A100-SXM4-40GB", None), Some("A100 40GB"));
        assert_eq!(model("NVIDIA A100-SXM4-80GB", None), Some("A100 SXM4 80GB"));
        assert_eq!(model("NVIDIA L4", None), Some("L4"));
        assert_eq!(model("NVIDIA L40S", None), Some("L40S"));
        assert_eq!(model("NVIDIA L40", None), None, "an L40 is not an L4");
        assert_eq!(model("Tesla V100S-PCIE-32GB", None), Some("V100S PCIe"));
        assert_eq!(model("Tesla V100-SXM2-16GB", None), Some("V100 SXM2"));
        assert_eq!(
            model("NVIDIA GeForce RTX 4090", None),
            Some("GeForce RTX 4090")
        );
        assert_eq!(model("Tesla T4", None), Some("T4"));
        // The PCI id wins over a name that says otherwise.
        assert_eq!(model("Some Board", Some(0x2330)), Some("H100 SXM5"));
        assert_eq!(model("Radeon", Some(0x1234)), None);
    }

    fn h100_attributes() -> CudaDeviceInfo {
        CudaDeviceInfo {
            compute_capability: Some(ComputeCapability { major: 9, minor: 0 }),
            multiprocessor_count: Some(132),
            max_sm_clock_mhz: Some(1980),
            max_memory_clock_mhz: Some(2619),
            memory_bus_width_bits: Some(5120),
            ..CudaDeviceInfo::default()
        }
    }

    #[test]
    fn a_model_not_in_the_table_is_judged_from_its_attributes() {
        let info = h100_attributes();
        let (bandwidth, method) = attribute_bandwidth(&info).unwrap();
        assert!((bandwidth - 3352.3).abs() < 1.0, "{bandwidth}");
        assert!(
            method.contains("2619 MHz") && method.contains("5120 bits"),
            "{method}"
        );
        // The datasheet's 67 TFLOP/s FP32 and 989 TFLOP/s BF16 (dense) of an H100 SXM,
        // within the clock the datasheet assumed.
        let (fp32, method) = attribute_peaks(&info, DataType::Fp32).unwrap();
        assert!((fp32 - 66_908.0).abs() < 10.0, "{fp32}");
        assert!(
            method.contains("132 SMs") && method.contains("Hopper"),
            "{method}"
        );
        let (bf16, _) = attribute_peaks(&info, DataType::Bf16).unwrap();
        assert!((bf16 / 989_500.0 - 1.08).abs() < 0.02, "{bf16}");

        let unknown = GpuExpectations::new("NVIDIA Future GPU", None, Some(&info));
        assert!(unknown.row.is_none());
        let e = unknown.memory_bandwidth().unwrap();
        assert!((e.expected - 0.75 * bandwidth).abs() < 1e-6);
        assert!(e.source.contains("attributes"), "{}", e.source);
        let known = GpuExpectations::new("NVIDIA H100 80GB HBM3", None, Some(&info));
        let e = known.memory_bandwidth().unwrap();
        assert_eq!(e.expected, 0.75 * 3350.0);
        assert!(e.source.contains("gpu-models.toml") && e.source.contains("datasheet"));
        // Turing has no BF16, an unknown architecture no peak at all.
        let turing = CudaDeviceInfo {
            compute_capability: Some(ComputeCapability { major: 7, minor: 5 }),
            ..info.clone()
        };
        assert!(attribute_peaks(&turing, DataType::Bf16).is_none());
        assert!(attribute_peaks(&turing, DataType::Fp16).is_some());
        let future = CudaDeviceInfo {
            compute_capability: Some(ComputeCapability {
                major: 99,
                minor: 0,
            }),
            ..info
        };
        assert!(attribute_peaks(&future, DataType::Fp32).is_none());
    }

    #[test]
    fn pcie_rates_follow_the_generations() {
        assert!((pcie_link_gbps(4, 16).unwrap() - 31.5).abs() < 0.1);
        assert!((pcie_link_gbps(5, 16).unwrap() - 63.0).abs() < 0.1);
        assert!((pcie_link_gbps(3, 8).unwrap() - 7.88).abs() < 0.01);
        assert_eq!(pcie_link_gbps(9, 16), None);
    }
}

//! The architecture table, `server/data/architectures.toml`: arithmetic per clock per SM of
//! each NVIDIA GPU architecture, with the source of every number.

use gpulab_shared::peaks::GemmDtype;
use serde::Deserialize;

/// The table, embedded.
const TABLE: &str = include_str!("../../data/architectures.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub version: u32,
    #[serde(rename = "arch")]
    pub archs: Vec<Architecture>,
}

/// One architecture's FLOP (operations, for INT8) per clock per SM, dense.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    pub name: String,
    pub major: u32,
    /// `-1`: every minor version of `major` that has no row of its own.
    pub minor: i32,
    pub fp64: u32,
    #[serde(default)]
    pub fp64_tensor: Option<u32>,
    pub fp32: u32,
    #[serde(default)]
    pub tf32: Option<u32>,
    #[serde(default)]
    pub fp16: Option<u32>,
    #[serde(default)]
    pub bf16: Option<u32>,
    #[serde(default)]
    pub fp8_e4m3: Option<u32>,
    #[serde(default)]
    pub int8: Option<u32>,
    pub source: String,
    /// The rates multiplied out for one datasheet part, which they must reproduce (read by
    /// people and by the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub check: String,
}

impl Architecture {
    /// FLOP (INT8: operations) per clock per SM of `dtype`, and whether it is the tensor
    /// cores' rate; `None` where the architecture has no such arithmetic. FP64 takes the
    /// tensor cores where they are faster, as cuBLAS's DGEMM does.
    pub fn per_clock(&self, dtype: GemmDtype) -> Option<(u32, bool)> {
        match dtype {
            GemmDtype::Fp64 => Some(match self.fp64_tensor {
                Some(tensor) if tensor > self.fp64 => (tensor, true),
                _ => (self.fp64, false),
            }),
            GemmDtype::Fp32 => Some((self.fp32, false)),
            GemmDtype::Tf32 => self.tf32.map(|r| (r, true)),
            GemmDtype::Fp16 => self.fp16.map(|r| (r, true)),
            GemmDtype::Bf16 => self.bf16.map(|r| (r, true)),
            GemmDtype::Fp8E4m3 => self.fp8_e4m3.map(|r| (r, true)),
            GemmDtype::Int8 => self.int8.map(|r| (r, true)),
        }
    }
}

/// The embedded table, parsed once.
pub fn table() -> &'static Table {
    static PARSED: std::sync::OnceLock<Table> = std::sync::OnceLock::new();
    PARSED.get_or_init(|| toml::from_str(TABLE).expect("server/data/architectures.toml is valid"))
}

/// The row of compute capability `major.minor`: its own, else its major version's.
pub fn lookup(major: u32, minor: u32) -> Option<&'static Architecture> {
    let archs = &table().archs;
    archs
        .iter()
        .find(|a| a.major == major && a.minor == minor as i32)
        .or_else(|| archs.iter().find(|a| a.major == major && a.minor == -1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_has_a_source_with_an_address_and_a_check() {
        let table = table();
        assert!(table.version >= 1);
        for arch in &table.archs {
            assert!(
                arch.source.contains("NVIDIA") && arch.source.contains("https://"),
                "{}",
                arch.name
            );
            assert!(!arch.check.is_empty(), "{}", arch.name);
            // Tensor rates are powers of two and at least the SIMT FP32 rate.
            for rate in [arch.tf32, arch.fp16, arch.bf16, arch.fp8_e4m3, arch.int8]
                .into_iter()
                .flatten()
            {
                assert!(
                    rate.is_power_of_two() && rate >= arch.fp32 * 2,
                    "{}",
                    arch.name
                );
            }
        }
    }

    #[test]
    fn compute_capabilities_find_their_architecture() {
        let name = |major, minor| lookup(major, minor).map(|a| a.name.as_str());
        assert_eq!(name(7, 0), Some("Volta"));
        assert_eq!(name(7, 2), Some("Volta"));
        assert_eq!(name(7, 5), Some("Turing"));
        assert_eq!(name(8, 0), Some("Ampere (GA100)"));
        assert_eq!(name(8, 6), Some("Ampere (GA10x)"));
        assert_eq!(name(8, 7), Some("Ampere (GA10x)"));
        assert_eq!(name(8, 9), Some("Ada Lovelace"));
        assert_eq!(name(9, 0), Some("Hopper"));
        assert_eq!(name(10, 0), Some("Blackwell (datacenter)"));
        assert_eq!(name(12, 0), Some("Blackwell (RTX)"));
        assert_eq!(name(5, 2), None);
        // Every data type a compute capability runs has a rate there.
        for arch in &table().archs {
            let cc = gpulab_shared::ComputeCapability {
                major: arch.major,
                minor: arch.minor.max(0) as u32,
            };
            for dtype in GemmDtype::ALL {
                if dtype.supported_by(cc) && arch.major >= 7 {
                    assert!(
                        arch.per_clock(dtype).is_some(),
                        "{} has no {} rate",
                        arch.name,
                        dtype.as_str()
                    );
                }
            }
        }
    }
}

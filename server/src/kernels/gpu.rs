//! What the kernels' CUDA paths share: their sources, copies between host and GPU, and grid
//! sizes.

use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};

use crate::cuda::{DriverContext, Gpu, GpuError};

/// The CUDA C sources of `server/kernels/`, embedded in the binary.
pub mod source {
    pub const VECTOR_ADD: &str = include_str!("../../kernels/vector_add.cu");
    pub const SAXPY: &str = include_str!("../../kernels/saxpy.cu");
    pub const REDUCE_SUM: &str = include_str!("../../kernels/reduce_sum.cu");
    pub const MATMUL_TILED: &str = include_str!("../../kernels/matmul_tiled.cu");
    pub const MANDELBROT: &str = include_str!("../../kernels/mandelbrot.cu");
    pub const MONTE_CARLO_PI: &str = include_str!("../../kernels/monte_carlo_pi.cu");
    pub const BANDWIDTH: &str = include_str!("../../kernels/bandwidth.cu");
    /// The diagnostics' memory test, bandwidth and GEMM comparison.
    pub const DIAG: &str = include_str!("../../kernels/diag.cu");

    /// Every source with its file name and the kernels it defines.
    #[cfg(test)]
    pub const ALL: &[(&str, &str, &[&str])] = &[
        ("vector_add.cu", VECTOR_ADD, &["vector_add"]),
        ("saxpy.cu", SAXPY, &["saxpy"]),
        (
            "reduce_sum.cu",
            REDUCE_SUM,
            &["reduce_partial", "reduce_final"],
        ),
        ("matmul_tiled.cu", MATMUL_TILED, &["matmul_tiled"]),
        ("mandelbrot.cu", MANDELBROT, &["mandelbrot"]),
        ("monte_carlo_pi.cu", MONTE_CARLO_PI, &["monte_carlo_pi"]),
        ("bandwidth.cu", BANDWIDTH, &["copy_kernel"]),
        (
            "diag.cu",
            DIAG,
            &[
                "diag_fill",
                "diag_check",
                "diag_invert",
                "diag_checksum",
                "diag_checksum_expected",
                "diag_copy",
                "diag_triad",
                "diag_compare",
                "diag_flip",
            ],
        ),
    ];
}

/// Threads per block of the element-wise kernels.
pub const BLOCK: u32 = 256;

/// Blocks that fill every multiprocessor with [`BLOCK`]-thread blocks (2048 resident
/// threads per multiprocessor on every GPU since Volta), for the kernels that loop over
/// their input with a fixed grid.
pub fn resident_blocks(gpu: &Gpu) -> u32 {
    gpu.multiprocessors.max(1) * (2048 / BLOCK)
}

/// A copy of `host` on the GPU.
pub fn upload<T: DeviceRepr>(gpu: &Gpu, host: &[T]) -> Result<CudaSlice<T>, GpuError> {
    gpu.stream
        .clone_htod(host)
        .during("copying the inputs to the GPU")
}

/// `len` zeros on the GPU.
pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(
    gpu: &Gpu,
    len: usize,
) -> Result<CudaSlice<T>, GpuError> {
    gpu.stream
        .alloc_zeros(len.max(1))
        .during("allocating GPU memory")
}

/// A copy of `device` on the host, once the stream has finished.
pub fn download<T: DeviceRepr>(gpu: &Gpu, device: &CudaSlice<T>) -> Result<Vec<T>, GpuError> {
    gpu.stream
        .clone_dtoh(device)
        .during("copying the output from the GPU")
}

#[cfg(test)]
mod tests {
    use super::source::ALL;

    #[test]
    fn every_source_defines_its_kernels_as_extern_c_globals() {
        for (file, text, kernels) in ALL {
            for kernel in *kernels {
                let declaration = format!("extern \"C\" __global__ void {kernel}(");
                assert!(text.contains(&declaration), "{file} lacks {declaration}");
            }
            assert!(!text.contains('\0'), "{file}");
        }
    }
}

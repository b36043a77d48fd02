//! What the kernels' CUDA paths share: copies between host and GPU, and grid sizes.

use cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};

use crate::cuda::{DriverContext, Gpu, GpuError};

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

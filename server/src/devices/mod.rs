//! The device inventory: the host CPU and every usable CUDA GPU.

mod cpu;
mod cuda;

use gpulab_shared::{CudaStatus, Device};

/// Every device of this host, taken once at start-up.
#[derive(Debug, Clone)]
pub struct DeviceInventory {
    /// `cuda:0`, `cuda:1`, … first, then `cpu`.
    pub devices: Vec<Device>,
    pub cuda: CudaStatus,
}

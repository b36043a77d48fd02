//! gpulab: see and exercise the GPUs of a machine from a browser.
//!
//! A request comes in at [`api`], becomes a job in [`jobs`], runs in a [`worker`] process
//! that owns one device, and is stored in [`store`]. [`devices`] takes the inventory and
//! [`kernels`] holds the built-in kernels.

//!
//! The library exposes only what `main` needs ([`cli`]) and what the NVRTC tests call
//! ([`cuda`]'s compiler and library checks, and the built-in CUDA sources they compile:
//! [`builtin_cuda_sources`]); everything else is private, so that code no path uses shows up
//! as dead.

mod api;
pub mod cli;
pub mod cuda;
mod devices;
mod diag;
mod fleet;
mod jobs;
mod kernels;
mod lab;
mod metrics;
mod peaks;
mod probe;
mod store;
mod telemetry;
mod worker;

pub use kernels::{builtin_cuda_sources, CudaSource};

//! gpulab: see and exercise the GPUs of a machine from a browser.
//!
//! A request comes in at [`api`], becomes a job in [`jobs`], runs in a [`worker`] process
//! that owns one device, and is stored in [`store`]. [`devices`] takes the inventory and
//! [`kernels`] holds the built-in kernels.

pub mod api;
pub mod cli;
pub mod cuda;
pub mod devices;
pub mod jobs;
pub mod kernels;
pub mod metrics;
pub mod probe;
pub mod store;
pub mod telemetry;
pub mod worker;

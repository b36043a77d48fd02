//! Pieces of UI that pages put together.

mod code_editor;
mod copy_curl;
mod cuda_output;
mod device_card;
mod error_notice;
mod job_result;
mod live_indicator;
mod memory_bar;
mod new_key;
mod param_field;
mod site_header;
mod sparkline;
mod status_badge;
mod stress_chart;
mod sweep_chart;
mod telemetry;
mod timing_chart;

pub use code_editor::CodeEditor;
pub use copy_curl::CopyAsCurl;
pub use cuda_output::CudaOutput;
pub use device_card::DeviceCard;
pub use error_notice::{error_list, ErrorNotice};
pub use job_result::JobResultView;
pub use live_indicator::LiveIndicator;
pub use memory_bar::MemoryBar;
pub use new_key::NewKey;
pub use param_field::{FieldError, ParamField};
pub use site_header::SiteHeader;
pub use status_badge::{CheckBadge, DiagnosticBadge, StatusBadge, VerdictBadge};
pub use stress_chart::StressCharts;
pub use sweep_chart::SweepChart;
pub use telemetry::TelemetryPanel;
pub use timing_chart::TimingChart;

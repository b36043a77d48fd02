//! Pieces of UI that pages put together.

mod device_card;
mod error_notice;
mod job_result;
mod memory_bar;
mod param_field;
mod site_header;
mod status_badge;

pub use device_card::DeviceCard;
pub use error_notice::{error_list, ErrorNotice};
pub use job_result::JobResultView;
pub use memory_bar::MemoryBar;
pub use param_field::{FieldError, ParamField};
pub use site_header::SiteHeader;
pub use status_badge::StatusBadge;

//! The in-process recorder: bounded history, queries, Prometheus export.

mod prometheus;
mod query;
mod recorder;
mod series;
mod sketch;

pub use prometheus::EXPORTED_QUANTILES;
pub use query::{HistoryPoint, Query};
pub use recorder::{CollectorBuilder, MetricsCollector};
pub use series::SeriesKind;

//! Telemetry: what the proxy tells its operators — Prometheus metrics, the
//! access log and its line budget.
pub mod accesslog;
pub mod budget;
pub mod events;
pub mod metrics;

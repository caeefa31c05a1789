//! Telemetry: metrics and logs.
pub mod accesslog;
pub mod metrics;
pub mod throttle;

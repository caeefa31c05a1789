//! Network building blocks every layer uses: address sets, TLS client trust,
//! and the outbound HTTP client.
pub mod client;
pub mod ipmap;
pub mod ipset;
pub mod trust;

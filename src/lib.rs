//! wif-proxy: an allowlisting edge proxy that publishes only the OIDC
//! discovery documents and JSON Web Key Sets of a workload-identity issuer
//! (HashiCorp Vault, SPIRE), and answers everything else itself.
//!
//! Reading order, bottom up: [`config`] (what can be configured) →
//! [`documents`] (which documents exist, how they are fetched, validated and
//! cached) → [`admission`] (who may ask) → [`edge`] (where connections
//! arrive) → [`proxy`] (the running state and the request path) →
//! [`server`] (the listeners put together). See docs/architecture.md.

#![forbid(unsafe_code)]

pub mod admission;
pub mod config;
pub mod documents;
pub mod edge;
pub mod files;
pub mod net;
pub mod proxy;
pub mod server;
pub mod telemetry;

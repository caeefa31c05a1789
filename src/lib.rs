//! wif-proxy: an allowlisting edge proxy that publishes only the OIDC
//! discovery documents and JSON Web Key Sets of a workload-identity issuer
//! (HashiCorp Vault, SPIRE), and answers everything else itself.
//!
//! Reading order: [`config`] (what can be configured) → [`routes`] (what is
//! exposed) → [`proxy`] (the request path) → [`cache`] and [`upstream`] (how
//! documents are obtained) → [`server`] (connections and limits).

pub mod accesslog;
pub mod admin;
pub mod cache;
pub mod cli;
pub mod clientip;
pub mod config;
pub mod doctor;
pub mod document;
pub mod ipranges;
pub mod ipset;
pub mod metrics;
pub mod persist;
pub mod proxy;
pub mod ratelimit;
pub mod response;
pub mod routes;
pub mod server;
pub mod state;
pub mod throttle;
pub mod timeouts;
pub mod tls;
pub mod upstream;

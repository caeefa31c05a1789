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

pub mod config;

mod admission;
mod documents;
mod edge;
mod files;
mod net;
mod proxy;
mod server;
mod telemetry;

// The proxy: load a configuration, bind, serve.
pub use edge::systemd::{Passed as SystemdSockets, SystemdError};
pub use proxy::state::{BuildError, LoadError, Shared};
pub use server::{BindError, Server};

// `wif-proxy export`: the static mirror.
pub mod export {
    pub use crate::proxy::export::{fetch_all, write, ExportError, Exported, Format, Written, MANIFEST};
}

// What `check`, `ranges` and `doctor` show, and what the tests and fuzzers
// probe.
pub use admission::ranges::{parse as parse_ranges, Ranges};
pub use documents::catalog::{expected, DocKind, Expected};
pub use documents::upstream::Upstream;
pub use edge::clientip::read_proxy_header;
pub use edge::tls::leaf_facts;
pub use net::ipset::IpSet;
pub use net::{client, trust};
pub use proxy::allowlist::{IssuerId, Lookup, RouteId, Routes};
pub use proxy::response::error_body;

/// What the admin listener's status page and `/status.json` show, as the
/// `status` command reads it back.
pub mod status {
    pub use crate::proxy::status::html::duration;
    pub use crate::proxy::status::{
        CertificateStatus, DocState, DocumentStatus, FetchState, IpAllowStatus, IssuerStatus, ListenerStatus,
        RangeSourceStatus, Refusals, SourceFetch, Status,
    };
}

/// The log thread: one writer for access lines and `tracing` events.
pub mod log {
    pub use crate::telemetry::accesslog::{start, within_budget, Format, Guard, LogWriter};
}

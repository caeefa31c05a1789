//! Configuration: one TOML file, read as plain data and validated completely
//! up front.
//!
//! Reading order:
//! - `file`: what the file may say, the serde shape (`deny_unknown_fields`,
//!   every value kept with its place in the file);
//! - `defaults`: every default and bound, each with its reason;
//! - `values`: one validator per kind of value (duration, integer, address,
//!   CIDR, path, URL, word, name, DNS name, namespace, custom path);
//! - `validate`: one file per section, turning the file into the model;
//! - `model`: what the configuration means, the types that leave this module;
//! - `error`: what can be wrong, as types.
//!
//! What leaves the module is [`Config`]: fully defaulted, typed and checked,
//! so the rest of the proxy never has to wonder whether a value is sane.
//! Every error names the file, the line, the field and the offending value.

#![warn(missing_docs)]

mod context;
mod defaults;
mod error;
mod file;
mod keyword;
mod model;
mod validate;
mod values;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use defaults::{
    LETS_ENCRYPT, LETS_ENCRYPT_STAGING, MAX_BEARER_TOKEN_BYTES, MAX_NAMESPACE_DEPTH, MAX_NAME_LEN, OTHER_SOURCE,
};
pub use error::{BearerTokenError, ConfigError, CustomPathError, NamespaceError};
pub use model::{
    AcmeChallenge, AcmeSettings, CacheConfig, CertificateFiles, ClientIpConfig, ClientIpSource, Config, Forwarded,
    IpAllowConfig, IpAllowMode, IssuerConfig, IssuerKind, Listen, ListenError, LogConfig, Namespaces, RangeFormat,
    RangeLocation, RangeSourceConfig, RateLimitConfig, ServerConfig, TlsConfig, TlsMode, UpstreamUrl,
};
pub use values::{check_bearer_token, check_custom_path, check_namespace, is_namespace_segment, RESERVED_NAMESPACES};

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(path, &text)
    }

    /// Validates `text` as if it had been read from `path` (relative paths in
    /// it are taken relative to `path`'s folder).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let cx = context::Cx::new(path, text);
        validate::config(&cx, file::read(&cx)?)
    }
}

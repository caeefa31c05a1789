//! What can be wrong with a configuration, as types: [`ConfigError`] for a
//! whole file, and one error per reusable rule ([`NamespaceError`],
//! [`CustomPathError`]) whose text becomes the message of a
//! [`ConfigError::Invalid`].

use super::defaults::{MAX_CUSTOM_PATH_BYTES, MAX_NAMESPACE_DEPTH, MAX_NAME_LEN};

/// Everything that can be wrong with a configuration file. Every variant
/// names the file; those about one value also name its line, its field and
/// the value as written, so an operator can go straight to it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{path}: cannot read the configuration: {source}")]
    Read {
        /// The file, as given.
        path: String,
        /// Why the read failed.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, an unknown key, or a value of the wrong TOML type.
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The file, as given.
        path: String,
        /// 1-based line of the offending text.
        line: usize,
        /// The TOML parser's message, with the line quoted.
        message: String,
    },
    /// One value is well-formed TOML but not an acceptable setting.
    #[error("{path}:{line}: {field} = {value}: {message}")]
    Invalid {
        /// The file, as given.
        path: String,
        /// 1-based line of the value.
        line: usize,
        /// The dotted key, with indices: `issuer[0].namespaces[1]`.
        field: String,
        /// The value as written, quoted.
        value: String,
        /// What is wrong and, where it helps, what to write instead.
        message: String,
    },
    /// Something missing or inconsistent that no single value carries.
    #[error("{path}: {message}")]
    Whole {
        /// The file, as given.
        path: String,
        /// What is missing or inconsistent.
        message: String,
    },
}

/// Why a string is not an explicit Vault namespace (see
/// [`check_namespace`](super::check_namespace)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceError {
    /// `..` could climb out of the namespace once joined into a path.
    #[error("a namespace must not contain \"..\"")]
    DotDot,
    /// An empty segment: Vault would normalise it away, we match bytes.
    #[error("a namespace must not contain \"//\"")]
    EmptySegment,
    /// Percent-encoding would let two spellings name one namespace.
    #[error("a namespace must not contain '%': write it unencoded")]
    Encoded,
    /// Whitespace is never part of a namespace name.
    #[error("a namespace must not contain whitespace")]
    Whitespace,
    /// A slash at either end.
    #[error("write a namespace without leading or trailing '/', e.g. \"ns1/team-a\"")]
    EdgeSlash,
    /// Deeper than the `*` wildcard would ever match.
    #[error("namespaces nest at most {MAX_NAMESPACE_DEPTH} deep")]
    TooDeep,
    /// A segment that is a Vault API path, not a namespace.
    #[error("\"{0}\" is a reserved Vault name, not a namespace")]
    Reserved(&'static str),
    /// A segment outside the strict charset.
    #[error(
        "namespace segment {0:?} must be 1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 - _, starting with a letter or digit"
    )]
    Segment(String),
}

/// Why a string is not a `custom` issuer's public path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomPathError {
    /// Not `/` followed by at least one byte.
    #[error("must be an absolute path such as \"/.well-known/openid-configuration\"")]
    NotAbsolute,
    /// Longer than any real document path.
    #[error("longer than {MAX_CUSTOM_PATH_BYTES} bytes")]
    TooLong,
    /// A trailing slash names a directory, not a document.
    #[error("must not end with '/'")]
    TrailingSlash,
    /// An empty segment.
    #[error("must not contain \"//\"")]
    EmptySegment,
    /// A byte outside the unreserved and sub-delimiter set.
    #[error("must not contain {0:?}: paths are matched byte for byte, unencoded, without query")]
    Char(char),
    /// `.` or `..` as a whole segment.
    #[error("must not contain \".\" or \"..\" segments")]
    DotSegment,
}

/// Why a bearer token file's content cannot be sent (the message never
/// quotes the content: it is a credential).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BearerTokenError {
    /// Nothing but whitespace.
    #[error("the token file is empty")]
    Empty,
    /// Whitespace or control characters inside, or bytes a header cannot carry.
    #[error("the token file holds more than one token (whitespace or control characters inside it)")]
    NotAToken,
}

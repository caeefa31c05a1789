//! The edge: where connections arrive.
pub mod clientip;
pub mod conn_io;
pub mod h2guard;
pub mod tls;

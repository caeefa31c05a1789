//! The edge: where connections arrive.
//!
//! [`listener`] is the one way in for every listener; [`http`] serves HTTP on
//! an accepted stream; [`conn_io`] holds a connection's deadlines and parks
//! it between requests; [`h2guard`] enforces HTTP/2 frame budgets and
//! deadlines beneath hyper; [`clientip`] learns who the client is; [`tls`]
//! terminates TLS with files or ACME; [`caps`] counts connections.
pub mod caps;
pub mod clientip;
pub mod conn_io;
pub mod h2guard;
pub mod http;
pub mod listener;
pub mod rewind;
pub mod systemd;
pub mod tls;

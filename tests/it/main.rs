//! Integration tests: one test binary, real sockets, the proxy in-process or
//! as the built binary, and one kind of issuer stand-in.

mod common;

pub mod acme;
mod cache;
mod cli;
mod clients;
mod core;
mod deploy;
mod docs;
mod doctor;
mod fuzz;
mod h2attack;
mod hostile;
mod limits;
mod observability;
mod openshift;
mod operate;
mod props;
mod ranges;
mod refusals;
mod status;
mod tls;
mod upstreams;

//! The documents and their cache: which documents an issuer publishes
//! ([`catalog`]), how they are fetched ([`upstream`]) and checked
//! ([`validate`]) with which credentials ([`token`]), and how the last good one ([`entry`]) is kept in memory
//! ([`cache`]) and on disk ([`persist`]), and what each source of clients
//! was served from it ([`served`]).
//!
//! Imports run one way, top to bottom: `cache` uses everything below it;
//! `persist` and `served` use `entry`; `entry` uses `validate`; `validate` uses `catalog`.
//! Nothing here uses the request path, the listeners or the running state.
pub mod cache;
pub mod catalog;
pub mod entry;
pub mod persist;
pub mod served;
pub mod token;
pub mod upstream;
pub mod validate;

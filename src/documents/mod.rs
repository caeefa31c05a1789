//! The documents and their cache.
pub mod cache;
pub mod catalog;
pub mod entry;
pub mod persist;
pub mod upstream;
pub mod validate;

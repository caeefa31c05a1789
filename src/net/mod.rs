//! Network building blocks.
pub mod ipset;

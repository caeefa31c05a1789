//! The running proxy: its state and what it answers.
pub mod admin;
pub mod allowlist;
pub mod export;
pub mod handler;
pub mod redirect;
pub mod refresh;
pub mod response;
pub mod state;
pub mod status;

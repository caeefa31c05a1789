//! Admission: who may ask.
pub mod ranges;
pub mod ratelimit;

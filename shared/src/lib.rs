//! Code shared by the edge and the origin. HTTP semantics here are pure functions (no I/O, no clock) with
//! tables of tests from the RFC text; the I/O helpers (TLS, metrics exposition, logging) are thin.

pub mod auth;
pub mod body;
pub mod conditional;
pub mod config;
pub mod cork;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod path;
pub mod range;
pub mod rendezvous;
pub mod segments;
pub mod serve;
pub mod tls;
pub mod token;
pub mod viewing;

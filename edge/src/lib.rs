//! The edge: players fetch HLS/DASH segments from it over HTTPS. Requests go through one pipeline
//! (`pipeline`) in front of a tiered memory + disk cache (`cache`) that stores objects as fixed-size slices and
//! fills misses from the upstream with coalesced, streaming fills. What players report of themselves (CMCD,
//! `cmcd`) goes to the access log and, with every request's outcome, into per-title summaries (`stats`) posted
//! to the control plane.

pub mod access;
pub mod admin;
pub mod allocator;
pub mod cache;
pub mod changes;
pub mod clock;
pub mod cmcd;
pub mod cmsd;
pub mod config;
pub mod error;
pub mod fields;
pub mod fill;
pub mod h3;
pub mod live;
pub mod metrics;
pub mod pipeline;
pub mod pool;
pub mod prefetch;
pub mod report;
pub mod server;
pub mod shield;
pub mod stats;
pub mod status;
pub mod upstream;
pub mod viewers;

pub use config::EdgeConfig;
pub use server::EdgeServer;

//! The tiered cache: keys and variants, slices, metadata, freshness, purge bans, coalesced fills, and the storage
//! engine.

pub mod bans;
pub mod engine;
pub mod fill;
pub mod freshness;
pub mod key;
pub mod meta;
pub mod plan;
pub mod slices;
pub mod storage;
pub mod vary;

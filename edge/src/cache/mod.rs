//! The tiered cache: keys, slices, metadata, freshness, coalesced fills, and the storage engine.

pub mod fill;
pub mod freshness;
pub mod key;
pub mod meta;
pub mod slices;
pub mod storage;

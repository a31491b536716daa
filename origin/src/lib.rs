//! The media origin: an HTTP/1.1 and HTTP/2 server in front of `object_store` (local folder, memory, S3, GCS,
//! Azure) that serves HLS/DASH objects with ranges, validators and Cache-Control by object class; and the control
//! plane: the catalog in SQL (`catalog`) and its JSON API with signed playback URLs (`api`).

pub mod access;
pub mod admin;
pub mod api;
pub mod catalog;
pub mod config;
pub mod error;
pub mod handler;
pub mod ingest;
pub mod manifests;
pub mod metrics;
pub mod search;
pub mod server;
pub mod store;

pub use config::OriginConfig;
pub use server::Origin;

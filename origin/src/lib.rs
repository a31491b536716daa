//! The origin binary's library, in two parts: the media origin (`media`: an HTTP/1.1 and HTTP/2 server in
//! front of `object_store` — local folder, memory, S3, GCS, Azure — that serves HLS/DASH objects with ranges,
//! validators and Cache-Control by object class) and the control plane (`control`: the catalog in SQL, search,
//! the JSON API with signed playback URLs, ingest). `server` binds both sets of listeners; `config`, `metrics`
//! and `admin` serve both.

pub mod admin;
pub mod bus;
pub mod config;
pub mod control;
pub mod media;
pub mod metrics;
pub mod recs;
pub mod server;

pub use config::OriginConfig;
pub use server::Origin;

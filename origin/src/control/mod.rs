//! The control plane: the catalog in SQL (`catalog`), its search index (`search`), the JSON API with signed
//! playback URLs (`api`), and `origin ingest`, which uploads a packaged title and registers it (`ingest`,
//! reading what its manifests reference with `manifests`).

pub mod api;
pub mod catalog;
pub mod ingest;
pub mod manifests;
pub mod search;

//! The control plane: the catalog in SQL (`catalog`), its search index (`search`), the JSON API with signed
//! playback URLs (`api`), and `origin ingest`, which uploads a packaged title and registers it (`ingest`,
//! reading what its manifests reference with `manifests`), and the fleet of edges that report themselves
//! (`fleet`), the client's address behind the edge (`forwarded`), and how viewers are steered to them: the
//! ranking (`steering`) and the manifests that carry it to players (`steered`); the viewer's side: accounts,
//! sessions and profiles (`accounts`) kept as versioned documents (`docs`), their routes and the web front end
//! (`viewer`), the home page's rows (`home`) and the recommender's training (`training`, over the models of
//! `crate::recs`), done by one instance at a time under a lease in the database (`lease`).

pub mod accounts;
pub mod api;
pub mod catalog;
pub mod changes;
pub mod docs;
pub mod events;
pub mod fill;
pub mod fleet;
pub mod forwarded;
pub mod home;
pub mod ingest;
pub mod lease;
pub mod manifests;
pub mod playback;
pub mod qoe;
pub mod search;
pub mod steered;
pub mod steering;
pub mod training;
pub mod typos;
pub mod viewer;

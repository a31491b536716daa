//! The media origin: GET and HEAD of HLS/DASH objects from `object_store`, with ranges, validators,
//! preconditions and `Cache-Control` by object class (`handler`); the store chosen by one URL and read as a
//! stream (`store`); the origin's error type, whose kind decides the status (`error`); and the access log and
//! metrics written when each body ends (`access`); LL-HLS preload hints held until their part exists (`hints`).

pub mod access;
pub mod error;
pub mod handler;
pub mod hints;
pub mod store;

//! The object store behind the origin, chosen by one URL, and streaming reads from it.
//!
//! Requests can only reach keys under the URL's folder or prefix: local folders are opened with
//! `LocalFileSystem::new_with_prefix`, remote stores are wrapped in a `PrefixStore`, and keys come from
//! `shared::path::object_key`, which refuses traversal.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;
use object_store::{
    GetOptions, GetRange, GetResultPayload, ObjectMeta, ObjectStore, ObjectStoreExt,
};
use shared::config::ConfigError;
use shared::range::ByteRange;

use crate::config::OriginConfig;
use crate::media::error::OriginError;

/// The store and how it was described, for logs.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// A description safe to log (no credentials).
    pub description: String,
    read_chunk_bytes: usize,
}

/// A body read from the store: a stream of chunks, errors as `io::Error` (hyper aborts the response on one, so a
/// truncated body is never passed off as complete).
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

impl Store {
    /// Opens the store the config names. Fails on the `store.url` field when the folder is missing or the
    /// backend rejects its options; does no network I/O.
    pub fn open(config: &OriginConfig) -> Result<Store, ConfigError> {
        let read_chunk_bytes = config.media.read_chunk_bytes;
        let Some(raw) = &config.store.url else {
            let folder = config.data_dir.join("objects");
            return Self::local(&folder, read_chunk_bytes);
        };
        let url = url::Url::parse(raw).map_err(|e| ConfigError::new("store.url", e.to_string()))?;
        match url.scheme() {
            "file" => {
                let folder = url.to_file_path().map_err(|_| {
                    ConfigError::new("store.url", "a file URL needs an absolute path")
                })?;
                Self::local(&folder, read_chunk_bytes)
            }
            "memory" => Ok(Store::from_store(
                Arc::new(InMemory::new()),
                "memory://".into(),
                read_chunk_bytes,
            )),
            _ => {
                let s = &config.store;
                let mut options: Vec<(String, String)> = s.options.clone().into_iter().collect();
                let mut set = |key: &str, value: &Option<String>| {
                    if let Some(v) = value {
                        options.push((key.to_string(), v.clone()));
                    }
                };
                set("aws_endpoint", &s.endpoint);
                set("aws_region", &s.region);
                set("aws_access_key_id", &s.access_key_id);
                set("aws_secret_access_key", &s.secret_access_key);
                if s.allow_http {
                    options.push(("allow_http".into(), "true".into()));
                }
                let (store, prefix) = object_store::parse_url_opts(&url, options)
                    .map_err(|e| ConfigError::new("store", format!("cannot open `{raw}`: {e}")))?;
                let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
                    Arc::from(store)
                } else {
                    Arc::new(PrefixStore::new(store, prefix))
                };
                let description = format!(
                    "{}://{}{}",
                    url.scheme(),
                    url.host_str().unwrap_or(""),
                    url.path()
                );
                Ok(Store::from_store(store, description, read_chunk_bytes))
            }
        }
    }

    fn local(folder: &Path, read_chunk_bytes: usize) -> Result<Store, ConfigError> {
        if !folder.is_dir() {
            return Err(ConfigError::new(
                "store.url",
                format!(
                    "the store folder {} does not exist (create it, or run scripts/up.sh)",
                    folder.display()
                ),
            ));
        }
        let fs = LocalFileSystem::new_with_prefix(folder).map_err(|e| {
            ConfigError::new(
                "store.url",
                format!("cannot open {}: {e}", folder.display()),
            )
        })?;
        let absolute = std::fs::canonicalize(folder).unwrap_or_else(|_| PathBuf::from(folder));
        Ok(Store::from_store(
            Arc::new(fs),
            format!("file://{}", absolute.display()),
            read_chunk_bytes,
        ))
    }

    /// Wraps any store (tests use this with `InMemory`).
    pub fn from_store(
        inner: Arc<dyn ObjectStore>,
        description: String,
        read_chunk_bytes: usize,
    ) -> Store {
        Store {
            inner,
            description,
            read_chunk_bytes,
        }
    }

    /// The underlying store.
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// The object's metadata.
    pub async fn head(&self, key: &str) -> Result<ObjectMeta, (OriginError, object_store::Error)> {
        let location = location(key)?;
        self.inner
            .head(&location)
            .await
            .map_err(|e| (OriginError::from_store(&e, key), e))
    }

    /// Streams `range` (or the whole object) of the version whose store ETag is `etag`: if the object changed
    /// since its metadata was read, the read fails instead of mixing versions.
    pub async fn stream(
        &self,
        key: &str,
        range: Option<ByteRange>,
        etag: Option<String>,
    ) -> Result<ByteStream, (OriginError, object_store::Error)> {
        let location = location(key)?;
        let options = GetOptions {
            range: range.map(|r| GetRange::Bounded(r.as_std())),
            if_match: etag,
            ..Default::default()
        };
        let result = self.inner.get_opts(&location, options).await;
        let result = result.map_err(|e| (OriginError::from_store(&e, key), e))?;
        let range = result.range.clone();
        Ok(match result.payload {
            GetResultPayload::File(file, _) => {
                read_file_chunks(file, range.start, range.end, self.read_chunk_bytes)
            }
            GetResultPayload::Stream(s) => s.map(|r| r.map_err(io::Error::other)).boxed(),
        })
    }
}

fn location(key: &str) -> Result<object_store::path::Path, (OriginError, object_store::Error)> {
    object_store::path::Path::parse(key).map_err(|e| {
        let err = object_store::Error::from(e);
        (OriginError::from_store(&err, key), err)
    })
}

/// Reads `start..end` of a local file in chunks of `chunk` bytes, one blocking `pread` per chunk, so a 4 GiB file
/// holds at most one chunk in memory per response (`object_store`'s own local stream reads 8 KiB at a time,
/// which costs a thread hop per 8 KiB).
fn read_file_chunks(file: std::fs::File, start: u64, end: u64, chunk: usize) -> ByteStream {
    let file = Arc::new(file);
    stream::try_unfold(start, move |offset| {
        let file = Arc::clone(&file);
        async move {
            if offset >= end {
                return Ok(None);
            }
            let want = (end - offset).min(chunk as u64) as usize;
            let buf = tokio::task::spawn_blocking(move || {
                let mut buf = BytesMut::zeroed(want);
                let mut filled = 0;
                while filled < want {
                    match file.read_at(&mut buf[filled..], offset + filled as u64) {
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "file shrank while read",
                            ));
                        }
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(buf.freeze())
            })
            .await
            .map_err(io::Error::other)??;
            Ok(Some((buf, offset + want as u64)))
        }
    })
    .boxed()
}

impl Store {
    /// Metadata and, when the object is at most `limit` bytes, its content; one store request.
    pub async fn read_small(
        &self,
        key: &str,
        limit: u64,
    ) -> Result<(ObjectMeta, Option<Bytes>), (OriginError, object_store::Error)> {
        let location = location(key)?;
        let result = self.inner.get_opts(&location, GetOptions::default()).await;
        let result = result.map_err(|e| (OriginError::from_store(&e, key), e))?;
        let meta = result.meta.clone();
        if meta.size > limit {
            return Ok((meta, None));
        }
        let bytes = result
            .bytes()
            .await
            .map_err(|e| (OriginError::from_store(&e, key), e))?;
        Ok((meta, Some(bytes)))
    }
}

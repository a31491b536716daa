//! Viewer data as versioned JSON documents (accounts, sessions, profiles, viewing history, ratings, "my list"),
//! beside the SQL catalog in the same database: JSON text in SQLite, JSONB in PostgreSQL (migration 4), behind
//! this one interface. A document is named by a kind and an id; every write names the version it read, and a
//! write over a newer version is refused with the current document ([`WriteError::Conflict`]): two writers never
//! lose an update, the second is told to read again. [`DocStore::update`] is that loop for the server's own
//! merges (recording progress), retried a bounded number of times.
//!
//! A signed-in request's session, profile and history may be read from what this instance read or wrote in the
//! last [`RECENT_MAX_AGE`] ([`DocStore::get_many_recent`]): a player's requests come many a second, and each
//! would otherwise cost a statement. Another instance's write is seen at most that late (a sign-out included);
//! this instance's own writes at once; a write from a stale copy is refused by its version as any other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::{AnyPool, Row};

/// How many times [`DocStore::update`] reads again after losing a race before it gives up.
const MAX_UPDATE_ATTEMPTS: usize = 8;

/// How old a document read by [`DocStore::get_many_recent`] may be.
pub const RECENT_MAX_AGE: Duration = Duration::from_secs(1);
/// The most documents kept for [`DocStore::get_many_recent`].
const MAX_RECENT: usize = 65_536;
/// The longest id kept for it (ids are the server's: 16 to 64 hex digits; a request may name a longer one, which
/// is read every time rather than let a client fill the memory with its ids).
const MAX_RECENT_ID_BYTES: usize = 128;

/// Documents as this instance last read or wrote them, with when: bounded to [`MAX_RECENT`] (full, the stale ones
/// go, then all).
#[derive(Default)]
struct Recent {
    docs: HashMap<(String, String), (Option<Doc>, Instant)>,
}

impl Recent {
    /// The documents asked, if every one was read or written within `max_age` of `now`.
    fn get_all(
        &self,
        wanted: &[(&str, &str)],
        now: Instant,
        max_age: Duration,
    ) -> Option<Vec<Option<Doc>>> {
        wanted
            .iter()
            .map(|&(kind, id)| {
                let (doc, at) = self.docs.get(&(kind.to_string(), id.to_string()))?;
                (now.saturating_duration_since(*at) < max_age).then(|| doc.clone())
            })
            .collect()
    }

    fn remember(&mut self, kind: &str, id: &str, doc: Option<Doc>, now: Instant) {
        if id.len() > MAX_RECENT_ID_BYTES {
            return;
        }
        if self.docs.len() >= MAX_RECENT {
            self.docs
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < RECENT_MAX_AGE);
            if self.docs.len() >= MAX_RECENT {
                self.docs.clear();
            }
        }
        self.docs
            .insert((kind.to_string(), id.to_string()), (doc, now));
    }

    fn forget(&mut self, kind: &str, id: &str) {
        self.docs.remove(&(kind.to_string(), id.to_string()));
    }
}

/// A document as stored: its version (1 when created, +1 per write), body and last write (unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    pub version: i64,
    pub body: Value,
    pub updated: i64,
}

#[derive(Debug)]
pub enum WriteError {
    /// The document is not at the version the write named (or exists, for a create): here is what it is now
    /// (`None`: it does not exist).
    Conflict(Option<Doc>),
    /// The database failed.
    Store(anyhow::Error),
}

impl From<sqlx::Error> for WriteError {
    fn from(e: sqlx::Error) -> Self {
        WriteError::Store(e.into())
    }
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Conflict(Some(doc)) => {
                write!(f, "conflict: now at version {}", doc.version)
            }
            WriteError::Conflict(None) => write!(f, "conflict: the document does not exist"),
            WriteError::Store(e) => write!(f, "document store: {e}"),
        }
    }
}

/// The statements that differ by database.
struct Statements {
    get: &'static str,
    create: &'static str,
    replace: &'static str,
    all: &'static str,
}

const SQLITE: Statements = Statements {
    get: "SELECT version, body, updated_at FROM documents WHERE kind = $1 AND id = $2",
    create: "INSERT INTO documents (kind, id, version, body, updated_at) VALUES ($1, $2, 1, $3, $4) \
             ON CONFLICT (kind, id) DO NOTHING",
    replace: "UPDATE documents SET body = $1, version = version + 1, updated_at = $2 \
              WHERE kind = $3 AND id = $4 AND version = $5",
    all: "SELECT id, version, body, updated_at FROM documents WHERE kind = $1 ORDER BY id LIMIT $2",
};

const POSTGRES: Statements = Statements {
    get: "SELECT version, body::text, updated_at FROM documents WHERE kind = $1 AND id = $2",
    create: "INSERT INTO documents (kind, id, version, body, updated_at) VALUES ($1, $2, 1, CAST($3 AS JSONB), $4) \
             ON CONFLICT (kind, id) DO NOTHING",
    replace: "UPDATE documents SET body = CAST($1 AS JSONB), version = version + 1, updated_at = $2 \
              WHERE kind = $3 AND id = $4 AND version = $5",
    all: "SELECT id, version, body::text, updated_at FROM documents WHERE kind = $1 ORDER BY id LIMIT $2",
};

#[derive(Clone)]
pub struct DocStore {
    pool: AnyPool,
    postgres: bool,
    /// Counts every statement (`control_db_queries_total{op}`: `doc_get`, `doc_create`, `doc_replace`,
    /// `doc_get_many`, `doc_delete`, `doc_all`, `doc_sweep`).
    queries: crate::metrics::DbQueries,
    /// What [`get_many_recent`](Self::get_many_recent) may answer from; shared by the store's clones.
    recent: Arc<Mutex<Recent>>,
}

impl DocStore {
    /// The documents of the catalog's database (`catalog.backend` says which SQL to speak).
    pub fn new(pool: AnyPool, backend: &str) -> DocStore {
        DocStore {
            pool,
            postgres: backend == "postgres",
            queries: Default::default(),
            recent: Default::default(),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// [`get_many`](Self::get_many), answered without a statement when this instance read or wrote every one
    /// of the documents within [`RECENT_MAX_AGE`] (for a signed-in request: see the top of this file).
    pub async fn get_many_recent(
        &self,
        wanted: &[(&str, &str)],
    ) -> anyhow::Result<Vec<Option<Doc>>> {
        self.get_many_within(wanted, RECENT_MAX_AGE).await
    }

    /// [`get_many_recent`](Self::get_many_recent) with documents up to `max_age` old.
    pub(crate) async fn get_many_within(
        &self,
        wanted: &[(&str, &str)],
        max_age: Duration,
    ) -> anyhow::Result<Vec<Option<Doc>>> {
        if let Some(docs) = self.recent().get_all(wanted, Instant::now(), max_age) {
            return Ok(docs);
        }
        let docs = self.get_many(wanted).await?;
        let now = Instant::now();
        let mut recent = self.recent();
        for ((kind, id), doc) in wanted.iter().zip(&docs) {
            recent.remember(kind, id, doc.clone(), now);
        }
        Ok(docs)
    }

    /// The store counting its statements in `queries`.
    pub fn counting(mut self, queries: crate::metrics::DbQueries) -> DocStore {
        self.queries = queries;
        self
    }

    /// The database's connections, for the small tables beside the documents (failed sign-ins).
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Where statements are counted.
    pub(crate) fn queries(&self) -> &crate::metrics::DbQueries {
        &self.queries
    }

    /// The statements, in the database's SQL: JSONB is cast to text for the portable driver, and text to JSONB.
    fn sql(&self) -> &'static Statements {
        if self.postgres { &POSTGRES } else { &SQLITE }
    }

    pub async fn get(&self, kind: &str, id: &str) -> anyhow::Result<Option<Doc>> {
        self.queries.count("doc_get");
        let row = sqlx::query(self.sql().get)
            .bind(kind)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| -> anyhow::Result<Doc> {
            let text: String = row.try_get(1)?;
            Ok(Doc {
                version: row.try_get(0)?,
                body: serde_json::from_str(&text)?,
                updated: row.try_get(2)?,
            })
        })
        .transpose()
    }

    /// Several documents in one statement: for each `(kind, id)` asked, the document or `None`, in the order
    /// asked (a request that needs a session, a profile and its history reads them together).
    pub async fn get_many(&self, wanted: &[(&str, &str)]) -> anyhow::Result<Vec<Option<Doc>>> {
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        self.queries.count("doc_get_many");
        let body = if self.postgres { "body::text" } else { "body" };
        let mut sql = format!("SELECT kind, id, version, {body}, updated_at FROM documents WHERE ");
        for i in 0..wanted.len() {
            if i > 0 {
                sql.push_str(" OR ");
            }
            sql.push_str(&format!("(kind = ${} AND id = ${})", 2 * i + 1, 2 * i + 2));
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (kind, id) in wanted {
            query = query.bind(*kind).bind(*id);
        }
        let mut found = vec![None; wanted.len()];
        for row in query.fetch_all(&self.pool).await? {
            let (kind, id): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let text: String = row.try_get(3)?;
            let doc = Doc {
                version: row.try_get(2)?,
                body: serde_json::from_str(&text)?,
                updated: row.try_get(4)?,
            };
            for (slot, (k, i)) in found.iter_mut().zip(wanted) {
                if *k == kind && *i == id {
                    *slot = Some(doc.clone());
                }
            }
        }
        Ok(found)
    }

    /// Creates a document at version 1; a conflict when one of that kind and id exists.
    pub async fn create(
        &self,
        kind: &str,
        id: &str,
        body: &Value,
        now: i64,
    ) -> Result<Doc, WriteError> {
        self.queries.count("doc_create");
        let done = sqlx::query(self.sql().create)
            .bind(kind)
            .bind(id)
            .bind(body.to_string())
            .bind(now)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 1 {
            return Ok(self.written(kind, id, 1, body, now));
        }
        self.recent().forget(kind, id);
        Err(WriteError::Conflict(self.current(kind, id).await?))
    }

    /// Replaces the document if it is still at `version`; else a conflict with what it is now.
    pub async fn replace(
        &self,
        kind: &str,
        id: &str,
        version: i64,
        body: &Value,
        now: i64,
    ) -> Result<Doc, WriteError> {
        self.queries.count("doc_replace");
        let done = sqlx::query(self.sql().replace)
            .bind(body.to_string())
            .bind(now)
            .bind(kind)
            .bind(id)
            .bind(version)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 1 {
            return Ok(self.written(kind, id, version + 1, body, now));
        }
        self.recent().forget(kind, id);
        Err(WriteError::Conflict(self.current(kind, id).await?))
    }

    /// A document just written, as it now is; kept for the recent reads if they hold it.
    fn written(&self, kind: &str, id: &str, version: i64, body: &Value, now: i64) -> Doc {
        let doc = Doc {
            version,
            body: body.clone(),
            updated: now,
        };
        self.recent()
            .remember(kind, id, Some(doc.clone()), Instant::now());
        doc
    }

    /// Deletes the document (at any version); whether there was one.
    pub async fn delete(&self, kind: &str, id: &str) -> anyhow::Result<bool> {
        self.queries.count("doc_delete");
        self.recent().forget(kind, id);
        let done = sqlx::query("DELETE FROM documents WHERE kind = $1 AND id = $2")
            .bind(kind)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Reads, changes and writes back the document until no other writer came in between (at most
    /// [`MAX_UPDATE_ATTEMPTS`] reads): `change` gets the current body (`None`: none yet) and returns the new one.
    pub async fn update<F>(
        &self,
        kind: &str,
        id: &str,
        now: i64,
        change: F,
    ) -> Result<Doc, WriteError>
    where
        F: FnMut(Option<&Value>) -> Value,
    {
        let current = self.get(kind, id).await.map_err(WriteError::Store)?;
        self.update_from(kind, id, current, now, change).await
    }

    /// [`update`](Self::update) from a copy already read (`None`: there was none): its first write costs no read.
    pub async fn update_from<F>(
        &self,
        kind: &str,
        id: &str,
        mut current: Option<Doc>,
        now: i64,
        mut change: F,
    ) -> Result<Doc, WriteError>
    where
        F: FnMut(Option<&Value>) -> Value,
    {
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let written = match &current {
                None => self.create(kind, id, &change(None), now).await,
                Some(doc) => {
                    self.replace(kind, id, doc.version, &change(Some(&doc.body)), now)
                        .await
                }
            };
            match written {
                Err(WriteError::Conflict(now_is)) => current = now_is,
                other => return other,
            }
        }
        Err(WriteError::Conflict(current))
    }

    /// Every document of a kind, by id, `limit` at most (training reads the viewing histories).
    pub async fn all(&self, kind: &str, limit: i64) -> anyhow::Result<Vec<(String, Doc)>> {
        self.queries.count("doc_all");
        let rows = sqlx::query(self.sql().all)
            .bind(kind)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| {
                let text: String = row.try_get(2)?;
                Ok((
                    row.try_get(0)?,
                    Doc {
                        version: row.try_get(1)?,
                        body: serde_json::from_str(&text)?,
                        updated: row.try_get(3)?,
                    },
                ))
            })
            .collect()
    }

    /// Deletes documents of a kind last written before `before` (expired sessions); how many.
    pub async fn delete_older(&self, kind: &str, before: i64) -> anyhow::Result<u64> {
        self.queries.count("doc_sweep");
        let done = sqlx::query("DELETE FROM documents WHERE kind = $1 AND updated_at < $2")
            .bind(kind)
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn current(&self, kind: &str, id: &str) -> Result<Option<Doc>, WriteError> {
        self.get(kind, id).await.map_err(WriteError::Store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(version: i64) -> Option<Doc> {
        Some(Doc {
            version,
            body: Value::Null,
            updated: 0,
        })
    }

    #[test]
    fn recent_documents_answer_only_while_every_one_is_young_enough() {
        let start = Instant::now();
        let mut recent = Recent::default();
        recent.remember("session", "s", doc(1), start);
        recent.remember("history", "p", None, start);
        let both = [("session", "s"), ("history", "p")];
        let max = RECENT_MAX_AGE;
        assert_eq!(recent.get_all(&both, start, max), Some(vec![doc(1), None]));
        let later = start + max - Duration::from_millis(1);
        assert_eq!(recent.get_all(&both, later, max), Some(vec![doc(1), None]));
        assert_eq!(recent.get_all(&both, start + max, max), None, "too old");
        assert_eq!(
            recent.get_all(&[("profile", "p")], start, max),
            None,
            "never read"
        );
        recent.remember("session", "s", doc(2), start + max);
        assert_eq!(
            recent.get_all(&both, start + max, max),
            None,
            "one of them too old"
        );
        recent.forget("session", "s");
        assert_eq!(recent.get_all(&[("session", "s")], start, max), None);
    }

    #[test]
    fn recent_documents_are_bounded() {
        let start = Instant::now();
        let mut recent = Recent::default();
        for i in 0..MAX_RECENT {
            recent.remember("history", &i.to_string(), doc(1), start);
        }
        // Full of young ones: all go, the new one stays.
        recent.remember("history", "new", doc(1), start);
        assert_eq!(recent.docs.len(), 1);
        for i in 0..MAX_RECENT - 1 {
            recent.remember("history", &i.to_string(), doc(1), start);
        }
        // Full with stale ones: only they go.
        let later = start + RECENT_MAX_AGE;
        recent.remember("history", "newer", doc(1), later);
        recent.remember("history", "newest", doc(1), later);
        assert_eq!(recent.docs.len(), 2);
        // An id longer than the server's is never kept: read every time.
        let long = "x".repeat(MAX_RECENT_ID_BYTES + 1);
        recent.remember("profile", &long, None, later);
        assert_eq!(
            recent.get_all(&[("profile", &long)], later, RECENT_MAX_AGE),
            None
        );
        assert_eq!(recent.docs.len(), 2);
    }
}

//! The catalog in SQL: titles (with genres and cast) and the renditions of each packaging, in SQLite (a file in
//! the data folder, the default) or PostgreSQL (a `postgres://` URL), through sqlx's `Any` driver with portable SQL
//! and embedded migrations. Titles are registered from the `meta.json` a packaged title carries in the object
//! store (`titles/<slug>/meta.json`), idempotently: registering again replaces the title's rows in one
//! transaction.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, AssertSqlSafe, Row};

/// The migrations, embedded in the binary. Viewer documents (4) differ by database: JSON text in SQLite, JSONB in
/// PostgreSQL; so does the instances' shared state (5): a model is a BLOB in SQLite, BYTEA in PostgreSQL.
fn migrator(backend: &str) -> Migrator {
    use sqlx::SqlSafeStr;
    let (documents, shared_state) = if backend == "postgres" {
        (
            include_str!("../../migrations/0004_documents.postgres.sql"),
            include_str!("../../migrations/0005_shared_state.postgres.sql"),
        )
    } else {
        (
            include_str!("../../migrations/0004_documents.sqlite.sql"),
            include_str!("../../migrations/0005_shared_state.sqlite.sql"),
        )
    };
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            Cow::Borrowed("catalog"),
            MigrationType::Simple,
            include_str!("../../migrations/0001_catalog.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            Cow::Borrowed("ids and assets"),
            MigrationType::Simple,
            include_str!("../../migrations/0002_ids_and_assets.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            Cow::Borrowed("takedowns"),
            MigrationType::Simple,
            include_str!("../../migrations/0003_takedowns.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            4,
            Cow::Borrowed("documents"),
            MigrationType::Simple,
            documents.into_sql_str(),
            false,
        ),
        Migration::new(
            5,
            Cow::Borrowed("shared state"),
            MigrationType::Simple,
            shared_state.into_sql_str(),
            false,
        ),
        Migration::new(
            6,
            Cow::Borrowed("list indexes"),
            MigrationType::Simple,
            include_str!("../../migrations/0006_list_indexes.sql").into_sql_str(),
            false,
        ),
    ])
}

/// Tries at running the migrations before the catalog gives up.
const MIGRATION_ATTEMPTS: u64 = 5;

/// A packaged title's `meta.json`: the fields the catalog keeps, and any others a packager wrote (kept in `extra`
/// so that ingest, which rewrites the file with the packagings it derived from the manifests, loses nothing).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct TitleMeta {
    #[serde(default)]
    pub slug: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub original_title: Option<String>,
    #[serde(default)]
    pub year: Option<i64>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub director: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub duration_secs: Option<i64>,
    #[serde(default)]
    pub poster: Option<String>,
    #[serde(default)]
    pub genres: Vec<String>,
    #[serde(default)]
    pub cast: Vec<String>,
    /// A relative popularity (views, say); search ranks ties by it.
    #[serde(default)]
    pub popularity: Option<i64>,
    #[serde(default)]
    pub packagings: Vec<PackagingMeta>,
    /// The files of the title's folder (written by ingest).
    #[serde(default)]
    pub assets: Vec<AssetMeta>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl TitleMeta {
    /// The metadata for the title stored under `titles/<slug>/`: the slug and every store key follow the folder
    /// (a title packaged as `x` and ingested as `y` has its keys under `titles/y/`; a key written relative, like
    /// `poster.jpg`, is taken inside the folder), and a title given no name is named after its slug.
    pub fn relocate(&mut self, slug: &str) {
        let from = format!("titles/{}/", self.slug);
        let to = format!("titles/{slug}/");
        let moved = |key: &str| match key.strip_prefix(&from) {
            Some(rest) => format!("{to}{rest}"),
            None if !key.starts_with("titles/") => format!("{to}{key}"),
            None => key.to_string(),
        };
        for packaging in &mut self.packagings {
            packaging.manifest = moved(&packaging.manifest);
        }
        for asset in &mut self.assets {
            asset.key = moved(&asset.key);
        }
        self.poster = self.poster.as_deref().map(moved);
        self.slug = slug.to_string();
        if self.title.trim().is_empty() {
            self.title = slug
                .split('-')
                .filter(|w| !w.is_empty())
                .map(|w| {
                    let mut chars = w.chars();
                    chars.next().map_or(String::new(), |c| {
                        c.to_uppercase().chain(chars).collect::<String>()
                    })
                })
                .collect::<Vec<_>>()
                .join(" ");
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct PackagingMeta {
    pub name: String,
    pub protocol: String,
    pub manifest: String,
    #[serde(default)]
    pub renditions: Vec<RenditionMeta>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct RenditionMeta {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub bandwidth: Option<i64>,
    #[serde(default)]
    pub resolution: Option<String>,
    #[serde(default)]
    pub codecs: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
}

/// One file of a title: its store key, what it is for, and its size.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct AssetMeta {
    pub key: String,
    pub kind: String,
    pub bytes: i64,
}

impl AssetMeta {
    /// `manifest`, `init`, `segment`, `subtitles`, `artwork` or `other`, by the file's name.
    pub fn kind_of(key: &str) -> &'static str {
        let name = key.rsplit('/').next().unwrap_or(key).to_ascii_lowercase();
        let extension = name.rsplit_once('.').map_or("", |(_, e)| e);
        match extension {
            "m3u8" | "mpd" => "manifest",
            "vtt" | "webvtt" | "ttml" | "srt" => "subtitles",
            "jpg" | "jpeg" | "png" | "webp" | "avif" => "artwork",
            _ if name.starts_with("init") => "init",
            "ts" | "m4s" | "mp4" | "m4v" | "m4a" | "aac" | "cmfv" | "cmfa" | "webm" | "mp3" => {
                "segment"
            }
            _ => "other",
        }
    }
}

/// A title as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TitleSummary {
    /// A stable number, kept when the title is registered again.
    pub id: i64,
    pub slug: String,
    pub title: String,
    pub year: Option<i64>,
    pub language: Option<String>,
    pub genres: Vec<String>,
    pub artwork_key: Option<String>,
}

/// A title with everything the details page needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TitleDetails {
    #[serde(flatten)]
    pub summary: TitleSummary,
    pub original_title: Option<String>,
    pub director: Option<String>,
    pub description: Option<String>,
    pub runtime_secs: Option<i64>,
    pub cast: Vec<String>,
    pub packagings: Vec<Packaging>,
    /// How many files the title's folder holds and their total size (the list: `assets()`).
    pub assets: AssetTotals,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AssetTotals {
    pub files: i64,
    pub bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Packaging {
    pub name: String,
    pub protocol: String,
    pub manifest_key: String,
    pub renditions: Vec<Rendition>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rendition {
    pub kind: String,
    pub bandwidth: Option<i64>,
    pub resolution: Option<String>,
    pub codecs: Option<String>,
    pub language: Option<String>,
}

/// Filters and the page of a listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    pub genre: Option<String>,
    pub year: Option<i64>,
    pub language: Option<String>,
    /// Titles after this slug (the cursor of the previous page).
    pub after: Option<String>,
    pub limit: i64,
}

/// One page of titles, ordered by slug (a stable order: a cursor stays valid as titles are added).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    pub titles: Vec<TitleSummary>,
    /// The slug to pass as `after` for the next page; `None` on the last page.
    pub next_after: Option<String>,
}

pub struct Catalog {
    pool: AnyPool,
    pub backend: &'static str,
    /// Counts every statement sent (`control_db_queries_total{op}`), `op` naming the method: `title` for
    /// [`Catalog::get`] (5 statements a title), `titles_list`, `title_assets`, `popular`, `items`, `search_docs`,
    /// `title_write` (registering), `takedown`, `takedowns`, `takedown_log`.
    queries: crate::metrics::DbQueries,
}

impl Catalog {
    /// Connects (creating a SQLite file if missing) and runs the migrations.
    /// The connections, shared with the viewer documents (`control::docs`).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn open(url: &str) -> anyhow::Result<Catalog> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            "sqlite"
        } else {
            "postgres"
        };
        let url = if backend == "sqlite" && !url.contains("mode=") && !url.contains(":memory:") {
            format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
        } else {
            url.to_string()
        };
        if let Some(file) = url
            .strip_prefix("sqlite://")
            .map(|rest| rest.split('?').next().unwrap_or(rest))
            .filter(|f| !f.is_empty() && !f.contains(":memory:"))
            && let Some(parent) = std::path::Path::new(file).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                anyhow::anyhow!(
                    "creating {} for the catalog (catalog.url): {e}",
                    parent.display()
                )
            })?;
        }
        // SQLite: each in-memory connection is its own database, so one connection there; a file gets a few
        // readers (WAL lets them read while one writes). Every connection enforces foreign keys.
        let memory = url.contains(":memory:");
        let connections = match backend {
            "sqlite" if memory => 1,
            "sqlite" => 4,
            _ => 8,
        };
        let sqlite = backend == "sqlite";
        let pool = AnyPoolOptions::new()
            .max_connections(connections)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        use sqlx::Executor;
                        conn.execute("PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|e| anyhow::anyhow!("catalog database `{url}` (catalog.url): {e}"))?;
        if sqlite && !memory {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        // Instances started together race to migrate one SQLite file (PostgreSQL serialises them with a lock): the
        // loser's migration fails whole and is tried again, when it finds the winner's done.
        let mut attempts = 0;
        while let Err(e) = migrator(backend).run(&pool).await {
            attempts += 1;
            if attempts >= MIGRATION_ATTEMPTS {
                return Err(anyhow::anyhow!("catalog migrations: {e}"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200 * attempts)).await;
        }
        Ok(Catalog {
            pool,
            backend,
            queries: Default::default(),
        })
    }

    /// The catalog counting its statements in `queries` (the exported `control_db_queries_total`).
    pub fn counting(mut self, queries: crate::metrics::DbQueries) -> Catalog {
        self.queries = queries;
        self
    }

    /// Where its statements are counted; the other stores of its database count theirs there too.
    pub fn queries(&self) -> &crate::metrics::DbQueries {
        &self.queries
    }

    /// The viewers' documents in the same database, counted in the same place.
    pub fn docs(&self) -> crate::control::docs::DocStore {
        crate::control::docs::DocStore::new(self.pool.clone(), self.backend)
            .counting(self.queries.clone())
    }

    /// Registers (or replaces) a title and its renditions, in one transaction.
    pub async fn upsert(&self, meta: &TitleMeta, now: i64) -> anyhow::Result<()> {
        self.upsert_many(std::slice::from_ref(meta), now).await
    }

    /// Registers (or replaces) titles and their renditions, in one transaction and a few statements whatever
    /// their number: each table's rows go in as one `INSERT` (or as few as the bound-value limit allows). A
    /// title keeps its id when it is replaced.
    pub async fn upsert_many(&self, metas: &[TitleMeta], now: i64) -> anyhow::Result<()> {
        if metas.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let slugs: Vec<Bound> = metas.iter().map(|m| Bound::text(&m.slug)).collect();
        let mut ids: HashMap<String, i64> = HashMap::new();
        for chunk in slugs.chunks(MAX_BOUND_VALUES) {
            self.queries.count("title_write");
            let sql = format!(
                "SELECT slug, id FROM titles WHERE slug IN ({})",
                placeholders(1, chunk.len())
            );
            for row in bind_all(sqlx::query(AssertSqlSafe(sql)), chunk)
                .fetch_all(&mut *tx)
                .await?
            {
                ids.insert(row.try_get(0)?, row.try_get(1)?);
            }
        }
        if metas.iter().any(|m| !ids.contains_key(&m.slug)) {
            self.queries.count("title_write");
            let mut next: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) + 1 FROM titles")
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            for meta in metas {
                ids.entry(meta.slug.clone()).or_insert_with(|| {
                    next += 1;
                    next - 1
                });
            }
        }
        for chunk in slugs.chunks(MAX_BOUND_VALUES) {
            self.queries.count("title_write");
            let sql = format!(
                "DELETE FROM titles WHERE slug IN ({})",
                placeholders(1, chunk.len())
            );
            bind_all(sqlx::query(AssertSqlSafe(sql)), chunk)
                .execute(&mut *tx)
                .await?;
        }
        // A slug listed twice is written once (the last).
        let mut last: HashMap<&str, &TitleMeta> = HashMap::new();
        for meta in metas {
            last.insert(&meta.slug, meta);
        }
        let mut written: Vec<&TitleMeta> = last.into_values().collect();
        written.sort_by(|a, b| a.slug.cmp(&b.slug));
        let (mut titles, mut genres, mut cast, mut renditions, mut assets) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for meta in &written {
            let slug = Bound::text(&meta.slug);
            titles.push(vec![
                slug.clone(),
                Bound::text(&meta.title),
                Bound::Text(meta.original_title.clone()),
                Bound::Int(meta.year),
                Bound::Text(meta.language.clone()),
                Bound::Text(meta.director.clone()),
                Bound::Text(meta.description.clone()),
                Bound::Int(meta.duration_secs),
                Bound::Text(meta.poster.clone()),
                Bound::Int(Some(meta.popularity.unwrap_or(0))),
                Bound::Int(Some(now)),
                Bound::Int(Some(ids[&meta.slug])),
            ]);
            let mut names = meta.genres.clone();
            names.sort();
            names.dedup();
            genres.extend(names.iter().map(|g| vec![slug.clone(), Bound::text(g)]));
            cast.extend(meta.cast.iter().enumerate().map(|(position, name)| {
                vec![
                    slug.clone(),
                    Bound::Int(Some(position as i64)),
                    Bound::text(name),
                ]
            }));
            for packaging in &meta.packagings {
                for (position, r) in packaging.renditions.iter().enumerate() {
                    renditions.push(vec![
                        slug.clone(),
                        Bound::text(&packaging.name),
                        Bound::Int(Some(position as i64)),
                        Bound::text(&packaging.protocol),
                        Bound::text(&r.kind),
                        Bound::text(&packaging.manifest),
                        Bound::Int(r.bandwidth),
                        Bound::Text(r.resolution.clone()),
                        Bound::Text(r.codecs.clone()),
                        Bound::Text(r.language.clone()),
                    ]);
                }
            }
            assets.extend(meta.assets.iter().map(|asset| {
                vec![
                    slug.clone(),
                    Bound::text(&asset.key),
                    Bound::text(&asset.kind),
                    Bound::Int(Some(asset.bytes)),
                ]
            }));
        }
        for (table, rows) in [
            (
                "titles (slug, title, original_title, year, language, director, description, runtime_secs, \
                 artwork_key, popularity, updated_at, id)",
                titles,
            ),
            ("title_genres (slug, genre)", genres),
            ("title_cast (slug, position, name)", cast),
            (
                "renditions (slug, packaging, position, protocol, kind, manifest_key, bandwidth, resolution, \
                 codecs, language)",
                renditions,
            ),
            ("assets (slug, object_key, kind, bytes)", assets),
        ] {
            let Some(width) = rows.first().map(Vec::len) else {
                continue;
            };
            for chunk in rows.chunks(MAX_BOUND_VALUES / width) {
                self.queries.count("title_write");
                let values: Vec<String> = (0..chunk.len())
                    .map(|i| format!("({})", placeholders(1 + i * width, width)))
                    .collect();
                let sql = format!("INSERT INTO {table} VALUES {}", values.join(", "));
                let bound: Vec<Bound> = chunk.iter().flatten().cloned().collect();
                bind_all(sqlx::query(AssertSqlSafe(sql)), &bound)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The files of a title, by key; `None` for an unknown title.
    pub async fn assets(&self, slug: &str) -> anyhow::Result<Option<Vec<AssetMeta>>> {
        self.queries.count("title_assets");
        if sqlx::query(
            "SELECT 1 FROM titles WHERE slug = $1 AND NOT EXISTS (SELECT 1 FROM takedowns d WHERE d.slug = $1)",
        )
            .bind(slug)
            .fetch_optional(&self.pool)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        self.queries.count("title_assets");
        let rows = sqlx::query(
            "SELECT object_key, kind, bytes FROM assets WHERE slug = $1 ORDER BY object_key",
        )
        .bind(slug)
        .fetch_all(&self.pool)
        .await?;
        let assets = rows
            .iter()
            .map(|row| {
                Ok(AssetMeta {
                    key: row.try_get(0)?,
                    kind: row.try_get(1)?,
                    bytes: row.try_get(2)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some(assets))
    }

    /// One page of titles matching the filters.
    pub async fn list(&self, q: &ListQuery) -> anyhow::Result<Page> {
        self.queries.count("titles_list");
        // Only literals and parameter numbers are spliced: every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(list_sql(q)));
        // Bound in the order list_sql numbers them; absent filters are left out of the statement, so the
        // database walks the index of the filter it has (a `$n IS NULL OR …` form hid them from its plan).
        if let Some(genre) = &q.genre {
            query = query.bind(genre);
        }
        if let Some(year) = q.year {
            query = query.bind(year);
        }
        if let Some(language) = &q.language {
            query = query.bind(language);
        }
        if let Some(after) = &q.after {
            query = query.bind(after);
        }
        let rows = query.bind(q.limit + 1).fetch_all(&self.pool).await?;
        let more = rows.len() as i64 > q.limit;
        let rows = &rows[..rows.len().min(q.limit as usize)];
        let slugs = rows
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<Vec<String>, _>>()?;
        let mut genres = self
            .values_by_slug("titles_list", Child::Genres, Some(&slugs))
            .await?;
        let titles = rows
            .iter()
            .map(|row| summary(row, &mut genres))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let next_after = more
            .then(|| titles.last().map(|t| t.slug.clone()))
            .flatten();
        Ok(Page { titles, next_after })
    }

    /// The most popular titles (by the catalog's `popularity`, then slug), of a genre when one is given.
    pub async fn popular(
        &self,
        genre: Option<&str>,
        limit: i64,
    ) -> anyhow::Result<Vec<TitleSummary>> {
        self.queries.count("popular");
        let rows = sqlx::query(
            "SELECT t.slug, t.title, t.year, t.language, t.artwork_key, t.id FROM titles t \
             WHERE ($1 IS NULL OR EXISTS (SELECT 1 FROM title_genres g WHERE g.slug = t.slug AND g.genre = $1)) \
             AND NOT EXISTS (SELECT 1 FROM takedowns d WHERE d.slug = t.slug) \
             ORDER BY t.popularity DESC, t.slug LIMIT $2",
        )
        .bind(genre)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let slugs = rows
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<Vec<String>, _>>()?;
        let mut genres = self
            .values_by_slug("popular", Child::Genres, Some(&slugs))
            .await?;
        rows.iter().map(|row| summary(row, &mut genres)).collect()
    }

    /// Every title that may be shown (not taken down) with its genres and popularity, for the recommenders.
    pub async fn items(&self) -> anyhow::Result<Vec<(String, Vec<String>, i64)>> {
        self.queries.count("items");
        let rows = sqlx::query(
            "SELECT t.slug, t.popularity FROM titles t \
             WHERE NOT EXISTS (SELECT 1 FROM takedowns d WHERE d.slug = t.slug) ORDER BY t.slug",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut genres = self.values_by_slug("items", Child::Genres, None).await?;
        rows.iter()
            .map(|row| {
                let slug: String = row.try_get(0)?;
                let popularity: i64 = row.try_get(1)?;
                let g = genres.remove(&slug).unwrap_or_default();
                Ok((slug, g, popularity))
            })
            .collect()
    }

    /// When each title was last registered (unix seconds), by slug.
    pub async fn registered_at(&self) -> anyhow::Result<std::collections::HashMap<String, i64>> {
        self.queries.count("titles_registered");
        let rows = sqlx::query("SELECT slug, updated_at FROM titles")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?)))
            .collect()
    }

    /// A title by slug, read in one statement: its row, genres, cast, renditions and asset totals as the parts of
    /// one `UNION ALL`, each part's rows in their order.
    pub async fn get(&self, slug: &str) -> anyhow::Result<Option<TitleDetails>> {
        self.queries.count("title");
        let rows = sqlx::query(TITLE_DETAILS_SQL)
            .bind(slug)
            .fetch_all(&self.pool)
            .await?;
        let mut found = None;
        let (mut genres, mut cast, mut packagings) =
            (Vec::new(), Vec::new(), Vec::<Packaging>::new());
        let mut assets = AssetTotals { files: 0, bytes: 0 };
        for row in &rows {
            let text = |i: usize| row.try_get::<Option<String>, _>(i);
            let number = |i: usize| row.try_get::<Option<i64>, _>(i);
            match row.try_get::<i64, _>(0)? {
                0 => found = Some(row),
                1 => genres.extend(text(1)?),
                2 => cast.extend(text(1)?),
                3 => {
                    let name = text(1)?.unwrap_or_default();
                    if packagings.last().is_none_or(|p| p.name != name) {
                        packagings.push(Packaging {
                            name,
                            protocol: text(2)?.unwrap_or_default(),
                            manifest_key: text(3)?.unwrap_or_default(),
                            renditions: Vec::new(),
                        });
                    }
                    let packaging = packagings.last_mut().expect("pushed above");
                    packaging.renditions.push(Rendition {
                        kind: text(4)?.unwrap_or_default(),
                        bandwidth: number(8)?,
                        resolution: text(5)?,
                        codecs: text(6)?,
                        language: text(7)?,
                    });
                }
                _ => {
                    assets = AssetTotals {
                        files: number(8)?.unwrap_or(0),
                        bytes: number(9)?.unwrap_or(0),
                    }
                }
            }
        }
        // Taken down, or never registered: the other parts say nothing then.
        let Some(row) = found else {
            return Ok(None);
        };
        let text = |i: usize| row.try_get::<Option<String>, _>(i);
        let number = |i: usize| row.try_get::<Option<i64>, _>(i);
        Ok(Some(TitleDetails {
            summary: TitleSummary {
                id: number(10)?.unwrap_or(0),
                slug: text(1)?.unwrap_or_default(),
                title: text(2)?.unwrap_or_default(),
                year: number(8)?,
                language: text(3)?,
                genres,
                artwork_key: text(4)?,
            },
            original_title: text(5)?,
            director: text(6)?,
            description: text(7)?,
            runtime_secs: number(9)?,
            cast,
            packagings,
            assets,
        }))
    }

    /// Every title as the search index takes it.
    pub async fn search_docs(&self) -> anyhow::Result<Vec<crate::control::search::SearchDoc>> {
        self.queries.count("search_docs");
        let rows = sqlx::query(
            "SELECT slug, title, original_title, director, description, popularity FROM titles t \
             WHERE NOT EXISTS (SELECT 1 FROM takedowns d WHERE d.slug = t.slug) ORDER BY slug",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut cast = self
            .values_by_slug("search_docs", Child::Cast, None)
            .await?;
        let mut genres = self
            .values_by_slug("search_docs", Child::Genres, None)
            .await?;
        let mut docs = Vec::with_capacity(rows.len());
        for row in &rows {
            let slug: String = row.try_get(0)?;
            let mut people = cast.remove(&slug).unwrap_or_default();
            people.extend(row.try_get::<Option<String>, _>(3)?);
            people.extend(genres.remove(&slug).unwrap_or_default());
            docs.push(crate::control::search::SearchDoc {
                slug,
                title: row.try_get(1)?,
                original_title: row.try_get::<Option<String>, _>(2)?.unwrap_or_default(),
                people_and_genres: people.join(" "),
                description: row.try_get::<Option<String>, _>(4)?.unwrap_or_default(),
                popularity: row.try_get(5)?,
            });
        }
        Ok(docs)
    }

    /// Takes a title down (`restore` false) or brings it back, recording the change in the takedown log in the
    /// same transaction. `None` when the catalog has no such title; else the change's sequence number, or
    /// `Some(None)` when the title was already in that state (nothing recorded).
    pub async fn set_taken_down(
        &self,
        slug: &str,
        taken_down: bool,
        reason: &str,
        now: i64,
    ) -> anyhow::Result<Option<Option<i64>>> {
        let mut tx = self.pool.begin().await?;
        self.queries.count("takedown");
        if sqlx::query("SELECT 1 FROM titles WHERE slug = $1")
            .bind(slug)
            .fetch_optional(&mut *tx)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        self.queries.count("takedown");
        let was: bool = sqlx::query("SELECT 1 FROM takedowns WHERE slug = $1")
            .bind(slug)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if was == taken_down {
            return Ok(Some(None));
        }
        if taken_down {
            self.queries.count("takedown");
            sqlx::query("INSERT INTO takedowns (slug, reason, taken_down_at) VALUES ($1, $2, $3)")
                .bind(slug)
                .bind(reason)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        } else {
            self.queries.count("takedown");
            sqlx::query("DELETE FROM takedowns WHERE slug = $1")
                .bind(slug)
                .execute(&mut *tx)
                .await?;
        }
        self.queries.count("takedown");
        let seq: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 FROM takedown_log")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        self.queries.count("takedown");
        sqlx::query("INSERT INTO takedown_log (seq, slug, kind, at) VALUES ($1, $2, $3, $4)")
            .bind(seq)
            .bind(slug)
            .bind(if taken_down { "taken_down" } else { "restored" })
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(Some(seq)))
    }

    /// The slugs of the titles taken down now.
    pub async fn taken_down(&self) -> anyhow::Result<Vec<String>> {
        self.queries.count("takedowns");
        let rows = sqlx::query("SELECT slug FROM takedowns ORDER BY slug")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| row.try_get(0).map_err(Into::into))
            .collect()
    }

    /// Takedowns and restores after sequence number `after`, oldest first, `limit` at most:
    /// (seq, slug, taken down).
    pub async fn takedowns_after(
        &self,
        after: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<(i64, String, bool)>> {
        self.queries.count("takedown_log");
        let rows = sqlx::query(
            "SELECT seq, slug, kind FROM takedown_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0)?,
                    row.try_get(1)?,
                    row.try_get::<String, _>(2)? == "taken_down",
                ))
            })
            .collect()
    }

    /// The sequence number of the last takedown or restore (0 when none).
    pub async fn last_takedown_seq(&self) -> anyhow::Result<i64> {
        self.queries.count("takedown_log");
        Ok(
            sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM takedown_log")
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?,
        )
    }

    /// A child table's values grouped by title, in their stored order, for the titles in `slugs` or for every
    /// title: one query, not one per title.
    async fn values_by_slug(
        &self,
        op: &str,
        child: Child,
        slugs: Option<&[String]>,
    ) -> anyhow::Result<HashMap<String, Vec<String>>> {
        let (table, column, order) = match child {
            Child::Genres => ("title_genres", "genre", "genre"),
            Child::Cast => ("title_cast", "name", "position"),
        };
        let filter = match slugs {
            Some([]) => return Ok(HashMap::new()),
            Some(slugs) => {
                let placeholders: Vec<String> =
                    (1..=slugs.len()).map(|i| format!("${i}")).collect();
                format!(" WHERE slug IN ({})", placeholders.join(", "))
            }
            None => String::new(),
        };
        // Table and column names are the constants above; the slugs are bound parameters.
        let sql = format!("SELECT slug, {column} FROM {table}{filter} ORDER BY slug, {order}");
        self.queries.count(op);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for slug in slugs.unwrap_or_default() {
            query = query.bind(slug);
        }
        let mut grouped: HashMap<String, Vec<String>> = HashMap::new();
        for row in query.fetch_all(&self.pool).await? {
            grouped
                .entry(row.try_get(0)?)
                .or_default()
                .push(row.try_get(1)?);
        }
        Ok(grouped)
    }
}

/// The tables that hold several values per title.
#[derive(Clone, Copy)]
enum Child {
    Genres,
    Cast,
}

/// The summary fields of a `titles` row (slug, title, year, language, artwork_key first, and `id`), with its
/// genres taken from `genres`.
fn summary(
    row: &AnyRow,
    genres: &mut HashMap<String, Vec<String>>,
) -> anyhow::Result<TitleSummary> {
    let slug: String = row.try_get(0)?;
    Ok(TitleSummary {
        id: row.try_get::<Option<i64>, _>("id")?.unwrap_or(0),
        genres: genres.remove(&slug).unwrap_or_default(),
        slug,
        title: row.try_get(1)?,
        year: row.try_get(2)?,
        language: row.try_get(3)?,
        artwork_key: row.try_get(4)?,
    })
}

/// The statement of a page of titles: only the filters `q` has, numbered in the order genre, year, language,
/// cursor, limit. A genre drives the walk from its own index (its rows in slug order).
fn list_sql(q: &ListQuery) -> String {
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    let (from, mut conditions) = match &q.genre {
        Some(_) => (
            "title_genres g JOIN titles t ON t.slug = g.slug",
            vec![format!("g.genre = {}", next())],
        ),
        None => ("titles t", Vec::new()),
    };
    if q.year.is_some() {
        conditions.push(format!("t.year = {}", next()));
    }
    if q.language.is_some() {
        conditions.push(format!("t.language = {}", next()));
    }
    if q.after.is_some() {
        conditions.push(format!("t.slug > {}", next()));
    }
    conditions.push("NOT EXISTS (SELECT 1 FROM takedowns d WHERE d.slug = t.slug)".into());
    format!(
        "SELECT t.slug, t.title, t.year, t.language, t.artwork_key, t.id FROM {from} WHERE {} \
         ORDER BY t.slug LIMIT {}",
        conditions.join(" AND "),
        next()
    )
}

/// A title's details in one statement (see [`Catalog::get`]): `part` (0 the title, 1 a genre, 2 a cast member,
/// 3 a rendition, 4 the asset totals), seven texts, three numbers, and the order within a part.
const TITLE_DETAILS_SQL: &str = "\
    SELECT CAST(0 AS BIGINT) AS part, slug AS t1, title AS t2, language AS t3, artwork_key AS t4, \
           original_title AS t5, director AS t6, description AS t7, CAST(year AS BIGINT) AS n1, \
           CAST(runtime_secs AS BIGINT) AS n2, CAST(id AS BIGINT) AS n3, '' AS ot, CAST(0 AS BIGINT) AS onum \
      FROM titles WHERE slug = $1 AND NOT EXISTS (SELECT 1 FROM takedowns d WHERE d.slug = $1) \
    UNION ALL SELECT CAST(1 AS BIGINT), genre, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, genre, \
           CAST(0 AS BIGINT) FROM title_genres WHERE slug = $1 \
    UNION ALL SELECT CAST(2 AS BIGINT), name, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '', \
           CAST(position AS BIGINT) FROM title_cast WHERE slug = $1 \
    UNION ALL SELECT CAST(3 AS BIGINT), packaging, protocol, manifest_key, kind, resolution, codecs, language, \
           CAST(bandwidth AS BIGINT), NULL, NULL, packaging, CAST(position AS BIGINT) \
      FROM renditions WHERE slug = $1 \
    UNION ALL SELECT CAST(4 AS BIGINT), NULL, NULL, NULL, NULL, NULL, NULL, NULL, COUNT(*), \
           CAST(SUM(bytes) AS BIGINT), NULL, '', CAST(0 AS BIGINT) FROM assets WHERE slug = $1 \
    ORDER BY 1, 12, 13";

/// Values bound to one statement at most: under SQLite's limit (32,766) and PostgreSQL's (65,535).
const MAX_BOUND_VALUES: usize = 30_000;

/// A value bound to a statement built for many rows.
#[derive(Debug, Clone)]
enum Bound {
    Text(Option<String>),
    Int(Option<i64>),
}

impl Bound {
    fn text(s: &str) -> Bound {
        Bound::Text(Some(s.to_string()))
    }
}

/// `$first, $first+1, …`: `count` placeholders.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    values: &'q [Bound],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for value in values {
        query = match value {
            Bound::Text(v) => query.bind(v.as_deref()),
            Bound::Int(v) => query.bind(*v),
        };
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A catalog made before ids existed gets them when the newer binary opens it, in slug order.
    #[tokio::test]
    async fn migrating_an_older_catalog_numbers_its_titles() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/catalog.db?mode=rwc", dir.path().display());
        sqlx::any::install_default_drivers();
        {
            let pool = AnyPoolOptions::new().connect(&url).await.unwrap();
            let mut first_only = migrator("sqlite");
            first_only.migrations = Cow::Owned(vec![first_only.migrations[0].clone()]);
            first_only.run(&pool).await.unwrap();
            for slug in ["b", "a"] {
                sqlx::query("INSERT INTO titles (slug, title, updated_at) VALUES ($1, $1, 0)")
                    .bind(slug)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
        let catalog = Catalog::open(&url).await.unwrap();
        let page = catalog
            .list(&ListQuery {
                limit: 10,
                ..ListQuery::default()
            })
            .await
            .unwrap();
        let ids: Vec<(String, i64)> = page.titles.iter().map(|t| (t.slug.clone(), t.id)).collect();
        assert_eq!(ids, [("a".to_string(), 1), ("b".to_string(), 2)]);
        let mut meta = TitleMeta::default();
        meta.relocate("c");
        catalog.upsert(&meta, 0).await.unwrap();
        assert_eq!(catalog.get("c").await.unwrap().unwrap().summary.id, 3);
    }

    /// Every combination of filters, page by page, lists exactly the titles a plain scan finds, in slug order.
    #[tokio::test]
    async fn filtered_pages_list_what_a_scan_finds() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(&format!("sqlite://{}/catalog.db", dir.path().display()))
            .await
            .unwrap();
        let genres = ["drama", "comedy", "noir"];
        let languages = ["en", "fr"];
        let mut all = Vec::new();
        for i in 0..40i64 {
            let mut meta = TitleMeta::default();
            meta.relocate(&format!("t{i:02}"));
            meta.year = Some(2000 + i % 3);
            meta.language = (i % 5 != 0).then(|| languages[i as usize % 2].to_string());
            meta.genres = vec![genres[i as usize % 3].to_string()];
            if i % 4 == 0 {
                meta.genres.push("noir".into());
            }
            catalog.upsert(&meta, 0).await.unwrap();
            all.push(meta);
        }
        catalog
            .set_taken_down("t07", true, "test", 0)
            .await
            .unwrap();
        for genre in [None, Some("noir"), Some("drama")] {
            for year in [None, Some(2001)] {
                for language in [None, Some("fr")] {
                    let want: Vec<String> = all
                        .iter()
                        .filter(|m| m.slug != "t07")
                        .filter(|m| genre.is_none_or(|g| m.genres.iter().any(|x| x == g)))
                        .filter(|m| year.is_none_or(|y| m.year == Some(y)))
                        .filter(|m| language.is_none_or(|l| m.language.as_deref() == Some(l)))
                        .map(|m| m.slug.clone())
                        .collect();
                    let mut got = Vec::new();
                    let mut after = None;
                    loop {
                        let page = catalog
                            .list(&ListQuery {
                                genre: genre.map(str::to_string),
                                year,
                                language: language.map(str::to_string),
                                after: after.clone(),
                                limit: 4,
                            })
                            .await
                            .unwrap();
                        got.extend(page.titles.iter().map(|t| t.slug.clone()));
                        match page.next_after {
                            Some(next) => after = Some(next),
                            None => break,
                        }
                    }
                    assert_eq!(got, want, "{genre:?} {year:?} {language:?}");
                }
            }
        }
    }

    /// A title with something in every table, told apart by `i`.
    fn full_meta(i: usize) -> TitleMeta {
        let mut meta = TitleMeta {
            title: format!("Title {i}"),
            original_title: i.is_multiple_of(2).then(|| format!("Titre {i}")),
            year: Some(1990 + i as i64 % 30),
            language: Some(["en", "fr", "ja"][i % 3].into()),
            director: Some(format!("Director {}", i % 7)),
            description: Some(format!("The story of number {i}.")),
            duration_secs: Some(3600 + i as i64),
            poster: Some("poster.jpg".into()),
            genres: vec![
                "drama".into(),
                ["noir", "comedy"][i % 2].into(),
                "drama".into(),
            ],
            cast: (0..i % 4).map(|k| format!("Actor {k} of {i}")).collect(),
            popularity: (!i.is_multiple_of(5)).then_some(i as i64 * 10),
            packagings: vec![PackagingMeta {
                name: "hls-ts".into(),
                protocol: "hls".into(),
                manifest: "hls/master.m3u8".into(),
                renditions: (0..1 + i % 3)
                    .map(|k| RenditionMeta {
                        kind: "video".into(),
                        bandwidth: Some(100_000 * (k as i64 + 1)),
                        resolution: Some(format!("{}x{}", 320 * (k + 1), 180 * (k + 1))),
                        codecs: (k % 2 == 0).then(|| "avc1.64001f".into()),
                        language: None,
                    })
                    .collect(),
            }],
            assets: (0..2 + i % 2)
                .map(|k| AssetMeta {
                    key: format!("hls/seg_{k}.ts"),
                    kind: "segment".into(),
                    bytes: 1000 + k as i64,
                })
                .collect(),
            ..TitleMeta::default()
        };
        meta.relocate(&format!("title-{i:03}"));
        meta
    }

    /// The same titles read back from both catalogs.
    async fn same_titles(a: &Catalog, b: &Catalog) {
        for i in [0, 1, 2, 3, 150, 296, 299, 304] {
            let slug = format!("title-{i:03}");
            let (x, y) = (a.get(&slug).await.unwrap(), b.get(&slug).await.unwrap());
            assert_eq!(x, y, "{slug}");
            assert_eq!(
                a.assets(&slug).await.unwrap(),
                b.assets(&slug).await.unwrap()
            );
        }
        let docs = |d: Vec<crate::control::search::SearchDoc>| -> Vec<String> {
            d.iter().map(|d| format!("{d:?}")).collect()
        };
        assert_eq!(
            docs(a.search_docs().await.unwrap()),
            docs(b.search_docs().await.unwrap())
        );
    }

    #[tokio::test]
    async fn a_batch_writes_what_titles_written_one_by_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let url = |name: &str| format!("sqlite://{}/{name}", dir.path().display());
        let one_by_one = Catalog::open(&url("one.db")).await.unwrap();
        let batched = Catalog::open(&url("batch.db")).await.unwrap();
        let metas: Vec<TitleMeta> = (0..300).map(full_meta).collect();
        for meta in &metas {
            one_by_one.upsert(meta, 7).await.unwrap();
        }
        let before = batched.queries.get("title_write");
        batched.upsert_many(&metas, 7).await.unwrap();
        let statements = batched.queries.get("title_write") - before;
        assert!(
            statements <= 9,
            "300 titles in a few statements, not one per row: {statements}"
        );
        // What was written is what is read: every part of the details, each in its order.
        let meta = full_meta(3);
        let details = batched.get("title-003").await.unwrap().unwrap();
        assert_eq!(details.summary.title, meta.title);
        assert_eq!(details.summary.year, meta.year);
        assert_eq!(details.summary.language, meta.language);
        assert_eq!(details.summary.genres, ["comedy", "drama"]);
        assert_eq!(
            details.summary.artwork_key.as_deref(),
            Some("titles/title-003/poster.jpg")
        );
        assert_eq!(
            (details.original_title, details.director),
            (meta.original_title, meta.director)
        );
        assert_eq!(
            (details.description, details.runtime_secs),
            (meta.description, meta.duration_secs)
        );
        assert_eq!(details.cast, meta.cast);
        assert_eq!(details.packagings.len(), 1);
        let renditions: Vec<_> = details.packagings[0]
            .renditions
            .iter()
            .map(|r| (r.bandwidth, r.resolution.clone(), r.codecs.clone()))
            .collect();
        let written: Vec<_> = meta.packagings[0]
            .renditions
            .iter()
            .map(|r| (r.bandwidth, r.resolution.clone(), r.codecs.clone()))
            .collect();
        assert_eq!(renditions, written);
        assert_eq!(
            details.assets,
            AssetTotals {
                files: 3,
                bytes: 3003
            }
        );
        same_titles(&one_by_one, &batched).await;

        // Written again, changed, in a batch with new titles and one slug twice: ids kept, children replaced.
        let mut again: Vec<TitleMeta> = (295..305).map(full_meta).collect();
        for meta in &mut again {
            meta.genres = vec!["western".into()];
            meta.cast.clear();
            meta.assets.truncate(1);
        }
        again.push(full_meta(296));
        for meta in &again {
            one_by_one.upsert(meta, 8).await.unwrap();
        }
        let id_before = batched.get("title-296").await.unwrap().unwrap().summary.id;
        batched.upsert_many(&again, 8).await.unwrap();
        assert_eq!(
            batched.get("title-296").await.unwrap().unwrap().summary.id,
            id_before
        );
        assert_eq!(batched.registered_at().await.unwrap().len(), 305);
        same_titles(&one_by_one, &batched).await;
        let new = batched.get("title-304").await.unwrap().unwrap();
        assert_eq!(new.summary.genres, ["western"]);
        assert!(new.cast.is_empty());
    }

    /// Instances starting together on one new SQLite file: both open it.
    #[tokio::test]
    async fn instances_opening_a_new_catalog_together_both_migrate_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/catalog.db", dir.path().display());
        let (a, b, c) = tokio::join!(
            Catalog::open(&url),
            Catalog::open(&url),
            Catalog::open(&url)
        );
        for catalog in [a, b, c] {
            let catalog = catalog.unwrap();
            assert!(catalog.get("none").await.unwrap().is_none());
        }
    }

    #[test]
    fn asset_kinds_by_name() {
        for (key, kind) in [
            ("titles/x/hls/master.m3u8", "manifest"),
            ("titles/x/dash/manifest.mpd", "manifest"),
            ("titles/x/dash/init-0.m4s", "init"),
            ("titles/x/dash/chunk-0-00001.m4s", "segment"),
            ("titles/x/hls/v0/seg_000.ts", "segment"),
            ("titles/x/mp4/v0.mp4", "segment"),
            ("titles/x/subs/en.vtt", "subtitles"),
            ("titles/x/poster.JPG", "artwork"),
            ("titles/x/notes.txt", "other"),
        ] {
            assert_eq!(AssetMeta::kind_of(key), kind, "{key}");
        }
    }

    #[test]
    fn relocation_moves_every_key_and_names_the_untitled() {
        let mut meta: TitleMeta = serde_json::from_str(
            r#"{"slug": "a", "poster": "poster.jpg", "packagings": [{"name": "hls", "protocol": "hls",
                "manifest": "titles/a/hls/master.m3u8"}], "assets": [{"key": "titles/a/x.ts", "kind": "segment",
                "bytes": 1}], "frame_rate": 25}"#,
        )
        .unwrap();
        meta.relocate("the-big-one");
        assert_eq!(meta.slug, "the-big-one");
        assert_eq!(meta.title, "The Big One");
        assert_eq!(
            meta.poster.as_deref(),
            Some("titles/the-big-one/poster.jpg")
        );
        assert_eq!(
            meta.packagings[0].manifest,
            "titles/the-big-one/hls/master.m3u8"
        );
        assert_eq!(meta.assets[0].key, "titles/the-big-one/x.ts");
        assert_eq!(meta.extra["frame_rate"], 25);
    }
}

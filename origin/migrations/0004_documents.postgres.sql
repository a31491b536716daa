-- Viewer data as documents (accounts, sessions, profiles, viewing history, ratings, "my list"): one row per
-- document, its JSON body schemaless, a version that every write must name (optimistic concurrency). PostgreSQL
-- keeps the body as JSONB; SQLite's version of this migration keeps it as JSON text.
CREATE TABLE documents (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    version BIGINT NOT NULL,
    body JSONB NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX documents_updated ON documents (kind, updated_at);

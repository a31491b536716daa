-- Viewer data as documents (accounts, sessions, profiles, viewing history, ratings, "my list"): one row per
-- document, its JSON body schemaless, a version that every write must name (optimistic concurrency). SQLite
-- keeps the body as JSON text; PostgreSQL's version of this migration keeps it as JSONB.
CREATE TABLE documents (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    version BIGINT NOT NULL,
    body TEXT NOT NULL CHECK (json_valid(body)),
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX documents_updated ON documents (kind, updated_at);

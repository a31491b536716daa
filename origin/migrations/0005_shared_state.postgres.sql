-- What the control plane's instances share, so that none keeps anything that matters in its own memory (issue 18).
-- PostgreSQL keeps a model as BYTEA; SQLite's version of this migration keeps it as a BLOB.
-- Times are unix seconds, except where a column says milliseconds.

-- Failed sign-ins, one row each, by key (`email:<address>`, `ip:<client>`): a sign-in is refused while a key has
-- accounts.signin_max_failures of them within accounts.signin_window_secs. Older rows are deleted hourly.
CREATE TABLE signin_failures (
    key TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX signin_failures_key ON signin_failures (key, at);
CREATE INDEX signin_failures_at ON signin_failures (at);

-- Each edge's latest report (JSON text) and when it arrived (unix milliseconds), whichever instance took it.
CREATE TABLE edge_reports (
    name TEXT PRIMARY KEY,
    report TEXT NOT NULL,
    seen_at BIGINT NOT NULL
);

-- Leases on work one instance does at a time: taken or renewed by one conditional upsert, held by a process's
-- random id until expires_at (unix milliseconds).
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Trained recommender models (the newest two kept): which kind, when the data it learnt were read (unix
-- milliseconds), and the model in the recommender's own binary form. Every instance loads the newest.
CREATE TABLE recs_models (
    id BIGINT PRIMARY KEY,
    kind TEXT NOT NULL,
    data_read_at BIGINT NOT NULL,
    body BYTEA NOT NULL
);

-- A training asked for on any instance (POST /recs/train, plays on the bus): the instance holding the trainer's
-- lease trains when this is newer than the newest model's data (unix milliseconds). One row, name 'train'.
CREATE TABLE recs_requests (
    name TEXT PRIMARY KEY,
    requested_at BIGINT NOT NULL
);

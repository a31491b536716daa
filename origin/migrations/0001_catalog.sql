-- The catalog: titles, their genres and cast, and the renditions of each packaging. Portable SQL: it runs on
-- SQLite and PostgreSQL alike (the origin picks the database by URL).
CREATE TABLE titles (
    slug TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    original_title TEXT,
    year BIGINT,
    language TEXT,
    director TEXT,
    description TEXT,
    runtime_secs BIGINT,
    artwork_key TEXT,
    popularity BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);
CREATE INDEX titles_year ON titles (year);
CREATE INDEX titles_language ON titles (language);

CREATE TABLE title_genres (
    slug TEXT NOT NULL REFERENCES titles (slug) ON DELETE CASCADE,
    genre TEXT NOT NULL,
    PRIMARY KEY (slug, genre)
);
CREATE INDEX title_genres_genre ON title_genres (genre);

CREATE TABLE title_cast (
    slug TEXT NOT NULL REFERENCES titles (slug) ON DELETE CASCADE,
    position BIGINT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (slug, position)
);

CREATE TABLE renditions (
    slug TEXT NOT NULL REFERENCES titles (slug) ON DELETE CASCADE,
    packaging TEXT NOT NULL,
    position BIGINT NOT NULL,
    protocol TEXT NOT NULL,
    kind TEXT NOT NULL,
    manifest_key TEXT NOT NULL,
    bandwidth BIGINT,
    resolution TEXT,
    codecs TEXT,
    language TEXT,
    PRIMARY KEY (slug, packaging, position)
);

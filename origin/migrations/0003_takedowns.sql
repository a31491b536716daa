-- Takedowns: the titles withdrawn from viewers (kept in the catalog and the store, hidden from lists, search,
-- details and playback, answered 410 by the media origin), and the log of takedowns and restores in order, which
-- edges read (`GET /v1/edges/<name>/changes`) to purge what they hold. Portable SQL, as 0001.
CREATE TABLE takedowns (
    slug TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    taken_down_at BIGINT NOT NULL
);

CREATE TABLE takedown_log (
    seq BIGINT PRIMARY KEY,
    slug TEXT NOT NULL,
    kind TEXT NOT NULL,
    at BIGINT NOT NULL
);

-- A stable numeric id per title (kept when a title is registered again), and the files (assets) each title's
-- folder holds. Portable SQL, as 0001.
ALTER TABLE titles ADD COLUMN id BIGINT;
UPDATE titles SET id = (SELECT COUNT(*) FROM titles t2 WHERE t2.slug <= titles.slug);
CREATE UNIQUE INDEX titles_id ON titles (id);

CREATE TABLE assets (
    slug TEXT NOT NULL REFERENCES titles (slug) ON DELETE CASCADE,
    object_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    PRIMARY KEY (slug, object_key)
);

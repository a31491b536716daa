-- Filtered title lists walk an index in slug order (the page order) from the cursor: one per filter, ending in
-- the slug. Portable SQL (SQLite and PostgreSQL).
CREATE INDEX titles_year_slug ON titles (year, slug);
CREATE INDEX titles_language_slug ON titles (language, slug);
CREATE INDEX title_genres_genre_slug ON title_genres (genre, slug);

#!/usr/bin/env python3
"""A large, realistic demo catalogue: the 3,201 films of the npm package `vega-datasets` (data/movies.json,
fetched once with `npm pack` and kept in a cache folder) written as metadata-only titles
(`titles/<slug>/meta.json`) into an object-store folder, where `origin serve` registers them at start. Titles
already in the folder (the playable samples) are left alone. Used by `scripts/up.sh --large-catalog` and by the
control-plane benchmark (benches/control_plane.py).

    scripts/movie_catalogue.py OBJECTS_DIR [--cache DIR]
"""

import argparse
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


def slugify(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "untitled"


def fetch_movies(cache):
    """The path of movies.json, fetched from the npm registry into `cache` the first time."""
    cache.mkdir(parents=True, exist_ok=True)
    movies = cache / "movies.json"
    if not movies.exists():
        print("movie_catalogue: fetching vega-datasets (npm) for movies.json", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["npm", "pack", "vega-datasets@3", "--silent"], cwd=tmp, check=True,
                           capture_output=True)
            tgz = next(Path(tmp).glob("vega-datasets-*.tgz"))
            with tarfile.open(tgz) as tar:
                data = tar.extractfile(tar.getmember("package/data/movies.json")).read()
        partial = movies.with_suffix(".part")
        partial.write_bytes(data)
        partial.rename(movies)
    return movies


def films(movies):
    """(slug, metadata) for every film with a title, one per slug."""
    seen = set()
    for film in json.loads(movies.read_text()):
        title = str(film.get("Title") or "").strip()
        if not title:
            continue
        m = re.search(r"(\d{4})", film.get("Release Date") or "")
        year = int(m.group(1)) if m else None
        slug = slugify(f"{title} {year or ''}")
        if slug in seen:
            continue
        seen.add(slug)
        yield slug, {
            "title": title, "year": year, "language": "en",
            "director": film.get("Director"),
            "genres": [g for g in [film.get("Major Genre"), film.get("Creative Type")] if g],
            "description": f"{film.get('Source') or 'An original'} film distributed by "
                           f"{(film.get('Distributor') or 'unknown').rstrip('.')}.",
            "duration_secs": (film.get("Running Time min") or 0) * 60 or None,
            "popularity": film.get("IMDB Votes") or 0,
        }


def write_catalogue(objects, movies):
    """Writes the films' metadata under `objects/titles/`; returns the titles written."""
    written = []
    for slug, meta in films(movies):
        folder = objects / "titles" / slug
        if folder.exists() and any(p.name != "meta.json" for p in folder.iterdir()):
            continue  # a packaged title of that name: not ours to overwrite
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "meta.json").write_text(json.dumps(meta))
        written.append(meta["title"])
    return written


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("objects", type=Path, help="the object-store folder (holding titles/)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "video-cdn",
                        help="where movies.json is kept between runs")
    args = parser.parse_args()
    written = write_catalogue(args.objects, fetch_movies(args.cache))
    print(f"movie_catalogue: {len(written)} metadata-only titles in {args.objects / 'titles'}")


if __name__ == "__main__":
    main()

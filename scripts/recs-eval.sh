#!/usr/bin/env bash
# Benchmark (not a test): the offline evaluation of the recommendation models (origin::recs) by
# benches/src/receval.rs — leave-last-out, full ranking, Recall@10 and NDCG@10, each model against popularity —
# on MovieLens 100K and on a seeded synthetic viewing log. Hyperparameters and blend weights are chosen on the
# validation items (each user's second-to-last title) before the test items are looked at.
#
# Usage: scripts/recs-eval.sh [--synthetic-only | --ml100k-only] [--quick] [-- more receval options]
#   --synthetic-only  no MovieLens (nothing downloaded)      --ml100k-only  no synthetic log
#   --quick           default hyperparameters, no search on the validation items
#   env: RECS_CACHE   where MovieLens is kept (default ${XDG_CACHE_HOME:-$HOME/.cache}/cdn-recs)
#        PYTHON       a python with pip (default: python3, else the repository's .venv/bin/python)
# MovieLens 100K is the copy shipped in the PyPI wheel of recbole 1.2.1 (recbole/dataset_example/ml-100k,
# RecBole's atomic files), fetched once with `pip download` and only that folder unpacked. Markdown tables go to
# stdout, the validation search to stderr. MovieLens is measured twice, with a second's titles in item-id order (the
# protocol of the published baselines) and in the file's order. Takes about 10 minutes on 2 cores, most of it the search.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${RECS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cdn-recs}
movielens=true
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --synthetic-only) movielens=false ;;
    --ml100k-only) args+=(--synthetic-users 0) ;;
    --quick) args+=(--no-tuning) ;;
    --) shift; args+=("$@"); break ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "recs-eval: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if $movielens; then
  data=$cache/recbole-1.2.1/recbole/dataset_example/ml-100k
  if [ ! -s "$data/ml-100k.inter" ] || [ ! -s "$data/ml-100k.item" ]; then
    python=
    for candidate in "${PYTHON:-}" python3 "$root/.venv/bin/python"; do
      if [ -n "$candidate" ] && "$candidate" -m pip --version >/dev/null 2>&1; then python=$candidate; break; fi
    done
    if [ -z "$python" ]; then
      echo "recs-eval: needs a python with pip to fetch MovieLens 100K: set PYTHON, or create one with" >&2
      echo "  python3 -m venv $root/.venv && $root/.venv/bin/python -m ensurepip" >&2
      echo "(or run with --synthetic-only)" >&2
      exit 1
    fi
    mkdir -p "$cache"
    echo "recs-eval: fetching recbole 1.2.1's wheel into $cache (MovieLens 100K is inside)..." >&2
    "$python" -m pip download --quiet --no-deps --only-binary=:all: recbole==1.2.1 -d "$cache"
    "$python" - "$cache/recbole-1.2.1-py3-none-any.whl" "$cache/recbole-1.2.1" <<'PY'
import sys, zipfile
wheel, into = sys.argv[1], sys.argv[2]
folder = "recbole/dataset_example/ml-100k/"
with zipfile.ZipFile(wheel) as archive:
    members = [name for name in archive.namelist() if name.startswith(folder) and name.endswith((".inter", ".item"))]
    if len(members) != 2:
        sys.exit(f"recs-eval: {wheel} has no {folder}ml-100k.inter and .item")
    archive.extractall(into, members)
PY
  fi
  args=(--ml100k "$data" ${args[@]+"${args[@]}"})
fi

echo "recs-eval: building receval (release)..." >&2
cd "$root"
cargo build --release --locked --quiet -p benches --bin receval
exec "${CARGO_TARGET_DIR:-$root/target}/release/receval" ${args[@]+"${args[@]}"}

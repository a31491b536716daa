#!/usr/bin/env bash
# Runs every test: formatting, clippy, unit and integration tests (real servers on 127.0.0.1 with curl, ffmpeg,
# an S3-compatible server), and a smoke run of scripts/up.sh. Needs scripts/install-test-deps.sh first
# (.ci/run does both).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH"

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
# Test binaries run one after another; within one, two tests at a time (two cores, and tests start processes).
cargo test --workspace --locked -- --test-threads 2

step "scripts/up.sh smoke run"
"$root/scripts/smoke-up.sh"

echo
echo "all tests passed"

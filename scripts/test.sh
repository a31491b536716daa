#!/usr/bin/env bash
# Runs every test: formatting, clippy, unit and integration tests (real servers on 127.0.0.1 with curl, ffmpeg,
# an S3-compatible server), and a smoke run of scripts/up.sh. When what the tests need is missing (a fresh
# machine), it runs scripts/install-test-deps.sh first, which installs it idempotently.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH"

step() { printf '\n== %s\n' "$*"; }

# The installer checks each piece itself and skips what is there; it is only worth starting when one is missing.
need_install=false
for tool in curl ffmpeg nginx h2load chromium node make cc; do
  command -v "$tool" >/dev/null 2>&1 || need_install=true
done
[ -x "$root/.venv/bin/moto_server" ] || need_install=true
[ -d "$root/edge/tests/browser/node_modules/playwright-core" ] || need_install=true
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_install=true
if $need_install; then
  step "scripts/install-test-deps.sh (something the tests need is missing)"
  "$root/scripts/install-test-deps.sh"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
# Test binaries run one after another; within one, two tests at a time (two cores, and tests start processes).
cargo test --workspace --locked -- --test-threads 2

step "scripts/up.sh smoke run"
"$root/scripts/smoke-up.sh"

step "scripts/up.sh --edges 3 smoke run (two regions, Content Steering)"
"$root/scripts/smoke-up.sh" --edges 3

step "scripts/up.sh --scale 3 smoke run (three control-plane instances on PostgreSQL behind the edge)"
"$root/scripts/smoke-up.sh" --scale 3

echo
echo "all tests passed"

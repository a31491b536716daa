#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, idempotently: Debian packages (make and gcc, which the
# edge's allocator, jemalloc, is built with, and g++, which librdkafka's bundled build (the Kafka bus) requires
# besides; curl, ffmpeg, nginx,
# nghttp2-client, wrk, python3-venv, chromium, and postgresql, whose binaries the tests use to start their own
# servers), a Python venv at .venv with moto (the S3-compatible test server), aioquic and curl_cffi (two independent HTTP/3 clients), and the browser test's npm packages
# (playwright-core, hls.js, dash.js, axe-core; Debian's Chromium is the browser, none is downloaded), the web
# front end's (hls.js, dash.js in origin/web, which the control plane serves), and tansu, the Kafka-protocol
# broker the Kafka bus tests start (built with cargo into ~/.cache/tansu-0.6.0).
# Each step is skipped when what it installs is already there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

need_apt=()
for pair in make:make cc:gcc g++:g++ curl:curl ffmpeg:ffmpeg nginx:nginx h2load:nghttp2-client wrk:wrk chromium:chromium node:nodejs npm:npm; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || need_apt+=("${pair#*:}")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-test-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

venv="$root/.venv"
if [ ! -x "$venv/bin/moto_server" ] || ! "$venv/bin/python" -c 'import aioquic, curl_cffi, h2' 2>/dev/null; then
  echo "install-test-deps: python venv with moto, aioquic and curl_cffi at $venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]==5.*' 'aioquic==1.*' 'curl_cffi==0.*' 'h2==4.*'
fi
browser="$root/edge/tests/browser"
if [ ! -d "$browser/node_modules/playwright-core" ] || [ ! -d "$browser/node_modules/hls.js" ] || [ ! -d "$browser/node_modules/axe-core" ]; then
  echo "install-test-deps: npm packages for the browser test"
  (cd "$browser" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi
web="$root/origin/web"
if [ ! -d "$web/node_modules/hls.js" ] || [ ! -d "$web/node_modules/dashjs" ]; then
  echo "install-test-deps: npm packages of the web front end (hls.js, dash.js, served by the control plane)"
  (cd "$web" && npm ci --no-audit --no-fund --loglevel=error)
fi
tansu_root="$HOME/.cache/tansu-0.6.0"
if [ ! -x "$tansu_root/bin/tansu" ]; then
  echo "install-test-deps: building tansu 0.6.0 (the Kafka-protocol broker of the Kafka bus tests) into $tansu_root: a 20-30 minute build, once"
  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql --root "$tansu_root"
fi
echo "install-test-deps: ok"

#!/usr/bin/env node
// Plays a manifest through the edge in headless Chromium (Debian's, driven by playwright-core) with hls.js or
// dash.js, and reports as one JSON line: whether playback passed --min-time seconds with no player error and no
// failed media response, and which protocol carried each media response (Chromium's own network events).
//
//   node play.mjs URL --player hls|dash --cert CERT.pem [--proto http/1.1|h2|h3|alt-svc] [--min-time 8]
//        [--screenshot FILE] [--timeout 40] [--max-buffer SECS] [--progress] [--tolerate-failures]
//        [--events API --title SLUG] [--low-latency]
//
// --max-buffer: the player buffers at most this far ahead (so a failure upstream is felt while playing);
// --progress: one JSON line {"progress": currentTime} a second on stdout before the result, for a driver that
// acts mid-playback (a test that kills an edge); --tolerate-failures: failed media responses (and dash.js's
// non-fatal segment download errors) are reported but do not fail the run: playback must still reach --min-time.
// --low-latency: hls.js in low-latency mode (LL-HLS parts and blocking playlist reloads); the result's
// `latency` is hls.js's distance behind the live edge, in seconds, at the end (and `latencies`, one a second).
// --events: the page loads the control plane's player-events script from API and reports the session (the end,
// as abandoned, when the run stops); the result's `events` says what it queued, sent and dropped. The result always lists `hosts` (the host:port of each run of media
// responses, in order, with its count) and `steering` (Content Steering requests seen).
//
// --proto http/1.1: HTTP/2 disabled in the browser; h2: plain HTTPS; h3: QUIC forced for the URL's origin (the
// test certificate is accepted over QUIC by its SPKI hash, computed from --cert); alt-svc: QUIC allowed for the
// host but not forced, so the first requests go over HTTP/2 and later ones over HTTP/3 once Alt-Svc is seen.
// Chromium never leaves loopback: --host-resolver-rules maps every other name to nothing.
import { createRequire } from 'node:module';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromiumArgs } from './chromium.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { chromium } = createRequire(join(here, 'package.json'))('playwright-core');

const opt = { player: null, cert: null, proto: 'h2', minTime: 8, screenshot: null, timeout: 40, maxBuffer: null,
  progress: false, tolerateFailures: false, events: null, title: null, lowLatency: false };
let url = null;
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const next = () => argv[++i];
  switch (argv[i]) {
    case '--player': opt.player = next(); break;
    case '--cert': opt.cert = next(); break;
    case '--proto': opt.proto = next(); break;
    case '--min-time': opt.minTime = parseFloat(next()); break;
    case '--screenshot': opt.screenshot = next(); break;
    case '--timeout': opt.timeout = parseFloat(next()); break;
    case '--max-buffer': opt.maxBuffer = next(); break;
    case '--progress': opt.progress = true; break;
    case '--tolerate-failures': opt.tolerateFailures = true; break;
    case '--events': opt.events = next(); break;
    case '--title': opt.title = next(); break;
    case '--low-latency': opt.lowLatency = true; break;
    default: url = argv[i];
  }
}
const origin = new URL(url);
const args = chromiumArgs(opt.cert);
if (opt.proto === 'http/1.1') args.push('--disable-http2', '--disable-quic');
if (opt.proto === 'h2') args.push('--disable-quic');
if (opt.proto === 'h3') args.push('--enable-quic', '--origin-to-force-quic-on=' + origin.host);
// Allow-list the host for QUIC with the test certificate, through a port nothing listens on: the real port is
// then upgraded by Alt-Svc alone.
if (opt.proto === 'alt-svc') args.push('--enable-quic', '--origin-to-force-quic-on=' + origin.hostname + ':1');

const prefix = origin.origin + '/__test_player__/';
const files = {
  'player.html': [join(here, 'player.html'), 'text/html'],
  'hls.min.js': [join(here, 'node_modules/hls.js/dist/hls.min.js'), 'text/javascript'],
  'dash.all.min.js': [join(here, 'node_modules/dashjs/dist/modern/umd/dash.all.min.js'), 'text/javascript'],
};
const result = { url, player: opt.player, proto: opt.proto, pass: false, reason: '', protocols: {}, bad: [],
  hosts: [], steering: 0 };
const media = /\.(ts|m4s|mp4|m4a|aac|vtt|m3u8|mpd)$/;
const profile = mkdtempSync(join(tmpdir(), 'edge-chromium-'));
const started = Date.now();
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args,
    ignoreHTTPSErrors: true, viewport: { width: 660, height: 400 }, timeout: 30000 });
  const page = context.pages()[0] || await context.newPage();
  await page.route(prefix + '**', (route) => {
    const file = files[new URL(route.request().url()).pathname.split('/').pop()];
    return file ? route.fulfill({ status: 200, contentType: file[1], body: readFileSync(file[0]) })
      : route.fulfill({ status: 404, body: 'no such file' });
  });
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  cdp.on('Network.responseReceived', ({ response: r }) => {
    if (r.url.startsWith(prefix)) return;
    const u = new URL(r.url);
    if (u.pathname.includes('/v1/steering/')) result.steering++;
    if (media.test(u.pathname) && !u.pathname.startsWith('/v1/')) {
      const last = result.hosts[result.hosts.length - 1];
      if (last && last[0] === u.host) last[1]++; else result.hosts.push([u.host, 1]);
    }
    result.protocols[r.protocol] = (result.protocols[r.protocol] || 0) + 1;
    if (r.status >= 400) result.bad.push(`${r.status} ${r.url}`);
  });
  cdp.on('Network.loadingFailed', (e) => {
    if (e.canceled) return;
    const why = [e.blockedReason, e.corsErrorStatus && e.corsErrorStatus.corsError].filter(Boolean).join(' ');
    result.bad.push(`failed: ${e.errorText}${why ? ' (' + why + ')' : ''}`);
  });
  const query = { src: url, player: opt.player };
  if (opt.maxBuffer) query.buf = opt.maxBuffer;
  if (opt.tolerateFailures) query.tolerate = '1';
  if (opt.lowLatency) { query.ll = '1'; result.latencies = []; }
  if (opt.events) { query.events = opt.events; query.title = opt.title || ''; }
  await page.goto(prefix + 'player.html?' + new URLSearchParams(query), { timeout: 15000 });
  let st;
  let reported = 0;
  for (;;) {
    st = await page.evaluate(() => JSON.parse(JSON.stringify(window.__st)));
    if (Date.now() - reported >= 1000) {
      reported = Date.now();
      if (opt.progress) console.log(JSON.stringify({ progress: st.currentTime }));
      if (opt.lowLatency && st.latency) result.latencies.push(Math.round(st.latency * 100) / 100);
    }
    if (st.fatal) { result.reason = 'player error: ' + st.fatal; break; }
    if (st.currentTime >= opt.minTime) { result.pass = true; break; }
    if (Date.now() - started > opt.timeout * 1000) { result.reason = `timeout at currentTime ${st.currentTime}`; break; }
    await page.waitForTimeout(200);
  }
  if (opt.events) {
    // The session ends as a viewer leaving would end it; its last batch is given a moment to arrive.
    await page.evaluate(() => window.__events && window.__events.end('abandoned'));
    await page.waitForTimeout(1000);
    result.events = await page.evaluate(() => window.__events && window.__events.stats());
  }
  if (opt.screenshot) await page.screenshot({ path: opt.screenshot });
  Object.assign(result, { currentTime: st.currentTime, fragments: st.frags, video: `${st.width}x${st.height}`,
    playerErrors: st.errors, latency: st.latency });
  if (result.pass && result.bad.length && !opt.tolerateFailures) { result.pass = false; result.reason = 'failed responses: ' + result.bad.slice(0, 3).join(' | '); }
} catch (e) {
  result.reason = 'exception: ' + String(e && e.message || e).split('\n')[0];
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
result.seconds = (Date.now() - started) / 1000;
console.log(JSON.stringify(result));
process.exit(result.pass ? 0 : 1);

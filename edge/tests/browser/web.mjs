#!/usr/bin/env node
// Drives the viewer's web front end (served by the control plane) in headless Chromium (Debian's, through
// playwright-core, with play.mjs's launch flags: nothing leaves loopback) as a viewer would, and reports as one
// JSON line on stdout:
//
//   node web.mjs --api http://127.0.0.1:PORT --cert CERT.pem --edge 127.0.0.1:PORT --email E --password P
//        --shots DIR [--profile NAME] [--query "test patern"] [--title test-pattern] [--title-name "Test Pattern"]
//        [--dash-title mandelbrot] [--timeout 110]
//
// Steps: a wrong password refused on the sign-in form, then sign in and choose the profile; the home page's
// rows (arrow keys move between cards, the focus ring shows); search with a typo, the title in the results as
// the query is typed (no Enter); the title page with similar titles; play (hls.js): the video plays through the
// edge (currentTime passes 5 s, the media responses come from --edge, captions showing); stop (progress
// reported); reload the home page: "Continue watching" shows the title; play again from there: it starts near
// where it stopped; DASH chosen on another title plays with dash.js; sign out. axe-core (WCAG 2.0/2.1 A and AA
// rules) runs on the home (after the reload), search, title and player pages at 1280×800 and 390×844, and each
// is saved as a screenshot in --shots at both sizes.
import { createRequire } from 'node:module';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromiumArgs } from './chromium.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { chromium } = createRequire(join(here, 'package.json'))('playwright-core');
const axeSource = readFileSync(join(here, 'node_modules/axe-core/axe.min.js'), 'utf8');

const opt = { api: null, cert: null, edge: null, email: null, password: null, shots: null, profile: null,
  query: 'test patern', title: 'test-pattern', titleName: 'Test Pattern', dashTitle: 'mandelbrot', timeout: 110 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const next = () => argv[++i];
  switch (argv[i]) {
    case '--api': opt.api = next().replace(/\/+$/, ''); break;
    case '--cert': opt.cert = next(); break;
    case '--edge': opt.edge = next(); break;
    case '--email': opt.email = next(); break;
    case '--password': opt.password = next(); break;
    case '--shots': opt.shots = next(); break;
    case '--profile': opt.profile = next(); break;
    case '--query': opt.query = next(); break;
    case '--title': opt.title = next(); break;
    case '--title-name': opt.titleName = next(); break;
    case '--dash-title': opt.dashTitle = next(); break;
    case '--timeout': opt.timeout = parseFloat(next()); break;
    default: throw new Error(`unknown argument ${argv[i]}`);
  }
}
opt.profile = opt.profile || opt.email.split('@')[0];
mkdirSync(opt.shots, { recursive: true });

const SIZES = [['desktop', 1280, 800], ['phone', 390, 844]];
const AXE_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'];
const media = /\.(ts|m4s|mp4|m4a|m4v|aac|vtt|webvtt|m3u8|mpd)$/;
const result = {
  pass: false, reason: '', steps: [], wrongPassword: null, cookie: null, keyboard: null, search: null, title: null, play: null,
  stop: null, continueWatching: null, resume: null, dash: null, signedOut: null, axe: {}, violations: [],
  overflow: {}, screenshots: [], hosts: [], mediaResponses: 0, steeredManifests: 0, steeringRequests: 0,
  bad: [], progressPosts: [], searchRequests: 0, pageErrors: [], consoleErrors: [],
};
const started = Date.now();
// Plain HTTPS to the edge (HTTP/3 is play.mjs's to test).
const args = [...chromiumArgs(opt.cert), '--disable-quic'];

const userDir = mkdtempSync(join(tmpdir(), 'web-chromium-'));
let context = null;
let finished = false;

async function finish(reason) {
  if (finished) return;
  finished = true;
  result.reason = reason || '';
  result.pass = !reason;
  result.seconds = (Date.now() - started) / 1000;
  if (context) await Promise.race([context.close().catch(() => {}), new Promise((r) => setTimeout(r, 5000))]);
  rmSync(userDir, { recursive: true, force: true });
  console.log(JSON.stringify(result));
  process.exit(result.pass ? 0 : 1);
}

// A bound on the whole run, whatever hangs.
setTimeout(() => finish(`timeout: the run took over ${opt.timeout} s (steps done: ${result.steps.map((s) => s.name).join(', ')})`),
  opt.timeout * 1000).unref();

async function step(name, fn) {
  const t = Date.now();
  try {
    await fn();
  } catch (e) {
    throw new Error(`${name}: ${String((e && e.message) || e).split('\n')[0]}`);
  }
  result.steps.push({ name, ms: Date.now() - t });
}

function check(ok, message) {
  if (!ok) throw new Error(message);
}

try {
  context = await chromium.launchPersistentContext(userDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args, ignoreHTTPSErrors: true,
    bypassCSP: true, viewport: { width: 1280, height: 800 }, timeout: 30000 });
  context.setDefaultTimeout(15000);
  const page = context.pages()[0] || await context.newPage();
  const api = new URL(opt.api);
  page.on('pageerror', (e) => result.pageErrors.push(String(e.message || e).slice(0, 300)));
  page.on('console', (m) => {
    if (m.type() === 'error' && result.consoleErrors.length < 20) result.consoleErrors.push(m.text().slice(0, 300));
  });
  page.on('response', async (r) => {
    const u = new URL(r.url());
    if (u.pathname === '/v1/search') result.searchRequests++;
    if (r.request().method() === 'POST' && /^\/v1\/profiles\/[^/]+\/progress$/.test(u.pathname)) {
      let body = null;
      try {
        body = r.request().postDataJSON();
      } catch {
        body = null;
      }
      result.progressPosts.push({ status: r.status(), body, at: (Date.now() - started) / 1000 });
    }
  });
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  const urls = new Map();
  cdp.on('Network.requestWillBeSent', (e) => urls.set(e.requestId, e.request.url));
  cdp.on('Network.responseReceived', ({ response: r }) => {
    const u = new URL(r.url);
    if (u.pathname.startsWith('/v1/steered/')) result.steeredManifests++;
    if (u.pathname.startsWith('/v1/steering/')) result.steeringRequests++;
    if (!media.test(u.pathname) || u.pathname.startsWith('/v1/')) return;
    result.mediaResponses++;
    const last = result.hosts[result.hosts.length - 1];
    if (last && last[0] === u.host) last[1]++;
    else result.hosts.push([u.host, 1]);
    if (r.status >= 400) result.bad.push(`${r.status} ${r.url}`);
  });
  cdp.on('Network.loadingFailed', (e) => {
    const url = urls.get(e.requestId) || '';
    if (e.canceled || !url) return;
    const u = new URL(url);
    if (!media.test(u.pathname)) return;
    const why = [e.blockedReason, e.corsErrorStatus && e.corsErrorStatus.corsError].filter(Boolean).join(' ');
    result.bad.push(`failed: ${e.errorText}${why ? ' (' + why + ')' : ''} ${url}`);
  });

  const video = () => page.evaluate(() => {
    const v = document.querySelector('video');
    const p = window.__cdnPlayer || {};
    return v && {
      currentTime: v.currentTime, paused: v.paused, readyState: v.readyState, size: `${v.videoWidth}x${v.videoHeight}`,
      captions: [...v.textTracks].filter((t) => t.mode === 'showing').map((t) => `${t.kind}:${t.language || t.label}`),
      protocol: p.protocol, packaging: p.packaging, steered: p.steered, url: p.url, resumeSecs: p.resumeSecs,
      startedAt: p.startedAt, hosts: p.hosts, errors: p.errors, fatal: p.fatal,
    };
  });
  const waitTime = async (min, ms) => {
    try {
      await page.waitForFunction((t) => {
        const v = document.querySelector('video');
        return v && v.currentTime >= t && !(window.__cdnPlayer && window.__cdnPlayer.fatal);
      }, min, { timeout: ms, polling: 200 });
    } catch (e) {
      throw new Error(`currentTime did not reach ${min}: ${JSON.stringify(await video())}`);
    }
    const state = await video();
    check(!state.fatal, `player error: ${state.fatal}`);
    return state;
  };
  const waitCaptions = async () => {
    await page.waitForFunction(() => [...(document.querySelector('video') || { textTracks: [] }).textTracks]
      .some((t) => t.mode === 'showing'), null, { timeout: 10000, polling: 200 })
      .catch(() => {});
    return (await video()).captions;
  };

  // axe-core on the page as it is, and a screenshot, at each size; the page must not scroll sideways on a phone.
  const audit = async (name) => {
    result.axe[name] = {};
    for (const [size, width, height] of SIZES) {
      await page.setViewportSize({ width, height });
      await page.waitForTimeout(400);
      if (!(await page.evaluate(() => Boolean(window.axe)))) await page.addScriptTag({ content: axeSource });
      const violations = await page.evaluate(async (tags) => {
        const r = await window.axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] });
        return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
          nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(' ')}: ${(n.failureSummary || '').replace(/\s+/g, ' ')}`) }));
      }, AXE_TAGS);
      result.axe[name][size] = violations.length;
      for (const v of violations) result.violations.push({ page: name, size, ...v });
      result.overflow[`${name}-${size}`] = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      const path = join(opt.shots, `${name}-${size}-${width}x${height}.png`);
      await page.screenshot({ path, fullPage: true });
      result.screenshots.push(path);
    }
    await page.setViewportSize({ width: 1280, height: 800 });
  };

  await step('sign in', async () => {
    await page.goto(`${opt.api}/`, { timeout: 15000 });
    await page.waitForURL(/#\/signin/, { timeout: 10000 });
    // A wrong password first: refused, said so, still on the form.
    await page.getByLabel('Email').fill(opt.email);
    await page.getByLabel('Password').fill(`${opt.password}-wrong`);
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    const refusal = page.getByRole('alert').filter({ hasText: /do not match/ });
    await refusal.waitFor({ timeout: 10000 });
    result.wrongPassword = await refusal.textContent();
    check(/#\/signin/.test(page.url()), `a wrong password left the form: ${page.url()}`);
    await page.getByLabel('Password').fill(opt.password);
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.waitForURL(/#\/profiles/, { timeout: 10000 });
    const cookie = (await context.cookies(opt.api)).find((c) => c.name === 'cdn_session');
    check(cookie, 'no cdn_session cookie after signing in');
    result.cookie = { httpOnly: cookie.httpOnly, secure: cookie.secure, sameSite: cookie.sameSite,
      readableByPage: await page.evaluate(() => document.cookie.includes('cdn_session')) };
  });

  await step('choose profile', async () => {
    await page.getByRole('button', { name: opt.profile, exact: true }).click();
    await page.waitForURL(/#\/home/, { timeout: 10000 });
    await page.locator('.row .card').first().waitFor({ timeout: 10000 });
  });

  await step('home rows by keyboard', async () => {
    const rows = await page.locator('.row').evaluateAll((els) => els.map((r) => ({
      id: r.dataset.row, title: r.querySelector('h2').textContent, cards: r.querySelectorAll('.card').length })));
    const first = page.locator('.row .card').first();
    await first.focus();
    const active = () => page.evaluate(() => {
      const a = document.activeElement;
      const all = [...document.querySelectorAll('.row')];
      const row = a.closest('.row');
      const cs = getComputedStyle(a);
      return { row: all.indexOf(row), index: row ? [...row.querySelectorAll('.card')].indexOf(a) : -1,
        slug: a.dataset.slug, ring: cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) >= 2 };
    });
    const moves = [];
    await page.keyboard.press('ArrowRight');
    moves.push(['ArrowRight', await active()]);
    await page.keyboard.press('ArrowDown');
    moves.push(['ArrowDown', await active()]);
    await page.keyboard.press('ArrowUp');
    moves.push(['ArrowUp', await active()]);
    await page.keyboard.press('Tab');
    moves.push(['Tab', await active()]);
    result.keyboard = { rows, moves };
    check(rows.length >= 1, 'no rows on the home page');
    if (rows[0].cards > 1) check(moves[0][1].row === 0 && moves[0][1].index === 1, `ArrowRight: ${JSON.stringify(moves[0][1])}`);
    if (rows.length > 1) check(moves[1][1].row === 1, `ArrowDown: ${JSON.stringify(moves[1][1])}`);
    check(moves.every(([, a]) => a.ring), `a focused card shows no focus ring: ${JSON.stringify(moves)}`);
  });

  await step('search as you type', async () => {
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Search', exact: true }).click();
    await page.waitForURL(/#\/search/, { timeout: 10000 });
    const box = page.getByLabel('Search titles, people and genres');
    const hit = page.locator('.cards.grid .card', { hasText: opt.titleName }).first();
    const titles = () => page.locator('.cards.grid .card .card-title').allTextContents();
    // Typed a key at a time, as a person types; the results follow with no Enter: after the first word, then
    // after the whole query (its typo included).
    const cut = opt.query.includes(' ') ? opt.query.indexOf(' ') : Math.ceil(opt.query.length / 2);
    await box.pressSequentially(opt.query.slice(0, cut), { delay: 150 });
    await hit.waitFor({ timeout: 10000 });
    const partial = { typed: opt.query.slice(0, cut), results: await titles() };
    await box.pressSequentially(opt.query.slice(cut), { delay: 150 });
    await page.waitForFunction((q) => document.querySelector('.search-status').textContent.includes(q),
      opt.query, { timeout: 10000 });
    await hit.waitFor({ timeout: 10000 });
    result.search = {
      query: opt.query, partial, requests: result.searchRequests, url: page.url(), results: await titles(),
      marked: await page.locator('.cards.grid .card mark').allTextContents(),
      status: await page.locator('.search-status').textContent(),
    };
    check(result.searchRequests >= 2, `one search request only (${result.searchRequests}): not as you type`);
  });
  await step('audit search', () => audit('search'));

  await step('title page', async () => {
    await page.locator('.cards.grid .card', { hasText: opt.titleName }).first().click();
    await page.waitForURL(new RegExp(`#/title/${opt.title}$`), { timeout: 10000 });
    await page.getByRole('heading', { level: 1, name: opt.titleName }).waitFor({ timeout: 10000 });
    await page.locator('.row[data-row="similar"] .card').first().waitFor({ timeout: 10000 })
      .catch(() => { throw new Error('no similar titles on the title page'); });
    result.title = { similar: await page.locator('.row[data-row="similar"] .card .card-title').allTextContents() };
  });
  await step('audit title', () => audit('title'));

  let stopAt = 0;
  await step('play through the edge', async () => {
    await page.getByRole('radio', { name: /HLS/ }).check().catch(() => {});
    await page.getByRole('link', { name: 'Play', exact: true }).click({ timeout: 5000 });
    await page.waitForURL(new RegExp(`#/play/${opt.title}`), { timeout: 10000 });
    const state = await waitTime(5, 40000);
    state.captionsShowing = await waitCaptions();
    result.play = state;
    check(state.protocol === 'hls', `played with ${state.protocol}`);
    check(state.captionsShowing.length > 0, 'no captions showing');
  });

  await step('stop', async () => {
    stopAt = (await video()).currentTime;
    await page.getByRole('button', { name: 'Stop', exact: true }).click();
    await page.waitForURL(new RegExp(`#/title/${opt.title}$`), { timeout: 10000 });
    const reported = () => result.progressPosts.find((p) => p.status === 200 && p.body && p.body.title === opt.title
      && Math.abs(p.body.position_secs - stopAt) < 1.5);
    for (let i = 0; i < 50 && !reported(); i++) await page.waitForTimeout(100);
    result.stop = { at: stopAt, reported: reported() || null };
    check(reported(), `no progress reported at ${stopAt}: ${JSON.stringify(result.progressPosts)}`);
  });

  await step('continue watching after reload', async () => {
    await page.goto(`${opt.api}/#/home`, { timeout: 15000 });
    await page.reload({ timeout: 15000 });
    const row = page.locator('.row[data-row="continue"]');
    await row.locator('.card', { hasText: opt.titleName }).first().waitFor({ timeout: 10000 })
      .catch(() => { throw new Error(`no "continue watching" card for ${opt.title}`); });
    result.continueWatching = { heading: await row.locator('h2').textContent(),
      cards: await row.locator('.card .card-title').allTextContents() };
  });
  await step('audit home', () => audit('home'));

  await step('resume', async () => {
    await page.locator('.row[data-row="continue"] .card', { hasText: opt.titleName }).first().click();
    await page.waitForURL(new RegExp(`#/play/${opt.title}`), { timeout: 10000 });
    await page.waitForFunction(() => window.__cdnPlayer && (window.__cdnPlayer.startedAt != null || window.__cdnPlayer.fatal),
      null, { timeout: 30000, polling: 100 });
    const begin = await video();
    check(!begin.fatal, `player error: ${begin.fatal}`);
    const state = await waitTime(begin.startedAt + 2, 20000);
    result.resume = { stoppedAt: stopAt, resumeSecs: state.resumeSecs, startedAt: begin.startedAt, currentTime: state.currentTime,
      captions: state.captions };
    check(Math.abs(begin.startedAt - stopAt) <= 3, `started at ${begin.startedAt}, stopped at ${stopAt}`);
  });
  await step('audit player', () => audit('player'));
  await step('stop again', async () => {
    await page.getByRole('button', { name: 'Stop', exact: true }).click();
    await page.waitForURL(new RegExp(`#/title/${opt.title}$`), { timeout: 10000 });
  });

  if (opt.dashTitle) {
    await step('play DASH', async () => {
      await page.goto(`${opt.api}/#/title/${opt.dashTitle}`, { timeout: 15000 });
      await page.getByRole('heading', { level: 1 }).waitFor({ timeout: 10000 });
      await page.getByRole('radio', { name: /DASH/ }).check();
      await page.locator('.actions .button.primary').click();
      await page.waitForURL(new RegExp(`#/play/${opt.dashTitle}\\?protocol=dash`), { timeout: 10000 });
      const state = await waitTime(3, 30000);
      state.captionsShowing = await waitCaptions();
      result.dash = state;
      check(state.protocol === 'dash', `played with ${state.protocol}`);
      await page.getByRole('button', { name: 'Stop', exact: true }).click();
      await page.waitForURL(new RegExp(`#/title/${opt.dashTitle}$`), { timeout: 10000 });
    });
  }

  await step('sign out', async () => {
    await page.getByRole('button', { name: 'Sign out', exact: true }).click();
    await page.waitForURL(/#\/signin/, { timeout: 10000 });
    result.signedOut = await page.evaluate(async () => (await fetch('/v1/me', { credentials: 'same-origin' })).status);
    check(result.signedOut === 401, `GET /v1/me after signing out: ${result.signedOut}`);
  });

  const problems = [];
  if (result.violations.length) problems.push(`axe: ${result.violations.map((v) => `${v.page}/${v.size}: ${v.id}`).join(', ')}`);
  const wide = Object.entries(result.overflow).filter(([, px]) => px > 1);
  if (wide.length) problems.push(`scrolls sideways: ${wide.map(([k, px]) => `${k} by ${px}px`).join(', ')}`);
  const elsewhere = result.hosts.filter(([host]) => host !== opt.edge);
  if (elsewhere.length) problems.push(`media not from the edge ${opt.edge}: ${JSON.stringify(elsewhere)}`);
  if (result.mediaResponses < 5) problems.push(`only ${result.mediaResponses} media responses`);
  if (result.bad.length) problems.push(`failed media responses: ${result.bad.slice(0, 3).join(' | ')}`);
  if (result.pageErrors.length) problems.push(`page errors: ${result.pageErrors.slice(0, 3).join(' | ')}`);
  await finish(problems.join('; '));
} catch (e) {
  await finish(String((e && e.message) || e).split('\n')[0]);
}

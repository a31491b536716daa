// The viewer's web front end: a router over hash routes and the views behind them. Plain modules, no build
// step. `#/signin`, `#/signup`, `#/profiles`, `#/home`, `#/search?q=`, `#/title/<slug>`, `#/play/<slug>`.
import { Api, ApiError } from '/web/api.js';
import { h, row, rowKeys, card, artwork, artworkPath, clock, spokenDuration, preferredProtocol } from '/web/ui.js';
import { playView } from '/web/player.js';

const main = document.getElementById('main');
const announcer = document.getElementById('announce');
const nav = document.querySelector('.nav');
const SITE = 'CDN Play';

/// The signed-in account (`GET /v1/me`'s answer) and the chosen profile.
const state = { me: null, checked: false };
let generation = 0;
let cleanup = null;

// ---- session and profile -------------------------------------------------------------------------------

async function ensureMe() {
  if (state.me || state.checked) return state.me;
  try {
    state.me = await Api.me();
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 401) throw e;
    state.me = null;
  }
  state.checked = true;
  return state.me;
}

const profileKey = () => `cdn.profile.${state.me && state.me.account}`;

function currentProfile() {
  if (!state.me || !Array.isArray(state.me.profiles)) return null;
  let chosen = null;
  try {
    chosen = JSON.parse(localStorage.getItem(profileKey()));
  } catch {
    chosen = null;
  }
  return state.me.profiles.find((p) => String(p.id) === String(chosen)) || null;
}

function chooseProfile(profile) {
  localStorage.setItem(profileKey(), JSON.stringify(profile.id));
}

function signedOut() {
  state.me = null;
  state.checked = true;
}

// ---- routing -------------------------------------------------------------------------------------------

function parse() {
  const raw = location.hash.replace(/^#/, '') || '/home';
  const [path, query] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  return { raw: '#' + raw, parts, params: new URLSearchParams(query || '') };
}

/// Goes to `hash`; `replace` keeps it out of the history (a redirect).
function go(hash, replace) {
  if (replace) {
    history.replaceState(null, '', hash);
    route();
  } else if (location.hash === hash) {
    route();
  } else {
    location.hash = hash;
  }
}

const VIEWS = {
  signin: signInView,
  signup: signUpView,
  profiles: profilesView,
  home: homeView,
  search: searchView,
  title: titleView,
  play: (ctx) => playView(ctx, { main, h, go, profile: currentProfile(), setTitle, announce }),
};

async function route() {
  const r = parse();
  const name = r.parts[0] || 'home';
  const gen = ++generation;
  if (cleanup) {
    const done = cleanup;
    cleanup = null;
    try {
      done();
    } catch (e) {
      console.error(e);
    }
  }
  const ctx = { ...r, name, alive: () => gen === generation };
  try {
    if (name !== 'signin' && name !== 'signup') {
      const me = await ensureMe();
      if (!ctx.alive()) return;
      if (!me) return go(`#/signin?next=${encodeURIComponent(r.raw)}`, true);
      if (name !== 'profiles' && !currentProfile()) return go(`#/profiles?next=${encodeURIComponent(r.raw)}`, true);
    }
    chrome(name);
    const view = VIEWS[name] || notFoundView;
    const result = await view(ctx);
    if (!ctx.alive()) {
      if (typeof result === 'function') result();
      return;
    }
    if (typeof result === 'function') cleanup = result;
  } catch (e) {
    if (!ctx.alive()) return;
    if (e instanceof ApiError && e.status === 401) {
      signedOut();
      return go(`#/signin?next=${encodeURIComponent(r.raw)}`, true);
    }
    console.error(e);
    showError(e);
  }
}

/// The header for a view: the navigation when signed in, the current page marked, the profile named.
function chrome(name) {
  nav.hidden = !state.me;
  for (const link of nav.querySelectorAll('[data-nav]')) {
    if (link.dataset.nav === name) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  const profile = currentProfile();
  const who = nav.querySelector('.who');
  who.querySelector('.who-name').textContent = profile ? profile.name : 'Profiles';
  who.querySelector('.avatar').textContent = profile ? initial(profile.name) : '';
  who.querySelector('.who-prefix').textContent = profile ? 'Switch profile, now ' : '';
  document.body.dataset.view = name;
}

function setTitle(text) {
  document.title = text ? `${text} · ${SITE}` : SITE;
}

function announce(text) {
  announcer.textContent = '';
  // A fresh text node after a tick, so the same words are announced twice in a row too.
  setTimeout(() => { announcer.textContent = text; }, 50);
}

/// Puts a view in <main> and moves focus to its heading (or `focus`), as a page load would.
function show(title, nodes, focus) {
  main.replaceChildren(...[nodes].flat());
  setTitle(title);
  const target = focus || main.querySelector('h1');
  if (target) {
    if (!target.hasAttribute('tabindex') && !/^(INPUT|BUTTON|A|SELECT|TEXTAREA)$/.test(target.tagName)) {
      target.setAttribute('tabindex', '-1');
    }
    target.focus({ preventScroll: false });
  }
  announce(title);
}

function showError(e) {
  const message = e instanceof ApiError ? e.message : 'Something went wrong. Check your connection and try again.';
  show('Error', h('div', { class: 'page narrow' },
    h('h1', {}, 'Something went wrong'),
    h('p', { class: 'error', role: 'alert' }, message),
    h('p', {}, h('a', { href: '#/home' }, 'Back to the home page'))));
}

function notFoundView() {
  show('Not found', h('div', { class: 'page narrow' },
    h('h1', {}, 'Page not found'),
    h('p', {}, h('a', { href: '#/home' }, 'Go to the home page'))));
}

const initial = (name) => String(name || '?').trim().charAt(0).toUpperCase() || '?';

/// A labelled form field; `hint` is tied to the input by aria-describedby.
function field(label, input, hint) {
  const hintEl = hint ? h('p', { class: 'hint', id: `${input.id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: input.id }, label), input, hintEl);
}

// ---- sign in, sign up, profiles ------------------------------------------------------------------------

function afterSignIn(ctx) {
  const next = ctx.params.get('next');
  go(`#/profiles${next ? `?next=${encodeURIComponent(next)}` : ''}`, true);
}

function signInView(ctx) {
  const email = h('input', { id: 'email', name: 'email', type: 'email', autocomplete: 'username', required: true, spellcheck: 'false' });
  const password = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const error = h('p', { class: 'error', role: 'alert' });
  const submit = h('button', { type: 'submit', class: 'button primary wide' }, 'Sign in');
  const form = h('form', { class: 'form', 'aria-labelledby': 'signin-h' },
    field('Email', email), field('Password', password), error, submit);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    submit.disabled = true;
    try {
      const answer = await Api.signIn(email.value.trim(), password.value);
      state.me = { account: answer.account, email: email.value.trim(), profiles: answer.profiles || [] };
      state.checked = true;
      if (ctx.alive()) afterSignIn(ctx);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) error.textContent = 'That email and password do not match an account.';
      else if (err instanceof ApiError && err.status === 429) {
        error.textContent = `Too many attempts. Try again in ${spokenDuration(err.retryAfter || 60)}.`;
      } else error.textContent = err instanceof ApiError ? err.message : 'Cannot reach the service. Try again.';
      password.focus();
    } finally {
      submit.disabled = false;
    }
  });
  const next = ctx.params.get('next');
  show('Sign in', h('div', { class: 'page narrow auth' },
    h('h1', { id: 'signin-h' }, 'Sign in'),
    form,
    h('p', {}, 'New here? ', h('a', { href: `#/signup${next ? `?next=${encodeURIComponent(next)}` : ''}` }, 'Create an account'))));
}

function signUpView(ctx) {
  const email = h('input', { id: 'email', name: 'email', type: 'email', autocomplete: 'username', required: true, spellcheck: 'false' });
  const password = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'new-password', required: true, minlength: 8 });
  const error = h('p', { class: 'error', role: 'alert' });
  const submit = h('button', { type: 'submit', class: 'button primary wide' }, 'Create account');
  const form = h('form', { class: 'form', 'aria-labelledby': 'signup-h' },
    field('Email', email), field('Password', password, 'At least 8 characters.'), error, submit);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    submit.disabled = true;
    try {
      await Api.signUp(email.value.trim(), password.value);
      const answer = await Api.signIn(email.value.trim(), password.value);
      state.me = { account: answer.account, email: email.value.trim(), profiles: answer.profiles || [] };
      state.checked = true;
      if (ctx.alive()) afterSignIn(ctx);
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) error.textContent = 'An account with this email exists already: sign in instead.';
      else error.textContent = err instanceof ApiError ? err.message : 'Cannot reach the service. Try again.';
    } finally {
      submit.disabled = false;
    }
  });
  show('Create an account', h('div', { class: 'page narrow auth' },
    h('h1', { id: 'signup-h' }, 'Create an account'),
    form,
    h('p', {}, 'Have an account? ', h('a', { href: '#/signin' }, 'Sign in'))));
}

async function profilesView(ctx) {
  const me = await Api.me();
  if (!ctx.alive()) return;
  state.me = me;
  const current = currentProfile();
  const next = ctx.params.get('next');
  const pick = (profile) => {
    chooseProfile(profile);
    go(next && next.startsWith('#/') && !next.startsWith('#/profiles') ? next : '#/home');
  };
  const name = h('input', { id: 'profile-name', name: 'name', type: 'text', autocomplete: 'off', required: true, maxlength: 40 });
  const error = h('p', { class: 'error', role: 'alert' });
  const form = h('form', { class: 'form inline-form', 'aria-labelledby': 'add-profile-h' },
    field('Profile name', name), h('button', { type: 'submit', class: 'button' }, 'Add profile'), error);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    error.textContent = '';
    try {
      const added = await Api.addProfile(name.value.trim());
      state.me.profiles.push(added);
      if (ctx.alive()) pick(added);
    } catch (err) {
      error.textContent = err instanceof ApiError ? err.message : 'Cannot reach the service. Try again.';
    }
  });
  show('Who is watching?', h('div', { class: 'page profiles-page' },
    h('h1', {}, 'Who is watching?'),
    h('ul', { class: 'profiles', role: 'list' }, (me.profiles || []).map((p) => h('li', {},
      h('button', { type: 'button', class: 'profile', 'aria-current': current && current.id === p.id ? 'true' : null,
        onclick: () => pick(p) },
      h('span', { class: 'avatar', 'aria-hidden': 'true' }, initial(p.name)),
      h('span', { class: 'profile-name' }, p.name))))),
    h('section', { class: 'add-profile', 'aria-labelledby': 'add-profile-h' },
      h('h2', { id: 'add-profile-h' }, 'Add a profile'), form)));
}

// ---- browsing ------------------------------------------------------------------------------------------

async function homeView(ctx) {
  const profile = currentProfile();
  const home = await Api.home(profile.id);
  if (!ctx.alive()) return;
  const rows = (home.rows || []).filter((r) => Array.isArray(r.items) && r.items.length);
  const body = rows.length
    ? rows.map((r) => row(r.title, r.items, { id: r.id, resume: r.id === 'continue' }))
    : [h('p', {}, 'Nothing to show yet. ', h('a', { href: '#/search' }, 'Search the catalogue'), '.')];
  const page = h('div', { class: 'page home' }, h('h1', {}, `Home for ${profile.name}`), body);
  rowKeys(page);
  show('Home', page);
}

async function searchView(ctx) {
  const input = h('input', { id: 'q', name: 'q', type: 'search', autocomplete: 'off', spellcheck: 'false',
    enterkeyhint: 'search', value: ctx.params.get('q') || '' });
  const status = h('p', { class: 'search-status', role: 'status', 'aria-live': 'polite' });
  const results = h('ul', { class: 'cards grid', role: 'list', 'aria-labelledby': 'results-h' });
  const form = h('form', { role: 'search', class: 'search-form', 'aria-label': 'Titles' },
    field('Search titles, people and genres', input, 'Results appear as you type; small typos are forgiven.'));
  let seq = 0;
  let timer = null;
  let controller = null;
  const run = async () => {
    const q = input.value.trim();
    history.replaceState(null, '', q ? `#/search?q=${encodeURIComponent(q)}` : '#/search');
    if (controller) controller.abort();
    const mine = ++seq;
    if (!q) {
      results.replaceChildren();
      status.textContent = '';
      return;
    }
    controller = new AbortController();
    try {
      const answer = await Api.search(q.slice(0, 256), 24, controller.signal);
      if (mine !== seq || !ctx.alive()) return;
      const hits = answer.hits || [];
      results.replaceChildren(...hits.map((hit) => h('li', {},
        card({ slug: hit.slug, title: hit.title, artwork: artworkPath(hit.slug) }, { highlight: hit.highlight }))));
      status.textContent = hits.length
        ? `${hits.length} result${hits.length === 1 ? '' : 's'} for “${q}”`
        : `No titles match “${q}”.`;
    } catch (e) {
      if (e.name === 'AbortError' || mine !== seq) return;
      status.textContent = e instanceof ApiError ? e.message : 'Search is not reachable. Try again.';
    }
  };
  input.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(run, 120);
  });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    clearTimeout(timer);
    run();
  });
  const page = h('div', { class: 'page search' },
    h('h1', {}, 'Search'), form, status,
    h('section', { 'aria-labelledby': 'results-h' }, h('h2', { id: 'results-h', class: 'visually-hidden' }, 'Results'), results));
  rowKeys(page);
  show('Search', page, input);
  if (input.value) run();
  return () => {
    clearTimeout(timer);
    if (controller) controller.abort();
  };
}

async function titleView(ctx) {
  const slug = ctx.parts[1] || '';
  const profile = currentProfile();
  let details;
  try {
    details = await Api.title(slug);
  } catch (e) {
    if (e instanceof ApiError && (e.status === 404 || e.status === 410)) {
      if (ctx.alive()) {
        show('Title not found', h('div', { class: 'page narrow' }, h('h1', {}, 'Title not found'),
          h('p', {}, 'This title is not in the catalogue (any more). ', h('a', { href: '#/search' }, 'Search for another'), '.')));
      }
      return;
    }
    throw e;
  }
  const [similar, history] = await Promise.all([
    Api.similar(slug, 12).catch(() => null),
    Api.history(profile.id).catch(() => null),
  ]);
  if (!ctx.alive()) return;
  const watched = history && (history.items || []).find((i) => i.title === slug && !i.finished && i.position_secs > 1);
  const protocols = ['hls', 'dash'].filter((p) => (details.packagings || []).some((k) => k.protocol === p));
  let protocol = preferredProtocol(details.packagings);
  const play = h('a', { class: 'button primary', href: '#' }, h('span', { class: 'play-label' }));
  const fromStart = watched ? h('a', { class: 'button', href: '#' }, 'Play from the beginning') : null;
  const links = () => {
    const q = `protocol=${protocol}`;
    play.href = `#/play/${encodeURIComponent(slug)}?${q}`;
    play.querySelector('.play-label').textContent = watched ? `Resume from ${clock(watched.position_secs)}` : 'Play';
    if (fromStart) fromStart.href = `#/play/${encodeURIComponent(slug)}?${q}&start=0`;
  };
  links();
  const format = protocols.length > 1
    ? h('fieldset', { class: 'format' }, h('legend', {}, 'Streaming format'),
      protocols.map((p) => h('label', { class: 'radio' },
        h('input', { type: 'radio', name: 'protocol', value: p, checked: p === protocol,
          onchange: () => { protocol = p; localStorage.setItem('cdn.protocol', p); links(); } }),
        p === 'hls' ? 'HLS (hls.js)' : 'DASH (dash.js)')))
    : null;
  const bits = [details.year, details.runtime_secs ? clock(details.runtime_secs) : null,
    (details.genres || []).join(', ')].filter(Boolean);
  const facts = [];
  if (details.director) facts.push(['Director', details.director]);
  if (details.cast && details.cast.length) facts.push(['Cast', details.cast.join(', ')]);
  if (details.language) facts.push(['Language', details.language]);
  const art = details.artwork_key ? artwork({ ...details, artwork: artworkPath(slug) }, 'title-art') : artwork(details, 'title-art');
  const similarItems = (similar && similar.similar) || [];
  const page = h('div', { class: 'page title-page' },
    h('article', { class: 'title-main', 'aria-labelledby': 'title-h' },
      art,
      h('div', { class: 'title-info' },
        h('h1', { id: 'title-h' }, details.title || slug),
        bits.length ? h('p', { class: 'title-meta' }, bits.join(' · ')) : null,
        watched ? h('p', { class: 'title-progress' },
          `You stopped at ${clock(watched.position_secs)}${watched.duration_secs ? ` of ${clock(watched.duration_secs)}` : ''}.`) : null,
        details.description ? h('p', { class: 'title-description' }, details.description) : null,
        facts.length ? h('dl', { class: 'facts' }, facts.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])) : null,
        format,
        h('div', { class: 'actions' }, play, fromStart))),
    similarItems.length
      ? row('More like this', similarItems, { id: 'similar' })
      : h('section', { class: 'row', 'aria-labelledby': 'similar-h' }, h('h2', { id: 'similar-h', class: 'row-title' }, 'More like this'),
        h('p', {}, 'No similar titles yet.')));
  rowKeys(page);
  show(details.title || slug, page);
}

// ---- start ---------------------------------------------------------------------------------------------

nav.querySelector('[data-signout]').addEventListener('click', async () => {
  try {
    await Api.signOut();
  } catch (e) {
    console.error(e);
  }
  signedOut();
  go('#/signin');
});

document.querySelector('[data-skip]').addEventListener('click', (e) => {
  e.preventDefault();
  const target = main.querySelector('h1') || main;
  if (!target.hasAttribute('tabindex')) target.setAttribute('tabindex', '-1');
  target.focus();
});

window.addEventListener('hashchange', route);
if (!location.hash || location.hash === '#' || location.hash === '#/') history.replaceState(null, '', '#/home');
route();


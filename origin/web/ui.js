// Small pieces of the views: building elements (text is always text, never parsed as HTML), title cards and
// rows of them, the rows' keyboard navigation, times.

/// `h('a', {href: '#/home', class: 'x'}, 'text', child)`: an element; attributes starting with `on` are
/// listeners, `false`/null attributes are left out, strings among the children become text nodes.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value == null) continue;
    if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/// A fixed SVG icon (the markup is this file's own constants), hidden from assistive technology.
export function icon(name) {
  const span = document.createElement('span');
  span.className = 'icon';
  span.setAttribute('aria-hidden', 'true');
  span.innerHTML = ICONS[name] || '';
  return span;
}

const svg = (body) => `<svg viewBox="0 0 24 24" width="24" height="24" focusable="false">${body}</svg>`;
const ICONS = {
  play: svg('<path d="M7 4.5v15l13-7.5z" fill="currentColor"/>'),
  pause: svg('<path d="M6 4h4.5v16H6zM13.5 4H18v16h-4.5z" fill="currentColor"/>'),
  back: svg('<path d="M11.5 6v12L3 12zM21 6v12l-8.5-6z" fill="currentColor"/>'),
  forward: svg('<path d="M12.5 6v12L21 12zM3 6v12l8.5-6z" fill="currentColor"/>'),
  stop: svg('<path d="M6 6h12v12H6z" fill="currentColor"/>'),
  captions: svg('<rect x="2.5" y="5" width="19" height="14" rx="2" fill="none" stroke="currentColor" stroke-width="2"/>' +
    '<path d="M10.5 10.2a2.3 2.3 0 1 0 0 3.6M18 10.2a2.3 2.3 0 1 0 0 3.6" fill="none" stroke="currentColor" stroke-width="1.8"/>'),
  volume: svg('<path d="M4 9h4l5-4v14l-5-4H4z" fill="currentColor"/><path d="M16 8.5a5 5 0 0 1 0 7M18.5 6a8.5 8.5 0 0 1 0 12" fill="none" stroke="currentColor" stroke-width="2"/>'),
  muted: svg('<path d="M4 9h4l5-4v14l-5-4H4z" fill="currentColor"/><path d="M16 9l5 6M21 9l-5 6" stroke="currentColor" stroke-width="2"/>'),
  fullscreen: svg('<path d="M4 9V4h5M15 4h5v5M20 15v5h-5M9 20H4v-5" fill="none" stroke="currentColor" stroke-width="2"/>'),
};

/// `m:ss` (or `h:mm:ss`).
export function clock(secs) {
  const s = Math.max(0, Math.floor(Number(secs) || 0));
  const two = (n) => String(n).padStart(2, '0');
  const hours = Math.floor(s / 3600);
  return hours ? `${hours}:${two(Math.floor(s / 60) % 60)}:${two(s % 60)}` : `${Math.floor(s / 60)}:${two(s % 60)}`;
}

/// "1 minute 5 seconds" for screen readers.
export function spokenDuration(secs) {
  const s = Math.max(0, Math.round(Number(secs) || 0));
  const m = Math.floor(s / 60);
  const parts = [];
  if (m) parts.push(`${m} minute${m === 1 ? '' : 's'}`);
  if (s % 60 || !m) parts.push(`${s % 60} second${s % 60 === 1 ? '' : 's'}`);
  return parts.join(' ');
}

/// The artwork of an item (a path on this listener), or a lettered stand-in when it has none or it fails.
export function artwork(item, className) {
  const fallback = () => h('span', { class: `${className} art-none`, 'aria-hidden': 'true' },
    String(item.title || item.slug || '?').trim().charAt(0).toUpperCase());
  if (!item.artwork) return fallback();
  const img = h('img', { class: className, src: item.artwork, alt: '', loading: 'lazy', decoding: 'async' });
  img.addEventListener('error', () => img.replaceWith(fallback()), { once: true });
  return img;
}

/// The artwork path of a title when only its slug is known (search hits).
export const artworkPath = (slug) => `/v1/titles/${encodeURIComponent(slug)}/artwork`;

function meta(item) {
  const bits = [];
  if (item.year) bits.push(String(item.year));
  if (Array.isArray(item.genres) && item.genres.length) bits.push(item.genres.slice(0, 2).join(', '));
  return bits.join(' · ');
}

/// A title card: a link to the title page (or, for "continue watching", to the player), with the progress made.
export function card(item, options = {}) {
  const resume = options.resume && item.position_secs > 0;
  const href = resume ? `#/play/${encodeURIComponent(item.slug)}` : `#/title/${encodeURIComponent(item.slug)}`;
  const children = [artwork(item, 'card-art')];
  const name = h('span', { class: 'card-title' });
  if (options.highlight) highlight(name, options.highlight);
  else name.textContent = item.title || item.slug;
  children.push(h('span', { class: 'card-text' },
    resume ? h('span', { class: 'visually-hidden' }, 'Resume ') : null,
    name,
    meta(item) ? h('span', { class: 'card-meta' }, meta(item)) : null,
    item.position_secs > 0 && item.duration_secs > 0 ? progress(item.position_secs, item.duration_secs) : null));
  return h('a', { class: 'card', href, dataset: { slug: item.slug } }, children);
}

function progress(position, duration) {
  const pct = Math.min(100, Math.max(0, (position / duration) * 100));
  const bar = h('span', { class: 'progress', 'aria-hidden': 'true' }, h('span', { class: 'progress-done' }));
  bar.firstChild.style.width = `${pct.toFixed(1)}%`;
  return [bar, h('span', { class: 'visually-hidden' },
    `, ${spokenDuration(position)} of ${spokenDuration(duration)} watched`)];
}

/// Fills `el` with a search hit's highlight (`<b>…</b>` around the matched words) as text and <mark>s.
export function highlight(el, marked) {
  const parts = String(marked).split(/(<b>|<\/b>)/);
  let bold = false;
  for (const part of parts) {
    if (part === '<b>') bold = true;
    else if (part === '</b>') bold = false;
    else if (part) el.append(bold ? h('mark', {}, part) : document.createTextNode(part));
  }
}

let rowIds = 0;

/// A row of cards under its heading: a <section> named by its <h2>, the cards in a list that scrolls sideways.
export function row(title, items, options = {}) {
  const id = `row-${++rowIds}`;
  return h('section', { class: 'row', 'aria-labelledby': id, dataset: { row: options.id || '' } },
    h(options.level || 'h2', { id, class: 'row-title' }, title),
    h('ul', { class: 'cards', role: 'list' }, items.map((item) => h('li', {}, card(item, options)))));
}

/// Arrow keys between cards: left/right within a row (Home/End to its ends), up/down to the nearest card of
/// the row above or below. Tab still walks every card in order; the focused card scrolls into view.
export function rowKeys(container) {
  container.addEventListener('keydown', (e) => {
    const cardEl = e.target.closest && e.target.closest('.card');
    if (!cardEl || e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return;
    const list = cardEl.closest('.cards');
    const cards = [...list.querySelectorAll('.card')];
    const i = cards.indexOf(cardEl);
    let target = null;
    if (e.key === 'ArrowRight') target = cards[i + 1];
    else if (e.key === 'ArrowLeft') target = cards[i - 1];
    else if (e.key === 'Home') target = cards[0];
    else if (e.key === 'End') target = cards[cards.length - 1];
    else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      const lists = [...container.querySelectorAll('.cards')];
      const other = lists[lists.indexOf(list) + (e.key === 'ArrowDown' ? 1 : -1)];
      if (other) {
        const there = [...other.querySelectorAll('.card')];
        // The card nearest horizontally to this one, as the eye would go.
        const x = cardEl.getBoundingClientRect().left;
        target = there.reduce((best, c) =>
          !best || Math.abs(c.getBoundingClientRect().left - x) < Math.abs(best.getBoundingClientRect().left - x) ? c : best, null);
      }
    } else return;
    if (!target) return;
    e.preventDefault();
    target.focus();
    target.scrollIntoView({ block: 'nearest', inline: 'nearest' });
  });
}

/// The protocol the viewer plays with: the one chosen last, if the title has it, else HLS, else DASH.
export function preferredProtocol(packagings) {
  const have = new Set((packagings || []).map((p) => p.protocol));
  const chosen = localStorage.getItem('cdn.protocol');
  if (chosen && have.has(chosen)) return chosen;
  return have.has('hls') ? 'hls' : [...have][0] || 'hls';
}


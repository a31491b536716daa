// The player view (#/play/<slug>?protocol=hls|dash[&start=0]): asks the playback API for the signed URLs,
// plays the steered manifest when the control plane offers Content Steering (hls.js and dash.js then move
// between edges by themselves) or else the first edge's signed manifest, with hls.js or dash.js; starts where
// the profile left off; captions on unless the profile turned them off; reports the session with the control
// plane's player-events script and the profile's progress every 10 s, on pause, at the end and on leaving.
import { Api, ApiError } from '/web/api.js';
import { h, icon, clock, preferredProtocol } from '/web/ui.js';

const PROGRESS_EVERY_MS = 10000;
const SEEK_STEP_SECS = 10;

const scripts = new Map();

/// Loads a classic script once (the players' UMD builds and the events script set globals).
function script(src) {
  if (!scripts.has(src)) {
    scripts.set(src, new Promise((resolve, reject) => {
      const el = document.createElement('script');
      el.src = src;
      el.onload = resolve;
      el.onerror = () => {
        scripts.delete(src);
        el.remove();
        reject(new Error(`cannot load ${src}`));
      };
      document.head.append(el);
    }));
  }
  return scripts.get(src);
}

/// The subtitle track to show: the viewer's language, else English, else the first.
function pickTrack(tracks, langOf) {
  const want = (navigator.language || 'en').slice(0, 2).toLowerCase();
  const index = (lang) => tracks.findIndex((t) => String(langOf(t) || '').toLowerCase().startsWith(lang));
  const i = index(want);
  if (i >= 0) return i;
  const en = index('en');
  return en >= 0 ? en : tracks.length ? 0 : -1;
}

function button(label, iconName, onclick, extra = {}) {
  return h('button', { type: 'button', class: 'control', 'aria-label': label, title: label, onclick, ...extra }, icon(iconName));
}

export async function playView(ctx, { main, go, profile, setTitle, announce }) {
  const slug = ctx.parts[1] || '';
  const details = await Api.title(slug);
  if (!ctx.alive()) return;
  const asked = ctx.params.get('protocol');
  const protocol = asked === 'hls' || asked === 'dash' ? asked : preferredProtocol(details.packagings);
  const name = details.title || slug;
  // State for people debugging and for the browser test: what plays, from where, what was reported.
  const st = window.__cdnPlayer = {
    slug, protocol, packaging: null, url: null, steered: false, resumeSecs: 0, startedAt: null,
    hosts: [], errors: [], fatal: null, reported: [], captions: true, ready: false,
  };

  const video = h('video', { class: 'video', playsinline: true, preload: 'auto', 'aria-label': `${name} video` });
  const playBtn = button('Play', 'play', () => toggle());
  const backBtn = button(`Back ${SEEK_STEP_SECS} seconds`, 'back', () => seekBy(-SEEK_STEP_SECS));
  const fwdBtn = button(`Forward ${SEEK_STEP_SECS} seconds`, 'forward', () => seekBy(SEEK_STEP_SECS));
  const seek = h('input', { type: 'range', class: 'seek', min: 0, max: details.runtime_secs || 0, step: 0.1, value: 0,
    'aria-label': 'Position', 'aria-valuetext': '0:00' });
  const time = h('span', { class: 'time', 'aria-hidden': 'true' }, '0:00 / 0:00');
  const ccBtn = button('Captions', 'captions', () => setCaptions(!st.captions, true), { 'aria-pressed': 'true' });
  const muteBtn = button('Mute', 'volume', () => { video.muted = !video.muted; });
  const fullBtn = button('Full screen', 'fullscreen', () => fullscreen());
  const stopBtn = h('button', { type: 'button', class: 'button stop', onclick: () => stop() }, icon('stop'), 'Stop');
  const status = h('p', { class: 'player-status', role: 'status' }, 'Starting…');
  const alert = h('p', { class: 'error', role: 'alert' });
  const busy = h('div', { class: 'busy', 'aria-hidden': 'true' });
  const stage = h('div', { class: 'stage' }, video, busy);
  const controls = h('div', { class: 'controls', role: 'group', 'aria-label': 'Playback controls' },
    h('div', { class: 'controls-main' }, playBtn, backBtn, fwdBtn, time, seek),
    h('div', { class: 'controls-more' }, ccBtn, muteBtn, fullBtn, stopBtn));
  const player = h('section', { class: 'player', 'aria-labelledby': 'player-h' },
    h('div', { class: 'player-head' },
      h('h1', { id: 'player-h' }, name),
      h('a', { href: `#/title/${encodeURIComponent(slug)}`, class: 'back-link' }, `About ${name}`)),
    stage, controls, status, alert);
  main.replaceChildren(h('div', { class: 'page play' }, player));
  setTitle(`Playing ${name}`);
  announce(`Playing ${name}`);
  playBtn.focus();

  let hls = null;
  let dash = null;
  let events = null;
  let timer = null;
  let stopped = false;
  let dragging = false;
  let last = { position: -1, promise: Promise.resolve() };

  // ---- progress --------------------------------------------------------------------------------------
  const duration = () => (Number.isFinite(video.duration) && video.duration > 0 ? video.duration : details.runtime_secs || 0);
  function report(reason, keepalive) {
    const position = video.currentTime;
    if (!st.ready || !(position > 0)) return last.promise;
    if (Math.abs(position - last.position) < 0.5) return last.promise;
    const body = { title: slug, position_secs: Math.round(position * 10) / 10, duration_secs: Math.round(duration() * 10) / 10 };
    const entry = { reason, ...body, status: null };
    st.reported.push(entry);
    const promise = Api.progress(profile.id, body, keepalive)
      .then(() => { entry.status = 'ok'; })
      .catch((e) => {
        entry.status = e instanceof ApiError ? e.status : 'failed';
        st.errors.push(`progress: ${e.message}`);
      });
    last = { position, promise };
    return promise;
  }
  const onPageHide = () => report('leave', true);
  window.addEventListener('pagehide', onPageHide);
  timer = setInterval(() => {
    if (!video.paused && !video.seeking) report('tick');
  }, PROGRESS_EVERY_MS);

  // ---- the controls ----------------------------------------------------------------------------------
  function toggle() {
    if (video.paused || video.ended) video.play().catch((e) => { alert.textContent = `Cannot start playing: ${e.message}`; });
    else video.pause();
  }
  function seekBy(delta) {
    const d = duration();
    video.currentTime = Math.max(0, Math.min(d ? d - 0.1 : Infinity, video.currentTime + delta));
  }
  function fullscreen() {
    if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
    else player.requestFullscreen().catch(() => {});
  }
  async function stop() {
    stopped = true;
    video.pause();
    await report('stop');
    if (ctx.alive()) go(`#/title/${encodeURIComponent(slug)}`);
  }
  const paint = () => {
    const playing = !video.paused && !video.ended;
    playBtn.replaceChildren(icon(playing ? 'pause' : 'play'));
    playBtn.setAttribute('aria-label', playing ? 'Pause' : 'Play');
    playBtn.title = playing ? 'Pause' : 'Play';
    muteBtn.replaceChildren(icon(video.muted ? 'muted' : 'volume'));
    muteBtn.setAttribute('aria-label', video.muted ? 'Unmute' : 'Mute');
    muteBtn.title = video.muted ? 'Unmute' : 'Mute';
    muteBtn.setAttribute('aria-pressed', String(video.muted));
    const d = duration();
    if (!dragging) {
      seek.max = String(d || 0);
      seek.value = String(video.currentTime);
    }
    seek.setAttribute('aria-valuetext', `${clock(video.currentTime)} of ${clock(d)}`);
    time.textContent = `${clock(video.currentTime)} / ${clock(d)}`;
    fullBtn.setAttribute('aria-label', document.fullscreenElement ? 'Exit full screen' : 'Full screen');
  };
  for (const e of ['play', 'pause', 'ended', 'timeupdate', 'durationchange', 'volumechange', 'loadedmetadata']) {
    video.addEventListener(e, paint);
  }
  document.addEventListener('fullscreenchange', paint);
  seek.addEventListener('input', () => {
    dragging = true;
    video.currentTime = parseFloat(seek.value);
  });
  seek.addEventListener('change', () => { dragging = false; });
  video.addEventListener('click', toggle);
  video.addEventListener('waiting', () => busy.classList.add('on'));
  for (const e of ['playing', 'pause', 'seeked']) video.addEventListener(e, () => busy.classList.remove('on'));
  video.addEventListener('playing', () => {
    if (st.startedAt == null) st.startedAt = video.currentTime;
  }, { once: true });
  video.addEventListener('pause', () => { if (!video.ended && !stopped) report('pause'); });
  video.addEventListener('ended', () => report('ended'));
  // Keys anywhere in the player but on a control that uses them itself: space/k play or pause, ←/→ seek,
  // c captions, m mute, f full screen.
  player.addEventListener('keydown', (e) => {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const onControl = e.target.closest('button, input, a, select, textarea');
    const key = e.key.toLowerCase();
    if ((key === ' ' || key === 'arrowleft' || key === 'arrowright') && onControl) return;
    const actions = {
      ' ': toggle, k: toggle, arrowleft: () => seekBy(-5), arrowright: () => seekBy(5),
      c: () => setCaptions(!st.captions, true), m: () => { video.muted = !video.muted; }, f: fullscreen,
    };
    if (!actions[key]) return;
    e.preventDefault();
    actions[key]();
  });
  video.tabIndex = 0;

  // ---- captions --------------------------------------------------------------------------------------
  let profileDoc = null;
  function applyCaptions() {
    if (hls) {
      hls.subtitleDisplay = st.captions;
      if (st.captions && hls.subtitleTrack < 0 && hls.subtitleTracks.length) {
        hls.subtitleTrack = pickTrack(hls.subtitleTracks, (t) => t.lang);
      }
    }
    if (dash) {
      const tracks = dash.getTracksFor('text') || [];
      if (st.captions && tracks.length) {
        const i = pickTrack(tracks, (t) => t.lang);
        if (i >= 0) dash.setCurrentTrack(tracks[i]);
      }
      dash.enableText(st.captions);
    }
  }
  async function setCaptions(on, save) {
    st.captions = on;
    ccBtn.setAttribute('aria-pressed', String(on));
    ccBtn.setAttribute('aria-label', 'Captions');
    ccBtn.title = on ? 'Captions on' : 'Captions off';
    try {
      applyCaptions();
    } catch (e) {
      st.errors.push(`captions: ${e.message}`);
    }
    if (!save || !profileDoc) return;
    const put = (doc) => Api.putProfile(profile.id, { version: doc.version, settings: { ...(doc.settings || {}), captions: on } });
    try {
      profileDoc = await put(profileDoc);
    } catch (e) {
      // Another device changed the profile: write over its latest version once.
      if (e instanceof ApiError && e.status === 409 && e.body.current) {
        profileDoc = await put({ ...e.body.current, version: e.body.current_version ?? e.body.current.version }).catch(() => profileDoc);
      }
    }
  }

  const fail = (message) => {
    st.fatal = st.fatal || message;
    alert.textContent = message;
    status.textContent = 'Playback stopped.';
  };
  const sawHost = (url) => {
    try {
      const host = new URL(url, location.href).host;
      if (!st.hosts.includes(host)) {
        st.hosts.push(host);
        status.textContent = `Streaming ${protocol.toUpperCase()} (${st.packaging}) from ${host}${st.steered ? ', Content Steering on' : ''}.`;
      }
    } catch {
      /* not a URL: ignore */
    }
  };

  const teardown = () => {
    clearInterval(timer);
    window.removeEventListener('pagehide', onPageHide);
    document.removeEventListener('fullscreenchange', paint);
    report('leave', true);
    if (events && !video.ended) events.end('abandoned');
    if (hls) hls.destroy();
    if (dash) dash.destroy();
    hls = dash = null;
    video.removeAttribute('src');
    video.load();
  };

  // ---- start -----------------------------------------------------------------------------------------
  try {
    const [doc, answer] = await Promise.all([
      Api.profile(profile.id).catch(() => null),
      Api.playback(slug, profile.id, protocol),
    ]);
    if (!ctx.alive()) return teardown;
    profileDoc = doc;
    st.captions = !(doc && doc.settings && doc.settings.captions === false);
    const names = (details.packagings || []).filter((p) => p.protocol === protocol).map((p) => p.name);
    const edge = (answer.edges || [])[0];
    const steering = answer.steering || {};
    const packaging = names.find((n) => steering[n] || (edge && edge.manifests && edge.manifests[n]));
    if (!packaging) {
      fail(`No ${protocol.toUpperCase()} stream of this title is offered now.`);
      return teardown;
    }
    st.packaging = packaging;
    st.steered = Boolean(steering[packaging]);
    st.url = steering[packaging] || edge.manifests[packaging];
    let start = ctx.params.get('start') === '0' ? 0 : Number(answer.resume_secs) || 0;
    const d = details.runtime_secs || 0;
    if (d && start > d - 3) start = 0;
    st.resumeSecs = start;

    await Promise.all([
      script(protocol === 'hls' ? '/web/vendor/hls.js' : '/web/vendor/dash.js'),
      script('/v1/player-events.js').catch((e) => { st.errors.push(`events: ${e.message}`); }),
    ]);
    if (!ctx.alive()) return teardown;
    if (window.CdnPlayerEvents) events = window.CdnPlayerEvents.create({ api: location.origin, title: slug });
    setCaptions(st.captions, false);
    status.textContent = `Starting ${protocol.toUpperCase()}${start ? ` at ${clock(start)}` : ''}…`;
    if (protocol === 'hls') startHls(start);
    else startDash(start);
    st.ready = true;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      teardown();
      throw e;
    }
    fail(e instanceof ApiError ? `Cannot play: ${e.message}` : `Cannot play: ${e.message || e}`);
  }

  function startHls(start) {
    const Hls = window.Hls;
    if (!Hls || !Hls.isSupported()) {
      fail('This browser cannot play HLS with Media Source Extensions.');
      return;
    }
    let recoveries = 0;
    hls = new Hls({
      ...(events ? events.cmcdConfig() : {}),
      startPosition: start > 0 ? start : -1,
      subtitleDisplay: st.captions,
    });
    Object.defineProperty(st, 'engine', { value: hls, configurable: true });
    if (events) events.attachHls(hls, video);
    hls.on(Hls.Events.MANIFEST_PARSED, () => {
      video.play().catch(() => paint());
    });
    // After hls.js has made its own choice for the new list (none: the samples' subtitles are not DEFAULT).
    hls.on(Hls.Events.SUBTITLE_TRACKS_UPDATED, () => setTimeout(applyCaptions, 0));
    hls.on(Hls.Events.FRAG_LOADED, (e, data) => sawHost(data.frag && data.frag.url));
    hls.on(Hls.Events.ERROR, (e, data) => {
      st.errors.push(`${data.type}/${data.details}`);
      if (!data.fatal) return;
      if (recoveries++ < 2 && data.type === Hls.ErrorTypes.NETWORK_ERROR) hls.startLoad();
      else if (recoveries <= 2 && data.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
      else fail(`The video cannot be played (${data.details}).`);
    });
    hls.loadSource(st.url);
    hls.attachMedia(video);
  }

  function startDash(start) {
    const dashjs = window.dashjs;
    if (!dashjs) {
      fail('The DASH player did not load.');
      return;
    }
    dash = dashjs.MediaPlayer().create();
    Object.defineProperty(st, 'engine', { value: dash, configurable: true });
    dash.updateSettings({ streaming: { text: { defaultEnabled: st.captions } } });
    if (events) events.attachDash(dash, video);
    const E = dashjs.MediaPlayer.events;
    dash.on(E.STREAM_INITIALIZED, () => applyCaptions());
    dash.on(E.FRAGMENT_LOADING_COMPLETED, (e) => sawHost(e.request && e.request.url));
    dash.on(E.ERROR, (e) => {
      const err = e.error || {};
      st.errors.push(`dash ${err.code}: ${err.message}`);
      fail(`The video cannot be played (${err.message || err.code || 'error'}).`);
    });
    dash.initialize(video, st.url, true, start > 0 ? start : NaN);
  }

  paint();
  return teardown;
}

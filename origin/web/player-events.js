// Player events for the CDN's control plane: load this script (the control plane serves it at
// /v1/player-events.js), then
//
//   const events = CdnPlayerEvents.create({ api: 'https://api.example', title: 'test-pattern' });
//   events.attachHls(hls, video);          // an hls.js instance, before hls.loadSource()
//   events.attachDash(player, video);      // or a dash.js MediaPlayer, before player.initialize()
//
// It reports the session's start (with the startup time), a heartbeat every 10 s of playing, seeks, stalls
// (with their length), bitrate switches, errors and the end (completed, abandoned when the page goes away, or
// error) to POST <api>/v1/events in batches, with CMCD keys (CTA-5004: sid, cid, br, bl, bs, su, d, ot, tb, mtp)
// where they apply. It also turns on the players' own CMCD with the same session and content ids, so the
// edges' logs and summaries and these events name one session. Every event has a unique id: a batch sent twice
// (a retry) is counted once. Nothing here throws into the player: reporting failures are dropped, bounded.
(function (global) {
  'use strict';
  const MAX_QUEUE = 500;
  const MAX_BATCH = 50;

  function uid() {
    if (global.crypto && global.crypto.randomUUID) return global.crypto.randomUUID();
    return Date.now().toString(36) + '-' + Math.random().toString(36).slice(2, 12);
  }

  function create(options) {
    const api = String(options.api || '').replace(/\/+$/, '');
    const title = options.title;
    const session = options.session || uid();
    const flushMs = options.flushMs || 5000;
    const heartbeatMs = options.heartbeatMs || 10000;
    const queue = [];
    let seq = 0;
    let video = null;
    let loadStarted = performance.now();
    let started = false;
    let ended = false;
    let stallSince = null;
    let seeking = false;
    let bitrateKbps = null;
    let edge = null;
    let mtpKbps = null;
    let watchedMs = 0;
    let lastTick = null;
    let sent = 0;
    let dropped = 0;

    function bufferMs() {
      if (!video || !video.buffered) return null;
      const t = video.currentTime;
      for (let i = 0; i < video.buffered.length; i++) {
        if (video.buffered.start(i) <= t && t <= video.buffered.end(i)) {
          return Math.round((video.buffered.end(i) - t) * 1000);
        }
      }
      return 0;
    }

    function emit(kind, fields) {
      const event = Object.assign({
        id: session.slice(0, 40) + '-' + (seq++),
        kind,
        session,
        title,
        ts: Date.now(),
      }, fields || {});
      if (bitrateKbps != null && event.br == null) event.br = Math.round(bitrateKbps);
      const bl = bufferMs();
      if (bl != null && event.bl == null) event.bl = bl;
      if (mtpKbps != null && event.mtp == null) event.mtp = Math.round(mtpKbps);
      if (edge && event.edge == null) event.edge = edge;
      if (queue.length >= MAX_QUEUE) { queue.shift(); dropped++; }
      queue.push(event);
      if (queue.length >= MAX_BATCH || kind === 'end' || kind === 'error') flush(kind === 'end');
    }

    function flush(leaving) {
      while (queue.length) {
        const batch = queue.splice(0, MAX_BATCH);
        const body = JSON.stringify({ events: batch });
        // text/plain needs no CORS preflight, and sendBeacon survives the page going away.
        if (leaving && navigator.sendBeacon) {
          if (navigator.sendBeacon(api + '/v1/events', new Blob([body], { type: 'text/plain' }))) sent += batch.length;
          continue;
        }
        fetch(api + '/v1/events', { method: 'POST', body, keepalive: true, headers: { 'content-type': 'text/plain' } })
          .then((r) => { if (r.ok) sent += batch.length; else dropped += batch.length; })
          .catch(() => { dropped += batch.length; });
      }
    }

    function tick() {
      const now = performance.now();
      if (lastTick != null && video && !video.paused && stallSince == null && !seeking) watchedMs += now - lastTick;
      lastTick = now;
    }

    function attachVideo(v) {
      video = v;
      v.addEventListener('playing', () => {
        tick();
        if (!started) {
          started = true;
          emit('start', { startup_ms: Math.round(performance.now() - loadStarted), su: false });
        }
        if (stallSince != null) {
          emit('stall', { duration_ms: Math.round(performance.now() - stallSince), bs: true });
          stallSince = null;
        }
      });
      v.addEventListener('waiting', () => {
        tick();
        if (started && !seeking && stallSince == null) stallSince = performance.now();
      });
      v.addEventListener('seeking', () => { tick(); seeking = true; stallSince = null; });
      v.addEventListener('seeked', () => {
        seeking = false;
        emit('seek', { position_ms: Math.round(v.currentTime * 1000) });
      });
      v.addEventListener('ended', () => { tick(); end('completed'); });
      v.addEventListener('error', () => {
        const e = v.error;
        emit('error', { code: 'media_' + (e ? e.code : 0), message: String(e && e.message || 'media error').slice(0, 200) });
      });
      setInterval(() => {
        tick();
        if (started && !ended && !v.paused) emit('heartbeat', { played_ms: Math.round(watchedMs), position_ms: Math.round(v.currentTime * 1000) });
      }, heartbeatMs);
      setInterval(() => flush(false), flushMs);
      global.addEventListener('pagehide', () => { tick(); end('abandoned'); });
    }

    function end(reason) {
      if (ended) return;
      ended = true;
      emit('end', { reason, watched_ms: Math.round(watchedMs) });
    }

    function switched(toKbps) {
      if (bitrateKbps != null && Math.round(toKbps) !== Math.round(bitrateKbps)) {
        emit('bitrate_switch', { from_kbps: Math.round(bitrateKbps), to_kbps: Math.round(toKbps) });
      }
      bitrateKbps = toKbps;
    }

    function edgeOf(url) {
      try { edge = new URL(url, location.href).host; } catch (e) { /* keep the last */ }
    }

    return {
      session,
      stats: () => ({ queued: queue.length, sent, dropped, started, ended }),
      flush: () => flush(false),
      end,
      attachHls(hls, v) {
        // hls.js sends CMCD on its own requests when configured at creation; `cmcdConfig()` gives the config.
        const H = global.Hls;
        attachVideo(v);
        hls.on(H.Events.LEVEL_SWITCHED, (e, d) => {
          const level = hls.levels && hls.levels[d.level];
          if (level && level.bitrate) switched(level.bitrate / 1000);
        });
        hls.on(H.Events.FRAG_LOADED, (e, d) => {
          if (d.frag && d.frag.url) edgeOf(d.frag.url);
          const stats = d.frag && d.frag.stats;
          if (stats && stats.loading && stats.loaded && stats.loading.end > stats.loading.first) {
            mtpKbps = (stats.loaded * 8) / (stats.loading.end - stats.loading.first);
          }
        });
        hls.on(H.Events.ERROR, (e, d) => {
          if (d.fatal) emit('error', { code: String(d.details || d.type).slice(0, 64), message: String(d.reason || d.details || '').slice(0, 200) });
        });
      },
      attachDash(player, v) {
        const events = global.dashjs.MediaPlayer.events;
        attachVideo(v);
        player.updateSettings({ streaming: { cmcd: { enabled: true, sid: session, cid: title } } });
        player.on(events.QUALITY_CHANGE_RENDERED, (e) => {
          if (e.mediaType !== 'video') return;
          const list = player.getBitrateInfoListFor ? player.getBitrateInfoListFor('video') : null;
          const info = list && list[e.newQuality];
          if (info && info.bitrate) switched(info.bitrate / 1000);
        });
        player.on(events.FRAGMENT_LOADING_COMPLETED, (e) => {
          if (e.request && e.request.url) edgeOf(e.request.url);
          if (e.request && e.request.mediaType === 'video' && e.request.bytesTotal && e.request.requestEndDate && e.request.firstByteDate) {
            const ms = e.request.requestEndDate - e.request.firstByteDate;
            if (ms > 0) mtpKbps = (e.request.bytesTotal * 8) / ms;
          }
        });
        player.on(events.ERROR, (e) => {
          const err = e.error || {};
          emit('error', { code: 'dash_' + (err.code || 0), message: String(err.message || '').slice(0, 200) });
        });
      },
      // The hls.js config that makes its requests carry CMCD with this session's ids.
      cmcdConfig() {
        return { cmcd: { sessionId: session, contentId: title, useHeaders: false } };
      },
    };
  }

  global.CdnPlayerEvents = { create };
})(typeof window !== 'undefined' ? window : globalThis);

// The control plane's JSON API as the page uses it: same origin, the session in its HttpOnly cookie
// (`credentials: 'same-origin'`), errors as ApiError with the answer's `error` and `reason`.

export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super((body && (body.reason || body.error)) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.retryAfter = retryAfter;
  }
}

/// `method path` with an optional JSON body; resolves to the answer's JSON (null for 204).
export async function api(method, path, body, options = {}) {
  const init = {
    method,
    credentials: 'same-origin',
    headers: { accept: 'application/json' },
    keepalive: Boolean(options.keepalive),
    signal: options.signal,
  };
  if (body !== undefined) {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const retry = response.headers.get('retry-after');
    throw new ApiError(response.status, data, retry ? parseInt(retry, 10) : null);
  }
  return data;
}

const enc = encodeURIComponent;

export const Api = {
  me: () => api('GET', '/v1/me'),
  signIn: (email, password) => api('POST', '/v1/sessions', { email, password }),
  signUp: (email, password) => api('POST', '/v1/accounts', { email, password }),
  signOut: () => api('DELETE', '/v1/sessions/current'),
  addProfile: (name) => api('POST', '/v1/profiles', { name }),
  profile: (id) => api('GET', `/v1/profiles/${enc(id)}`),
  putProfile: (id, doc) => api('PUT', `/v1/profiles/${enc(id)}`, doc),
  home: (id) => api('GET', `/v1/profiles/${enc(id)}/home`),
  history: (id) => api('GET', `/v1/profiles/${enc(id)}/history`),
  progress: (id, body, keepalive) => api('POST', `/v1/profiles/${enc(id)}/progress`, body, { keepalive }),
  search: (q, limit, signal) => api('GET', `/v1/search?q=${enc(q)}&limit=${limit}`, undefined, { signal }),
  title: (slug) => api('GET', `/v1/titles/${enc(slug)}`),
  similar: (slug, limit) => api('GET', `/v1/titles/${enc(slug)}/similar?limit=${limit}`),
  playback: (title, profile, protocol) => api('POST', '/v1/playback', { title, profile, protocol }),
};

//! The viewer's side of the API (`control::api` hands these routes here), every JSON answer `private, no-store`
//! (artwork and the web front end's files are the same for everyone: `control::api::audience`):
//! - `POST /v1/accounts` `{email, password}`: a new account with one profile;
//! - `POST /v1/sessions` `{email, password}`: signs in — a session cookie (`HttpOnly`, `SameSite=Lax`, `Secure`
//!   unless `accounts.secure_cookies = false`) and the same token in the answer for `Authorization: Bearer`;
//!   `DELETE /v1/sessions/current`: signs out; `GET /v1/me`: the account and its profiles;
//! - `POST /v1/profiles` `{name}`; `GET`/`PUT /v1/profiles/<id>` (`{version, name?, settings?}`);
//! - `POST /v1/profiles/<id>/progress` `{title, position_secs, duration_secs}`; `GET …/history`;
//! - `GET`/`PUT /v1/profiles/<id>/ratings` (`{version, items: {slug: 1-5}}`) and `…/list` (`{version, items:
//!   [slug]}`); a `PUT` naming a stale version gets 409 with the current document;
//! - `GET /v1/profiles/<id>/home`: the rows of the home page (`control::home`);
//! - `GET /v1/titles/<slug>/artwork`;
//! - the web front end: `GET /` and `GET /web/<file>` from `web.dir`, and the players from its `node_modules`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::control::accounts::{CreateError, SESSION_COOKIE, Session, SigninError, profile_view};
use crate::control::api::{ApiError, ApiService, error_response, json_response, shown};
use crate::control::docs::{Doc, WriteError};
use crate::media::handler::Body;

/// Largest viewer document a client may write (a profile's ratings or list).
const MAX_DOC_BODY_BYTES: usize = 256 * 1024;
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Titles a profile's history, ratings and list hold at most.
pub const MAX_HISTORY: usize = 500;
const MAX_RATINGS: usize = 10_000;
const MAX_LIST: usize = 1_000;
const MAX_SLUG_BYTES: usize = 128;
/// A title counts as finished past this share of its duration (or within the last 30 s).
const FINISHED_SHARE: f64 = 0.95;
const FINISHED_TAIL_SECS: f64 = 30.0;
/// Largest artwork served.
const MAX_ARTWORK_BYTES: u64 = 4 << 20;

/// Who is calling: a signed-in viewer, a server with a service credential, or nobody known.
pub(crate) enum Caller {
    Viewer(Session, String),
    Service,
    Anonymous,
}

/// What a request presents to be recognised.
pub(crate) enum Credentials {
    Service,
    /// Session tokens to look up (none: anonymous).
    Tokens(Vec<String>),
}

/// Whether `control::viewer` answers this route.
pub(crate) fn handles(path: &str) -> bool {
    path == "/"
        || path.starts_with("/web/")
        || path == "/v1/accounts"
        || path == "/v1/sessions"
        || path.starts_with("/v1/sessions/")
        || path == "/v1/me"
        || path == "/v1/profiles"
        || path.starts_with("/v1/profiles/")
        || (path.starts_with("/v1/titles/") && path.ends_with("/artwork"))
}

/// A JSON answer with the cookie it sets, if any.
struct Reply {
    status: StatusCode,
    value: Value,
    cookie: Option<String>,
    /// Seconds for `Retry-After`.
    retry_after: Option<i64>,
}

impl Reply {
    fn ok(value: Value) -> Self {
        Reply {
            status: StatusCode::OK,
            value,
            cookie: None,
            retry_after: None,
        }
    }
    fn created(value: Value) -> Self {
        Reply {
            status: StatusCode::CREATED,
            value,
            cookie: None,
            retry_after: None,
        }
    }
}

pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn store_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(anyhow::anyhow!("viewer documents: {e}"))
}

fn unauthorized() -> ApiError {
    ApiError(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "sign in first (POST /v1/sessions)".into(),
    )
}

/// 409 with the document as it is now.
fn conflict(current: Option<Doc>, view: impl Fn(&Doc) -> Value) -> Reply {
    Reply {
        status: StatusCode::CONFLICT,
        value: json!({
            "error": "conflict",
            "reason": "the document changed since the version this write names: read it again",
            "current_version": current.as_ref().map_or(0, |d| d.version),
            "current": current.as_ref().map(view),
        }),
        cookie: None,
        retry_after: None,
    }
}

/// The values of every `Cookie` header's `name` pairs, in order.
fn cookies<'a, B>(req: &'a Request<B>, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
}

fn bearer<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
}

impl ApiService {
    /// What a request presents: a service credential (`Authorization: Bearer`), else the session tokens (the
    /// bearer token and the session cookies, four at most; none: anonymous).
    pub(crate) fn credentials<B>(&self, req: &Request<B>) -> Credentials {
        let bearer = bearer(req);
        if bearer.is_some()
            && self
                .service_tokens
                .iter()
                .any(|secret| shared::auth::bearer_ok(req.headers(), Some(secret)))
        {
            return Credentials::Service;
        }
        Credentials::Tokens(
            bearer
                .into_iter()
                .chain(cookies(req, SESSION_COOKIE))
                .take(4)
                .map(str::to_string)
                .collect(),
        )
    }

    /// Who is calling: a service credential, else a session from the bearer token or the session cookie.
    pub(crate) async fn caller<B>(&self, req: &Request<B>) -> Result<Caller, ApiError> {
        let tokens = match self.credentials(req) {
            Credentials::Service => return Ok(Caller::Service),
            Credentials::Tokens(tokens) => tokens,
        };
        self.session_caller(tokens).await
    }

    /// The first of `tokens` that opens a live session, else anonymous.
    pub(crate) async fn session_caller(&self, tokens: Vec<String>) -> Result<Caller, ApiError> {
        let now = now_secs();
        for token in tokens {
            if let Some(session) = self
                .accounts
                .session(&token, now)
                .await
                .map_err(store_error)?
            {
                return Ok(Caller::Viewer(session, token));
            }
        }
        Ok(Caller::Anonymous)
    }

    async fn signed_in<B>(&self, req: &Request<B>) -> Result<(Session, String), ApiError> {
        match self.caller(req).await? {
            Caller::Viewer(session, token) => Ok((session, token)),
            _ => Err(unauthorized()),
        }
    }

    /// The session's profile `id`, or 404 (another account's profile is not told apart from none).
    async fn own_profile(&self, session: &Session, id: &str) -> Result<Doc, ApiError> {
        self.accounts
            .own_profile(session, id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::not_found(format!("no profile `{}`", shown(id))))
    }

    /// Answers a route [`handles`] accepts.
    pub(crate) async fn viewer<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path().to_string();
        let get = matches!(*req.method(), Method::GET | Method::HEAD);
        if get && (path == "/" || path.starts_with("/web/")) {
            return self.web_file(&path).await;
        }
        if get
            && let Some(slug) = path
                .strip_prefix("/v1/titles/")
                .and_then(|p| p.strip_suffix("/artwork"))
        {
            return match self.artwork(slug).await {
                Ok(response) => response,
                Err(e) => error_response(e),
            };
        }
        let answer = self.viewer_route(req, &path).await;
        let mut response = match answer {
            Ok(reply) => {
                let mut response = json_response(reply.status, &reply.value, None);
                if let Some(cookie) = reply.cookie
                    && let Ok(value) = HeaderValue::from_str(&cookie)
                {
                    response.headers_mut().insert(header::SET_COOKIE, value);
                }
                if let Some(secs) = reply.retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                }
                response
            }
            Err(e) => error_response(e),
        };
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        );
        response
    }

    async fn viewer_route<B>(&self, req: Request<B>, path: &str) -> Result<Reply, ApiError>
    where
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let method = req.method().clone();
        let now = now_secs();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (&method, parts.as_slice()) {
            (&Method::POST, ["v1", "accounts"]) => {
                let body: Value = read_json(req, super::api::MAX_BODY_BYTES).await?;
                let (email, password) = credentials(&body)?;
                match self.accounts.create_account(email, password, now).await {
                    Ok(account) => {
                        let session = Session {
                            account: account["id"].as_str().unwrap_or_default().into(),
                            email: account["email"].as_str().unwrap_or_default().into(),
                            expires: 0,
                        };
                        let profiles = self
                            .accounts
                            .profiles(&session)
                            .await
                            .map_err(store_error)?;
                        Ok(Reply::created(json!({
                            "account": session.account, "email": session.email, "profiles": profiles,
                        })))
                    }
                    Err(CreateError::Exists) => Err(ApiError(
                        StatusCode::CONFLICT,
                        "exists",
                        "an account with this email exists: sign in".into(),
                    )),
                    Err(CreateError::Invalid(reason)) => Err(ApiError::bad(reason)),
                    Err(CreateError::Store(e)) => Err(store_error(e)),
                }
            }
            (&Method::POST, ["v1", "sessions"]) => {
                let client = self.client_ip(&req);
                let body: Value = read_json(req, super::api::MAX_BODY_BYTES).await?;
                let (email, password) = credentials(&body)?;
                match self.accounts.sign_in(email, password, client, now).await {
                    Ok((token, session, _)) => {
                        self.metrics.signins.with_label_values(&["signed_in"]).inc();
                        let profiles = self
                            .accounts
                            .profiles(&session)
                            .await
                            .map_err(store_error)?;
                        Ok(Reply {
                            status: StatusCode::CREATED,
                            cookie: Some(
                                self.session_cookie(&token, self.accounts.session_ttl_secs),
                            ),
                            value: json!({
                                "token": token, "account": session.account, "email": session.email,
                                "expires": session.expires, "profiles": profiles,
                            }),
                            retry_after: None,
                        })
                    }
                    Err(SigninError::Limited(wait)) => {
                        self.metrics.signins.with_label_values(&["limited"]).inc();
                        Ok(Reply {
                            status: StatusCode::TOO_MANY_REQUESTS,
                            value: json!({
                                "error": "too_many_attempts",
                                "reason": format!("too many failed sign-ins: try again in {wait} s"),
                            }),
                            cookie: None,
                            retry_after: Some(wait),
                        })
                    }
                    Err(SigninError::Wrong) => {
                        self.metrics.signins.with_label_values(&["refused"]).inc();
                        Err(ApiError(
                            StatusCode::UNAUTHORIZED,
                            "wrong_credentials",
                            "the email or the password is wrong".into(),
                        ))
                    }
                    Err(SigninError::Store(e)) => Err(store_error(e)),
                }
            }
            (&Method::DELETE, ["v1", "sessions", "current"]) => {
                let (_, token) = self.signed_in(&req).await?;
                self.accounts.sign_out(&token).await.map_err(store_error)?;
                Ok(Reply {
                    status: StatusCode::OK,
                    value: json!({ "signed_out": true }),
                    cookie: Some(self.session_cookie("", 0)),
                    retry_after: None,
                })
            }
            (&Method::GET | &Method::HEAD, ["v1", "me"]) => {
                let (session, _) = self.signed_in(&req).await?;
                let profiles = self
                    .accounts
                    .profiles(&session)
                    .await
                    .map_err(store_error)?;
                Ok(Reply::ok(json!({
                    "account": session.account, "email": session.email, "expires": session.expires,
                    "profiles": profiles,
                })))
            }
            (&Method::POST, ["v1", "profiles"]) => {
                let (session, _) = self.signed_in(&req).await?;
                let body: Value = read_json(req, super::api::MAX_BODY_BYTES).await?;
                let name = body["name"].as_str().unwrap_or_default();
                match self.accounts.add_profile(&session, name, now).await {
                    Ok(profile) => Ok(Reply::created(profile)),
                    Err(CreateError::Invalid(reason)) => Err(ApiError::bad(reason)),
                    Err(CreateError::Exists) => Err(ApiError::bad("the profile exists")),
                    Err(CreateError::Store(e)) => Err(store_error(e)),
                }
            }
            (_, ["v1", "profiles", id, rest @ ..]) => {
                let (session, _) = self.signed_in(&req).await?;
                let id = id.to_string();
                let profile = self.own_profile(&session, &id).await?;
                self.profile_route(req, &id, profile, rest, now).await
            }
            _ => Err(ApiError::not_found(format!(
                "no route for {method} {}",
                shown(path)
            ))),
        }
    }

    async fn profile_route<B>(
        &self,
        req: Request<B>,
        id: &str,
        profile: Doc,
        rest: &[&str],
        now: i64,
    ) -> Result<Reply, ApiError>
    where
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let docs = &self.accounts.docs;
        let method = req.method().clone();
        match (&method, rest) {
            (&Method::GET | &Method::HEAD, []) => Ok(Reply::ok(profile_view(id, &profile))),
            (&Method::PUT, []) => {
                let body: Value = read_json(req, super::api::MAX_BODY_BYTES).await?;
                let version = version_of(&body)?;
                let mut next = profile.body.clone();
                if let Some(name) = body.get("name") {
                    next["name"] = json!(
                        name.as_str()
                            .and_then(crate::control::accounts::profile_name)
                            .ok_or_else(|| ApiError::bad("name must be 1 to 40 characters"))?
                    );
                }
                if let Some(settings) = body.get("settings") {
                    if !settings.is_object() || settings.to_string().len() > 4096 {
                        return Err(ApiError::bad(
                            "settings must be a JSON object of 4 KiB at most",
                        ));
                    }
                    next["settings"] = settings.clone();
                }
                match docs.replace("profile", id, version, &next, now).await {
                    Ok(doc) => Ok(Reply::ok(profile_view(id, &doc))),
                    Err(WriteError::Conflict(current)) => {
                        Ok(conflict(current, |d| profile_view(id, d)))
                    }
                    Err(WriteError::Store(e)) => Err(store_error(e)),
                }
            }
            (&Method::POST, ["progress"]) => {
                let body: Value = read_json(req, super::api::MAX_BODY_BYTES).await?;
                let slug = slug_of(&body["title"])?;
                let position = body["position_secs"]
                    .as_f64()
                    .filter(|p| p.is_finite() && *p >= 0.0)
                    .ok_or_else(|| ApiError::bad("position_secs must be a number ≥ 0"))?;
                let duration = body["duration_secs"]
                    .as_f64()
                    .filter(|d| d.is_finite() && *d > 0.0)
                    .ok_or_else(|| ApiError::bad("duration_secs must be a number > 0"))?;
                self.title(&slug).await?;
                let doc =
                    record_progress(self, id, &slug, position.min(duration), duration, now).await?;
                Ok(Reply::ok(json!({ "version": doc.version })))
            }
            (&Method::GET | &Method::HEAD, ["history"]) => {
                let doc = docs.get("history", id).await.map_err(store_error)?;
                Ok(Reply::ok(history_view(doc.as_ref())))
            }
            (&Method::GET | &Method::HEAD, [kind @ ("ratings" | "list")]) => {
                let doc = docs.get(kind, id).await.map_err(store_error)?;
                Ok(Reply::ok(items_view(kind, doc.as_ref())))
            }
            (&Method::PUT, [kind @ ("ratings" | "list")]) => {
                let body: Value = read_json(req, MAX_DOC_BODY_BYTES).await?;
                let version = version_of(&body)?;
                let items = checked_items(kind, &body["items"])?;
                let next = json!({ "items": items });
                let written = if version == 0 {
                    docs.create(kind, id, &next, now).await
                } else {
                    docs.replace(kind, id, version, &next, now).await
                };
                match written {
                    Ok(doc) => Ok(Reply::ok(items_view(kind, Some(&doc)))),
                    Err(WriteError::Conflict(current)) => {
                        Ok(conflict(current, |d| items_view(kind, Some(d))))
                    }
                    Err(WriteError::Store(e)) => Err(store_error(e)),
                }
            }
            (&Method::GET | &Method::HEAD, ["home"]) => {
                let rows = crate::control::home::rows(self, id, now).await?;
                Ok(Reply::ok(json!({ "profile": id, "rows": rows })))
            }
            _ => Err(ApiError::not_found(format!(
                "no route for {method} /v1/profiles/{}/{}",
                shown(id),
                shown(&rest.join("/"))
            ))),
        }
    }

    fn session_cookie(&self, token: &str, max_age: i64) -> String {
        format!(
            "{SESSION_COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
            if self.secure_cookies { "; Secure" } else { "" }
        )
    }

    /// A title's artwork from the store.
    async fn artwork(&self, slug: &str) -> Result<Response<Body>, ApiError> {
        let title = self.title(slug).await?;
        let key = title.summary.artwork_key.clone().ok_or_else(|| {
            ApiError::not_found(format!("title `{}` has no artwork", shown(slug)))
        })?;
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| ApiError::not_found("artwork is off (no store)"))?;
        let (_, bytes) = store
            .read_small(&key, MAX_ARTWORK_BYTES)
            .await
            .map_err(|(e, _)| ApiError(e.status(), "store", e.to_string()))?;
        let bytes = bytes.ok_or_else(|| ApiError::not_found("the artwork is larger than 4 MiB"))?;
        Ok(file_response(
            bytes,
            content_type(&key),
            "public, max-age=3600",
        ))
    }

    /// A file of the web front end: `/` is `index.html`; `/web/vendor/{hls,dash}.js` are the players from
    /// `node_modules`; any other `/web/<name>` a file of the front end's own kinds, no folders above it.
    async fn web_file(&self, path: &str) -> Response<Body> {
        let Some(dir) = &self.web_dir else {
            return error_response(ApiError::not_found("the web front end is off: set web.dir"));
        };
        let (file, cache) = match path {
            "/" => (dir.join("index.html"), "no-cache"),
            "/web/vendor/hls.js" => (
                dir.join("node_modules/hls.js/dist/hls.min.js"),
                "public, max-age=86400",
            ),
            "/web/vendor/dash.js" => (
                dir.join("node_modules/dashjs/dist/modern/umd/dash.all.min.js"),
                "public, max-age=86400",
            ),
            other => match web_name(other.trim_start_matches("/web/")) {
                Some(name) => (dir.join(name), "no-cache"),
                None => {
                    return error_response(ApiError::not_found(format!(
                        "no file `{}`",
                        shown(other)
                    )));
                }
            },
        };
        match tokio::fs::read(&file).await {
            Ok(bytes) => file_response(
                Bytes::from(bytes),
                content_type(&file.to_string_lossy()),
                cache,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let hint = if path.starts_with("/web/vendor/") {
                    " (run `npm ci` in the web folder)"
                } else {
                    ""
                };
                error_response(ApiError::not_found(format!(
                    "no file `{}`{hint}",
                    shown(path)
                )))
            }
            Err(e) => error_response(ApiError::internal(anyhow::anyhow!(
                "reading {}: {e}",
                file.display()
            ))),
        }
    }
}

/// A front-end file's name under `web.dir`: plain names and folders (no `.`/`..` parts, no hidden files, not
/// `node_modules`) of the front end's own file types.
fn web_name(name: &str) -> Option<PathBuf> {
    const KINDS: [&str; 10] = [
        "html", "js", "mjs", "css", "svg", "png", "jpg", "ico", "json", "map",
    ];
    let parts: Vec<&str> = name.split('/').collect();
    let plain = parts.iter().all(|p| {
        !p.is_empty()
            && !p.starts_with('.')
            && *p != "node_modules"
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    });
    let kind = name.rsplit_once('.').map(|(_, k)| k)?;
    (plain && KINDS.contains(&kind)).then(|| parts.iter().collect::<PathBuf>())
}

fn content_type(name: &str) -> &'static str {
    match Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
    {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "json" | "map" => "application/json",
        _ => "application/octet-stream",
    }
}

fn file_response(bytes: Bytes, content_type: &'static str, cache: &'static str) -> Response<Body> {
    let mut response = Response::new(shared::body::full(bytes));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn read_json<B>(req: Request<B>, limit: usize) -> Result<Value, ApiError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let body = shared::body::read_limited(req.into_body(), limit, BODY_TIMEOUT)
        .await
        .map_err(|e| ApiError(e.status(), "bad_body", e.to_string()))?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("the body must be a JSON object: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad("the body must be a JSON object"));
    }
    Ok(value)
}

fn credentials(body: &Value) -> Result<(&str, &str), ApiError> {
    match (body["email"].as_str(), body["password"].as_str()) {
        (Some(email), Some(password)) => Ok((email, password)),
        _ => Err(ApiError::bad(
            "the body must be {\"email\": \"…\", \"password\": \"…\"}",
        )),
    }
}

fn version_of(body: &Value) -> Result<i64, ApiError> {
    body["version"]
        .as_i64()
        .filter(|v| *v >= 0)
        .ok_or_else(|| ApiError::bad("version must be the version read (0 for a new document)"))
}

fn slug_of(value: &Value) -> Result<String, ApiError> {
    value
        .as_str()
        .filter(|s| is_slug(s))
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad("title must be a title's slug"))
}

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SLUG_BYTES
        && !s.contains(['/', '?', '#'])
        && !s.chars().any(char::is_control)
}

pub(crate) fn limit_param(
    query: Option<&str>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    let mut limit = default;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad(format!("limit must be 1 to {max}, not `{}`", shown(&value)))
                    })?
            }
            other => {
                return Err(ApiError::bad(format!(
                    "unknown parameter `{}`",
                    shown(other)
                )));
            }
        }
    }
    Ok(limit)
}

/// A ratings (`{slug: 1-5}`) or list (`[slug]`) document's items, checked.
fn checked_items(kind: &str, items: &Value) -> Result<Value, ApiError> {
    if kind == "ratings" {
        let map = items
            .as_object()
            .ok_or_else(|| ApiError::bad("items must be an object of slug → rating 1-5"))?;
        if map.len() > MAX_RATINGS {
            return Err(ApiError::bad(format!("{MAX_RATINGS} ratings at most")));
        }
        for (slug, rating) in map {
            if !is_slug(slug) || !rating.as_i64().is_some_and(|r| (1..=5).contains(&r)) {
                return Err(ApiError::bad(format!(
                    "rating of `{}`: a title's slug and a whole number 1 to 5",
                    shown(slug)
                )));
            }
        }
        Ok(items.clone())
    } else {
        let list = items
            .as_array()
            .ok_or_else(|| ApiError::bad("items must be an array of slugs"))?;
        if list.len() > MAX_LIST {
            return Err(ApiError::bad(format!("{MAX_LIST} titles at most")));
        }
        let mut seen = std::collections::HashSet::new();
        for slug in list {
            let slug = slug
                .as_str()
                .filter(|s| is_slug(s))
                .ok_or_else(|| ApiError::bad("items must be titles' slugs"))?;
            if !seen.insert(slug) {
                return Err(ApiError::bad(format!("`{}` is listed twice", shown(slug))));
            }
        }
        Ok(items.clone())
    }
}

fn items_view(kind: &str, doc: Option<&Doc>) -> Value {
    let empty = if kind == "ratings" {
        json!({})
    } else {
        json!([])
    };
    json!({
        "version": doc.map_or(0, |d| d.version),
        "items": doc.map_or(empty.clone(), |d| d.body.get("items").cloned().unwrap_or(empty)),
    })
}

/// One title of a viewing history.
#[derive(Debug, Clone, PartialEq)]
pub struct Watched {
    pub slug: String,
    pub position_secs: f64,
    pub duration_secs: f64,
    pub updated: i64,
    pub finished: bool,
}

/// A history document's titles, newest first.
pub fn watched(doc: Option<&Doc>) -> Vec<Watched> {
    let mut items: Vec<Watched> = doc
        .and_then(|d| d.body["items"].as_object())
        .into_iter()
        .flatten()
        .map(|(slug, v)| watched_item(slug, v))
        .collect();
    items.sort_by(|a, b| b.updated.cmp(&a.updated).then_with(|| a.slug.cmp(&b.slug)));
    items
}

/// One title of a history document, as stored under `items.<slug>`.
fn watched_item(slug: &str, item: &Value) -> Watched {
    Watched {
        slug: slug.to_string(),
        position_secs: item["position_secs"].as_f64().unwrap_or(0.0),
        duration_secs: item["duration_secs"].as_f64().unwrap_or(0.0),
        updated: item["updated"].as_i64().unwrap_or(0),
        finished: item["finished"].as_bool().unwrap_or(false),
    }
}

/// The history's entry for `slug`, if it has one.
fn watched_title(history: Option<&Doc>, slug: &str) -> Option<Watched> {
    let item = history?.body["items"].get(slug)?;
    Some(watched_item(slug, item))
}

fn history_view(doc: Option<&Doc>) -> Value {
    let items: Vec<Value> = watched(doc)
        .into_iter()
        .map(|w| {
            json!({
                "title": w.slug, "position_secs": w.position_secs, "duration_secs": w.duration_secs,
                "updated": w.updated, "finished": w.finished,
            })
        })
        .collect();
    json!({ "version": doc.map_or(0, |d| d.version), "items": items })
}

/// Whether a position is the end of a title.
pub fn is_finished(position_secs: f64, duration_secs: f64) -> bool {
    duration_secs > 0.0
        && (position_secs >= FINISHED_SHARE * duration_secs
            || (duration_secs > 2.0 * FINISHED_TAIL_SECS
                && duration_secs - position_secs <= FINISHED_TAIL_SECS))
}

/// Records where a profile is in a title (the server's own merge: read, change, write, again on a race); the
/// history keeps [`MAX_HISTORY`] titles, the least recent dropped first.
pub(crate) async fn record_progress(
    api: &ApiService,
    profile: &str,
    slug: &str,
    position_secs: f64,
    duration_secs: f64,
    now: i64,
) -> Result<Doc, ApiError> {
    let history = api
        .accounts
        .docs
        .get("history", profile)
        .await
        .map_err(store_error)?;
    record_progress_over(
        api,
        profile,
        history,
        slug,
        position_secs,
        duration_secs,
        now,
    )
    .await
}

/// [`record_progress`] over the history as already read (its first write costs no read).
pub(crate) async fn record_progress_over(
    api: &ApiService,
    profile: &str,
    history: Option<Doc>,
    slug: &str,
    position_secs: f64,
    duration_secs: f64,
    now: i64,
) -> Result<Doc, ApiError> {
    let finished = is_finished(position_secs, duration_secs);
    api.accounts
        .docs
        .update_from("history", profile, history, now, |body| {
            let mut body = body.cloned().unwrap_or_else(|| json!({ "items": {} }));
            if !body["items"].is_object() {
                body["items"] = json!({});
            }
            let items = body["items"].as_object_mut().expect("an object");
            // Once finished, a title stays finished until it is watched again from near the start.
            let was_finished = items
                .get(slug)
                .and_then(|v| v["finished"].as_bool())
                .unwrap_or(false);
            let finished = finished || (was_finished && position_secs > 0.1 * duration_secs);
            items.insert(
                slug.to_string(),
                json!({
                    "position_secs": position_secs, "duration_secs": duration_secs,
                    "updated": now, "finished": finished,
                }),
            );
            while items.len() > MAX_HISTORY {
                let oldest = items
                    .iter()
                    .min_by_key(|(_, v)| v["updated"].as_i64().unwrap_or(0))
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => items.remove(&k),
                    None => break,
                };
            }
            body
        })
        .await
        .map_err(store_error)
}

/// Where a profile left `slug` in its `history`, to resume there (0: from the start, also once finished).
pub(crate) fn resume_point(history: Option<&Doc>, slug: &str) -> f64 {
    watched_title(history, slug)
        .filter(|w| !w.finished)
        .map_or(0.0, |w| w.position_secs)
}

/// How long a start of a title stays recorded as its latest: another start within this adds nothing to the
/// history (the same title, at the start, a few seconds apart) and writes nothing.
pub const RESTART_WINDOW_SECS: i64 = 60;

/// Whether the history already records a start of `slug` at its beginning (nothing watched yet, not finished)
/// within [`RESTART_WINDOW_SECS`] before `now`: a player asking again (a retry, a reload) need not write it again.
pub(crate) fn just_started(history: Option<&Doc>, slug: &str, now: i64) -> bool {
    watched_title(history, slug).is_some_and(|w| {
        w.position_secs == 0.0
            && !w.finished
            && w.updated <= now
            && now - w.updated < RESTART_WINDOW_SECS
    })
}

/// The caller's address as the token binds it.
pub(crate) fn bound_client(peer: Option<IpAddr>) -> String {
    peer.map_or_else(String::new, |ip| ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_within_the_window_is_not_recorded_again() {
        let history = Doc {
            version: 3,
            body: json!({ "items": {
                "alpha": { "position_secs": 0.0, "duration_secs": 600.0, "updated": 1_000, "finished": false },
                "bravo": { "position_secs": 42.0, "duration_secs": 600.0, "updated": 1_000, "finished": false },
                "charlie": { "position_secs": 0.0, "duration_secs": 600.0, "updated": 1_000, "finished": true },
            }}),
            updated: 1_000,
        };
        let h = Some(&history);
        assert!(just_started(h, "alpha", 1_000));
        assert!(just_started(h, "alpha", 1_000 + RESTART_WINDOW_SECS - 1));
        assert!(
            !just_started(h, "alpha", 1_000 + RESTART_WINDOW_SECS),
            "the window has passed"
        );
        assert!(!just_started(h, "alpha", 999), "a clock behind the record");
        assert!(
            !just_started(h, "bravo", 1_000),
            "watched part of it: a resume, not a start"
        );
        assert!(!just_started(h, "charlie", 1_000), "finished");
        assert!(!just_started(h, "delta", 1_000), "not in the history");
        assert!(!just_started(None, "alpha", 1_000));
    }

    #[test]
    fn web_names_stay_inside_the_folder() {
        assert_eq!(web_name("app.js"), Some(PathBuf::from("app.js")));
        assert_eq!(
            web_name("img/logo.svg"),
            Some(PathBuf::from("img/logo.svg"))
        );
        for bad in [
            "../secret.js",
            "a/../../x.js",
            ".env.js",
            "node_modules/hls.js/dist/hls.min.js",
            "app.rs",
            "",
            "a//b.js",
            "a%2f..%2fb.js",
            "a\\b.js",
        ] {
            assert_eq!(web_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_end_of_a_title_counts_as_finished() {
        assert!(!is_finished(10.0, 24.0));
        assert!(is_finished(23.0, 24.0));
        assert!(is_finished(5_975.0, 6_000.0), "within the last 30 s");
        assert!(is_finished(5_700.0, 6_000.0), "95 %");
        assert!(!is_finished(5_000.0, 6_000.0));
        assert!(!is_finished(0.0, 0.0));
    }

    #[test]
    fn items_are_checked() {
        assert!(checked_items("ratings", &json!({"a": 5, "b": 1})).is_ok());
        assert!(checked_items("ratings", &json!({"a": 6})).is_err());
        assert!(checked_items("ratings", &json!({"a/b": 3})).is_err());
        assert!(checked_items("ratings", &json!(["a"])).is_err());
        assert!(checked_items("list", &json!(["a", "b"])).is_ok());
        assert!(checked_items("list", &json!(["a", "a"])).is_err());
        assert!(checked_items("list", &json!([1])).is_err());
    }
}

//! Playback and Content Steering, the API's routes that send viewers to edges (`control::api` routes to them):
//! `POST /v1/playback` ranks the edges for a viewer and signs the title's manifest URLs on each;
//! `GET /v1/steered/<manifest key>` is the manifest a Content Steering player starts from, with a pathway per
//! ranked edge; `GET /v1/steering/<slug>` is its steering server. The ranking is `control::steering`'s, over
//! the fleet's healthy edges (or `playback.edges` when registration is off); the manifests are
//! `control::steered`'s.

use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::token::Grant;

use crate::control::api::{ApiError, ApiService, shown};
use crate::control::docs::Doc;
use crate::control::fleet::is_name;
use crate::control::steering::{Candidate, SteeringPolicy};
use crate::control::viewer::{
    Caller, Credentials, bound_client, just_started, record_progress_over, resume_point,
};
use crate::media::handler::Body;

/// Largest manifest steered (a multivariant playlist or an MPD).
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// The configured edges (`playback.edges`), used when registration is off: no region, always healthy, equal.
pub struct PlaybackEdges(Vec<Candidate>);

impl PlaybackEdges {
    pub fn new(urls: Vec<String>) -> Self {
        PlaybackEdges(
            urls.into_iter()
                .map(|url| Candidate {
                    name: pathway_name(&url),
                    region: String::new(),
                    url,
                    capacity: 1,
                    load: 0,
                })
                .collect(),
        )
    }
}

/// A configured edge's name (and pathway id): its URL's host and port in the letters a pathway id allows
/// (`https://edge1.example:8443` → `edge1.example-8443`).
pub(crate) fn pathway_name(url: &str) -> String {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .trim_end_matches('/');
    let name: String = authority
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    name.trim_matches('-').to_string()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlaybackRequest {
    title: String,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    client: Option<String>,
    /// The viewer's region, when the caller knows it better than the CIDR table.
    #[serde(default)]
    region: Option<String>,
    /// The signed-in viewer's profile that plays (required with a session).
    #[serde(default)]
    profile: Option<String>,
}

impl PlaybackRequest {
    /// What a signed-in viewer may not ask for: an address to bind (a service credential's, for its clients).
    fn viewer_fault(&self) -> Option<ApiError> {
        self.client.is_some().then(|| {
            ApiError::bad(
                "client is for service credentials: a viewer's URLs are bound to the address the request came from",
            )
        })
    }
}

#[derive(Serialize)]
struct PlaybackEdge {
    /// Its base URL.
    edge: String,
    /// Its name (the pathway id in steered manifests).
    name: String,
    /// Its region (empty for `playback.edges`).
    region: String,
    /// Packaging name (`hls-ts`, `dash`, …) → signed manifest URL.
    manifests: std::collections::BTreeMap<String, String>,
}

/// Who asks for playback, as [`ApiService::player`] recognised them.
pub(crate) enum Player {
    Anonymous,
    Service,
    /// A signed-in viewer's own profile, with its viewing history as read with the session.
    Viewer {
        profile: String,
        history: Option<Doc>,
    },
}

impl ApiService {
    /// Who asks for this playback. A viewer's session, profile and history are read in one statement.
    pub(crate) async fn player(
        &self,
        credentials: Credentials,
        request: &PlaybackRequest,
    ) -> Result<Player, ApiError> {
        let tokens = match credentials {
            Credentials::Service => return Ok(Player::Service),
            Credentials::Tokens(tokens) if tokens.is_empty() => return Ok(Player::Anonymous),
            Credentials::Tokens(tokens) => tokens,
        };
        let Some(id) = request.profile.as_deref() else {
            return match self.session_caller(tokens).await? {
                Caller::Viewer(..) => Err(request.viewer_fault().unwrap_or_else(|| {
                    ApiError::bad("profile is required: one of the account's profiles (GET /v1/me)")
                })),
                _ => Ok(Player::Anonymous),
            };
        };
        let read = self
            .accounts
            .session_with_profile(&tokens, id, "history", crate::control::viewer::now_secs())
            .await
            .map_err(|e| ApiError::internal(anyhow::anyhow!("viewer documents: {e}")))?;
        if read.session.is_none() {
            return Ok(Player::Anonymous);
        }
        if let Some(fault) = request.viewer_fault() {
            return Err(fault);
        }
        if read.profile.is_none() {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("profile `{}` is not one of this account's", shown(id)),
            ));
        }
        Ok(Player::Viewer {
            profile: id.to_string(),
            history: read.beside,
        })
    }

    /// `POST /v1/playback`: for a signed-in viewer's profile (the token bound to the address the request came
    /// from, the play recorded in the profile's history, the answer saying where to resume) or a service
    /// credential (bound to `client`, else to the caller's address).
    pub(crate) async fn playback(
        &self,
        request: PlaybackRequest,
        player: Player,
        peer: Option<IpAddr>,
        control: Option<String>,
    ) -> Result<serde_json::Value, ApiError> {
        let (caller_label, signed_in) = match player {
            Player::Anonymous => {
                self.metrics
                    .playback_requests
                    .with_label_values(&["refused"])
                    .inc();
                return Err(ApiError(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "playback needs a signed-in profile (POST /v1/sessions) or a service credential".into(),
                ));
            }
            Player::Viewer { profile, history } => ("viewer", Some((profile, history))),
            Player::Service => ("service", None),
        };
        let protocol = request.protocol.as_deref();
        if protocol.is_some_and(|p| p != "hls" && p != "dash") {
            return Err(ApiError::bad("protocol must be `hls` or `dash`"));
        }
        if request.region.as_deref().is_some_and(|r| !is_name(r)) {
            return Err(ApiError::bad(
                "region must be 1 to 64 letters, digits, `-`, `_` or `.`",
            ));
        }
        let title = self.title(&request.title).await?;
        let offered: Vec<_> = title
            .packagings
            .iter()
            .filter(|p| protocol.is_none_or(|want| p.protocol == want))
            .collect();
        if offered.is_empty() {
            // A catalogue entry with nothing (of this protocol) to play: not a list of zero URLs.
            let kind = protocol.map_or(String::new(), |p| format!("{} ", p.to_uppercase()));
            return Err(ApiError::not_found(format!(
                "title `{}` has no {kind}packaging to play",
                title.summary.slug
            )));
        }
        let slug = &title.summary.slug;
        let client = match request.client.as_deref() {
            Some(c) => Some(
                c.parse::<IpAddr>()
                    .map_err(|_| ApiError::bad("client must be an IP address"))?,
            ),
            None => peer,
        };
        let viewer = client;
        let region = self
            .steering
            .viewer_region(request.region.as_deref(), viewer);
        let candidates = self.candidates();
        let ranked = self.steering.rank(slug, region.as_deref(), &candidates);
        let Some(&first) = ranked.first() else {
            return Err(no_edge());
        };
        let first = &candidates[first];
        if self.fleet_secret.is_some() {
            self.fleet.steered(&first.name);
        }
        // Only regions that have edges become label values: a client's hint cannot grow the metric.
        let known = |r: &str| candidates.iter().any(|c| c.region == r && !r.is_empty());
        let viewer_label = match region.as_deref() {
            Some(r) if known(r) => r,
            Some(_) => "other",
            None => "none",
        };
        let edge_label = if first.region.is_empty() {
            "none"
        } else {
            first.region.as_str()
        };
        self.metrics
            .playback_steered
            .with_label_values(&[viewer_label, edge_label])
            .inc();
        let expires = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + self.token_ttl_secs;
        let prefix = format!("/titles/{slug}/");
        let token = self.signing_keys.first().map(|key| {
            shared::token::sign(
                key,
                &Grant {
                    key_id: key.id.clone(),
                    expires,
                    prefix: prefix.clone(),
                    client: bound_client(client),
                },
            )
        });
        let edges: Vec<PlaybackEdge> = ranked
            .iter()
            .map(|&i| {
                let edge = &candidates[i];
                PlaybackEdge {
                    edge: edge.url.clone(),
                    name: edge.name.clone(),
                    region: edge.region.clone(),
                    manifests: offered
                        .iter()
                        .map(|p| {
                            (
                                p.name.clone(),
                                edge_url(&edge.url, token.as_deref(), &p.manifest_key),
                            )
                        })
                        .collect(),
                }
            })
            .collect();
        // The steered manifests on the control plane, for players that follow Content Steering.
        let steering: std::collections::BTreeMap<String, String> = control
            .map(|control| {
                offered
                    .iter()
                    .map(|p| {
                        let mut query = url::form_urlencoded::Serializer::new(String::new());
                        if let Some(token) = &token {
                            query.append_pair("token", token);
                        }
                        if let Some(region) = &region {
                            query.append_pair("region", region);
                        }
                        let query = query.finish();
                        let sep = if query.is_empty() { "" } else { "?" };
                        let url = format!("{control}/v1/steered/{}{sep}{query}", p.manifest_key);
                        (p.name.clone(), url)
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.metrics
            .playback_requests
            .with_label_values(&[caller_label])
            .inc();
        let resume_secs = match signed_in {
            Some((profile, history)) => {
                let resume = resume_point(history.as_ref(), slug);
                let duration = title.runtime_secs.unwrap_or(0) as f64;
                let now = crate::control::viewer::now_secs();
                if resume == 0.0 && duration > 0.0 && !just_started(history.as_ref(), slug, now) {
                    // The play is recorded: the title enters the profile's history (and the recommenders' data).
                    record_progress_over(self, &profile, history, slug, 0.0, duration, now).await?;
                }
                resume
            }
            None => 0.0,
        };
        Ok(json!({
            "title": slug,
            "resume_secs": resume_secs,
            "signed": token.is_some(),
            "expires": expires,
            "region": region,
            "edges": edges,
            "steering": steering,
        }))
    }

    /// The edges steering chooses from now: the fleet's healthy edges when registration is on, else the
    /// configured ones.
    fn candidates(&self) -> Vec<Candidate> {
        if self.fleet_secret.is_some() {
            self.fleet.candidates(crate::bus::now_ms())
        } else {
            self.edges.0.clone()
        }
    }

    /// Every edge's base URL by name, down ones included (a clone's base may be an edge that is down).
    fn edge_urls(&self) -> std::collections::HashMap<String, String> {
        if self.fleet_secret.is_some() {
            self.fleet
                .list(crate::bus::now_ms())
                .into_iter()
                .map(|e| (e.name, e.report.urls[0].clone()))
                .collect()
        } else {
            self.edges
                .0
                .iter()
                .map(|c| (c.name.clone(), c.url.clone()))
                .collect()
        }
    }

    /// The control plane's base URL as this client reaches it: `steering.public_url`, else the request's
    /// host over http (only a plain host and port: it is written into manifests).
    pub(crate) fn control_base<B>(&self, req: &Request<B>) -> Option<String> {
        if let Some(url) = &self.steering.public_url {
            return Some(url.trim_end_matches('/').to_string());
        }
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))?;
        let plain = !host.is_empty()
            && host.len() <= 255
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
        plain.then(|| format!("http://{host}"))
    }

    /// `GET /v1/steered/<manifest key>?token=&region=`: the title's manifest with one pathway per ranked edge.
    pub(crate) async fn steered_manifest<B>(
        &self,
        key: &str,
        req: &Request<B>,
    ) -> Result<Response<Body>, ApiError> {
        let params = Params::parse(req.uri().query());
        let slug = key
            .strip_prefix("titles/")
            .and_then(|rest| rest.split_once('/'))
            .map(|(slug, _)| slug)
            .ok_or_else(|| ApiError::not_found(format!("no manifest `{}`", shown(key))))?;
        let peer = self.client_ip(req);
        let token = if self.signing_keys.is_empty() {
            None
        } else {
            let token = params.get("token").ok_or_else(|| {
                ApiError(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "a steered manifest needs the playback answer's token".into(),
                )
            })?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let client = peer.map(|p| p.to_string()).unwrap_or_default();
            shared::token::verify(&self.signing_keys, token, &format!("/{key}"), &client, now)
                .map_err(|e| ApiError(StatusCode::FORBIDDEN, "forbidden", e.reason().into()))?;
            Some(token)
        };
        let title = self.title(slug).await?;
        let packaging = title
            .packagings
            .iter()
            .find(|p| p.manifest_key == key)
            .ok_or_else(|| ApiError::not_found(format!("no manifest `{}`", shown(key))))?;
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| ApiError::not_found("steered manifests are off (no store)"))?;
        let (_, text) = store
            .read_small(key, MAX_MANIFEST_BYTES)
            .await
            .map_err(|(e, _)| ApiError(e.status(), "store", e.to_string()))?;
        let text = text.ok_or_else(|| not_steerable("the manifest is larger than 1 MiB"))?;
        let text =
            std::str::from_utf8(&text).map_err(|_| not_steerable("the manifest is not UTF-8"))?;
        let region = params
            .get("region")
            .filter(|r| is_name(r))
            .map(str::to_string)
            .or_else(|| self.steering.viewer_region(None, peer));
        let candidates = self.candidates();
        let ranked = self.steering.rank(slug, region.as_deref(), &candidates);
        if ranked.is_empty() {
            return Err(no_edge());
        }
        let folder = &key[..key.rfind('/').map_or(0, |i| i + 1)];
        let pathways = ranked
            .iter()
            .take(self.steering.max_pathways)
            .map(|&i| {
                let edge = &candidates[i];
                let base = edge_url(&edge.url, token, folder);
                url::Url::parse(&base)
                    .map(|base| crate::control::steered::Pathway {
                        id: edge.name.clone(),
                        base,
                    })
                    .map_err(|e| not_steerable(&format!("edge `{}`: {e}", edge.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let control = self
            .control_base(req)
            .ok_or_else(|| ApiError::bad("no Host to name the steering server by"))?;
        let ids: Vec<&str> = pathways.iter().map(|p| p.id.as_str()).collect();
        let server = format!("{control}{}", steering_path(slug, region.as_deref(), &ids));
        let (body, content_type) = match packaging.protocol.as_str() {
            "hls" => (
                crate::control::steered::hls(text, &pathways, &server),
                "application/vnd.apple.mpegurl",
            ),
            _ => (
                crate::control::steered::dash(text, &pathways, &server),
                "application/dash+xml",
            ),
        };
        let body = body.map_err(|e| not_steerable(&e))?;
        Ok(steering_response(Bytes::from(body), content_type))
    }

    /// `GET /v1/steering/<slug>?…`: the steering manifest a player reloads every `TTL` seconds.
    pub(crate) async fn steering_manifest(
        &self,
        slug: &str,
        query: Option<&str>,
    ) -> Result<Response<Body>, ApiError> {
        let params = Params::parse(query);
        let title = self.title(slug).await?;
        let (protocol, current, throughput) =
            match (params.get("_HLS_pathway"), params.get("_DASH_pathway")) {
                (Some(pathway), _) => (
                    "hls",
                    Some(pathway.to_string()),
                    params.get("_HLS_throughput"),
                ),
                // dash.js lists the locations used since its last request, the one in use last.
                (None, Some(list)) => (
                    "dash",
                    list.trim_matches('"')
                        .rsplit(',')
                        .next()
                        .map(str::to_string),
                    params
                        .get("_DASH_throughput")
                        .and_then(|t| t.rsplit(',').next()),
                ),
                (None, None) => ("other", None, None),
            };
        let throughput: Option<f64> = throughput.and_then(|t| t.parse().ok());
        let region = params.get("region").filter(|r| is_name(r));
        let candidates = self.candidates();
        let ranked: Vec<String> = self
            .steering
            .rank(slug, region, &candidates)
            .into_iter()
            .take(16)
            .map(|i| candidates[i].name.clone())
            .collect();
        if ranked.is_empty() {
            return Err(no_edge());
        }
        // A pathway too slow for the title's lowest bitrate is not worth staying on.
        let lowest = title
            .packagings
            .iter()
            .flat_map(|p| &p.renditions)
            .filter(|r| r.kind == "video")
            .filter_map(|r| r.bandwidth)
            .min();
        let fast_enough = match (throughput, lowest) {
            (Some(t), Some(lowest)) if t > 0.0 => t >= lowest as f64,
            _ => true,
        };
        // Staying is for an edge as near as the best one: a viewer sent out of region while its region was
        // down goes back when it is up.
        let best_region = candidates
            .iter()
            .find(|c| c.name == ranked[0])
            .map(|c| c.region.as_str());
        let may_stay = |name: &str| {
            fast_enough
                && candidates.iter().find(|c| c.name == name).is_some_and(|c| {
                    Some(c.region.as_str()) == best_region && self.steering.has_room(c, &candidates)
                })
        };
        let priority = SteeringPolicy::priority(&ranked, current.as_deref(), may_stay);
        let decision = match current.as_deref() {
            None => "first",
            Some(c) if priority.first().is_some_and(|p| p == c) => "stay",
            Some(_) => "move",
        };
        self.metrics
            .steering_requests
            .with_label_values(&[protocol, decision])
            .inc();
        // The manifest's own pathways (its steering URL lists them): healthy edges beyond them become clones.
        let in_manifest: Vec<&str> = params
            .get("pathways")
            .map(|list| list.split(',').filter(|p| is_name(p)).take(16).collect())
            .unwrap_or_default();
        let known = self.edge_urls();
        let with_url = |name: &str| {
            let url = known.get(name)?;
            url::Url::parse(url).ok().map(|u| (name.to_string(), u))
        };
        let manifest: Vec<_> = in_manifest.iter().filter_map(|p| with_url(p)).collect();
        let wanted: Vec<_> = priority.iter().filter_map(|p| with_url(p)).collect();
        let clones = match protocol {
            "hls" | "dash" if !manifest.is_empty() => {
                crate::control::steering::clones(&manifest, &wanted, protocol == "hls")
            }
            _ => Vec::new(),
        };
        let mut answer = json!({
            "VERSION": 1,
            "TTL": self.steering.ttl_secs,
            "RELOAD-URI": steering_path(slug, region, &in_manifest),
            "PATHWAY-PRIORITY": priority,
        });
        if !clones.is_empty() {
            answer["PATHWAY-CLONES"] = json!(clones);
        }
        let mut body = serde_json::to_vec(&answer).expect("serializable");
        body.push(b'\n');
        Ok(steering_response(Bytes::from(body), "application/json"))
    }
}

/// The steering server's path for a title, a viewer's region and the pathways its manifest names.
fn steering_path(slug: &str, region: Option<&str>, pathways: &[&str]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(region) = region {
        query.append_pair("region", region);
    }
    if !pathways.is_empty() {
        query.append_pair("pathways", &pathways.join(","));
    }
    let query = query.finish();
    let sep = if query.is_empty() { "" } else { "?" };
    format!("/v1/steering/{slug}{sep}{query}")
}

/// The URL of `key` on the edge at `base`, with the token path element when signed.
fn edge_url(base: &str, token: Option<&str>, key: &str) -> String {
    let base = base.trim_end_matches('/');
    match token {
        Some(token) => format!("{base}/t/{token}/{key}"),
        None => format!("{base}/{key}"),
    }
}

/// The connection's peer address, which the listener puts in a request's extensions: the client's own, or a
/// proxy's (`ApiService::client_ip` tells the client's address behind a trusted proxy).
pub(crate) fn peer_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    req.extensions().get::<SocketAddr>().map(|a| a.ip())
}

fn no_edge() -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_edge",
        "no healthy edge to send the viewer to".into(),
    )
}

fn not_steerable(reason: &str) -> ApiError {
    ApiError(
        StatusCode::UNPROCESSABLE_ENTITY,
        "not_steerable",
        reason.to_string(),
    )
}

/// A steered manifest or a steering answer: personal (a token, a live ranking), so never stored, and open to
/// players on any site.
fn steering_response(body: Bytes, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(shared::body::full(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// A query string's parameters, decoded; the first of each name counts.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>) -> Self {
        Params(
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .take(32)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

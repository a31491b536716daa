//! Steering: which edges a viewer is sent to, best first. A viewer's region comes from an explicit hint or from
//! the configured CIDR-to-region table (longest prefix wins), else `steering.default_region`; the viewer's region
//! comes first, then the other regions nearest first by the configured distance table; within a region a title
//! is placed by rendezvous hashing with bounded loads (`shared::rendezvous::rank_bounded`, ε =
//! `steering.epsilon`), so a title's viewers meet in one edge's cache until that edge carries more than
//! (1 + ε)× its share. Pure: the fleet's healthy edges and their loads are passed in.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use shared::rendezvous::{Load, rank_bounded};

use crate::config::SteeringConfig;

/// An edge steering may choose: healthy, with its load now.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Its name (the pathway id of Content Steering).
    pub name: String,
    /// Empty for the configured list of `playback.edges` (no regions).
    pub region: String,
    /// Base URL players reach it at.
    pub url: String,
    /// Connections it can serve (its weight and the unit of its load bound); 0 counts as 1.
    pub capacity: u64,
    /// Connections open at its last report plus the players sent to it since.
    pub load: u64,
}

/// One `a.b.c.d/n` or `x:y::/n` of the CIDR table.
#[derive(Debug, Clone, PartialEq)]
struct Network {
    v6: bool,
    bits: u128,
    prefix: u8,
    region: String,
}

/// Parses `cidr` (`10.0.0.0/8`, `2001:db8::/32`); the address must have no bits past the prefix.
pub fn parse_cidr(cidr: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = cidr
        .split_once('/')
        .ok_or_else(|| format!("`{cidr}` is not a CIDR block such as 10.0.0.0/8"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{cidr}`: `{addr}` is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| format!("`{cidr}`: the prefix length must be 0 to {max}"))?;
    if let IpAddr::V6(v6) = addr
        && v6.to_ipv4_mapped().is_some()
    {
        return Err(format!("`{cidr}`: write an IPv4 block as IPv4"));
    }
    let (bits, _) = widen(addr);
    if bits & !mask(prefix, max) != 0 {
        return Err(format!("`{cidr}` has address bits past its /{prefix}"));
    }
    Ok((addr, prefix))
}

/// The address as 128 bits (IPv4 in the low 32) and whether it is IPv6; IPv4-mapped IPv6 counts as IPv4.
pub(crate) fn widen(addr: IpAddr) -> (u128, bool) {
    match addr {
        IpAddr::V4(v4) => (u32::from(v4) as u128, false),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (u32::from(v4) as u128, false),
            None => (u128::from(v6), true),
        },
    }
}

/// The top `prefix` bits of a `width`-bit address.
pub(crate) fn mask(prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    all & !((1u128 << (width - prefix)) - 1)
}

/// The steering policy made once from `[steering]`.
#[derive(Debug, Clone)]
pub struct SteeringPolicy {
    epsilon: f64,
    /// Longest prefix first.
    networks: Vec<Network>,
    default_region: Option<String>,
    /// Both directions of every configured pair.
    distances: HashMap<(String, String), u32>,
    pub max_pathways: usize,
    pub ttl_secs: u64,
    pub public_url: Option<String>,
}

impl Default for SteeringPolicy {
    fn default() -> Self {
        SteeringPolicy::new(&SteeringConfig::default()).expect("the defaults are valid")
    }
}

impl SteeringPolicy {
    /// Errors name the offending field (the config's `validate` reports them).
    pub fn new(config: &SteeringConfig) -> Result<Self, (String, String)> {
        let mut networks = Vec::new();
        for (i, network) in config.networks.iter().enumerate() {
            let (addr, prefix) = parse_cidr(&network.cidr)
                .map_err(|e| (format!("steering.network[{i}].cidr"), e))?;
            let (bits, v6) = widen(addr);
            networks.push(Network {
                v6,
                bits,
                prefix,
                region: network.region.clone(),
            });
        }
        networks.sort_by_key(|n| std::cmp::Reverse(n.prefix));
        let mut distances = HashMap::new();
        for (from, to) in &config.distances {
            for (other, distance) in to {
                distances.insert((from.clone(), other.clone()), *distance);
                distances
                    .entry((other.clone(), from.clone()))
                    .or_insert(*distance);
            }
        }
        Ok(SteeringPolicy {
            epsilon: config.epsilon,
            networks,
            default_region: config.default_region.clone(),
            distances,
            max_pathways: config.max_pathways,
            ttl_secs: config.ttl_secs,
            public_url: config.public_url.clone(),
        })
    }

    /// The viewer's region: the hint when given, else the longest CIDR match for `addr`, else the default.
    pub fn viewer_region(&self, hint: Option<&str>, addr: Option<IpAddr>) -> Option<String> {
        if let Some(hint) = hint.filter(|h| !h.is_empty()) {
            return Some(hint.to_string());
        }
        if let Some(addr) = addr {
            let (bits, v6) = widen(addr);
            let width = if v6 { 128 } else { 32 };
            if let Some(network) = self
                .networks
                .iter()
                .find(|n| n.v6 == v6 && bits & mask(n.prefix, width) == n.bits)
            {
                return Some(network.region.clone());
            }
        }
        self.default_region.clone()
    }

    /// The distance from `from` to `to`: 0 to itself, the configured one, or unknown (`u32::MAX`).
    fn distance(&self, from: &str, to: &str) -> u32 {
        if from == to {
            return 0;
        }
        self.distances
            .get(&(from.to_string(), to.to_string()))
            .copied()
            .unwrap_or(u32::MAX)
    }

    /// The indices of `edges` for `key` (a title) and a viewer in `region`, best first: the viewer's region
    /// first, then regions by distance (ties and unknown distances by name); within a region, bounded-load
    /// rendezvous. With no viewer region, one bounded-load ranking over all the edges.
    pub fn rank(&self, key: &str, region: Option<&str>, edges: &[Candidate]) -> Vec<usize> {
        let Some(region) = region else {
            return self.rank_within(key, &(0..edges.len()).collect::<Vec<_>>(), edges);
        };
        let mut by_region: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, edge) in edges.iter().enumerate() {
            by_region.entry(edge.region.as_str()).or_default().push(i);
        }
        let mut regions: Vec<(&str, Vec<usize>)> = by_region.into_iter().collect();
        // Stable: equal distances keep the regions' name order.
        regions.sort_by_key(|(name, _)| self.distance(region, name));
        regions
            .iter()
            .flat_map(|(_, members)| self.rank_within(key, members, edges))
            .collect()
    }

    fn rank_within(&self, key: &str, members: &[usize], edges: &[Candidate]) -> Vec<usize> {
        let capacity = |i: usize| edges[i].capacity.max(1) as f64;
        let nodes: Vec<(u64, f64)> = members
            .iter()
            .map(|&i| (shared::rendezvous::node_seed(&edges[i].name), capacity(i)))
            .collect();
        let loads: Vec<Load> = members
            .iter()
            .map(|&i| Load {
                current: edges[i].load as f64,
                capacity: capacity(i),
            })
            .collect();
        rank_bounded(key, &nodes, &loads, self.epsilon)
            .into_iter()
            .map(|j| members[j])
            .collect()
    }

    /// The pathway priority a steering server answers for a player now on `current` (its `_HLS_pathway` or
    /// `_DASH_pathway`): the ranking, except that a player on a pathway that is still healthy and has room
    /// stays on it (moving a playing viewer costs a cold cache and a quality dip), so steering moves players
    /// off failed or overloaded edges only. `ranked` are names, best first; `has_room` says whether an edge is
    /// within its load bound.
    pub fn priority(
        ranked: &[String],
        current: Option<&str>,
        has_room: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let mut priority = ranked.to_vec();
        if let Some(current) = current
            && let Some(at) = priority.iter().position(|p| p == current)
            && has_room(current)
        {
            let keep = priority.remove(at);
            priority.insert(0, keep);
        }
        priority
    }

    /// Whether `edge` (one of `edges`) is within its load bound among the edges of its region.
    pub fn has_room(&self, edge: &Candidate, edges: &[Candidate]) -> bool {
        let peers = edges.iter().filter(|e| e.region == edge.region);
        let (load, capacity) = peers.fold((0.0, 0.0), |(l, c), e| {
            (l + e.load as f64, c + e.capacity.max(1) as f64)
        });
        let share = edge.capacity.max(1) as f64 / capacity;
        let bound = ((1.0 + self.epsilon) * (load + 1.0) * share).ceil();
        edge.load as f64 + 1.0 <= bound
    }
}

/// A pathway a player makes from one it has (Content Steering `PATHWAY-CLONES`): `base`'s URIs with the host
/// replaced, so an edge that was not in the manifest when the player loaded it (it joined later, or was past
/// `max_pathways`) can still be steered to without a manifest that lists every edge.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PathwayClone {
    #[serde(rename = "BASE-ID")]
    pub base: String,
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "URI-REPLACEMENT")]
    pub replacement: UriReplacement,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UriReplacement {
    #[serde(rename = "HOST")]
    pub host: String,
}

/// Clones for the `wanted` edges (best first) that are not among the manifest's `pathways`. A clone keeps its
/// base's scheme, path and (for HLS, whose `HOST` replaces the host name only) port, so an edge is cloned from
/// a pathway with the same scheme, and for HLS the same port and another host name; DASH's `HOST` carries the
/// port (`host:port`, as dash.js applies it). An edge no pathway can be cloned into is left out.
pub fn clones(
    pathways: &[(String, url::Url)],
    wanted: &[(String, url::Url)],
    hls: bool,
) -> Vec<PathwayClone> {
    let mut clones = Vec::new();
    for (id, url) in wanted {
        if pathways.iter().any(|(p, _)| p == id) {
            continue;
        }
        let Some(host) = url.host_str() else { continue };
        let base = pathways.iter().find(|(_, base)| {
            base.scheme() == url.scheme()
                && (!hls
                    || (base.port_or_known_default() == url.port_or_known_default()
                        && base.host_str() != Some(host)))
        });
        if let Some((base, _)) = base {
            let host = match (hls, url.port()) {
                (false, Some(port)) => format!("{host}:{port}"),
                _ => host.to_string(),
            };
            clones.push(PathwayClone {
                base: base.clone(),
                id: id.clone(),
                replacement: UriReplacement { host },
            });
        }
    }
    clones
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NetworkRegion;

    fn edge(name: &str, region: &str, load: u64) -> Candidate {
        Candidate {
            name: name.into(),
            region: region.into(),
            url: format!("https://{name}.example"),
            capacity: 100,
            load,
        }
    }

    fn policy() -> SteeringPolicy {
        let mut config = SteeringConfig {
            default_region: Some("eu-west".into()),
            ..SteeringConfig::default()
        };
        for (cidr, region) in [
            ("10.0.0.0/8", "eu-west"),
            ("10.9.0.0/16", "us-east"),
            ("192.0.2.0/24", "ap-south"),
            ("2001:db8::/32", "us-east"),
        ] {
            config.networks.push(NetworkRegion {
                cidr: cidr.into(),
                region: region.into(),
            });
        }
        config.distances.insert(
            "eu-west".into(),
            BTreeMap::from([("us-east".into(), 80), ("ap-south".into(), 120)]),
        );
        config
            .distances
            .insert("us-east".into(), BTreeMap::from([("ap-south".into(), 200)]));
        SteeringPolicy::new(&config).unwrap()
    }

    #[test]
    fn the_region_comes_from_the_hint_then_the_longest_prefix_then_the_default() {
        let p = policy();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(
            p.viewer_region(Some("ap-south"), ip("10.1.2.3")).as_deref(),
            Some("ap-south")
        );
        assert_eq!(
            p.viewer_region(None, ip("10.1.2.3")).as_deref(),
            Some("eu-west")
        );
        assert_eq!(
            p.viewer_region(None, ip("10.9.2.3")).as_deref(),
            Some("us-east")
        );
        assert_eq!(
            p.viewer_region(None, ip("::ffff:10.9.2.3")).as_deref(),
            Some("us-east")
        );
        assert_eq!(
            p.viewer_region(None, ip("2001:db8::1")).as_deref(),
            Some("us-east")
        );
        assert_eq!(
            p.viewer_region(None, ip("192.0.2.200")).as_deref(),
            Some("ap-south")
        );
        assert_eq!(
            p.viewer_region(None, ip("192.0.3.1")).as_deref(),
            Some("eu-west")
        );
        assert_eq!(p.viewer_region(Some(""), None).as_deref(), Some("eu-west"));
        let bare = SteeringPolicy::default();
        assert_eq!(bare.viewer_region(None, ip("10.1.2.3")), None);
    }

    #[test]
    fn cidr_blocks_are_checked() {
        assert!(parse_cidr("10.0.0.0/8").is_ok());
        assert!(parse_cidr("0.0.0.0/0").is_ok());
        assert!(parse_cidr("2001:db8::/32").is_ok());
        assert!(parse_cidr("::/0").is_ok());
        assert!(parse_cidr("10.0.0.1/32").is_ok());
        for bad in [
            "10.0.0.0",
            "10.0.0.1/8",
            "10.0.0.0/33",
            "x/8",
            "10.0.0.0/-1",
            "2001:db8::1/32",
            "::ffff:10.0.0.0/104",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_viewers_region_comes_first_then_the_nearest() {
        let p = policy();
        let edges = vec![
            edge("ap1", "ap-south", 0),
            edge("us1", "us-east", 0),
            edge("eu1", "eu-west", 0),
            edge("us2", "us-east", 0),
            edge("eu2", "eu-west", 0),
        ];
        let regions = |viewer: &str| -> Vec<String> {
            p.rank("titles/a/", Some(viewer), &edges)
                .into_iter()
                .map(|i| edges[i].region.clone())
                .collect()
        };
        assert_eq!(
            regions("eu-west"),
            ["eu-west", "eu-west", "us-east", "us-east", "ap-south"]
        );
        assert_eq!(
            regions("us-east"),
            ["us-east", "us-east", "eu-west", "eu-west", "ap-south"]
        );
        assert_eq!(
            regions("ap-south"),
            ["ap-south", "eu-west", "eu-west", "us-east", "us-east"]
        );
        // A region with no edges: the others by distance, unknown ones last by name.
        assert_eq!(regions("sa-east")[..2], ["ap-south", "eu-west"]);
        // No region at all: every edge ranked, once.
        let mut all = p.rank("titles/a/", None, &edges);
        all.sort();
        assert_eq!(all, [0, 1, 2, 3, 4]);
        assert!(p.rank("titles/a/", Some("eu-west"), &[]).is_empty());
    }

    #[test]
    fn a_title_keeps_its_edge_until_that_edge_is_past_its_bound() {
        let p = policy();
        let mut edges = vec![
            edge("e1", "eu", 0),
            edge("e2", "eu", 0),
            edge("e3", "eu", 0),
        ];
        let first = |edges: &[Candidate], key: &str| p.rank(key, Some("eu"), edges)[0];
        // Titles spread over the edges, each title with its own first edge.
        let firsts: std::collections::BTreeSet<usize> = (0..30)
            .map(|t| first(&edges, &format!("titles/t{t}/")))
            .collect();
        assert_eq!(firsts.len(), 3);
        // One hot title: its viewers meet on one edge until it holds (1 + ε)× the mean, then spill over.
        let hot = first(&edges, "titles/hot/");
        for _ in 0..40 {
            let i = first(&edges, "titles/hot/");
            edges[i].load += 1;
        }
        assert!(edges[hot].load >= 16, "{edges:?}");
        let bound = (1.25 * 41.0 / 3.0_f64).ceil() as u64;
        assert!(edges.iter().all(|e| e.load <= bound), "{edges:?}");
        assert!(edges.iter().filter(|e| e.load > 0).count() >= 2);
        // A heavier capacity takes a larger share.
        let mut edges = vec![edge("e1", "eu", 0), edge("e2", "eu", 0)];
        edges[0].capacity = 300;
        for t in 0..400 {
            let i = first(&edges, &format!("titles/t{t}/"));
            edges[i].load += 1;
        }
        assert!(edges[0].load > 2 * edges[1].load, "{edges:?}");
    }

    #[test]
    fn edges_missing_from_the_manifest_are_cloned_from_a_pathway_they_can_replace_the_host_of() {
        let edge = |id: &str, url: &str| (id.to_string(), url::Url::parse(url).unwrap());
        let manifest = [
            edge("a", "https://a.cdn.example/"),
            edge("b", "https://b.cdn.example:8443/"),
        ];
        let wanted = [
            edge("c", "https://c.cdn.example/"),
            edge("a", "https://a.cdn.example/"),
            edge("d", "https://d.cdn.example:8443/"),
            edge("e", "http://e.cdn.example/"),
        ];
        let hls = clones(&manifest, &wanted, true);
        let host = |h: &str| UriReplacement { host: h.into() };
        assert_eq!(
            hls,
            [
                PathwayClone {
                    base: "a".into(),
                    id: "c".into(),
                    replacement: host("c.cdn.example")
                },
                PathwayClone {
                    base: "b".into(),
                    id: "d".into(),
                    replacement: host("d.cdn.example")
                },
            ]
        );
        // DASH replaces host and port: any pathway of the same scheme serves as the base.
        let dash = clones(&manifest, &wanted, false);
        assert_eq!(dash.len(), 2);
        assert_eq!(dash[1].replacement, host("d.cdn.example:8443"));
        // Loopback edges told apart by port alone: HLS cannot clone them, DASH can.
        let local = [edge("x", "https://127.0.0.1:9001/")];
        let joined = [edge("y", "https://127.0.0.1:9002/")];
        assert!(clones(&local, &joined, true).is_empty());
        assert_eq!(
            clones(&local, &joined, false)[0].replacement,
            host("127.0.0.1:9002")
        );
        assert_eq!(
            serde_json::to_value(&dash[0]).unwrap(),
            serde_json::json!({"BASE-ID": "a", "ID": "c", "URI-REPLACEMENT": {"HOST": "c.cdn.example"}})
        );
    }

    #[test]
    fn a_player_stays_on_its_pathway_while_it_is_healthy_and_has_room() {
        let ranked: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let room = |_: &str| true;
        assert_eq!(
            SteeringPolicy::priority(&ranked, Some("b"), room),
            ["b", "a", "c"]
        );
        assert_eq!(
            SteeringPolicy::priority(&ranked, None, room),
            ["a", "b", "c"]
        );
        // Gone from the ranking (down) or full: the ranking as it is.
        assert_eq!(
            SteeringPolicy::priority(&ranked, Some("x"), room),
            ["a", "b", "c"]
        );
        assert_eq!(
            SteeringPolicy::priority(&ranked, Some("b"), |p| p != "b"),
            ["a", "b", "c"]
        );
        let p = policy();
        let edges = vec![edge("e1", "eu", 50), edge("e2", "eu", 0)];
        assert!(!p.has_room(&edges[0], &edges));
        assert!(p.has_room(&edges[1], &edges));
    }
}

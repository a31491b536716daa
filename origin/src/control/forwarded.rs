//! The client's address behind proxies. Behind the edge, a connection's peer is the edge, which appends the
//! address it saw to `X-Forwarded-For`. When the peer is one of `api.trusted_proxies`, the client is the rightmost
//! address of that list that is not itself a trusted proxy: a client may write anything it likes to the left of
//! what the proxies appended, so only the addresses they added are believed, walking from the right. From any
//! other peer the header is ignored (a spoofed header from a viewer changes nothing), and a list that cannot be
//! read falls back to the peer. Pure: the peer and the request's headers come in.

use std::net::IpAddr;

use http::HeaderMap;

use crate::control::steering::{mask, parse_cidr, widen};

/// The `X-Forwarded-For` field (every line of it, in order, is one list).
const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The networks whose connections are proxies that tell the client's address.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrustedProxies {
    /// (IPv6, address bits, prefix length), as `steering` widens them.
    networks: Vec<(bool, u128, u8)>,
}

impl TrustedProxies {
    /// The proxies of `cidrs` (`127.0.0.1/32`, `10.0.0.0/8`, `::1/128`); an error names the index of the first
    /// block that is not one.
    pub fn parse(cidrs: &[String]) -> Result<TrustedProxies, (usize, String)> {
        let mut networks = Vec::with_capacity(cidrs.len());
        for (i, cidr) in cidrs.iter().enumerate() {
            let (addr, prefix) = parse_cidr(cidr).map_err(|e| (i, e))?;
            let (bits, v6) = widen(addr);
            networks.push((v6, bits, prefix));
        }
        Ok(TrustedProxies { networks })
    }

    /// Whether `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (bits, v6) = widen(ip);
        let width = if v6 { 128 } else { 32 };
        self.networks.iter().any(|&(net_v6, net_bits, prefix)| {
            net_v6 == v6 && bits & mask(prefix, width) == net_bits
        })
    }

    /// The client's address of a request that came from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.networks.is_empty() || !self.contains(peer) {
            return peer;
        }
        let mut lines = Vec::new();
        for value in headers.get_all(X_FORWARDED_FOR) {
            match value.to_str() {
                Ok(text) => lines.push(text),
                Err(_) => return peer,
            }
        }
        if lines.is_empty() {
            return peer;
        }
        let elements: Vec<&str> = lines.iter().flat_map(|line| line.split(',')).collect();
        let mut leftmost = peer;
        for element in elements.iter().rev() {
            let Some(ip) = forwarded_address(element) else {
                // A list garbled to the right of the client says nothing we can believe.
                return peer;
            };
            if !self.contains(ip) {
                return ip;
            }
            leftmost = ip;
        }
        // Proxies all the way: the first of them is as close to the client as is known.
        leftmost
    }
}

/// One element of `X-Forwarded-For`: an address, IPv6 perhaps in brackets, either perhaps with a port.
fn forwarded_address(element: &str) -> Option<IpAddr> {
    let element = element.trim();
    if let Ok(ip) = element.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = element.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|port| port.parse::<u16>().is_ok());
        return port_ok
            .then(|| inside.parse::<std::net::Ipv6Addr>().ok())
            .flatten()
            .map(|v6| IpAddr::V6(v6).to_canonical());
    }
    let (host, port) = element.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(cidrs: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&cidrs.iter().map(|c| c.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append(X_FORWARDED_FOR, line.parse().unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_header_counts_only_from_a_trusted_proxy() {
        let trusted = proxies(&["127.0.0.1/32", "::1/128"]);
        let spoofed = headers(&["203.0.113.7"]);
        // A viewer straight to the control plane writes what it likes: ignored.
        assert_eq!(
            trusted.client(ip("198.51.100.1"), &spoofed),
            ip("198.51.100.1")
        );
        // The edge on loopback tells the client's address.
        assert_eq!(trusted.client(ip("127.0.0.1"), &spoofed), ip("203.0.113.7"));
        assert_eq!(trusted.client(ip("::1"), &spoofed), ip("203.0.113.7"));
        // No header: the peer.
        assert_eq!(
            trusted.client(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
        // No trusted proxies configured (the default): the header is never read.
        assert_eq!(
            TrustedProxies::default().client(ip("127.0.0.1"), &spoofed),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn the_client_is_the_rightmost_address_not_a_proxy() {
        let trusted = proxies(&["10.0.0.0/8", "127.0.0.1/32"]);
        let peer = ip("127.0.0.1");
        // The client forged the first element; the edge appended the real one; a trusted hop before the edge.
        let chain = headers(&["6.6.6.6, 203.0.113.7, 10.1.2.3"]);
        assert_eq!(trusted.client(peer, &chain), ip("203.0.113.7"));
        // Several field lines are one list, in order.
        let lines = headers(&["6.6.6.6", "203.0.113.7", "10.1.2.3"]);
        assert_eq!(trusted.client(peer, &lines), ip("203.0.113.7"));
        // Every address a proxy: the leftmost.
        let all = headers(&["10.9.9.9, 10.1.2.3"]);
        assert_eq!(trusted.client(peer, &all), ip("10.9.9.9"));
        // Ports and brackets as some proxies write them.
        let ported = headers(&["203.0.113.7:51234"]);
        assert_eq!(trusted.client(peer, &ported), ip("203.0.113.7"));
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let trusted = proxies(&["2001:db8::/32", "127.0.0.0/8"]);
        let v6 = headers(&["2001:db8:ffff::1, [2a00:1450::5]:443, 2001:db8::9"]);
        assert_eq!(trusted.client(ip("2001:db8::1"), &v6), ip("2a00:1450::5"));
        // An IPv4 peer seen on a dual-stack socket is the IPv4 proxy it is; the client comes back plain.
        let mapped = headers(&["::ffff:203.0.113.7"]);
        assert_eq!(
            trusted.client(ip("::ffff:127.0.0.1"), &mapped),
            ip("203.0.113.7")
        );
        let bare = headers(&["[2a00:1450::5]"]);
        assert_eq!(trusted.client(ip("127.0.0.1"), &bare), ip("2a00:1450::5"));
    }

    #[test]
    fn garbage_falls_back_to_the_peer() {
        let trusted = proxies(&["127.0.0.1/32"]);
        let peer = ip("127.0.0.1");
        for garbage in [
            "",
            " ",
            "unknown",
            "203.0.113.7,",
            "203.0.113.7, , 198.51.100.1,",
            "999.1.1.1",
            "[2001:db8::1",
            "[2001:db8::1]:99999",
            "203.0.113.7:port",
            "1.2.3.4:5:6",
            "203.0.113.7 198.51.100.1",
            &"1.".repeat(5000),
        ] {
            let headers = headers(&[garbage]);
            assert_eq!(trusted.client(peer, &headers), peer, "{garbage:?}");
        }
        // Not text at all.
        let mut binary = HeaderMap::new();
        binary.append(
            X_FORWARDED_FOR,
            http::HeaderValue::from_bytes(b"203.0.113.7\xff").unwrap(),
        );
        assert_eq!(trusted.client(peer, &binary), peer);
        // Garbage to the left of the client is never reached.
        let left = headers(&["nonsense, 203.0.113.7"]);
        assert_eq!(trusted.client(peer, &left), ip("203.0.113.7"));
    }

    #[test]
    fn blocks_are_checked() {
        assert!(TrustedProxies::parse(&["10.0.0.0/8".into(), "::1/128".into()]).is_ok());
        let (i, reason) =
            TrustedProxies::parse(&["10.0.0.0/8".into(), "10.0.0.1/8".into()]).unwrap_err();
        assert_eq!(i, 1);
        assert!(reason.contains("bits past"), "{reason}");
        assert_eq!(
            TrustedProxies::parse(&["localhost".into()]).unwrap_err().0,
            0
        );
    }
}

//! Who guests may call, checked where it counts.
//!
//! A node-wide allowlist (`--allow-outbound HOST[:PORT]`, `*.example.com`
//! wildcards) says which hosts handlers and workflow steps may call;
//! without one, any public host. A handler may be narrowed further at
//! registration. Whatever the name, [`Policy::check`] resolves it itself
//! and checks every address it would connect to: loopback, private,
//! link-local (cloud metadata), shared and other non-public addresses are
//! refused unless a rule names that host exactly. The checked connector
//! ([`crate::Dial::Checked`]) then connects to the very address that was
//! checked, so a DNS answer that changes between check and connect gains
//! nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Name lookups running at once, node-wide. Each runs on tokio's blocking
/// pool (the system resolver blocks a thread); without a cap, guests that
/// call many slow-to-resolve names would fill that pool, which file I/O and
/// compilation share.
const MAX_LOOKUPS: usize = 16;

/// Longest wait for one name lookup, queueing for a turn included.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// One `--allow-outbound` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq)]
enum HostPattern {
    /// `*`: any host.
    Any,
    /// `*.example.com`: any host below example.com.
    Below(String),
    /// `api.example.com` or `127.0.0.1`: that host exactly.
    Exact(String),
}

impl Rule {
    pub fn parse(s: &str) -> Result<Rule, String> {
        let bad = || format!("`{s}` is not HOST[:PORT], *.DOMAIN[:PORT] or *");
        let s = s.trim();
        let (host, port) = split_host_port(s).ok_or_else(bad)?;
        let host = host.to_ascii_lowercase();
        let pattern = if host == "*" {
            HostPattern::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                return Err(bad());
            }
            HostPattern::Below(domain.to_string())
        } else if host.is_empty() || host.contains(['*', '/', '@']) {
            return Err(bad());
        } else {
            HostPattern::Exact(host)
        };
        Ok(Rule {
            host: pattern,
            port,
        })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match &self.host {
            HostPattern::Any => true,
            HostPattern::Below(domain) => host
                .strip_suffix(domain.as_str())
                .is_some_and(|prefix| prefix.ends_with('.')),
            HostPattern::Exact(exact) => exact == host,
        }
    }

    /// Whether this rule names `host` itself, which is what it takes to
    /// reach a non-public address.
    fn names(&self, host: &str) -> bool {
        matches!(&self.host, HostPattern::Exact(exact) if exact == host)
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`; a bare IPv6 address too.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((host, port));
    }
    if s.parse::<Ipv6Addr>().is_ok() {
        return Some((s, None));
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((s, None)),
    }
}

/// Who handlers may call: the node's rules, narrowed by a handler's own.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Empty means any public host.
    node: Vec<Rule>,
}

impl Policy {
    pub fn new(node: Vec<Rule>) -> Self {
        Policy { node }
    }

    /// Resolves `host:port` and returns the address to connect to, or why
    /// the call is refused.
    pub async fn check(
        &self,
        handler: Option<&[Rule]>,
        host: &str,
        port: u16,
    ) -> Result<SocketAddr, String> {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let node_rule = if self.node.is_empty() {
            None
        } else {
            Some(
                self.node
                    .iter()
                    .find(|r| r.matches(&host, port))
                    .ok_or_else(|| {
                        format!("{host}:{port} is not in the node's --allow-outbound list")
                    })?,
            )
        };
        if let Some(rules) = handler {
            if !rules.iter().any(|r| r.matches(&host, port)) {
                return Err(format!("{host}:{port} is not in this handler's allow list"));
            }
        }
        // Non-public addresses need a rule naming this very host, on every
        // list that applies.
        let named = node_rule.is_some_and(|r| r.names(&host))
            && handler.is_none_or(|rules| {
                rules
                    .iter()
                    .any(|r| r.names(&host) && r.matches(&host, port))
            });

        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => lookup(&host, port).await?,
        };
        let mut refused = None;
        for addr in addrs {
            match non_public(addr.ip()) {
                Some(kind) if !named => refused = Some(kind),
                _ => return Ok(addr),
            }
        }
        Err(match refused {
            Some(kind) => format!(
                "{host}:{port} resolves to a {kind} address; only `--allow-outbound {host}:{port}` (naming the host exactly) allows that"
            ),
            None => format!("{host} has no address"),
        })
    }
}

/// Resolves `host`, waiting for one of the node's [`MAX_LOOKUPS`] turns,
/// within [`LOOKUP_TIMEOUT`]. A lookup that times out goes on in its
/// blocking thread but gives its turn back only when done, so stuck lookups
/// cannot pile up past the cap.
async fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    static TURNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_LOOKUPS);
    let name = host.to_string();
    let resolve = async move {
        let turn = TURNS
            .acquire()
            .await
            .map_err(|_| "the resolver is shut down".to_string())?;
        // The lookup holds its turn in its own task, so the turn is given
        // back when the lookup ends, not when the caller stops waiting.
        let task = tokio::spawn(async move {
            let result = tokio::net::lookup_host((name.as_str(), port))
                .await
                .map(Iterator::collect::<Vec<SocketAddr>>);
            drop(turn);
            result
        });
        match task.await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    };
    match tokio::time::timeout(LOOKUP_TIMEOUT, resolve).await {
        Ok(result) => result.map_err(|e| format!("cannot resolve {host}: {e}")),
        Err(_) => Err(format!(
            "cannot resolve {host}: no answer within {}s",
            LOOKUP_TIMEOUT.as_secs()
        )),
    }
}

/// What kind of non-public address `ip` is, if it is one.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return non_public_v4(v4);
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if first == 0x2001 && v6.segments()[1] == 0x0db8 {
                Some("documentation")
            } else if first == 0x0064 && v6.segments()[1] == 0xff9b {
                // NAT64: may reach any IPv4 address, private ones included.
                Some("NAT64")
            } else {
                None
            }
        }
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local (cloud metadata)")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("broadcast, multicast or reserved")
    } else if ip.is_documentation() || (a == 198 && (b == 18 || b == 19)) || (a == 192 && b == 0) {
        Some("special-purpose")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> Vec<Rule> {
        list.iter().map(|r| Rule::parse(r).unwrap()).collect()
    }

    #[test]
    fn rules_parse_and_match() {
        let r = Rule::parse("*.coingecko.com").unwrap();
        assert!(r.matches("api.coingecko.com", 443));
        assert!(!r.matches("coingecko.com", 443));
        assert!(!r.matches("evilcoingecko.com", 443));
        let r = Rule::parse("127.0.0.1:8080").unwrap();
        assert!(r.matches("127.0.0.1", 8080));
        assert!(!r.matches("127.0.0.1", 8081));
        assert!(r.names("127.0.0.1"));
        let r = Rule::parse("[::1]:80").unwrap();
        assert!(r.matches("::1", 80));
        assert!(Rule::parse("*").unwrap().matches("anything", 1));
        for bad in ["", "*.", "a/b", "host:port", "*.*.com", "user@host"] {
            assert!(Rule::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn non_public_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(non_public(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in ["1.1.1.1", "93.184.216.34", "2606:4700::1111"] {
            assert!(non_public(ip.parse().unwrap()).is_none(), "{ip}");
        }
    }

    #[tokio::test]
    async fn loopback_needs_a_rule_naming_it() {
        let open = Policy::new(vec![]);
        assert!(open
            .check(None, "127.0.0.1", 80)
            .await
            .unwrap_err()
            .contains("loopback"));
        assert!(open.check(None, "localhost", 80).await.is_err());
        assert!(open.check(None, "1.1.1.1", 443).await.is_ok());

        let wildcard = Policy::new(rules(&["*"]));
        assert!(wildcard.check(None, "127.0.0.1", 80).await.is_err());

        let named = Policy::new(rules(&["127.0.0.1:8080", "*.example.com"]));
        assert_eq!(
            named.check(None, "127.0.0.1", 8080).await.unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert!(named
            .check(None, "127.0.0.1", 8081)
            .await
            .unwrap_err()
            .contains("not in the node"));
        // A handler's own list narrows, and must name the host too.
        let narrow = rules(&["*.example.com"]);
        assert!(named
            .check(Some(&narrow), "127.0.0.1", 8080)
            .await
            .unwrap_err()
            .contains("handler"));
        let same = rules(&["127.0.0.1:8080"]);
        assert!(named.check(Some(&same), "127.0.0.1", 8080).await.is_ok());
    }
}

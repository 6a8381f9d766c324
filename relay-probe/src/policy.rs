//! Which peers a client may reach through the relay.
//!
//! Safe by default: a TURN server is a proxy inside the operator's network, so
//! loopback, unspecified, link-local, multicast, broadcast and private ranges
//! are refused, also when written as IPv4-mapped (`::ffff:a.b.c.d`),
//! IPv4-compatible (`::a.b.c.d`) or NAT64 (`64:ff9b::a.b.c.d`) IPv6 addresses
//! (the coturn CVE-2020-26262 / CVE-2026-27624 classes). `allowed-peer-ip`
//! wins over everything, then `denied-peer-ip`, then the defaults.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An inclusive address range: `a.b.c.d`, `a.b.c.d-e.f.g.h` (coturn's form),
/// or `prefix/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    first: IpAddr,
    last: IpAddr,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an IP address, range (a-b) or prefix (a/len): {0:?}")]
pub struct BadRange(String);

impl FromStr for IpRange {
    type Err = BadRange;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadRange(s.to_string());
        let s = s.trim();
        if let Some((first, last)) = s.split_once('-') {
            let first: IpAddr = first.trim().parse().map_err(|_| bad())?;
            let last: IpAddr = last.trim().parse().map_err(|_| bad())?;
            if first.is_ipv4() != last.is_ipv4() || first > last {
                return Err(bad());
            }
            return Ok(Self { first, last });
        }
        if let Some((addr, len)) = s.split_once('/') {
            let addr: IpAddr = addr.parse().map_err(|_| bad())?;
            let len: u32 = len.parse().map_err(|_| bad())?;
            return Self::prefix(addr, len).ok_or_else(bad);
        }
        let addr: IpAddr = s.parse().map_err(|_| bad())?;
        Ok(Self {
            first: addr,
            last: addr,
        })
    }
}

impl IpRange {
    fn prefix(addr: IpAddr, len: u32) -> Option<Self> {
        match addr {
            IpAddr::V4(a) if len <= 32 => {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                let first = u32::from(a) & mask;
                Some(Self {
                    first: Ipv4Addr::from(first).into(),
                    last: Ipv4Addr::from(first | !mask).into(),
                })
            }
            IpAddr::V6(a) if len <= 128 => {
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                let first = u128::from(a) & mask;
                Some(Self {
                    first: Ipv6Addr::from(first).into(),
                    last: Ipv6Addr::from(first | !mask).into(),
                })
            }
            _ => None,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.first.is_ipv4() && self.first <= ip && ip <= self.last
    }
}

/// The relay's peer policy.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    pub allowed: Vec<IpRange>,
    pub denied: Vec<IpRange>,
    pub allow_loopback: bool,
}

impl PeerPolicy {
    pub fn permits(&self, peer: IpAddr) -> bool {
        let embedded = embedded_v4(peer).map(IpAddr::V4);
        let forms = || std::iter::once(peer).chain(embedded);
        let in_any = |ranges: &[IpRange]| forms().any(|ip| ranges.iter().any(|r| r.contains(ip)));
        if in_any(&self.allowed) {
            return true;
        }
        if in_any(&self.denied) {
            return false;
        }
        let effective = embedded.unwrap_or(peer);
        if effective.is_loopback() {
            return self.allow_loopback;
        }
        !is_special(effective)
    }
}

/// The IPv4 address an IPv6 address stands for, where it stands for one.
fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    // IPv4-compatible (RFC 4291 §2.5.5.1, deprecated); `::` and `::1` are
    // themselves, not 0.0.0.0 / 0.0.0.1.
    if s[..6] == [0; 6] && !matches!(u128::from(v6), 0 | 1) {
        return v6.to_ipv4();
    }
    // NAT64 well-known prefix (RFC 6052): a NAT64 gateway would forward it.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let o = v6.octets();
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    None
}

fn is_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            a.octets()[0] == 0 // "this network", includes 0.0.0.0
                || a.is_private()
                || a.is_link_local()
                || a.is_multicast()
                || a.is_broadcast()
                || a.octets()[0] >= 240 // reserved class E
        }
        IpAddr::V6(a) => {
            let first = a.segments()[0];
            a.is_unspecified()
                || a.is_multicast()
                || first & 0xffc0 == 0xfe80 // link-local fe80::/10
                || first & 0xffc0 == 0xfec0 // site-local fec0::/10 (deprecated)
                || first & 0xfe00 == 0xfc00 // unique local fc00::/7
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// One address of every class the issue names, with a range that allows it.
    pub(crate) const DENIED_BY_DEFAULT: &[(&str, &str)] = &[
        ("127.0.0.1", "127.0.0.0/8"),
        ("::1", "::1"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "0.0.0.0"),
        ("::", "::"),
        ("10.1.2.3", "10.0.0.0/8"),
        ("172.16.0.1", "172.16.0.0-172.31.255.255"),
        ("172.31.255.254", "172.16.0.0/12"),
        ("192.168.1.1", "192.168.0.0/16"),
        ("169.254.1.1", "169.254.0.0/16"),
        ("fe80::1", "fe80::/10"),
        ("fc00::1", "fc00::/7"),
        ("fd12:3456::1", "fc00::/7"),
        ("224.0.0.1", "224.0.0.0/4"),
        ("239.255.255.250", "224.0.0.0/4"),
        ("ff02::1", "ff00::/8"),
        ("::ffff:10.0.0.1", "10.0.0.0/8"),
        ("::ffff:192.168.0.1", "::ffff:192.168.0.1"),
        ("::ffff:0.0.0.0", "0.0.0.0"),
        ("64:ff9b::7f00:1", "127.0.0.1"),
        ("255.255.255.255", "255.255.255.255"),
    ];

    #[test]
    fn default_denies_every_special_form() {
        let policy = PeerPolicy::default();
        for (addr, _) in DENIED_BY_DEFAULT {
            assert!(
                !policy.permits(ip(addr)),
                "{addr} must be denied by default"
            );
        }
    }

    #[test]
    fn allowed_ranges_override_the_defaults() {
        for (addr, range) in DENIED_BY_DEFAULT {
            let policy = PeerPolicy {
                allowed: vec![range.parse().unwrap()],
                ..Default::default()
            };
            assert!(policy.permits(ip(addr)), "{addr} must pass with {range}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        let policy = PeerPolicy::default();
        for addr in [
            "8.8.8.8",
            "2001:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(policy.permits(ip(addr)), "{addr}");
        }
    }

    #[test]
    fn allow_loopback_only_opens_loopback() {
        let policy = PeerPolicy {
            allow_loopback: true,
            ..Default::default()
        };
        for addr in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
        ] {
            assert!(policy.permits(ip(addr)), "{addr}");
        }
        assert!(!policy.permits(ip("10.0.0.1")));
        assert!(!policy.permits(ip("0.0.0.0")));
    }

    #[test]
    fn denied_ranges_apply_to_public_addresses_and_embedded_forms() {
        let policy = PeerPolicy {
            denied: vec!["203.0.113.0/24".parse().unwrap()],
            ..Default::default()
        };
        assert!(!policy.permits(ip("203.0.113.9")));
        assert!(!policy.permits(ip("::ffff:203.0.113.9")));
        assert!(policy.permits(ip("203.0.114.1")));
    }

    #[test]
    fn ranges_parse_and_reject_nonsense() {
        assert!("10.0.0.0/33".parse::<IpRange>().is_err());
        assert!("10.0.0.9-10.0.0.1".parse::<IpRange>().is_err());
        assert!("10.0.0.1-::1".parse::<IpRange>().is_err());
        assert!("banana".parse::<IpRange>().is_err());
        let r: IpRange = "0.0.0.0/0".parse().unwrap();
        assert!(r.contains(ip("255.1.2.3")));
        assert!(!r.contains(ip("::1")));
    }
}

//! The lab network: five namespaces in a line, `a — wan-a — relay — wan-b — b`,
//! joined by veth pairs, with one TUN per direction in each wan namespace and
//! policy routing that steers each direction into its TUN
//! (`docs/testbed.md` has the diagram).
//!
//! Namespace names are `PREFIX-HOST`; interface names live inside the
//! namespaces, so they need no prefix.

mod claim;
mod ip;
pub mod netns;

use std::fmt;
use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};
use claim::Claim;
use ip::{ip, ip_output};

/// `--prefix` when none is given.
pub const DEFAULT_PREFIX: &str = "dmc";

/// The character device the delay line opens; its absence means no tun module.
pub const TUN_DEVICE: &str = "/dev/net/tun";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Host {
    A,
    WanA,
    Relay,
    WanB,
    B,
}

impl Host {
    pub const ALL: [Host; 5] = [Host::A, Host::WanA, Host::Relay, Host::WanB, Host::B];

    pub fn name(self) -> &'static str {
        match self {
            Host::A => "a",
            Host::WanA => "wan-a",
            Host::Relay => "relay",
            Host::WanB => "wan-b",
            Host::B => "b",
        }
    }

    /// The address other hosts reach it at: the peers' own, the relay's
    /// public one (on `lo`, reachable from both sides), a wan's peer-side one.
    pub fn address(self) -> Ipv4Addr {
        match self {
            Host::A => Ipv4Addr::new(10, 77, 1, 2),
            Host::WanA => Ipv4Addr::new(10, 77, 1, 1),
            Host::Relay => Ipv4Addr::new(10, 77, 0, 1),
            Host::WanB => Ipv4Addr::new(10, 77, 4, 1),
            Host::B => Ipv4Addr::new(10, 77, 4, 2),
        }
    }

    /// Routers forward; the peers are end hosts.
    fn forwards(self) -> bool {
        matches!(self, Host::WanA | Host::Relay | Host::WanB)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One direction through one wan namespace: what one TUN and one delay-line
/// thread pair carry. A→B is `a-to-relay` then `relay-to-b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Leg {
    AToRelay,
    RelayToA,
    BToRelay,
    RelayToB,
}

impl Leg {
    pub const ALL: [Leg; 4] = [Leg::AToRelay, Leg::RelayToA, Leg::BToRelay, Leg::RelayToB];

    pub fn name(self) -> &'static str {
        match self {
            Leg::AToRelay => "a-to-relay",
            Leg::RelayToA => "relay-to-a",
            Leg::BToRelay => "b-to-relay",
            Leg::RelayToB => "relay-to-b",
        }
    }

    /// The wan namespace the leg runs through.
    pub fn wan(self) -> Host {
        match self {
            Leg::AToRelay | Leg::RelayToA => Host::WanA,
            Leg::BToRelay | Leg::RelayToB => Host::WanB,
        }
    }

    /// The TUN device carrying the leg, inside [`Leg::wan`].
    pub fn tun(self) -> &'static str {
        match self {
            Leg::AToRelay | Leg::BToRelay => "dl-up",
            Leg::RelayToA | Leg::RelayToB => "dl-down",
        }
    }

    /// The wan interface whose arrivals take this leg.
    fn arrives_on(self) -> &'static str {
        match self {
            Leg::AToRelay => "to-a",
            Leg::BToRelay => "to-b",
            Leg::RelayToA | Leg::RelayToB => "to-relay",
        }
    }

    /// Routing table (and rule priority) whose only route is the TUN.
    fn table(self) -> u32 {
        match self.tun() {
            "dl-up" => 100,
            _ => 101,
        }
    }
}

impl fmt::Display for Leg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One end of a veth pair.
struct End {
    host: Host,
    iface: &'static str,
    cidr: &'static str,
}

const fn end(host: Host, iface: &'static str, cidr: &'static str) -> End {
    End { host, iface, cidr }
}

const LINKS: [(End, End); 4] = [
    (
        end(Host::A, "eth0", "10.77.1.2/24"),
        end(Host::WanA, "to-a", "10.77.1.1/24"),
    ),
    (
        end(Host::WanA, "to-relay", "10.77.2.1/24"),
        end(Host::Relay, "to-wan-a", "10.77.2.2/24"),
    ),
    (
        end(Host::Relay, "to-wan-b", "10.77.3.2/24"),
        end(Host::WanB, "to-relay", "10.77.3.1/24"),
    ),
    (
        end(Host::WanB, "to-b", "10.77.4.1/24"),
        end(Host::B, "eth0", "10.77.4.2/24"),
    ),
];

/// Main-table routes beyond the connected ones. The relay answers from its
/// public address whatever side a packet came from.
const ROUTES: [(Host, &str); 6] = [
    (Host::A, "default via 10.77.1.1"),
    (Host::WanA, "default via 10.77.2.2"),
    (Host::Relay, "10.77.1.0/24 via 10.77.2.1 src 10.77.0.1"),
    (Host::Relay, "10.77.4.0/24 via 10.77.3.1 src 10.77.0.1"),
    (Host::WanB, "default via 10.77.3.2"),
    (Host::B, "default via 10.77.4.1"),
];

/// A running topology. Dropping it (or [`Topology::down`]) removes every
/// namespace it made, and with them all devices, routes and rules.
#[derive(Debug)]
pub struct Topology {
    prefix: String,
    claim: Option<Claim>,
}

impl Topology {
    /// Checks the machine, claims `prefix` (clearing a crashed run's
    /// leftovers) and builds the network; on failure removes what it made.
    pub fn up(prefix: &str) -> Result<Topology> {
        check_prefix(prefix)?;
        preflight()?;
        let namespaces = Host::ALL.map(|h| netns_name(prefix, h));
        let claim = Claim::take(prefix, namespaces.to_vec())?;
        // The claim cleared our own leftovers, so what exists now is not ours.
        if let Some(taken) = namespaces.iter().find(|n| netns::exists(n)) {
            claim.release()?;
            return Err(Error::NamespaceTaken(taken.clone()));
        }
        // From here on, dropping `topology` removes whatever exists.
        let topology = Topology {
            prefix: prefix.to_owned(),
            claim: Some(claim),
        };
        topology.build()?;
        Ok(topology)
    }

    /// The namespace name of `host`.
    pub fn netns(&self, host: Host) -> String {
        netns_name(&self.prefix, host)
    }

    /// Waits until the kernel has the TUN of every leg running, which
    /// happens some time after the delay line attaches: until then the TUN
    /// drops what is routed to it. Carrier-on is a non-urgent link event, so
    /// the kernel may take up to a second to act on it.
    pub fn wait_for_tuns(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for leg in Leg::ALL {
            let ns = self.netns(leg.wan());
            let show = format!("-o link show dev {}", leg.tun());
            while !ip_output(Some(&ns), &show)?.contains("state UP") {
                if Instant::now() > deadline {
                    return Err(Error::DelayLine {
                        leg: leg.to_string(),
                        message: format!("TUN {} in {ns} not running after {timeout:?}", leg.tun()),
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// Removes everything, reporting a failure (which `Drop` can only log).
    pub fn down(mut self) -> Result<()> {
        match self.claim.take() {
            Some(claim) => claim.clear().map(drop),
            None => Ok(()),
        }
    }

    fn build(&self) -> Result<()> {
        for host in Host::ALL {
            ip(None, &format!("netns add {}", self.netns(host)))?;
        }
        for host in Host::ALL {
            self.configure_host(host)?;
        }
        for (left, right) in &LINKS {
            self.link(left, right)?;
        }
        for leg in Leg::ALL {
            self.steer(leg)?;
        }
        for (host, route) in ROUTES {
            ip(Some(&self.netns(host)), &format!("route add {route}"))?;
        }
        tracing::info!("topology {} is up", self.prefix);
        Ok(())
    }

    /// Sysctls before any device exists, so that `default` values reach them.
    fn configure_host(&self, host: Host) -> Result<()> {
        let ns = self.netns(host);
        // IPv4 only: router solicitations and MLD would only add noise.
        let mut settings = vec![
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
        ];
        if host.forwards() {
            settings.push(("net.ipv4.ip_forward", "1"));
        }
        if matches!(host, Host::WanA | Host::WanB) {
            // Packets written back into a TUN carry sources that the main
            // table routes elsewhere; strict reverse-path filtering drops them.
            settings.extend([
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
            ]);
        }
        netns::sysctl(&ns, &settings)?;
        ip(Some(&ns), "link set lo up")?;
        if host == Host::Relay {
            ip(Some(&ns), &format!("addr add {}/32 dev lo", host.address()))?;
        }
        Ok(())
    }

    fn link(&self, left: &End, right: &End) -> Result<()> {
        let (l, r) = (self.netns(left.host), self.netns(right.host));
        ip(
            Some(&l),
            &format!(
                "link add {} type veth peer name {} netns {r}",
                left.iface, right.iface
            ),
        )?;
        for (ns, end) in [(&l, left), (&r, right)] {
            ip(
                Some(ns),
                &format!("addr add {} dev {}", end.cidr, end.iface),
            )?;
            ip(Some(ns), &format!("link set {} up", end.iface))?;
        }
        Ok(())
    }

    /// A persistent TUN (it outlives the delay line, so a stopped line drops
    /// packets rather than letting them bypass the delay), a table whose only
    /// route is the TUN, and a rule sending the leg's arrivals there. What
    /// the line writes back arrives on the TUN, matches no rule and is routed
    /// by the main table.
    fn steer(&self, leg: Leg) -> Result<()> {
        let ns = self.netns(leg.wan());
        let (tun, table) = (leg.tun(), leg.table());
        ip(Some(&ns), &format!("tuntap add dev {tun} mode tun"))?;
        // Room for bursts while the reader is descheduled (default 500).
        ip(Some(&ns), &format!("link set {tun} txqueuelen 10000 up"))?;
        ip(
            Some(&ns),
            &format!("route add default dev {tun} table {table}"),
        )?;
        ip(
            Some(&ns),
            &format!(
                "rule add iif {} lookup {table} priority {table}",
                leg.arrives_on()
            ),
        )
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            if let Err(e) = claim.clear() {
                tracing::error!("removing topology {}: {e}", self.prefix);
            }
        }
    }
}

/// One namespace with only loopback, for the benchmark: claimed like a
/// topology (so `down --prefix` clears a crashed run's), removed on drop.
#[derive(Debug)]
pub struct Sandbox {
    name: String,
    claim: Option<Claim>,
}

impl Sandbox {
    pub fn up(prefix: &str) -> Result<Sandbox> {
        check_prefix(prefix)?;
        // SAFETY: no arguments, no side effects.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Error::NotRoot);
        }
        let name = format!("{prefix}-bench");
        let claim = Claim::take(prefix, vec![name.clone()])?;
        if netns::exists(&name) {
            claim.release()?;
            return Err(Error::NamespaceTaken(name));
        }
        let sandbox = Sandbox {
            name,
            claim: Some(claim),
        };
        ip(None, &format!("netns add {}", sandbox.name))?;
        ip(Some(&sandbox.name), "link set lo up")?;
        Ok(sandbox)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            if let Err(e) = claim.clear() {
                tracing::error!("removing namespace {}: {e}", self.name);
            }
        }
    }
}

/// Removes what a run that is no longer running left under `prefix`;
/// returns the namespaces removed (none when nothing was left).
pub fn down(prefix: &str) -> Result<Vec<String>> {
    check_prefix(prefix)?;
    match claim::existing(prefix)? {
        Some(claim) => claim.clear(),
        None => Ok(Vec::new()),
    }
}

pub fn netns_name(prefix: &str, host: Host) -> String {
    format!("{prefix}-{host}")
}

/// Prefixes become file and namespace names and are split on whitespace by
/// the `ip` wrapper; this keeps them plain.
fn check_prefix(prefix: &str) -> Result<()> {
    let ok = (1..=32).contains(&prefix.len())
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::BadPrefix(prefix.to_owned()))
    }
}

/// What must hold before anything is created.
fn preflight() -> Result<()> {
    // SAFETY: no arguments, no side effects.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::NotRoot);
    }
    ip(None, "-V")?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(TUN_DEVICE)
        .map_err(|source| Error::NoTun {
            path: TUN_DEVICE,
            source,
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_plain_names() {
        for good in ["dmc", "dmc-t1", "a"] {
            assert!(check_prefix(good).is_ok(), "{good}");
        }
        for bad in ["", "1dmc", "dmc x", "dmc/x", "DMC", &"d".repeat(33)] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn each_leg_steers_an_interface_its_wan_has() {
        for leg in Leg::ALL {
            let ends = LINKS.iter().flat_map(|(l, r)| [l, r]);
            assert_eq!(
                ends.filter(|e| e.host == leg.wan() && e.iface == leg.arrives_on())
                    .count(),
                1,
                "{leg}"
            );
        }
    }

    #[test]
    fn each_wan_has_one_leg_per_tun() {
        for wan in [Host::WanA, Host::WanB] {
            let mut tuns: Vec<_> = Leg::ALL
                .iter()
                .filter(|l| l.wan() == wan)
                .map(|l| l.tun())
                .collect();
            tuns.sort();
            assert_eq!(tuns, ["dl-down", "dl-up"]);
        }
    }
}

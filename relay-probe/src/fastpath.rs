//! The XDP fast path, user-space half: turns the server's bound channels
//! ([`Server::fast_channels`](crate::turn::Server::fast_channels)) into the
//! kernel's route maps and keeps them in step. relay_fast (ebpf/bpf/relay.bpf.c)
//! relays the packets of those routes without waking the relay; every other
//! packet comes up to user space as before.

use std::{
    collections::HashMap,
    hash::Hash,
    net::SocketAddrV4,
    time::{Duration, Instant},
};

use demarc_agent::dwell::FastMaps;
use demarc_ebpf::abi::{self, FastChanKey, FastPeerKey, FastRoute};

use crate::turn::FastChannel;

/// Route maps' contents, as the kernel should hold them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Routes {
    pub chan: HashMap<FastChanKey, FastRoute>,
    pub peer: HashMap<FastPeerKey, FastRoute>,
}

fn route(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    channel: u16,
    slot: u8,
    dir: u32,
    expires_ns: u64,
) -> FastRoute {
    FastRoute {
        expires_ns,
        src_ip: src.ip().octets(),
        dst_ip: dst.ip().octets(),
        src_port: src.port().to_be_bytes(),
        dst_port: dst.port().to_be_bytes(),
        channel: channel.to_be_bytes(),
        slot,
        dir: dir as u8,
    }
}

/// The `fast_chan` key of a client's ChannelData on `c`.
pub fn chan_key(c: &FastChannel) -> FastChanKey {
    FastChanKey {
        client_ip: c.client.ip().octets(),
        server_ip: c.listener.ip().octets(),
        client_port: c.client.port().to_be_bytes(),
        server_port: c.listener.port().to_be_bytes(),
        channel: c.channel.to_be_bytes(),
        _pad: [0; 2],
    }
}

/// The routes for `channels`. `listeners` are the probe's listener ports in
/// slot order; `expires_ns` maps an Instant to CLOCK_MONOTONIC ns.
///
/// A channel to an outside peer gives two routes: its ChannelData out as
/// bare UDP, and the peer's datagrams back as ChannelData. A channel whose
/// peer is another allocation's relay address (client to client) gives one
/// route straight to that allocation's client, and only when that client has
/// bound a channel back to this relay address: the packet never has to leave
/// for the relay's own address, which the kernel could not deliver from XDP.
pub fn routes(
    channels: &[FastChannel],
    listeners: &[u16],
    expires_ns: impl Fn(Instant) -> u64,
) -> Routes {
    let slot = |l: SocketAddrV4| {
        listeners
            .iter()
            .position(|&p| p == l.port())
            .map(|i| i as u8 + 1)
    };
    let back: HashMap<(SocketAddrV4, SocketAddrV4), &FastChannel> =
        channels.iter().map(|c| ((c.relay, c.peer), c)).collect();
    let mut out = Routes::default();
    for c in channels {
        let Some(slot) = slot(c.listener) else {
            continue;
        };
        let key = chan_key(c);
        if c.peer_is_relay {
            if let Some(d) = back.get(&(c.peer, c.relay)) {
                let expires = expires_ns(c.expires.min(d.expires));
                let to = route(
                    d.listener,
                    d.client,
                    d.channel,
                    slot,
                    abi::DIR_CLIENT_TO_PEER,
                    expires,
                );
                out.chan.insert(key, to);
            }
            continue;
        }
        let expires = expires_ns(c.expires);
        out.chan.insert(
            key,
            route(c.relay, c.peer, 0, slot, abi::DIR_CLIENT_TO_PEER, expires),
        );
        out.peer.insert(
            FastPeerKey {
                peer_ip: c.peer.ip().octets(),
                relay_ip: c.relay.ip().octets(),
                peer_port: c.peer.port().to_be_bytes(),
                relay_port: c.relay.port().to_be_bytes(),
            },
            route(
                c.listener,
                c.client,
                c.channel,
                slot,
                abi::DIR_PEER_TO_CLIENT,
                expires,
            ),
        );
    }
    out
}

type Set<M, K, V> = fn(&mut M, &K, &V) -> demarc_agent::Result<()>;
type Remove<M, K> = fn(&mut M, &K) -> demarc_agent::Result<()>;

/// Makes `installed` (what `maps` holds) equal to `wanted`, writing only
/// what differs.
fn apply<M, K: Copy + Eq + Hash, V: Copy + PartialEq>(
    installed: &mut HashMap<K, V>,
    wanted: HashMap<K, V>,
    maps: &mut M,
    set: Set<M, K, V>,
    remove: Remove<M, K>,
) -> demarc_agent::Result<()> {
    let gone: Vec<K> = installed
        .keys()
        .filter(|k| !wanted.contains_key(k))
        .copied()
        .collect();
    for k in gone {
        installed.remove(&k);
        remove(maps, &k)?;
    }
    for (k, v) in wanted {
        if installed.get(&k) != Some(&v) {
            // Recorded first: a failed write is retried at the next change.
            installed.remove(&k);
            set(maps, &k, &v)?;
            installed.insert(k, v);
        }
    }
    Ok(())
}

/// Keeps the kernel's route maps equal to the routes of the server's channels.
pub struct Installer {
    maps: FastMaps,
    listeners: Vec<u16>,
    installed: Routes,
}

impl Installer {
    pub fn new(maps: FastMaps, listeners: Vec<u16>) -> Self {
        Self {
            maps,
            listeners,
            installed: Routes::default(),
        }
    }

    /// Installs the routes of `channels` (read at `now`), removing the rest.
    pub fn sync(&mut self, channels: &[FastChannel], now: Instant) -> demarc_agent::Result<()> {
        let mono_now = mono_ns();
        let wanted = routes(channels, &self.listeners, |t| {
            mono_now + t.saturating_duration_since(now).as_nanos() as u64
        });
        apply(
            &mut self.installed.chan,
            wanted.chan,
            &mut self.maps,
            FastMaps::set_chan,
            FastMaps::remove_chan,
        )?;
        apply(
            &mut self.installed.peer,
            wanted.peer,
            &mut self.maps,
            FastMaps::set_peer,
            FastMaps::remove_peer,
        )
    }

    /// Routes installed now: (client side, peer side).
    pub fn installed(&self) -> (usize, usize) {
        (self.installed.chan.len(), self.installed.peer.len())
    }
}

/// CLOCK_MONOTONIC in ns: the kernel's bpf_ktime_get_ns, and what Instant reads.
fn mono_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(Duration::ZERO, Duration::from);
    t.as_nanos() as u64
}

/// Installs the server's fast channels whenever they may have changed, until
/// the task is dropped. `read(epoch)` answers the channels and their epoch
/// when the epoch differs from the one given.
pub async fn run(
    mut installer: Installer,
    read: impl Fn(Option<u64>) -> Option<(u64, Vec<FastChannel>, Instant)>,
) {
    let mut epoch = None;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut failing = false;
    loop {
        tick.tick().await;
        let Some((now_epoch, channels, now)) = read(epoch) else {
            continue;
        };
        match installer.sync(&channels, now) {
            Ok(()) => {
                epoch = Some(now_epoch);
                failing = false;
                let (chan, peer) = installer.installed();
                tracing::debug!(chan, peer, "fast path routes installed");
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "fast path routes not installed; those packets go through user space");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    fn chan(client: &str, channel: u16, relay: &str, peer: &str, local: bool) -> FastChannel {
        FastChannel {
            client: a(client),
            listener: a("10.0.0.1:3478"),
            channel,
            relay: a(relay),
            peer: a(peer),
            peer_is_relay: local,
            expires: Instant::now() + Duration::from_secs(10),
        }
    }

    fn ns(_: Instant) -> u64 {
        77
    }

    #[test]
    fn an_outside_peer_gets_a_route_each_way() {
        let c = chan(
            "192.0.2.5:5000",
            0x4001,
            "10.0.0.1:50000",
            "198.51.100.9:7000",
            false,
        );
        let r = routes(&[c], &[3478], ns);
        let (k, out) = r.chan.iter().next().unwrap();
        assert_eq!(k.client_ip, [192, 0, 2, 5]);
        assert_eq!(k.server_port, 3478u16.to_be_bytes());
        assert_eq!(k.channel, 0x4001u16.to_be_bytes());
        assert_eq!(out.src_port, 50000u16.to_be_bytes());
        assert_eq!(out.dst_ip, [198, 51, 100, 9]);
        assert_eq!(out.channel, [0, 0], "to a peer: bare UDP");
        assert_eq!((out.slot, out.expires_ns), (1, 77));
        let (k, back) = r.peer.iter().next().unwrap();
        assert_eq!(k.relay_port, 50000u16.to_be_bytes());
        assert_eq!(k.peer_port, 7000u16.to_be_bytes());
        assert_eq!(back.dst_port, 5000u16.to_be_bytes());
        assert_eq!(back.src_port, 3478u16.to_be_bytes());
        assert_eq!(back.channel, 0x4001u16.to_be_bytes());
        assert_eq!(back.dir as u32, abi::DIR_PEER_TO_CLIENT);
        assert_eq!((r.chan.len(), r.peer.len()), (1, 1));
        // A listener the probe does not watch has no slot: no routes.
        assert_eq!(routes(&[c], &[3479], ns), Routes::default());
    }

    #[test]
    fn client_to_client_goes_straight_across_once_both_bound() {
        let ab = chan(
            "192.0.2.5:5000",
            0x4001,
            "10.0.0.1:50000",
            "10.0.0.1:50002",
            true,
        );
        let ba = chan(
            "192.0.2.6:6000",
            0x4009,
            "10.0.0.1:50002",
            "10.0.0.1:50000",
            true,
        );
        let half = routes(&[ab], &[3478], ns);
        assert!(half.chan.is_empty() && half.peer.is_empty(), "{half:?}");
        let r = routes(&[ab, ba], &[3478], ns);
        assert_eq!((r.chan.len(), r.peer.len()), (2, 0));
        let to_b = r.chan[&chan_key(&ab)];
        assert_eq!(to_b.dst_ip, [192, 0, 2, 6]);
        assert_eq!(to_b.dst_port, 6000u16.to_be_bytes());
        assert_eq!(to_b.src_port, 3478u16.to_be_bytes());
        assert_eq!(to_b.channel, 0x4009u16.to_be_bytes());
        assert_eq!(r.chan[&chan_key(&ba)].channel, 0x4001u16.to_be_bytes());
    }

    #[test]
    fn apply_writes_only_the_difference() {
        #[derive(Default)]
        struct Log {
            set: Vec<(u8, char)>,
            removed: Vec<u8>,
        }
        fn set(log: &mut Log, k: &u8, v: &char) -> demarc_agent::Result<()> {
            log.set.push((*k, *v));
            Ok(())
        }
        fn remove(log: &mut Log, k: &u8) -> demarc_agent::Result<()> {
            log.removed.push(*k);
            Ok(())
        }
        let mut installed = HashMap::from([(1, 'a'), (2, 'b')]);
        let mut log = Log::default();
        let wanted = HashMap::from([(2, 'b'), (3, 'c'), (1, 'z')]);
        apply(&mut installed, wanted, &mut log, set, remove).unwrap();
        log.set.sort_unstable();
        assert_eq!(log.set, [(1, 'z'), (3, 'c')]);
        assert!(log.removed.is_empty());
        apply(&mut installed, HashMap::new(), &mut log, set, remove).unwrap();
        log.removed.sort_unstable();
        assert_eq!(log.removed, [1, 2, 3]);
        assert!(installed.is_empty());
    }
}

//! The relay's dwell probe: loading relay_in/relay_out with the relay's port
//! roles, and reading the complete in-kernel dwell histograms.

use std::ops::RangeInclusive;

use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    Ebpf,
};
use demarc_ebpf::abi::{
    self, dwell_bucket_bounds, dwell_index, FastChanKey, FastPeerKey, FastRoute, DWELL_BUCKETS,
    RELAY_LISTENERS,
};
use demarc_proto::{ingest::HookStatus, Point};

use crate::{attach, probe::Prepared, Error, Result};

/// The relay's UDP ports: client-facing listeners (at most four, each its
/// own histograms) and the peer-facing relay port range.
#[derive(Debug, Clone)]
pub struct RelayPorts {
    pub listeners: Vec<u16>,
    pub relay: RangeInclusive<u16>,
}

/// Loads the relay programs and attaches them to every interface of the
/// probe options: relay_in (XDP, or tc ingress) and tc egress relay_out. With
/// `fast`, relay_fast takes relay_in's place: it does relay_in's work and
/// relays packets of the channels in [`FastMaps`] itself.
pub fn load_relay(
    prepared: &Prepared,
    ports: &RelayPorts,
    fast: bool,
) -> Result<(Ebpf, Vec<HookStatus>, Vec<String>)> {
    if ports.listeners.is_empty() || ports.listeners.len() > RELAY_LISTENERS as usize {
        return Err(Error::Option(format!(
            "the dwell probe takes 1 to {RELAY_LISTENERS} listening ports, not {}",
            ports.listeners.len()
        )));
    }
    let mut ebpf = prepared
        .loader()
        .load(demarc_ebpf::RELAY_OBJ)
        .map_err(Error::Load)?;
    let mut roles: Array<_, u8> = Array::try_from(
        ebpf.map_mut("port_roles")
            .ok_or(Error::MissingMap("port_roles"))?,
    )?;
    for port in ports.relay.clone() {
        roles.set(u32::from(port), abi::ROLE_PEER as u8, 0)?;
    }
    for (slot, port) in ports.listeners.iter().enumerate() {
        roles.set(u32::from(*port), slot as u8 + 1, 0)?;
    }
    let (mut hooks, mut fallbacks) = (Vec::new(), Vec::new());
    for iface in &prepared.opts.ifaces {
        hooks.push(if fast {
            attach::xdp(
                &mut ebpf,
                "relay_fast",
                &prepared.netns,
                iface,
                Point::RelayIn,
                &mut fallbacks,
            )?
        } else {
            attach::ingress(
                &mut ebpf,
                ("relay_in", "relay_in_tc"),
                &prepared.netns,
                iface,
                Point::RelayIn,
                &mut fallbacks,
            )?
        });
        hooks.push(attach::tc_egress(
            &mut ebpf,
            "relay_out",
            &prepared.netns,
            iface,
            Point::RelayOut,
        )?);
    }
    Ok((ebpf, hooks, fallbacks))
}

/// A relay direction; `as usize` is its DEMARC_DIR_* index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayDirection {
    ClientToPeer = abi::DIR_CLIENT_TO_PEER as isize,
    PeerToClient = abi::DIR_PEER_TO_CLIENT as isize,
}

impl RelayDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientToPeer => "client_to_peer",
            Self::PeerToClient => "peer_to_client",
        }
    }
}

/// Dwell of every matched packet of one listener and direction.
#[derive(Debug, Clone)]
pub struct DwellHistogram {
    /// The listening port.
    pub listener: u16,
    pub direction: RelayDirection,
    /// Counts per bucket (abi::dwell_bucket_bounds gives each range).
    pub buckets: Vec<u64>,
}

impl DwellHistogram {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Upper bound (ns) of the bucket holding quantile q; None when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        self.quantile_bucket(q).map(|(_, hi)| hi)
    }

    /// Bounds `[lo, hi)` (ns) of the bucket holding quantile q; None when empty.
    pub fn quantile_bucket(&self, q: f64) -> Option<(u64, u64)> {
        let total = self.count();
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, n) in self.buckets.iter().enumerate() {
            seen += n;
            if total > 0 && seen >= rank {
                return Some(dwell_bucket_bounds(b as u32));
            }
        }
        None
    }

    /// (lower ns, upper ns, count) of each non-empty bucket.
    pub fn nonzero(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(b, n)| {
                let (lo, hi) = dwell_bucket_bounds(b as u32);
                (lo, hi, *n)
            })
    }
}

/// The fast path's route maps, taken out of the loaded relay object; the
/// relay keeps them in step with its channels.
pub struct FastMaps {
    chan: HashMap<MapData, FastChanKey, FastRoute>,
    peer: HashMap<MapData, FastPeerKey, FastRoute>,
}

impl FastMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Self {
            chan: HashMap::try_from(attach::take_map(ebpf, "fast_chan")?)?,
            peer: HashMap::try_from(attach::take_map(ebpf, "fast_peer")?)?,
        })
    }

    pub fn set_chan(&mut self, key: &FastChanKey, route: &FastRoute) -> Result<()> {
        Ok(self.chan.insert(key, route, 0)?)
    }

    pub fn remove_chan(&mut self, key: &FastChanKey) -> Result<()> {
        Ok(self.chan.remove(key)?)
    }

    pub fn set_peer(&mut self, key: &FastPeerKey, route: &FastRoute) -> Result<()> {
        Ok(self.peer.insert(key, route, 0)?)
    }

    pub fn remove_peer(&mut self, key: &FastPeerKey) -> Result<()> {
        Ok(self.peer.remove(key)?)
    }
}

/// Packets and inner payload bytes the fast path relayed, indexed by the
/// [`RelayDirection`] they arrived in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FastStats {
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
}

/// Reads the per-CPU dwell histograms (and the fast path's counters).
pub struct DwellReader {
    map: PerCpuArray<MapData, u64>,
    fast: Option<PerCpuArray<MapData, u64>>,
    listeners: Vec<u16>,
}

impl DwellReader {
    /// Takes the histogram map out of the object, so it outlives a detach;
    /// with `fast`, the fast path's counters too.
    pub fn new(ebpf: &mut Ebpf, ports: &RelayPorts, fast: bool) -> Result<Self> {
        let mut reader = Self::from_map(attach::take_map(ebpf, "dwell_hist")?, ports)?;
        if fast {
            reader.fast = Some(PerCpuArray::try_from(attach::take_map(
                ebpf,
                "fast_stats",
            )?)?);
        }
        Ok(reader)
    }

    /// Reads the histograms of `map`, a `dwell_hist` of a relay object
    /// loaded elsewhere (another process's, found by id).
    pub fn from_map(map: Map, ports: &RelayPorts) -> Result<Self> {
        Ok(Self {
            map: PerCpuArray::try_from(map)?,
            fast: None,
            listeners: ports.listeners.clone(),
        })
    }

    /// The fast path's counters; None when it is off.
    pub fn fast_stats(&self) -> Option<FastStats> {
        let map = self.fast.as_ref()?;
        let get = |i: u32| map.get(&i, 0).map_or(0, |v| v.iter().sum());
        let mut stats = FastStats::default();
        for dir in [abi::DIR_CLIENT_TO_PEER, abi::DIR_PEER_TO_CLIENT] {
            stats.packets[dir as usize] = get(dir * 2);
            stats.bytes[dir as usize] = get(dir * 2 + 1);
        }
        Some(stats)
    }

    pub fn read(&self) -> Vec<DwellHistogram> {
        let mut out = Vec::new();
        for (slot, listener) in self.listeners.iter().enumerate() {
            for (dir, direction) in [
                (abi::DIR_CLIENT_TO_PEER, RelayDirection::ClientToPeer),
                (abi::DIR_PEER_TO_CLIENT, RelayDirection::PeerToClient),
            ] {
                let buckets = (0..DWELL_BUCKETS)
                    .map(|b| {
                        self.map
                            .get(&dwell_index(slot as u32 + 1, dir, b), 0)
                            .map(|v| v.iter().sum())
                            .unwrap_or(0)
                    })
                    .collect();
                out.push(DwellHistogram {
                    listener: *listener,
                    direction,
                    buckets,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_bucket_bounds() {
        let mut buckets = vec![0; DWELL_BUCKETS as usize];
        buckets[abi::dwell_bucket(10_000) as usize] = 90;
        buckets[abi::dwell_bucket(200_000) as usize] = 10;
        let h = DwellHistogram {
            listener: 3478,
            direction: RelayDirection::ClientToPeer,
            buckets,
        };
        assert_eq!(h.count(), 100);
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((10_000..=12_288).contains(&p50), "p50 {p50}");
        assert!((200_000..=262_144).contains(&p99), "p99 {p99}");
        assert_eq!(h.nonzero().count(), 2);
    }
}

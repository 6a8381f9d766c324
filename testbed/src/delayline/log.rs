//! The ground-truth log: one JSON line per packet per leg, saying when the
//! delay line took the packet and when it gave it back (`docs/testbed.md`).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::mpsc::Receiver;

use serde::{Deserialize, Serialize};

use super::clock::Stamp;
use super::packet::dissect;
use crate::topology::Leg;
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    pub leg: Leg,
    /// UTC ns when the line read the packet from the TUN.
    pub arrival_ns: u64,
    /// UTC ns just before it wrote the packet back.
    pub release_ns: u64,
    /// How long the line held the packet, timed on CLOCK_MONOTONIC: right
    /// even when the wall clock is stepped or slewed in between.
    pub hold_ns: u64,
    /// The delay the schedule gave this packet (jitter included). The hold
    /// is longer when an earlier packet was still held: order is kept.
    pub delay_ns: u64,
    /// IP packet length.
    pub len: u32,
    /// IP protocol number; `None` for anything but IPv4.
    pub proto: Option<u8>,
    pub src_ip: Option<IpAddr>,
    pub src_port: Option<u16>,
    pub dst_ip: Option<IpAddr>,
    pub dst_port: Option<u16>,
    /// `demarc-key-v1` of the UDP payload's inner payload, 16 hex digits as
    /// in probe records.
    #[serde(with = "hex_key")]
    pub key: Option<u64>,
}

impl HoldRecord {
    pub fn new(
        leg: Leg,
        arrival: Stamp,
        release: Stamp,
        delay_ns: u64,
        packet: &[u8],
    ) -> HoldRecord {
        let d = dissect(packet);
        HoldRecord {
            leg,
            arrival_ns: arrival.real_ns,
            release_ns: release.real_ns,
            hold_ns: release.mono_ns.saturating_sub(arrival.mono_ns),
            delay_ns,
            len: packet.len() as u32,
            proto: d.as_ref().map(|d| d.proto),
            src_ip: d.as_ref().map(|d| d.src.into()),
            src_port: d.as_ref().and_then(|d| d.ports).map(|p| p.0),
            dst_ip: d.as_ref().map(|d| d.dst.into()),
            dst_port: d.as_ref().and_then(|d| d.ports).map(|p| p.1),
            key: d.and_then(|d| d.key),
        }
    }
}

/// A released packet on its way to the log; dissecting and formatting happen
/// on the log thread, off the writers' timed path.
pub struct Released {
    pub leg: Leg,
    pub arrival: Stamp,
    pub release: Stamp,
    pub delay_ns: u64,
    pub packet: Vec<u8>,
}

/// Writes what arrives on `rx` to `file` until every sender is gone. Lines
/// are flushed whenever the queue runs dry, so a reader of the file lags by
/// at most the packets in flight.
pub fn write_all(file: File, rx: Receiver<Released>) -> Result<()> {
    let mut out = BufWriter::new(file);
    let err = Error::io("writing the delay-line log");
    let write = |out: &mut BufWriter<File>, r: Released| -> std::io::Result<()> {
        let record = HoldRecord::new(r.leg, r.arrival, r.release, r.delay_ns, &r.packet);
        serde_json::to_writer(&mut *out, &record)?;
        out.write_all(b"\n")
    };
    let result = (|| {
        while let Ok(first) = rx.recv() {
            write(&mut out, first)?;
            while let Ok(next) = rx.try_recv() {
                write(&mut out, next)?;
            }
            out.flush()?;
        }
        Ok(())
    })();
    result.map_err(err)
}

/// Reads a log back, for scenarios and tests.
pub fn read(path: &Path) -> Result<Vec<HoldRecord>> {
    let what = || format!("reading {}", path.display());
    let file = File::open(path).map_err(Error::io(what()))?;
    BufReader::new(file)
        .lines()
        .map(|line| {
            let line = line.map_err(Error::io(what()))?;
            serde_json::from_str(&line).map_err(|e| Error::io(what())(e.into()))
        })
        .collect()
}

mod hex_key {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(key: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match key {
            Some(k) => s.serialize_str(&format!("{k:016x}")),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| {
                u64::from_str_radix(&s, 16)
                    .map_err(|_| D::Error::custom(format!("key {s:?} is not hex")))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delayline::packet::tests::udp_packet;

    #[test]
    fn a_record_round_trips_and_keys_are_hex_like_probe_records() {
        let payload = [0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9];
        // The wall clock stepped back 1 ms during the hold; the hold did not.
        let arrival = Stamp {
            real_ns: 5_000_000,
            mono_ns: 7_000,
        };
        let release = Stamp {
            real_ns: 24_000_000,
            mono_ns: 20_007_000,
        };
        let r = HoldRecord::new(
            Leg::AToRelay,
            arrival,
            release,
            20_000_000,
            &udp_packet(&payload),
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["leg"], "a-to-relay");
        assert_eq!(
            json["key"],
            format!("{:016x}", demarc_proto::packet_key(&payload))
        );
        assert_eq!(json["src_port"], 1111);
        assert_eq!(serde_json::from_value::<HoldRecord>(json).unwrap(), r);
        assert_eq!(r.hold_ns, 20_000_000);
    }

    #[test]
    fn what_is_not_ipv4_is_logged_with_length_only() {
        let now = Stamp::now();
        let r = HoldRecord::new(Leg::RelayToB, now, now, 0, &[0x60; 48]);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["len"], 48);
        assert!(json["key"].is_null() && json["src_ip"].is_null());
    }
}

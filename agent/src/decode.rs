//! Kernel records → the ingest API's records (UTC time, names, addresses).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use demarc_ebpf::abi;
use demarc_proto::{ingest::Record, Class, Framing, NameError, Point};

use crate::clock::Clock;

// The C header and the Rust names must agree on every code.
const _: () = {
    use abi::layout as l;
    assert!(Point::AppSend.code() as u32 == l::POINT_APP_SEND);
    assert!(Point::TxWire.code() as u32 == l::POINT_TX_WIRE);
    assert!(Point::RxWire.code() as u32 == l::POINT_RX_WIRE);
    assert!(Point::AppRecv.code() as u32 == l::POINT_APP_RECV);
    assert!(Point::RelayIn.code() as u32 == l::POINT_RELAY_IN);
    assert!(Point::RelayOut.code() as u32 == l::POINT_RELAY_OUT);
    assert!(Framing::Bare.code() as u32 == l::FRAMING_BARE);
    assert!(Framing::ChannelData.code() as u32 == l::FRAMING_CHANNEL_DATA);
    assert!(Framing::Send.code() as u32 == l::FRAMING_SEND);
    assert!(Framing::Data.code() as u32 == l::FRAMING_DATA);
    assert!(Class::Other.code() as u32 == l::CLASS_OTHER);
    assert!(Class::Rtp.code() as u32 == l::CLASS_RTP);
    assert!(Class::Rtcp.code() as u32 == l::CLASS_RTCP);
    assert!(Class::Dtls.code() as u32 == l::CLASS_DTLS);
    assert!(Class::Stun.code() as u32 == l::CLASS_STUN);
};

/// Converts one kernel record; fails only on codes this build does not know.
pub fn to_ingest(r: &abi::Record, clock: &Clock) -> Result<Record, NameError> {
    let class = Class::try_from(r.class)?;
    let framing = Framing::try_from(r.framing)?;
    let rtp_like = matches!(class, Class::Rtp | Class::Rtcp);
    Ok(Record {
        key: r.key,
        point: Point::try_from(r.point)?,
        ts_ns: clock.to_utc(r.ts_ns),
        payload_len: r.payload_len,
        wire_len: r.wire_len,
        framing,
        class,
        channel: (framing == Framing::ChannelData).then_some(r.channel),
        ssrc: rtp_like.then_some(r.ssrc),
        seq: (class == Class::Rtp).then_some(r.seq),
        stun_type: (class == Class::Stun).then_some(r.stun_type),
        stun_txid: (class == Class::Stun).then_some(r.stun_txid),
        // The kernel writes 4 or 6; anything else can only be IPv4 bytes.
        family: if r.family == 6 { 6 } else { 4 },
        src_ip: ip(r.family, &r.saddr),
        src_port: r.sport,
        dst_ip: ip(r.family, &r.daddr),
        dst_port: r.dport,
        ifindex: r.ifindex,
        netns: u64::from(r.netns),
        tgid: r.tgid,
    })
}

fn ip(family: u8, bytes: &[u8; 16]) -> IpAddr {
    if family == 6 {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

//! What the log says about a packet: its IPv4 addresses, UDP ports and the
//! demarc key of its UDP payload, so log lines join probe records by key.

use std::net::Ipv4Addr;

use demarc_proto::parse_udp_payload;

pub const IPPROTO_UDP: u8 = 17;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dissected {
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// `(source, destination)` for UDP, when the header is present.
    pub ports: Option<(u16, u16)>,
    /// `demarc-key-v1` of the inner payload, when the UDP payload is whole
    /// and holds to its framing.
    pub key: Option<u64>,
}

/// Reads an IPv4 packet as it came from the TUN; `None` for anything else.
pub fn dissect(p: &[u8]) -> Option<Dissected> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(p[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([p[2], p[3]])).min(p.len());
    let mut d = Dissected {
        proto: p[9],
        src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
        dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
        ports: None,
        key: None,
    };
    let frag = u16::from_be_bytes([p[6], p[7]]);
    let (more_fragments, offset) = (frag & 0x2000 != 0, frag & 0x1fff);
    if d.proto != IPPROTO_UDP || offset != 0 || header_len < 20 || total_len < header_len + 8 {
        return Some(d);
    }
    let udp = &p[header_len..total_len];
    d.ports = Some((
        u16::from_be_bytes([udp[0], udp[1]]),
        u16::from_be_bytes([udp[2], udp[3]]),
    ));
    // A first fragment holds only part of the payload: its key would be wrong.
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if !more_fragments && (8..=udp.len()).contains(&udp_len) {
        d.key = parse_udp_payload(&udp[8..udp_len])
            .ok()
            .map(|parsed| parsed.key);
    }
    Some(d)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An IPv4/UDP packet from 10.0.0.1:1111 to 10.0.0.2:2222 (checksums
    /// zero: nothing here reads them).
    pub(crate) fn udp_packet(payload: &[u8]) -> Vec<u8> {
        let total = 28 + payload.len();
        let mut p = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            1,
            0x40,
            0,
            64,
            IPPROTO_UDP,
            0,
            0,
        ];
        p.extend([10, 0, 0, 1, 10, 0, 0, 2]);
        let udp_len = 8 + payload.len();
        p.extend([
            0x04,
            0x57,
            0x08,
            0xae,
            (udp_len >> 8) as u8,
            udp_len as u8,
            0,
            0,
        ]);
        p.extend_from_slice(payload);
        p
    }

    fn rtp() -> Vec<u8> {
        let mut rtp = vec![0x80, 96, 0, 7, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
        rtp.extend([0x55; 100]);
        rtp
    }

    #[test]
    fn udp_gets_ports_and_the_payload_key() {
        let payload = rtp();
        let d = dissect(&udp_packet(&payload)).expect("IPv4");
        assert_eq!(d.proto, IPPROTO_UDP);
        assert_eq!(
            (d.src, d.dst),
            (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2))
        );
        assert_eq!(d.ports, Some((1111, 2222)));
        assert_eq!(d.key, Some(demarc_proto::packet_key(&payload)));
    }

    #[test]
    fn channel_data_is_keyed_by_its_inner_payload() {
        let inner = rtp();
        let mut framed = vec![0x40, 0x00, 0, inner.len() as u8];
        framed.extend(&inner);
        let d = dissect(&udp_packet(&framed)).expect("IPv4");
        assert_eq!(d.key, Some(demarc_proto::packet_key(&inner)));
    }

    #[test]
    fn fragments_and_other_protocols_have_no_key() {
        let mut first = udp_packet(&rtp());
        first[6] |= 0x20;
        assert_eq!(dissect(&first).expect("IPv4").key, None);
        let mut later = udp_packet(&rtp());
        later[7] = 1;
        assert_eq!(dissect(&later).expect("IPv4").ports, None);
        let mut icmp = udp_packet(&[8, 0, 0, 0]);
        icmp[9] = 1;
        let d = dissect(&icmp).expect("IPv4");
        assert_eq!((d.proto, d.ports, d.key), (1, None, None));
    }

    #[test]
    fn not_ipv4_is_none() {
        assert_eq!(dissect(&[0x60; 40]), None);
        assert_eq!(dissect(&[0x45; 10]), None);
    }
}

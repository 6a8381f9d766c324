//! TURN-framing parser and RFC 7983 classifier (`docs/architecture.md`,
//! "Framing and classification"). The Rust twin of
//! `ebpf/include/demarc_parse.h`; `ebpf/testdata/vectors.json` keeps them equal.

use std::ops::Range;

use crate::key::packet_key;
use crate::names::{Class, Framing};

/// STUN magic cookie (RFC 8489).
pub const STUN_MAGIC_COOKIE: u32 = 0x2112_a442;
/// STUN header length.
pub const STUN_HEADER_LEN: usize = 20;
/// TURN Send indication message type.
pub const STUN_SEND_INDICATION: u16 = 0x0016;
/// TURN Data indication message type.
pub const STUN_DATA_INDICATION: u16 = 0x0017;
/// TURN DATA attribute type.
pub const STUN_ATTR_DATA: u16 = 0x0013;
/// Attributes examined when looking for DATA; a fixed bound keeps the BPF
/// twin's loop verifiable.
pub const MAX_STUN_ATTRS: usize = 16;
/// ChannelData header length.
pub const CHANNEL_DATA_HEADER_LEN: usize = 4;

/// What the parser found in one UDP payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub framing: Framing,
    /// TURN channel number, for ChannelData.
    pub channel: Option<u16>,
    /// Where the inner payload lies in the UDP payload.
    pub inner: Range<usize>,
    /// Inner payload length.
    pub payload_len: u32,
    /// UDP payload length.
    pub wire_len: u32,
    pub class: Class,
    /// RTP or RTCP sender SSRC.
    pub ssrc: Option<u32>,
    /// RTP sequence number.
    pub seq: Option<u16>,
    pub stun_type: Option<u16>,
    pub stun_txid: Option<[u8; 12]>,
    /// `demarc-key-v1` of the inner payload.
    pub key: u64,
}

impl Parsed {
    /// Media is recorded (subject to sampling); anything else is only counted.
    pub fn is_media(&self) -> bool {
        self.framing != Framing::Bare || self.class != Class::Other
    }
}

/// A datagram that claims a TURN/STUN shape but does not hold to it
/// (counted as `parse_fail`, not recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("ChannelData of {len} bytes is shorter than its 4-byte header")]
    ChannelDataTooShort { len: usize },
    #[error("ChannelData length {declared} runs past the {available} bytes after its header")]
    ChannelDataPastEnd { declared: u16, available: usize },
    #[error("STUN message of {len} bytes is shorter than its 20-byte header")]
    StunTooShort { len: usize },
    #[error("STUN magic cookie is {0:#010x}")]
    StunBadCookie(u32),
    #[error("STUN message length {0} is not a multiple of 4")]
    StunLengthUnaligned(u16),
    #[error("STUN message length {declared} runs past the {available} bytes after its header")]
    StunPastEnd { declared: u16, available: usize },
    #[error("TURN {0} indication has no DATA attribute among its first 16 attributes")]
    NoDataAttribute(Framing),
    #[error("DATA attribute of {declared} bytes runs past the STUN message")]
    DataPastEnd { declared: u16 },
}

fn be16(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

fn be32(p: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

/// Removes TURN framing from a UDP payload and classifies what it carried.
/// An empty payload is `Ok` and not media.
pub fn parse_udp_payload(p: &[u8]) -> Result<Parsed, ParseError> {
    let (framing, channel, inner) = match p.first() {
        Some(64..=79) => {
            let (channel, inner) = channel_data(p)?;
            (Framing::ChannelData, Some(channel), inner)
        }
        // RFC 5766 channels 0x5000–0x7FFF, still used by coturn's clients;
        // the byte range is shared with QUIC, so only an exact fit counts.
        Some(80..=127) => match channel_data(p) {
            Ok((channel, inner)) if p.len() - inner.end < 4 => {
                (Framing::ChannelData, Some(channel), inner)
            }
            _ => (Framing::Bare, None, 0..p.len()),
        },
        Some(0..=3) => {
            let (framing, inner) = stun_framing(p)?;
            (framing, None, inner)
        }
        _ => (Framing::Bare, None, 0..p.len()),
    };
    let q = &p[inner.clone()];
    let mut parsed = Parsed {
        framing,
        channel,
        payload_len: q.len() as u32,
        wire_len: p.len() as u32,
        class: Class::Other,
        ssrc: None,
        seq: None,
        stun_type: None,
        stun_txid: None,
        key: packet_key(q),
        inner,
    };
    classify(q, &mut parsed);
    Ok(parsed)
}

fn channel_data(p: &[u8]) -> Result<(u16, Range<usize>), ParseError> {
    if p.len() < CHANNEL_DATA_HEADER_LEN {
        return Err(ParseError::ChannelDataTooShort { len: p.len() });
    }
    let declared = be16(p, 2);
    let available = p.len() - CHANNEL_DATA_HEADER_LEN;
    if usize::from(declared) > available {
        return Err(ParseError::ChannelDataPastEnd {
            declared,
            available,
        });
    }
    // Bytes after `len` are padding (RFC 8656 pads to 4 over TCP; some send it over UDP too).
    let start = CHANNEL_DATA_HEADER_LEN;
    Ok((be16(p, 0), start..start + usize::from(declared)))
}

fn stun_framing(p: &[u8]) -> Result<(Framing, Range<usize>), ParseError> {
    if p.len() < STUN_HEADER_LEN {
        return Err(ParseError::StunTooShort { len: p.len() });
    }
    let cookie = be32(p, 4);
    if cookie != STUN_MAGIC_COOKIE {
        return Err(ParseError::StunBadCookie(cookie));
    }
    let mlen = be16(p, 2);
    if !mlen.is_multiple_of(4) {
        return Err(ParseError::StunLengthUnaligned(mlen));
    }
    let available = p.len() - STUN_HEADER_LEN;
    if usize::from(mlen) > available {
        return Err(ParseError::StunPastEnd {
            declared: mlen,
            available,
        });
    }
    let framing = match be16(p, 0) {
        STUN_SEND_INDICATION => Framing::Send,
        STUN_DATA_INDICATION => Framing::Data,
        _ => return Ok((Framing::Bare, 0..p.len())),
    };
    let end = STUN_HEADER_LEN + usize::from(mlen);
    let mut at = STUN_HEADER_LEN;
    for _ in 0..MAX_STUN_ATTRS {
        if at + 4 > end {
            break;
        }
        let (kind, declared) = (be16(p, at), be16(p, at + 2));
        let value = at + 4;
        if kind == STUN_ATTR_DATA {
            if value + usize::from(declared) > end {
                return Err(ParseError::DataPastEnd { declared });
            }
            return Ok((framing, value..value + usize::from(declared)));
        }
        // Values are padded to a multiple of 4.
        at = value + usize::from(declared).next_multiple_of(4);
    }
    Err(ParseError::NoDataAttribute(framing))
}

/// RFC 7983 first-byte demultiplexing of the inner payload.
fn classify(q: &[u8], out: &mut Parsed) {
    match q.first() {
        Some(0..=3) if q.len() >= STUN_HEADER_LEN && be32(q, 4) == STUN_MAGIC_COOKIE => {
            out.class = Class::Stun;
            out.stun_type = Some(be16(q, 0));
            out.stun_txid = Some(q[8..20].try_into().expect("12 bytes"));
        }
        Some(20..=63) => out.class = Class::Dtls,
        // RTCP packet types 192–223 (RFC 5761 §4) sit where RTP has marker + PT 64–95.
        Some(128..=191) if q.len() >= 2 && (192..=223).contains(&q[1]) => {
            out.class = Class::Rtcp;
            out.ssrc = (q.len() >= 8).then(|| be32(q, 4));
        }
        Some(128..=191) if q.len() >= 12 => {
            out.class = Class::Rtp;
            out.seq = Some(be16(q, 2));
            out.ssrc = Some(be32(q, 8));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Field-level cases; ebpf/testdata/vectors.json holds the shared ones.

    #[test]
    fn empty_payload_is_not_media() {
        let p = parse_udp_payload(&[]).unwrap();
        assert_eq!(
            (p.framing, p.class, p.wire_len),
            (Framing::Bare, Class::Other, 0)
        );
        assert_eq!(p.inner, 0..0);
        assert!(!p.is_media());
        assert_eq!(p.key, packet_key(&[]));
    }

    #[test]
    fn rtp_fields_come_from_the_inner_payload() {
        let mut d = vec![0x40, 0x01, 0x00, 0x0c];
        d.extend_from_slice(&[0x80, 0x6f, 0x12, 0x67, 0, 0, 0, 1, 0x12, 0x34, 0x56, 0x78]);
        let p = parse_udp_payload(&d).unwrap();
        assert_eq!(p.framing, Framing::ChannelData);
        assert_eq!(p.channel, Some(0x4001));
        assert_eq!(p.inner, 4..16);
        assert_eq!(
            (p.class, p.seq, p.ssrc),
            (Class::Rtp, Some(0x1267), Some(0x1234_5678))
        );
        assert_eq!(p.key, packet_key(&d[4..]));
        assert_eq!((p.payload_len, p.wire_len), (12, 16));
    }

    #[test]
    fn short_rtcp_has_no_ssrc_and_short_rtp_is_other() {
        let p = parse_udp_payload(&[0x80, 200, 0, 0]).unwrap();
        assert_eq!((p.class, p.ssrc), (Class::Rtcp, None));
        let p = parse_udp_payload(&[0x80, 0x60, 0, 1, 0, 0, 0, 0, 1, 2, 3]).unwrap();
        assert_eq!(p.class, Class::Other);
        assert!(!p.is_media());
        assert_eq!(parse_udp_payload(&[0x80]).unwrap().class, Class::Other);
    }

    #[test]
    fn unaligned_stun_length_is_malformed() {
        let mut d = [0u8; 24];
        d[3] = 2;
        d[4..8].copy_from_slice(&STUN_MAGIC_COOKIE.to_be_bytes());
        assert_eq!(
            parse_udp_payload(&d),
            Err(ParseError::StunLengthUnaligned(2))
        );
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            ParseError::NoDataAttribute(Framing::Send).to_string(),
            "TURN send indication has no DATA attribute among its first 16 attributes"
        );
        assert_eq!(
            ParseError::StunBadCookie(0x2112_a443).to_string(),
            "STUN magic cookie is 0x2112a443"
        );
    }
}

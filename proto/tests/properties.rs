//! Properties of the parser and the key over generated inputs.

use demarc_proto::parse::{MAX_STUN_ATTRS, STUN_ATTR_DATA, STUN_MAGIC_COOKIE};
use demarc_proto::{packet_key, parse_udp_payload, Framing};
use proptest::prelude::*;

/// Arbitrary bytes, and bytes that start like ChannelData or a STUN/TURN
/// message (right cookie, plausible length), so the framing paths are reached
/// often and not only by chance.
fn udp_payload() -> impl Strategy<Value = Vec<u8>> {
    let raw = prop::collection::vec(any::<u8>(), 0..1500);
    let channel = (
        0x4000u16..0x5000,
        0u16..300,
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(ch, len, rest)| [&ch.to_be_bytes()[..], &len.to_be_bytes(), &rest].concat());
    let stun = (
        prop::sample::select(vec![0x0001u16, 0x0101, 0x0016, 0x0017]),
        0u16..200,
        prop::collection::vec(any::<u8>(), 0..250),
    )
        .prop_map(|(kind, mlen, rest)| {
            [
                &kind.to_be_bytes()[..],
                &(mlen & !3).to_be_bytes(),
                &STUN_MAGIC_COOKIE.to_be_bytes(),
                &rest,
            ]
            .concat()
        });
    prop_oneof![raw, channel, stun]
}

/// A STUN attribute that is not DATA, padded to 4.
fn other_attr() -> impl Strategy<Value = Vec<u8>> {
    (any::<u16>(), prop::collection::vec(any::<u8>(), 0..24))
        .prop_filter("not DATA", |(kind, _)| *kind != STUN_ATTR_DATA)
        .prop_map(|(kind, value)| {
            let mut a = [
                &kind.to_be_bytes()[..],
                &(value.len() as u16).to_be_bytes(),
                &value,
            ]
            .concat();
            a.resize(a.len().next_multiple_of(4), 0);
            a
        })
}

proptest! {
    #[test]
    fn parser_never_panics_and_stays_inside_the_input(p in udp_payload()) {
        if let Ok(parsed) = parse_udp_payload(&p) {
            prop_assert!(parsed.inner.start <= parsed.inner.end);
            prop_assert!(parsed.inner.end <= p.len());
            prop_assert_eq!(parsed.payload_len as usize, parsed.inner.len());
            prop_assert_eq!(parsed.wire_len as usize, p.len());
            prop_assert_eq!(parsed.key, packet_key(&p[parsed.inner.clone()]));
            prop_assert_eq!(parsed.channel.is_some(), parsed.framing == Framing::ChannelData);
        }
    }

    #[test]
    fn key_depends_on_length(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        a in any::<prop::sample::Index>(),
        b in any::<prop::sample::Index>(),
        zeros in any::<bool>(),
    ) {
        // All-zero payloads are the case where zero padding could hide the length.
        let bytes = if zeros { vec![0; bytes.len()] } else { bytes };
        let (a, b) = (a.index(bytes.len() + 1), b.index(bytes.len() + 1));
        prop_assume!(a != b);
        prop_assert_ne!(packet_key(&bytes[..a]), packet_key(&bytes[..b]));
    }

    #[test]
    fn channel_data_yields_its_inner_payload(
        channel in 0x4000u16..0x5000,
        inner in prop::collection::vec(any::<u8>(), 0..1400),
        padding in 0usize..4,
    ) {
        let mut p = [&channel.to_be_bytes()[..], &(inner.len() as u16).to_be_bytes(), &inner].concat();
        p.resize(p.len() + padding, 0);
        let parsed = parse_udp_payload(&p).unwrap();
        prop_assert_eq!(parsed.framing, Framing::ChannelData);
        prop_assert_eq!(parsed.channel, Some(channel));
        prop_assert_eq!(&p[parsed.inner.clone()], &inner[..]);
        prop_assert!(parsed.is_media());
    }

    #[test]
    fn send_and_data_indications_yield_their_data_attribute(
        data_indication in any::<bool>(),
        before in prop::collection::vec(other_attr(), 0..MAX_STUN_ATTRS),
        after in prop::collection::vec(other_attr(), 0..4),
        inner in prop::collection::vec(any::<u8>(), 0..1200),
        txid in any::<[u8; 12]>(),
    ) {
        let mut data = [&STUN_ATTR_DATA.to_be_bytes()[..], &(inner.len() as u16).to_be_bytes(), &inner].concat();
        data.resize(data.len().next_multiple_of(4), 0);
        let body = [before.concat(), data, after.concat()].concat();
        let kind: u16 = if data_indication { 0x0017 } else { 0x0016 };
        let p = [
            &kind.to_be_bytes()[..],
            &(body.len() as u16).to_be_bytes(),
            &STUN_MAGIC_COOKIE.to_be_bytes(),
            &txid,
            &body,
        ]
        .concat();
        let parsed = parse_udp_payload(&p).unwrap();
        let want = if data_indication { Framing::Data } else { Framing::Send };
        prop_assert_eq!(parsed.framing, want);
        prop_assert_eq!(&p[parsed.inner.clone()], &inner[..]);
        prop_assert!(parsed.is_media());
    }
}

//! The shared parser/key test vectors, `ebpf/testdata/vectors.json`.
//!
//! The payloads are built here, deterministically, and each case states what
//! the spec (`docs/architecture.md`) says the parser must find — by hand, not
//! by running the parser — so the file is a spec that both this crate and the
//! BPF twin (`demarc_parse.h`, checked with BPF_PROG_TEST_RUN) are held to.
//!
//! `DEMARC_BLESS=1 cargo test -p demarc-proto --test vectors` rewrites the file.

use std::ops::Range;

use demarc_proto::vectors::{hex, Expect, Vector};
use demarc_proto::{packet_key, parse_udp_payload, Class, Framing};

/// What the spec says a media payload yields.
struct Want {
    inner: Range<usize>,
    framing: Framing,
    class: Class,
    channel: Option<u16>,
    ssrc: Option<u32>,
    seq: Option<u16>,
    stun_type: Option<u16>,
    stun_txid: Option<[u8; 12]>,
}

impl Want {
    fn new(inner: Range<usize>, framing: Framing, class: Class) -> Want {
        Want {
            inner,
            framing,
            class,
            channel: None,
            ssrc: None,
            seq: None,
            stun_type: None,
            stun_txid: None,
        }
    }
    fn rtp(inner: Range<usize>, framing: Framing, ssrc: u32, seq: u16) -> Want {
        Want {
            ssrc: Some(ssrc),
            seq: Some(seq),
            ..Want::new(inner, framing, Class::Rtp)
        }
    }
    fn stun(inner: Range<usize>, framing: Framing, stun_type: u16, txid: [u8; 12]) -> Want {
        Want {
            stun_type: Some(stun_type),
            stun_txid: Some(txid),
            ..Want::new(inner, framing, Class::Stun)
        }
    }
    fn channel(self, channel: u16) -> Want {
        Want {
            channel: Some(channel),
            ..self
        }
    }
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn media(name: &str, payload: Vec<u8>, want: Want) -> Vector {
    let inner = &payload[want.inner.clone()];
    Vector {
        name: name.into(),
        udp_payload_hex: hex(&payload),
        expect: Expect::Media,
        key: Some(format!("{:016x}", packet_key(inner))),
        payload_len: Some(inner.len() as u32),
        wire_len: Some(payload.len() as u32),
        framing: Some(want.framing),
        class: Some(want.class),
        channel: want.channel,
        ssrc: want.ssrc,
        seq: want.seq,
        stun_type: want.stun_type,
        stun_txid: want.stun_txid.map(|t| hex(&t)),
    }
}

fn rejected(name: &str, payload: Vec<u8>, expect: Expect) -> Vector {
    Vector::rejected(name, &payload, expect)
}

/// splitmix64: deterministic filler that looks like SRTP/DTLS ciphertext.
struct Filler(u64);

impl Filler {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        out.truncate(n);
        out
    }
    fn txid(&mut self) -> [u8; 12] {
        self.bytes(12).try_into().unwrap()
    }
}

const SSRC_AUDIO: u32 = 0x1234_5678;
const SSRC_VIDEO: u32 = 0x9abc_def0;
const COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// RTP header (RFC 3550): V=2, no padding/extension, `csrcs.len()` as CC.
fn rtp_header(second_byte: u8, seq: u16, ts: u32, ssrc: u32, csrcs: &[u32]) -> Vec<u8> {
    let mut h = vec![0x80 | csrcs.len() as u8, second_byte];
    h.extend_from_slice(&seq.to_be_bytes());
    h.extend_from_slice(&ts.to_be_bytes());
    h.extend_from_slice(&ssrc.to_be_bytes());
    for c in csrcs {
        h.extend_from_slice(&c.to_be_bytes());
    }
    h
}

/// Opus-like RTP: PT 111, no marker.
fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = rtp_header(111, seq, 960 * u32::from(seq), ssrc, &[]);
    p.extend_from_slice(payload);
    p
}

fn stun_attr(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut a = kind.to_be_bytes().to_vec();
    a.extend_from_slice(&(value.len() as u16).to_be_bytes());
    a.extend_from_slice(value);
    a.resize(a.len().next_multiple_of(4), 0);
    a
}

/// A STUN message whose length field covers `attrs` exactly.
fn stun(kind: u16, txid: [u8; 12], attrs: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = attrs.concat();
    let mut m = kind.to_be_bytes().to_vec();
    m.extend_from_slice(&(body.len() as u16).to_be_bytes());
    m.extend_from_slice(&COOKIE);
    m.extend_from_slice(&txid);
    m.extend_from_slice(&body);
    m
}

/// XOR-PEER-ADDRESS / XOR-MAPPED-ADDRESS value for an IPv4 address.
fn xor_addr(ip: [u8; 4], port: u16) -> Vec<u8> {
    let mut v = vec![0, 0x01];
    v.extend_from_slice(&(port ^ 0x2112).to_be_bytes());
    v.extend(ip.iter().zip(COOKIE).map(|(a, c)| a ^ c));
    v
}

fn channel_data(channel: u16, inner: &[u8], padding: usize) -> Vec<u8> {
    let mut p = channel.to_be_bytes().to_vec();
    p.extend_from_slice(&(inner.len() as u16).to_be_bytes());
    p.extend_from_slice(inner);
    p.resize(p.len() + padding, 0);
    p
}

const ATTR_XOR_PEER_ADDRESS: u16 = 0x0012;
const ATTR_DATA: u16 = 0x0013;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const ATTR_PRIORITY: u16 = 0x0024;
const ATTR_USE_CANDIDATE: u16 = 0x0025;
const ATTR_FINGERPRINT: u16 = 0x8028;
const ATTR_ICE_CONTROLLING: u16 = 0x802a;
const ATTR_SOFTWARE: u16 = 0x8022;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const SEND: u16 = 0x0016;
const DATA: u16 = 0x0017;
const PEER: ([u8; 4], u16) = ([10, 0, 1, 2], 50000);

fn ice_binding_request(f: &mut Filler, txid: [u8; 12]) -> Vec<u8> {
    stun(
        BINDING_REQUEST,
        txid,
        &[
            stun_attr(ATTR_USERNAME, b"Xq3f:9Kd2"),
            stun_attr(ATTR_PRIORITY, &0x6e7f_1eff_u32.to_be_bytes()),
            stun_attr(ATTR_ICE_CONTROLLING, &f.bytes(8)),
            stun_attr(ATTR_USE_CANDIDATE, &[]),
            stun_attr(ATTR_MESSAGE_INTEGRITY, &f.bytes(20)),
            stun_attr(ATTR_FINGERPRINT, &f.bytes(4)),
        ],
    )
}

fn dtls_client_hello(f: &mut Filler) -> Vec<u8> {
    // Handshake body: ClientHello with DTLS 1.2, random, empty session and cookie,
    // a few suites, null compression, and opaque extensions.
    let mut hello = vec![0xfe, 0xfd];
    hello.extend(f.bytes(32));
    hello.extend([0, 0]);
    hello.extend([0, 6, 0xc0, 0x2b, 0xc0, 0x2f, 0xcc, 0xa9, 1, 0]);
    hello.extend([0, 40]);
    hello.extend(f.bytes(40));
    let len = hello.len() as u32;
    let mut hs = vec![1];
    hs.extend(&len.to_be_bytes()[1..]);
    hs.extend([0, 0, 0, 0, 0]);
    hs.extend(&len.to_be_bytes()[1..]);
    hs.extend(hello);
    let mut rec = vec![22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

fn vectors() -> Vec<Vector> {
    use Expect::{Malformed, NotMedia};
    use Framing::{Bare, ChannelData, Data, Send};
    let mut f = Filler(0x646d_7263_7665_6331);
    let mut v = Vec::new();

    // Bare RTP around the 64-byte key prefix.
    let p = rtp(4711, SSRC_AUDIO, &[]);
    v.push(media(
        "rtp_header_only_12",
        p,
        Want::rtp(0..12, Bare, SSRC_AUDIO, 4711),
    ));
    let mut p = rtp_header(0xe0, 1, 90_000, SSRC_VIDEO, &[0x1111_1111, 0x2222_2222]);
    p.extend(f.bytes(100));
    let n = p.len();
    v.push(media(
        "rtp_two_csrcs_120",
        p,
        Want::rtp(0..n, Bare, SSRC_VIDEO, 1),
    ));
    let p = rtp(4712, SSRC_AUDIO, &f.bytes(52));
    v.push(media(
        "rtp_exactly_64",
        p,
        Want::rtp(0..64, Bare, SSRC_AUDIO, 4712),
    ));
    let p = rtp(4713, SSRC_AUDIO, &f.bytes(51));
    v.push(media(
        "rtp_exactly_63",
        p,
        Want::rtp(0..63, Bare, SSRC_AUDIO, 4713),
    ));
    let p = rtp(4714, SSRC_AUDIO, &f.bytes(53));
    v.push(media(
        "rtp_exactly_65",
        p,
        Want::rtp(0..65, Bare, SSRC_AUDIO, 4714),
    ));
    // SRTP: the header is clear, then ciphertext and a 10-byte auth tag.
    let mut p = rtp(4715, SSRC_AUDIO, &f.bytes(80));
    p.extend(f.bytes(10));
    v.push(media(
        "srtp_opus_102",
        p,
        Want::rtp(0..102, Bare, SSRC_AUDIO, 4715),
    ));
    // 1200-byte video packet: marker, PT 96, a one-byte-header extension.
    let mut p = rtp_header(0xe0, 30_000, 3_000_000, SSRC_VIDEO, &[]);
    p[0] |= 0x10;
    p.extend([0xbe, 0xde, 0, 1, 0x22, 0x12, 0x34, 0x56]);
    p.extend(f.bytes(1200 - p.len()));
    v.push(media(
        "rtp_video_1200",
        p,
        Want::rtp(0..1200, Bare, SSRC_VIDEO, 30_000),
    ));

    // RTCP vs RTP by the second byte (RFC 5761): 192–223 is RTCP.
    let mut p = vec![0x80, 200, 0, 6];
    p.extend(SSRC_AUDIO.to_be_bytes());
    p.extend(f.bytes(20));
    v.push(media(
        "rtcp_sender_report_28",
        p,
        Want {
            ssrc: Some(SSRC_AUDIO),
            ..Want::new(0..28, Bare, Class::Rtcp)
        },
    ));
    let mut p = vec![0x81, 223, 0, 1];
    p.extend(SSRC_VIDEO.to_be_bytes());
    v.push(media(
        "rtcp_second_byte_223",
        p,
        Want {
            ssrc: Some(SSRC_VIDEO),
            ..Want::new(0..8, Bare, Class::Rtcp)
        },
    ));
    v.push(media(
        "rtcp_4_bytes_no_ssrc",
        vec![0x80, 201, 0, 0],
        Want::new(0..4, Bare, Class::Rtcp),
    ));
    let p = rtp_header(191, 7, 0, SSRC_AUDIO, &[]);
    v.push(media(
        "rtp_second_byte_191",
        p,
        Want::rtp(0..12, Bare, SSRC_AUDIO, 7),
    ));
    let p = rtp_header(224, 8, 0, SSRC_VIDEO, &[]);
    v.push(media(
        "rtp_second_byte_224",
        p,
        Want::rtp(0..12, Bare, SSRC_VIDEO, 8),
    ));
    let p = rtp_header(111, 9, 0, SSRC_AUDIO, &[]);
    v.push(rejected("rtp_like_11_bytes", p[..11].to_vec(), NotMedia));

    // TURN ChannelData.
    let inner = rtp(4716, SSRC_AUDIO, &f.bytes(160));
    let p = channel_data(0x4000, &inner, 0);
    let want = Want::rtp(4..176, ChannelData, SSRC_AUDIO, 4716).channel(0x4000);
    v.push(media("channel_data_rtp_172", p, want));
    let inner = rtp(4717, SSRC_AUDIO, &f.bytes(149));
    let p = channel_data(0x4001, &inner, 3);
    let want = Want::rtp(4..165, ChannelData, SSRC_AUDIO, 4717).channel(0x4001);
    v.push(media("channel_data_rtp_161_padded", p, want));
    let txid = f.txid();
    let inner = ice_binding_request(&mut f, txid);
    let n = 4 + inner.len();
    let p = channel_data(0x4ffe, &inner, 0);
    let want = Want::stun(4..n, ChannelData, BINDING_REQUEST, txid).channel(0x4ffe);
    v.push(media("channel_data_stun_binding_request", p, want));
    let p = channel_data(0x4002, &[], 0);
    let want = Want::new(4..4, ChannelData, Class::Other).channel(0x4002);
    v.push(media("channel_data_empty", p, want));
    let p = channel_data(0x4fff, &[0x55; 8], 0);
    let want = Want::new(4..12, ChannelData, Class::Other).channel(0x4fff);
    v.push(media("channel_data_first_byte_79_other_inner", p, want));
    let mut p = channel_data(0x4003, &f.bytes(100), 0);
    p.truncate(54);
    v.push(rejected("channel_data_length_past_end", p, Malformed));
    v.push(rejected(
        "channel_data_3_bytes",
        vec![0x40, 0x00, 0x00],
        Malformed,
    ));
    // RFC 5766's wider channel range (0x4000–0x7FFF), which coturn clients use.
    let inner = rtp(4719, SSRC_AUDIO, &f.bytes(160));
    let p = channel_data(0x7fff, &inner, 0);
    let want = Want::rtp(4..176, ChannelData, SSRC_AUDIO, 4719).channel(0x7fff);
    v.push(media("channel_data_rfc5766_7fff_rtp", p, want));
    let p = channel_data(0x5000, &[0x55; 97], 3);
    let want = Want::new(4..101, ChannelData, Class::Other).channel(0x5000);
    v.push(media("channel_data_rfc5766_5000_padded", p, want));
    // Same first bytes, not an exact fit: QUIC short headers and the like.
    let p = channel_data(0x6000, &f.bytes(40), 4);
    v.push(rejected(
        "first_byte_96_four_bytes_past_length",
        p,
        NotMedia,
    ));
    let mut p = channel_data(0x5001, &f.bytes(40), 0);
    p.truncate(30);
    v.push(rejected("first_byte_80_length_past_end", p, NotMedia));

    // TURN Send and Data indications.
    let inner = rtp(4718, SSRC_AUDIO, &f.bytes(149));
    let peer = || stun_attr(ATTR_XOR_PEER_ADDRESS, &xor_addr(PEER.0, PEER.1));
    let p = stun(SEND, f.txid(), &[peer(), stun_attr(ATTR_DATA, &inner)]);
    let want = Want::rtp(36..197, Send, SSRC_AUDIO, 4718);
    v.push(media("send_indication_peer_address_then_data_rtp", p, want));
    let inner = [
        vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 48],
        f.bytes(48),
    ]
    .concat();
    let p = stun(DATA, f.txid(), &[stun_attr(ATTR_DATA, &inner), peer()]);
    v.push(media(
        "data_indication_data_first_dtls",
        p,
        Want::new(24..85, Data, Class::Dtls),
    ));
    let p = stun(SEND, f.txid(), &[peer()]);
    v.push(rejected("send_indication_without_data", p, Malformed));
    // DATA must end inside the message, even where the datagram goes on.
    let mut p = stun(SEND, f.txid(), &[peer(), stun_attr(ATTR_DATA, &[0x80; 40])]);
    p[34..36].copy_from_slice(&44u16.to_be_bytes());
    p.extend([0x80; 8]);
    v.push(rejected("send_indication_data_past_message", p, Malformed));
    // The walk stops after 16 attributes: DATA as the 16th is found, as the 17th is not.
    let filler: Vec<Vec<u8>> = (0..16).map(|i| stun_attr(ATTR_SOFTWARE, &[i; 5])).collect();
    let inner = rtp(4719, SSRC_AUDIO, &[]);
    let mut attrs = filler[..15].to_vec();
    attrs.push(stun_attr(ATTR_DATA, &inner));
    let p = stun(SEND, f.txid(), &attrs);
    let at = 20 + 15 * 12 + 4;
    let want = Want::rtp(at..at + 12, Send, SSRC_AUDIO, 4719);
    v.push(media("send_indication_data_is_16th_attribute", p, want));
    let mut attrs = filler.clone();
    attrs.push(stun_attr(ATTR_DATA, &inner));
    let p = stun(SEND, f.txid(), &attrs);
    v.push(rejected(
        "send_indication_data_is_17th_attribute",
        p,
        Malformed,
    ));

    // Bare STUN (ICE checks and consent).
    let txid = f.txid();
    let p = ice_binding_request(&mut f, txid);
    let n = p.len();
    let want = Want::stun(0..n, Bare, BINDING_REQUEST, txid);
    v.push(media("stun_binding_request_ice", p, want));
    let txid = f.txid();
    let attrs = [
        stun_attr(ATTR_XOR_MAPPED_ADDRESS, &xor_addr([192, 0, 2, 1], 40000)),
        stun_attr(ATTR_MESSAGE_INTEGRITY, &f.bytes(20)),
        stun_attr(ATTR_FINGERPRINT, &f.bytes(4)),
    ];
    let p = stun(BINDING_SUCCESS, txid, &attrs);
    let n = p.len();
    let want = Want::stun(0..n, Bare, BINDING_SUCCESS, txid);
    v.push(media("stun_binding_success_response", p, want));
    // Bytes after the message are allowed, and are part of the (bare) payload.
    let txid = f.txid();
    let mut p = stun(BINDING_REQUEST, txid, &[]);
    p.extend([0xaa; 6]);
    let want = Want::stun(0..26, Bare, BINDING_REQUEST, txid);
    v.push(media("stun_header_only_with_6_trailing_bytes", p, want));
    let mut p = stun(BINDING_REQUEST, f.txid(), &[]);
    p[7] ^= 1;
    v.push(rejected("stun_bad_cookie", p, Malformed));
    let mut p = stun(
        BINDING_REQUEST,
        f.txid(),
        &[stun_attr(ATTR_PRIORITY, &[0; 4])],
    );
    p[2..4].copy_from_slice(&12u16.to_be_bytes());
    v.push(rejected("stun_length_past_end", p, Malformed));
    let mut p = stun(
        BINDING_REQUEST,
        f.txid(),
        &[stun_attr(ATTR_PRIORITY, &[0; 4])],
    );
    p[2..4].copy_from_slice(&6u16.to_be_bytes());
    v.push(rejected("stun_length_not_multiple_of_4", p, Malformed));
    let p = stun(BINDING_REQUEST, f.txid(), &[]);
    v.push(rejected("stun_19_bytes", p[..19].to_vec(), Malformed));

    // DTLS.
    let p = dtls_client_hello(&mut f);
    let n = p.len();
    v.push(media(
        "dtls_client_hello",
        p,
        Want::new(0..n, Bare, Class::Dtls),
    ));

    // Other UDP traffic: counted, not recorded.
    v.push(rejected("empty", vec![], NotMedia));
    let mut p = vec![0x5a, 0x3c, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["turn", "example", "org"] {
        p.push(label.len() as u8);
        p.extend(label.as_bytes());
    }
    p.extend([0, 0, 1, 0, 1]);
    v.push(rejected("dns_query_id_5a3c", p, NotMedia));
    let mut p = vec![0xc0, 0, 0, 0, 1, 8];
    p.extend(f.bytes(8));
    p.push(0);
    p.extend(f.bytes(1200 - p.len()));
    v.push(rejected("quic_long_header_1200", p, NotMedia));
    // Edges of the RFC 7983 ranges.
    v.push(rejected("first_byte_4", vec![0x04; 24], NotMedia));
    v.push(rejected("first_byte_19", vec![0x13; 24], NotMedia));
    let p = vec![0x3f; 24];
    v.push(media(
        "dtls_first_byte_63",
        p,
        Want::new(0..24, Bare, Class::Dtls),
    ));
    v.push(rejected("first_byte_80", vec![0x50; 24], NotMedia));
    v.push(rejected("first_byte_127", vec![0x7f; 24], NotMedia));
    v
}

fn render(v: &[Vector]) -> String {
    serde_json::to_string_pretty(v).expect("serialize vectors") + "\n"
}

#[test]
fn vectors_file_is_current() {
    let want = render(&vectors());
    let path = demarc_proto::vectors::path();
    if std::env::var_os("DEMARC_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &want).expect("write vectors.json");
    }
    let have = std::fs::read_to_string(&path).expect("read ebpf/testdata/vectors.json");
    assert!(
        have == want,
        "{} is stale: rerun with DEMARC_BLESS=1",
        path.display()
    );
}

#[test]
fn vector_names_are_unique_and_cover_every_outcome() {
    let v = vectors();
    let mut names: Vec<&str> = v.iter().map(|v| v.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), v.len());
    for e in [Expect::Media, Expect::NotMedia, Expect::Malformed] {
        assert!(v.iter().any(|v| v.expect == e), "{e:?}");
    }
    for f in Framing::ALL {
        assert!(v.iter().any(|v| v.framing == Some(*f)), "{f}");
    }
    for c in Class::ALL {
        assert!(v.iter().any(|v| v.class == Some(*c)), "{c}");
    }
}

#[test]
fn parser_agrees_with_every_vector_in_the_file() {
    let text = std::fs::read_to_string(demarc_proto::vectors::path())
        .expect("read ebpf/testdata/vectors.json");
    let vectors: Vec<Vector> = serde_json::from_str(&text).expect("parse vectors.json");
    for v in &vectors {
        let payload = unhex(&v.udp_payload_hex);
        assert_eq!(&Vector::parsed(v.name.clone(), &payload), v, "{}", v.name);
        let Ok(got) = parse_udp_payload(&payload) else {
            continue;
        };
        assert_eq!(got.inner.len() as u32, got.payload_len, "{}", v.name);
        assert_eq!(
            got.key,
            packet_key(&payload[got.inner.clone()]),
            "{}",
            v.name
        );
    }
}

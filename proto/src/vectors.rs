//! The format of the shared parser/key test vectors,
//! `ebpf/testdata/vectors.json`: written by this crate's tests, checked by
//! them and by the BPF_PROG_TEST_RUN tests of the C twin in `ebpf/`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{parse_udp_payload, Class, Framing};

/// One UDP payload and what the spec says the parser finds in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vector {
    pub name: String,
    pub udp_payload_hex: String,
    pub expect: Expect,
    /// 16 hex digits; the fields below are `None` unless `expect` is media.
    pub key: Option<String>,
    pub payload_len: Option<u32>,
    pub wire_len: Option<u32>,
    pub framing: Option<Framing>,
    pub class: Option<Class>,
    pub channel: Option<u16>,
    pub ssrc: Option<u32>,
    pub seq: Option<u16>,
    pub stun_type: Option<u16>,
    /// 24 hex digits.
    pub stun_txid: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    Media,
    NotMedia,
    Malformed,
}

impl Vector {
    /// A payload that is not media, or malformed: only `expect` is set.
    pub fn rejected(name: impl Into<String>, payload: &[u8], expect: Expect) -> Vector {
        Vector {
            name: name.into(),
            udp_payload_hex: hex(payload),
            expect,
            key: None,
            payload_len: None,
            wire_len: None,
            framing: None,
            class: None,
            channel: None,
            ssrc: None,
            seq: None,
            stun_type: None,
            stun_txid: None,
        }
    }

    /// What this crate's parser finds in `payload`, as a vector.
    pub fn parsed(name: impl Into<String>, payload: &[u8]) -> Vector {
        let mut v = Vector::rejected(name, payload, Expect::NotMedia);
        match parse_udp_payload(payload) {
            Err(_) => v.expect = Expect::Malformed,
            Ok(p) if p.is_media() => {
                v.expect = Expect::Media;
                v.key = Some(format!("{:016x}", p.key));
                v.payload_len = Some(p.payload_len);
                v.wire_len = Some(p.wire_len);
                v.framing = Some(p.framing);
                v.class = Some(p.class);
                v.channel = p.channel;
                v.ssrc = p.ssrc;
                v.seq = p.seq;
                v.stun_type = p.stun_type;
                v.stun_txid = p.stun_txid.map(|t| hex(&t));
            }
            Ok(_) => {}
        }
        v
    }
}

/// Lowercase hex, as the file spells bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the file lives in this repository.
pub fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ebpf/testdata/vectors.json")
}

/// Reads the file.
pub fn load() -> std::io::Result<Vec<Vector>> {
    let text = std::fs::read_to_string(path())?;
    serde_json::from_str(&text).map_err(std::io::Error::other)
}

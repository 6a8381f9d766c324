//! The format of the shared parser/key test vectors,
//! `ebpf/testdata/vectors.json`: written by this crate's tests, checked by
//! them and by the BPF_PROG_TEST_RUN tests of the C twin in `ebpf/`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Class, Framing};

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

/// Where the file lives in this repository.
pub fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ebpf/testdata/vectors.json")
}

/// Reads the file.
pub fn load() -> std::io::Result<Vec<Vector>> {
    let text = std::fs::read_to_string(path())?;
    serde_json::from_str(&text).map_err(std::io::Error::other)
}

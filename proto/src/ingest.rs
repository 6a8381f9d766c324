//! Ingest API, version 1: the JSON that probes POST to the console.
//! `docs/ingest.md` is the contract; a test parses its example.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::names::{Class, Framing, Point};

/// The only API version this crate speaks.
pub const API_VERSION: u32 = 1;
/// Path of the ingest endpoint on the console.
pub const INGEST_PATH: &str = "/api/v1/ingest";
/// More records than this in one batch: `413`.
pub const MAX_RECORDS_PER_BATCH: usize = 20_000;
/// Default request body limit; a larger body: `413`.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Record timestamps further than this from their batch's `sent_at_ns`, or a
/// `sent_at_ns` further than this ahead of the console's clock: `422`.
pub const MAX_TIMESTAMP_SKEW_NS: u64 = 3_600 * 1_000_000_000;
/// Digits of the sequence part of a batch id.
pub const BATCH_SEQ_DIGITS: usize = 12;
/// Hex digits of a probe id.
pub const PROBE_ID_HEX_DIGITS: usize = 16;

/// One POST body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub version: u32,
    /// `<probe id>-<sequence, 12 digits>`, stable across retries.
    pub batch_id: String,
    pub probe: ProbeInfo,
    /// UTC ns when the batch was first sent (kept across retries).
    pub sent_at_ns: u64,
    pub clock: ClockState,
    pub health: Health,
    pub records: Vec<Record>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeInfo {
    /// 16 hex digits, kept in the probe's state directory.
    pub id: String,
    pub name: String,
    pub kind: ProbeKind,
    /// The probe's software version.
    pub version: String,
    /// Inode of the monitored network namespace.
    pub netns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    Endpoint,
    Relay,
}

/// The probe's clock state when the batch was made (from `adjtimex`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockState {
    pub mode: ClockMode,
    /// False when the kernel reports `STA_UNSYNC`.
    pub synchronized: bool,
    pub esterror_ns: u64,
    pub maxerror_ns: u64,
    /// Where the sync state came from, when known.
    pub source: Option<String>,
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`). Probes that
    /// report the same one stamp with one kernel clock (namespaces or
    /// containers of one host), so segments between them have no clock error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_id: Option<String>,
}

/// Which kernel clock the BPF programs read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockMode {
    /// `bpf_ktime_get_tai_ns` minus the TAI offset.
    Tai,
    /// `bpf_ktime_get_ns` plus a sampled REALTIME − MONOTONIC offset.
    Mono,
}

/// Cumulative health since the probe started; the console takes differences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub hooks: Vec<HookStatus>,
    pub fallbacks: Vec<String>,
    pub points: BTreeMap<Point, PointCounters>,
    pub programs: Vec<ProgramStats>,
    pub spool: SpoolStats,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookStatus {
    pub point: Point,
    /// Hook kind, e.g. `xdp`, `tcx`, `tracepoint`.
    pub hook: String,
    /// Interface or tracepoint it is attached to.
    pub target: String,
    /// Attach mode, e.g. `skb` or `driver` for XDP; empty where none applies.
    pub mode: String,
    pub attached: bool,
    pub note: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointCounters {
    pub seen: u64,
    pub media: u64,
    pub recorded: u64,
    pub parse_fail: u64,
    pub ringbuf_full: u64,
    pub map_full: u64,
    pub read_fail: u64,
}

impl PointCounters {
    /// Counter names, in the order of [`PointCounters::values`].
    pub const NAMES: [&'static str; 7] = [
        "seen",
        "media",
        "recorded",
        "parse_fail",
        "ringbuf_full",
        "map_full",
        "read_fail",
    ];

    pub fn values(&self) -> [u64; 7] {
        [
            self.seen,
            self.media,
            self.recorded,
            self.parse_fail,
            self.ringbuf_full,
            self.map_full,
            self.read_fail,
        ]
    }
}

/// Per-program statistics from `BPF_OBJ_GET_INFO_BY_FD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramStats {
    pub name: String,
    pub run_count: u64,
    pub run_time_ns: u64,
    pub recursion_misses: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolStats {
    pub queued_batches: u64,
    pub dropped_batches: u64,
    pub dropped_records: u64,
}

/// One timestamp of one packet at one point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// `demarc-key-v1`, on the wire as 16 lowercase hex digits.
    #[serde(with = "hex_u64")]
    pub key: u64,
    pub point: Point,
    /// UTC ns.
    pub ts_ns: u64,
    /// Inner payload length (after TURN framing).
    pub payload_len: u32,
    /// UDP payload length.
    pub wire_len: u32,
    pub framing: Framing,
    pub class: Class,
    pub channel: Option<u16>,
    pub ssrc: Option<u32>,
    pub seq: Option<u16>,
    pub stun_type: Option<u16>,
    /// On the wire as 24 hex digits. `default` so that, like the other
    /// optional fields, it may also be left out.
    #[serde(with = "hex_txid", default)]
    pub stun_txid: Option<[u8; 12]>,
    /// 4 or 6; must agree with both addresses.
    pub family: u8,
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
    /// 0 at syscall points.
    pub ifindex: u32,
    pub netns: u64,
    /// 0 at wire points.
    pub tgid: u32,
}

/// `200` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestResponse {
    pub accepted: u64,
    pub duplicate: bool,
}

/// Body of every non-`200` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// Why a well-formed JSON batch is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("unsupported API version {0} (this console speaks {API_VERSION})")]
    UnsupportedVersion(u32),
    #[error("probe id {0:?} is not 16 hex digits")]
    BadProbeId(String),
    #[error("batch id {0:?} is not \"<probe id>-<12 digits>\" for this probe")]
    BadBatchId(String),
    #[error("{0} records in one batch (at most {MAX_RECORDS_PER_BATCH})")]
    TooManyRecords(usize),
    #[error("record {index}: family {family} does not match its addresses")]
    FamilyMismatch { index: usize, family: u8 },
    #[error("sent_at_ns {sent_at_ns} is more than 1 h ahead of the console's clock {now_ns}")]
    SentInFuture { sent_at_ns: u64, now_ns: u64 },
    #[error("record {index}: timestamp {ts_ns} is more than 1 h from sent_at_ns {sent_at_ns}")]
    TimestampOutOfRange {
        index: usize,
        ts_ns: u64,
        sent_at_ns: u64,
    },
}

impl ValidationError {
    /// HTTP status the console answers with (`docs/ingest.md`, "Responses").
    pub fn http_status(&self) -> u16 {
        match self {
            ValidationError::UnsupportedVersion(_)
            | ValidationError::BadProbeId(_)
            | ValidationError::BadBatchId(_)
            | ValidationError::FamilyMismatch { .. } => 400,
            ValidationError::TooManyRecords(_) => 413,
            ValidationError::SentInFuture { .. } | ValidationError::TimestampOutOfRange { .. } => {
                422
            }
        }
    }
}

impl Batch {
    /// Checks what serde cannot: version, id shapes, record count, address
    /// families and timestamp plausibility. Record timestamps are judged
    /// against the batch's own `sent_at_ns`, not the console's clock, so a
    /// batch replayed from the spool long after an outage is still accepted;
    /// only `sent_at_ns` itself is held to the console's clock, and only
    /// against lying in the future. Problems that make the request unusable
    /// (400, 413) are reported before timestamp problems (422), so the answer
    /// does not depend on record order.
    pub fn validate(&self, now_utc_ns: u64) -> Result<(), ValidationError> {
        if self.version != API_VERSION {
            return Err(ValidationError::UnsupportedVersion(self.version));
        }
        if !is_hex_id(&self.probe.id) {
            return Err(ValidationError::BadProbeId(self.probe.id.clone()));
        }
        if !self.batch_id_matches_probe() {
            return Err(ValidationError::BadBatchId(self.batch_id.clone()));
        }
        if self.records.len() > MAX_RECORDS_PER_BATCH {
            return Err(ValidationError::TooManyRecords(self.records.len()));
        }
        for (index, r) in self.records.iter().enumerate() {
            let ok = match r.family {
                4 => r.src_ip.is_ipv4() && r.dst_ip.is_ipv4(),
                6 => r.src_ip.is_ipv6() && r.dst_ip.is_ipv6(),
                _ => false,
            };
            if !ok {
                return Err(ValidationError::FamilyMismatch {
                    index,
                    family: r.family,
                });
            }
        }
        if self.sent_at_ns.saturating_sub(now_utc_ns) > MAX_TIMESTAMP_SKEW_NS {
            return Err(ValidationError::SentInFuture {
                sent_at_ns: self.sent_at_ns,
                now_ns: now_utc_ns,
            });
        }
        for (index, r) in self.records.iter().enumerate() {
            if r.ts_ns.abs_diff(self.sent_at_ns) > MAX_TIMESTAMP_SKEW_NS {
                return Err(ValidationError::TimestampOutOfRange {
                    index,
                    ts_ns: r.ts_ns,
                    sent_at_ns: self.sent_at_ns,
                });
            }
        }
        Ok(())
    }

    fn batch_id_matches_probe(&self) -> bool {
        self.batch_id
            .strip_prefix(self.probe.id.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|seq| {
                seq.len() == BATCH_SEQ_DIGITS && seq.bytes().all(|b| b.is_ascii_digit())
            })
    }
}

/// Formats a batch id from its parts.
pub fn batch_id(probe_id: &str, seq: u64) -> String {
    format!("{probe_id}-{seq:0width$}", width = BATCH_SEQ_DIGITS)
}

fn is_hex_id(s: &str) -> bool {
    s.len() == PROBE_ID_HEX_DIGITS && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    // Digit by digit: `from_str_radix` would also take a sign.
    fn nibble(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

mod hex_u64 {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::decode_hex::<8>(&s)
            .map(u64::from_be_bytes)
            .ok_or_else(|| D::Error::custom(format!("key {s:?} is not 16 hex digits")))
    }
}

mod hex_txid {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<[u8; 12]>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(id) => s.serialize_str(&super::encode_hex(id)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 12]>, D::Error> {
        let Some(s) = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)? else {
            return Ok(None);
        };
        super::decode_hex::<12>(&s)
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("stun_txid {s:?} is not 24 hex digits")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000_123_456_789;

    fn doc_example_json() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ingest.md");
        let doc = std::fs::read_to_string(path).expect("read docs/ingest.md");
        let start = doc
            .find("```json\n")
            .expect("a ```json block in docs/ingest.md")
            + 8;
        let len = doc[start..].find("```").expect("end of the ```json block");
        doc[start..start + len].to_owned()
    }

    fn record(ts_ns: u64) -> Record {
        Record {
            key: 0x0123_4567_89ab_cdef,
            point: Point::RxWire,
            ts_ns,
            payload_len: 120,
            wire_len: 120,
            framing: Framing::Bare,
            class: Class::Stun,
            channel: None,
            ssrc: None,
            seq: None,
            stun_type: Some(0x0101),
            stun_txid: Some([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xfe, 0xff]),
            family: 6,
            src_ip: "2001:db8::1".parse().unwrap(),
            src_port: 3478,
            dst_ip: "2001:db8::2".parse().unwrap(),
            dst_port: 50000,
            ifindex: 7,
            netns: 4026531840,
            tgid: 0,
        }
    }

    fn batch(records: Vec<Record>) -> Batch {
        Batch {
            version: API_VERSION,
            batch_id: batch_id("00112233aabbccdd", 7),
            probe: ProbeInfo {
                id: "00112233aabbccdd".into(),
                name: "relay-1".into(),
                kind: ProbeKind::Relay,
                version: "0.1.0".into(),
                netns: 4026531840,
            },
            sent_at_ns: NOW,
            clock: ClockState {
                mode: ClockMode::Mono,
                synchronized: false,
                esterror_ns: 0,
                maxerror_ns: 16_000_000_000,
                source: None,
                kernel_id: None,
            },
            health: Health {
                hooks: vec![],
                fallbacks: vec![],
                points: BTreeMap::from([
                    (Point::RelayOut, PointCounters::default()),
                    (
                        Point::RelayIn,
                        PointCounters {
                            seen: 3,
                            ..Default::default()
                        },
                    ),
                ]),
                programs: vec![],
                spool: SpoolStats::default(),
            },
            records,
        }
    }

    #[test]
    fn doc_example_parses_validates_and_reserializes_identically() {
        let text = doc_example_json();
        let b: Batch = serde_json::from_str(&text).expect("doc example parses as Batch");
        b.validate(b.sent_at_ns).expect("doc example is valid");
        // Replayed from a spool a month later, it is still valid.
        let month = 30 * 24 * MAX_TIMESTAMP_SKEW_NS;
        b.validate(b.sent_at_ns + month)
            .expect("doc example is valid when replayed late");
        assert_eq!(b.probe.kind, ProbeKind::Endpoint);
        assert_eq!(b.clock.mode, ClockMode::Tai);
        let r = &b.records[0];
        assert_eq!(r.key, 0x9a0b_1c2d_3e4f_5061);
        assert_eq!(
            (r.point, r.framing, r.class),
            (Point::AppSend, Framing::ChannelData, Class::Rtp)
        );
        assert_eq!(r.src_ip, IpAddr::from([10, 0, 0, 2]));
        assert_eq!(b.health.points[&Point::AppSend].recorded, 990);
        // Every field of the doc, and nothing else, comes back out.
        let original: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_value(&b).unwrap(), original);
    }

    #[test]
    fn batch_round_trips_with_ipv6_txid_and_nulls() {
        let b = batch(vec![record(NOW)]);
        let text = serde_json::to_string(&b).unwrap();
        assert!(text.contains(r#""key":"0123456789abcdef""#), "{text}");
        assert!(
            text.contains(r#""stun_txid":"00010203040506070809feff""#),
            "{text}"
        );
        assert!(text.contains(r#""source":null"#), "{text}");
        assert!(text.contains(r#""points":{"relay_in":"#), "{text}");
        assert_eq!(serde_json::from_str::<Batch>(&text).unwrap(), b);
    }

    #[test]
    fn responses_round_trip() {
        let ok = IngestResponse {
            accepted: 12,
            duplicate: false,
        };
        let text = serde_json::to_string(&ok).unwrap();
        assert_eq!(text, r#"{"accepted":12,"duplicate":false}"#);
        assert_eq!(serde_json::from_str::<IngestResponse>(&text).unwrap(), ok);
        let err = ErrorBody {
            error: "bad".into(),
        };
        assert_eq!(serde_json::to_string(&err).unwrap(), r#"{"error":"bad"}"#);
    }

    #[test]
    fn hex_fields_reject_wrong_shapes() {
        let good = serde_json::to_value(record(NOW)).unwrap();
        for (field, bad) in [
            ("key", "0123456789abcde"),
            ("key", "0123456789abcdef0"),
            ("key", "0123456789abcdeg"),
            ("key", "+123456789abcdef"),
            ("stun_txid", "000102030405060708090a"),
            ("stun_txid", "00010203040506070809fefé"),
        ] {
            let mut v = good.clone();
            v[field] = serde_json::Value::from(bad);
            assert!(
                serde_json::from_value::<Record>(v).is_err(),
                "{field}={bad}"
            );
        }
        // Upper case is read (the console normalises by storing the number).
        let mut v = good;
        v["key"] = "0123456789ABCDEF".into();
        assert_eq!(
            serde_json::from_value::<Record>(v).unwrap().key,
            0x0123_4567_89ab_cdef
        );
    }

    #[test]
    fn optional_fields_may_be_left_out() {
        let mut v = serde_json::to_value(record(NOW)).unwrap();
        let fields = ["channel", "ssrc", "seq", "stun_type", "stun_txid"];
        for f in fields {
            v.as_object_mut().unwrap().remove(f);
        }
        let r: Record = serde_json::from_value(v).unwrap();
        assert_eq!(
            (r.channel, r.ssrc, r.seq, r.stun_type, r.stun_txid),
            (None, None, None, None, None)
        );
    }

    #[test]
    fn unknown_names_are_rejected() {
        let mut v = serde_json::to_value(record(NOW)).unwrap();
        v["point"] = "nic".into();
        assert!(serde_json::from_value::<Record>(v).is_err());
    }

    #[test]
    fn validate_reports_each_problem_with_its_status() {
        let ok = batch(vec![record(NOW)]);
        assert_eq!(ok.validate(NOW), Ok(()));

        let mut b = ok.clone();
        b.version = 2;
        assert_eq!(b.validate(NOW), Err(ValidationError::UnsupportedVersion(2)));
        assert_eq!(b.validate(NOW).unwrap_err().http_status(), 400);

        let mut b = ok.clone();
        b.probe.id = "00112233aabbccd".into();
        assert!(matches!(
            b.validate(NOW),
            Err(ValidationError::BadProbeId(_))
        ));

        for bad in [
            "00112233aabbccdd-00000000007",
            "00112233aabbccdd-0000000000007",
            "00112233aabbccdd_000000000007",
            "00112233aabbccde-000000000007",
            "00112233aabbccdd-00000000000x",
        ] {
            let mut b = ok.clone();
            b.batch_id = bad.into();
            let e = b.validate(NOW).unwrap_err();
            assert!(matches!(e, ValidationError::BadBatchId(_)), "{bad}");
            assert_eq!(e.http_status(), 400);
        }

        let b = batch(vec![record(NOW); MAX_RECORDS_PER_BATCH + 1]);
        let e = b.validate(NOW).unwrap_err();
        assert_eq!(
            e,
            ValidationError::TooManyRecords(MAX_RECORDS_PER_BATCH + 1)
        );
        assert_eq!(e.http_status(), 413);
        assert_eq!(
            batch(vec![record(NOW); MAX_RECORDS_PER_BATCH]).validate(NOW),
            Ok(())
        );

        let mut b = ok.clone();
        b.records[0].family = 4;
        let e = b.validate(NOW).unwrap_err();
        assert_eq!(
            e,
            ValidationError::FamilyMismatch {
                index: 0,
                family: 4
            }
        );
        assert_eq!(e.http_status(), 400);
    }

    #[test]
    fn validate_bounds_record_timestamps_to_an_hour_around_sent_at() {
        assert_eq!(batch(vec![]).validate(NOW), Ok(()));
        let edge = batch(vec![
            record(NOW - MAX_TIMESTAMP_SKEW_NS),
            record(NOW + MAX_TIMESTAMP_SKEW_NS),
        ]);
        assert_eq!(edge.validate(NOW), Ok(()));
        for ts in [
            NOW - MAX_TIMESTAMP_SKEW_NS - 1,
            NOW + MAX_TIMESTAMP_SKEW_NS + 1,
            0,
        ] {
            let b = batch(vec![record(NOW), record(ts)]);
            let e = b.validate(NOW).unwrap_err();
            assert_eq!(
                e,
                ValidationError::TimestampOutOfRange {
                    index: 1,
                    ts_ns: ts,
                    sent_at_ns: NOW
                }
            );
            assert_eq!(e.http_status(), 422);
        }
        // A 400 problem wins over a 422 one, whatever the record order.
        let mut b = batch(vec![record(0), record(NOW)]);
        b.records[1].family = 4;
        assert_eq!(b.validate(NOW).unwrap_err().http_status(), 400);
    }

    #[test]
    fn validate_accepts_batches_replayed_long_after_they_were_sent() {
        // Spooled through an outage: sent (first tried) a week ago, records
        // from the hour before that, replayed now.
        let week = 7 * 24 * MAX_TIMESTAMP_SKEW_NS;
        let b = batch(vec![
            record(NOW - MAX_TIMESTAMP_SKEW_NS),
            record(NOW - 1),
            record(NOW),
        ]);
        assert_eq!(b.validate(NOW + week), Ok(()));
        assert_eq!(b.validate(u64::MAX), Ok(()));
        // Still judged against sent_at_ns, however late.
        let b = batch(vec![record(NOW - MAX_TIMESTAMP_SKEW_NS - 1)]);
        let e = b.validate(NOW + week).unwrap_err();
        assert!(
            matches!(e, ValidationError::TimestampOutOfRange { index: 0, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn validate_refuses_sent_at_more_than_an_hour_in_the_future() {
        let mut b = batch(vec![record(NOW)]);
        assert_eq!(b.validate(NOW - MAX_TIMESTAMP_SKEW_NS), Ok(()));
        let now = NOW - MAX_TIMESTAMP_SKEW_NS - 1;
        let e = b.validate(now).unwrap_err();
        assert_eq!(
            e,
            ValidationError::SentInFuture {
                sent_at_ns: NOW,
                now_ns: now
            }
        );
        assert_eq!(e.http_status(), 422);
        // Also for a batch without records (health only), and near u64::MAX.
        b.records.clear();
        assert_eq!(b.validate(now).unwrap_err().http_status(), 422);
        b.sent_at_ns = u64::MAX;
        assert_eq!(b.validate(0).unwrap_err().http_status(), 422);
        assert_eq!(b.validate(u64::MAX - MAX_TIMESTAMP_SKEW_NS), Ok(()));
        // A 400 problem wins over it.
        b.version = 2;
        assert_eq!(b.validate(0).unwrap_err().http_status(), 400);
    }

    #[test]
    fn batch_id_pads_the_sequence() {
        assert_eq!(
            batch_id("3f9c2a1e7b5d4c08", 42),
            "3f9c2a1e7b5d4c08-000000000042"
        );
    }
}

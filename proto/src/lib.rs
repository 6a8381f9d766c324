//! demarc's shared protocol core, pure Rust and free of I/O: the packet key,
//! the TURN-framing parser and RFC 7983 classifier (the Rust twin of
//! `ebpf/include/demarc_parse.h`), point/framing/class names, and the ingest
//! API types. `docs/architecture.md` and `docs/ingest.md` are the contract.

pub mod ingest;
pub mod key;
pub mod names;
pub mod parse;
pub mod vectors;

pub use key::{is_sampled, packet_key, sample_threshold};
pub use names::{Class, Framing, NameError, Point};
pub use parse::{parse_udp_payload, ParseError, Parsed};

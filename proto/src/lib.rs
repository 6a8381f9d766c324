//! demarc's shared protocol core, pure Rust and free of I/O: the packet key,
//! the TURN-framing parser and RFC 7983 classifier (the Rust twin of
//! `ebpf/include/demarc_parse.h`), point/framing/class names, and the ingest
//! API types. `docs/architecture.md` and `docs/ingest.md` are the contract.

pub mod ingest;
pub mod names;

pub use names::{Class, Framing, NameError, Point};

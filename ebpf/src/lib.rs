//! demarc's kernel-side programs, compiled from C by `build.rs` and embedded,
//! and the Rust mirror of their record ABI (`include/demarc_abi.h`).

pub mod abi;

/// The endpoint programs: app_send, tx_wire, rx_wire, app_recv.
pub static ENDPOINT_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/endpoint.bpf.o"));

/// The relay programs: relay_in (XDP), relay_in_tc, relay_out (tc egress),
/// and relay_fast (XDP: relay_in plus the in-kernel fast path).
pub static RELAY_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/relay.bpf.o"));

//! demarc's kernel-side programs, compiled from C by `build.rs` and embedded,
//! and the Rust mirror of their record ABI (`include/demarc_abi.h`).

pub mod abi;

/// The endpoint programs: app_send, tx_wire, rx_wire, app_recv.
pub static ENDPOINT_OBJ: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/endpoint.bpf.o"));

/// The relay dwell programs: relay_in (XDP), relay_out (tc egress).
pub static RELAY_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/relay.bpf.o"));

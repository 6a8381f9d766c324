//! demarc-relay: a TURN server that can replace coturn (same job, same
//! config), built so the eBPF dwell-time probe can sit inside it.
//!
//! The protocol state lives in [`turn::Server`], tested without sockets;
//! [`listeners`] drives it with tokio; [`observe`] is where a probe plugs in.

pub mod auth;
mod batch;
pub mod client;
pub mod config;
pub mod connections;
pub mod fastpath;
pub mod framing;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod listeners;
pub mod metrics;
pub mod observe;
pub mod policy;
pub mod probe;
pub mod quota;
pub mod relays;
pub mod tls;
pub mod turn;

use std::net::SocketAddr;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

//! demarc's lab: network namespaces `a — wan-a — relay — wan-b — b` joined by
//! veth pairs ([`topology`]), and a userspace delay line on a TUN per
//! direction in each wan namespace ([`delayline`]) whose per-packet log is
//! the ground truth for the network segments. `docs/testbed.md` describes
//! both.

pub mod bench;
pub mod browser;
mod command;
pub mod delayline;
mod error;
pub mod peer;
pub mod scenario;
pub mod topology;

pub use delayline::{Config, DelayLine, Schedule, Schedules};
pub use error::{Error, Result};
pub use topology::{Host, Leg, Topology};

//! The catalogue of segments: one place for names, labels and columns, so the
//! store, the JSON API, /metrics and the pages cannot drift apart.

use crate::join::{Bounded, Segments};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Segment {
    TxHost,
    NetUp,
    Dwell,
    RelayRelay,
    NetDown,
    RxHost,
    Wire,
    App,
}

impl Segment {
    pub const ALL: [Segment; 8] = [
        Segment::TxHost,
        Segment::NetUp,
        Segment::Dwell,
        Segment::RelayRelay,
        Segment::NetDown,
        Segment::RxHost,
        Segment::Wire,
        Segment::App,
    ];

    /// The parts that add up to App-to-App, in path order (the stacked chart).
    pub const STACK: [Segment; 6] = [
        Segment::TxHost,
        Segment::NetUp,
        Segment::Dwell,
        Segment::RelayRelay,
        Segment::NetDown,
        Segment::RxHost,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Segment::TxHost => "tx_host",
            Segment::NetUp => "net_up",
            Segment::Dwell => "dwell",
            Segment::RelayRelay => "relay_relay",
            Segment::NetDown => "net_down",
            Segment::RxHost => "rx_host",
            Segment::Wire => "wire",
            Segment::App => "app",
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            Segment::TxHost => "TX host",
            Segment::NetUp => "network (to relay)",
            Segment::Dwell => "relay dwell",
            Segment::RelayRelay => "relay → relay",
            Segment::NetDown => "network (from relay)",
            Segment::RxHost => "RX host",
            Segment::Wire => "wire to wire",
            Segment::App => "App-to-App",
        }
    }

    /// Column of `packets` holding the value (ns).
    pub const fn column(self) -> &'static str {
        match self {
            Segment::TxHost => "tx_host_ns",
            Segment::NetUp => "net_up_ns",
            Segment::Dwell => "dwell_ns",
            Segment::RelayRelay => "relay_relay_ns",
            Segment::NetDown => "net_down_ns",
            Segment::RxHost => "rx_host_ns",
            Segment::Wire => "wire_ns",
            Segment::App => "app_ns",
        }
    }

    /// Column of `packets` holding the clock-error bound; same-host segments have none.
    pub const fn err_column(self) -> Option<&'static str> {
        match self {
            Segment::NetUp => Some("err_up_ns"),
            Segment::RelayRelay => Some("err_mid_ns"),
            Segment::NetDown => Some("err_down_ns"),
            Segment::Wire => Some("err_wire_ns"),
            Segment::App => Some("err_app_ns"),
            Segment::TxHost | Segment::Dwell | Segment::RxHost => None,
        }
    }

    /// Value and bound of this segment in a joined packet.
    pub fn of(self, s: &Segments) -> Option<Bounded> {
        let exact = |v: Option<i64>| v.map(|ns| Bounded { ns, err_ns: 0 });
        match self {
            Segment::TxHost => exact(s.tx_host),
            Segment::NetUp => s.net_up,
            Segment::Dwell => exact(s.dwell),
            Segment::RelayRelay => s.relay_relay,
            Segment::NetDown => s.net_down,
            Segment::RxHost => exact(s.rx_host),
            Segment::Wire => s.wire,
            Segment::App => s.app,
        }
    }
}

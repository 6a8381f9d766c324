use std::sync::Arc;

use demarc_proto::{Class, Point};

use super::*;

const T0: i64 = 1_795_000_000_000_000_000;
const US: i64 = 1_000;
const MS: i64 = 1_000_000;

fn ob(key: u64, point: Point, host: &str, ts_ns: i64) -> Obs {
    Obs {
        key,
        point,
        host: Arc::from(host),
        ts_ns,
        clock: ClockBound {
            maxerror_ns: 1_000,
            synced: true,
            kernel: 0,
        },
        class: Class::Rtp,
        ssrc: Some(0x1234),
        seq: Some(7),
        stun_type: None,
        stun_txid: None,
        tuple: Tuple {
            src_ip: [10, 0, 0, 2].into(),
            src_port: 40000,
            dst_ip: [10, 0, 1, 2].into(),
            dst_port: 3478,
        },
    }
}

fn join_one(mut obs: Vec<Obs>) -> Joined {
    // Arrival order must not matter.
    obs.reverse();
    let mut j = Joiner::new(JoinConfig::default());
    for o in obs {
        j.push(0, o);
    }
    let mut closed = j.flush(0);
    assert_eq!(closed.packets.len(), 1);
    closed.packets.pop().unwrap()
}

fn points(j: &Joined) -> Vec<String> {
    j.path
        .iter()
        .map(|h| format!("{}@{}", h.point, h.host))
        .collect()
}

fn b(ns: i64, err_ns: u64) -> Option<Bounded> {
    Some(Bounded { ns, err_ns })
}

#[test]
fn no_relay_path_and_segments() {
    let j = join_one(vec![
        ob(1, Point::AppSend, "a", T0),
        ob(1, Point::TxWire, "a", T0 + 30 * US),
        ob(1, Point::RxWire, "b", T0 + 20 * MS),
        ob(1, Point::AppRecv, "b", T0 + 20 * MS + 150 * US),
    ]);
    assert_eq!(
        points(&j),
        ["app_send@a", "tx_wire@a", "rx_wire@b", "app_recv@b"]
    );
    assert_eq!(j.tx_host.as_deref(), Some("a"));
    assert_eq!(j.rx_host.as_deref(), Some("b"));
    let s = j.seg;
    assert_eq!(s.tx_host, Some(30 * US));
    assert_eq!(s.net_up, b(20 * MS - 30 * US, 2_000));
    assert_eq!((s.dwell, s.relay_relay, s.net_down), (None, None, None));
    assert_eq!(s.rx_host, Some(150 * US));
    assert_eq!(s.wire, s.net_up);
    assert_eq!(s.app, b(20 * MS + 150 * US, 2_000));
    assert!(!j.unsynced);
    assert_eq!(j.flow_key(), "a>b/rtp/00001234");
}

#[test]
fn one_relay_splits_the_network() {
    let j = join_one(vec![
        ob(2, Point::AppSend, "a", T0),
        ob(2, Point::TxWire, "a", T0 + 40 * US),
        ob(2, Point::RelayIn, "r", T0 + 10 * MS),
        ob(2, Point::RelayOut, "r", T0 + 10 * MS + 80 * US),
        ob(2, Point::RxWire, "b", T0 + 35 * MS),
        ob(2, Point::AppRecv, "b", T0 + 35 * MS + 200 * US),
    ]);
    assert_eq!(
        points(&j),
        [
            "app_send@a",
            "tx_wire@a",
            "relay_in@r",
            "relay_out@r",
            "rx_wire@b",
            "app_recv@b"
        ]
    );
    let s = j.seg;
    assert_eq!(s.net_up, b(10 * MS - 40 * US, 2_000));
    assert_eq!(s.dwell, Some(80 * US));
    assert_eq!(s.relay_relay, None);
    assert_eq!(s.net_down, b(35 * MS - 10 * MS - 80 * US, 2_000));
    assert_eq!(s.wire, b(35 * MS - 40 * US, 2_000));
    // The segments add up to App-to-App.
    let sum = s.tx_host.unwrap()
        + s.net_up.unwrap().ns
        + s.dwell.unwrap()
        + s.net_down.unwrap().ns
        + s.rx_host.unwrap();
    assert_eq!(sum, s.app.unwrap().ns);
    assert_eq!(j.relays.len(), 1);
    assert_eq!(j.relays[0].dwell_ns, Some(80 * US));
}

#[test]
fn two_relays_are_ordered_by_time_with_a_relay_to_relay_segment() {
    let j = join_one(vec![
        ob(3, Point::AppSend, "a", T0),
        ob(3, Point::TxWire, "a", T0 + 10 * US),
        // r2 is listed first but comes later on the path.
        ob(3, Point::RelayIn, "r2", T0 + 15 * MS),
        ob(3, Point::RelayOut, "r2", T0 + 15 * MS + 60 * US),
        ob(3, Point::RelayIn, "r1", T0 + 5 * MS),
        ob(3, Point::RelayOut, "r1", T0 + 5 * MS + 50 * US),
        ob(3, Point::RxWire, "b", T0 + 25 * MS),
        ob(3, Point::AppRecv, "b", T0 + 25 * MS + 10 * US),
    ]);
    assert_eq!(
        points(&j),
        [
            "app_send@a",
            "tx_wire@a",
            "relay_in@r1",
            "relay_out@r1",
            "relay_in@r2",
            "relay_out@r2",
            "rx_wire@b",
            "app_recv@b"
        ]
    );
    let s = j.seg;
    assert_eq!(s.dwell, Some(110 * US));
    assert_eq!(s.relay_relay, b(10 * MS - 50 * US, 2_000));
    assert_eq!(s.net_up, b(5 * MS - 10 * US, 2_000));
    assert_eq!(s.net_down, b(10 * MS - 60 * US, 2_000));
    assert_eq!(
        s.tx_host.unwrap()
            + s.net_up.unwrap().ns
            + s.dwell.unwrap()
            + s.relay_relay.unwrap().ns
            + s.net_down.unwrap().ns
            + s.rx_host.unwrap(),
        s.app.unwrap().ns
    );
}

#[test]
fn missing_points_leave_their_segments_empty_and_count_incomplete() {
    let mut j = Joiner::new(JoinConfig::default());
    // No app_send at a, no relay_out: only the segments with both ends exist.
    for o in [
        ob(4, Point::TxWire, "a", T0),
        ob(4, Point::RelayIn, "r", T0 + 10 * MS),
        ob(4, Point::RxWire, "b", T0 + 30 * MS),
        ob(4, Point::AppRecv, "b", T0 + 30 * MS + 5 * US),
    ] {
        j.push(0, o);
    }
    let p = &j.flush(0).packets[0];
    assert_eq!(p.tx_host.as_deref(), Some("a"));
    assert_eq!(p.seg.tx_host, None);
    assert_eq!(p.seg.app, None);
    assert_eq!(p.seg.net_up, b(10 * MS, 2_000));
    assert_eq!(p.seg.dwell, None);
    assert_eq!(p.seg.net_down, None);
    assert_eq!(p.seg.wire, b(30 * MS, 2_000));
    assert_eq!(p.seg.rx_host, Some(5 * US));
    assert_eq!(j.stats().incomplete, 1);

    // A packet only the receiver saw has no sender host.
    let q = join_one(vec![ob(5, Point::RxWire, "b", T0)]);
    assert_eq!(q.tx_host, None);
    assert!(q.flow_key().starts_with("?>b/"));
}

#[test]
fn the_window_runs_over_arrival_time_not_record_time() {
    let cfg = JoinConfig {
        window_ms: 10_000,
        max_pending: 100,
    };
    let mut j = Joiner::new(cfg);
    // Records an hour old (a replay after an outage) arrive at t = 1000 ms.
    j.push(1_000, ob(6, Point::AppSend, "a", T0 - 3_600_000 * MS));
    j.push(
        5_000,
        ob(6, Point::AppRecv, "b", T0 - 3_600_000 * MS + 20 * MS),
    );
    assert!(j.expire(10_999).packets.is_empty());
    let closed = j.expire(11_000);
    assert_eq!(closed.packets.len(), 1);
    assert_eq!(closed.packets[0].seg.app, b(20 * MS, 2_000));
    assert_eq!(j.pending(), 0);
}

#[test]
fn late_records_are_counted_not_joined() {
    let mut j = Joiner::new(JoinConfig {
        window_ms: 1_000,
        max_pending: 100,
    });
    j.push(0, ob(7, Point::AppSend, "a", T0));
    assert_eq!(j.expire(1_000).packets.len(), 1);
    j.push(1_500, ob(7, Point::AppRecv, "b", T0 + MS));
    assert_eq!(j.stats().late, 1);
    assert_eq!(j.pending(), 0);
    // Once a window has passed since closing, the key may be a new packet
    // (identical payloads repeat, e.g. DTLS retransmissions).
    j.expire(2_000);
    j.push(2_000, ob(7, Point::AppSend, "a", T0 + 2_000 * MS));
    assert_eq!(j.pending(), 1);
    assert_eq!(j.stats().late, 1);
}

#[test]
fn duplicates_are_counted_and_the_first_kept() {
    let mut j = Joiner::new(JoinConfig::default());
    j.push(0, ob(8, Point::AppSend, "a", T0));
    j.push(0, ob(8, Point::AppSend, "a", T0 + 5 * MS));
    j.push(0, ob(8, Point::AppRecv, "b", T0 + 10 * MS));
    assert_eq!(j.stats().duplicates, 1);
    let p = &j.flush(0).packets[0];
    assert_eq!(p.path.len(), 2);
    assert_eq!(p.seg.app.unwrap().ns, 10 * MS);
}

#[test]
fn a_flood_of_keys_is_evicted_and_memory_stays_bounded() {
    let mut j = Joiner::new(JoinConfig {
        window_ms: 10_000,
        max_pending: 1_000,
    });
    for key in 0..50_000u64 {
        j.push(key / 100, ob(key, Point::RxWire, "b", T0));
        assert!(j.pending() <= 1_000);
    }
    assert_eq!(j.stats().evicted, 49_000);
    // The survivors are the newest keys.
    let closed = j.flush(500);
    assert_eq!(closed.packets.len(), 1_000);
    assert!(closed.packets.iter().all(|p| p.key >= 49_000));
}

#[test]
fn clock_bounds_sum_both_ends_and_unsynced_is_marked() {
    let mut a = ob(9, Point::TxWire, "a", T0);
    a.clock = ClockBound {
        maxerror_ns: 500_000,
        synced: false,
        kernel: 0,
    };
    let mut r = ob(9, Point::RxWire, "b", T0 + MS);
    r.clock.maxerror_ns = 250_000;
    let p = join_one(vec![a, r]);
    assert_eq!(p.seg.wire, b(MS, 750_000));
    assert!(p.unsynced);

    // One host alone: no cross-host segment, exact, never unsynced.
    let mut s = ob(10, Point::AppSend, "a", T0);
    s.clock.synced = false;
    let p = join_one(vec![s.clone(), ob(10, Point::TxWire, "a", T0 + 20 * US)]);
    assert_eq!(p.seg.tx_host, Some(20 * US));
    assert!(!p.unsynced);
}

#[test]
fn probes_on_one_kernel_share_its_clock() {
    // Two namespaces of one host: unsynchronised, 16 s maxerror each, but one
    // kernel clock, so the cross-host segment is exact and not marked.
    let one_kernel = ClockBound {
        maxerror_ns: 16_000_000_000,
        synced: false,
        kernel: 42,
    };
    let mut a = ob(11, Point::TxWire, "host/a", T0);
    a.clock = one_kernel;
    let mut r = ob(11, Point::RxWire, "host/b", T0 + MS);
    r.clock = one_kernel;
    let p = join_one(vec![a.clone(), r.clone()]);
    assert_eq!(p.seg.wire, b(MS, 0));
    assert!(!p.unsynced);

    // Another kernel: the OWAMP sum again.
    r.clock.kernel = 43;
    let p = join_one(vec![a, r]);
    assert_eq!(p.seg.wire, b(MS, 32_000_000_000));
    assert!(p.unsynced);
}

fn stun(key: u64, ty: u16, point: Point, host: &str, ts: i64) -> Obs {
    Obs {
        class: Class::Stun,
        ssrc: None,
        seq: None,
        stun_type: Some(ty),
        stun_txid: Some([7; 12]),
        ..ob(key, point, host, ts)
    }
}

#[test]
fn stun_request_and_response_give_the_passive_rtt() {
    let mut j = Joiner::new(JoinConfig::default());
    // The response may close before the request.
    for o in [
        stun(21, 0x0101, Point::TxWire, "b", T0 + 21 * MS),
        stun(21, 0x0101, Point::RxWire, "a", T0 + 41 * MS),
    ] {
        j.push(0, o);
    }
    for o in [
        stun(20, 0x0001, Point::TxWire, "a", T0),
        stun(20, 0x0001, Point::RxWire, "b", T0 + 20 * MS),
    ] {
        j.push(1, o);
    }
    let closed = j.flush(2);
    assert_eq!(
        closed.rtts,
        [RttSample {
            host: "a".into(),
            peer: "b".into(),
            ts_ns: T0,
            rtt_ns: 41 * MS,
        }]
    );
    assert!(closed.packets[0]
        .flow_key()
        .starts_with("b>a/stun/10.0.0.2:40000→"));
}

#[test]
fn a_relay_probe_alone_names_the_ends_by_the_addresses_it_saw() {
    let mut i = ob(30, Point::RelayIn, "r", T0);
    i.tuple = Tuple {
        src_ip: [192, 0, 2, 7].into(),
        src_port: 5000,
        dst_ip: [10, 0, 1, 1].into(),
        dst_port: 3478,
    };
    let mut o = ob(30, Point::RelayOut, "r", T0 + 70 * US);
    o.tuple = Tuple {
        src_ip: [10, 0, 1, 1].into(),
        src_port: 50000,
        dst_ip: [198, 51, 100, 9].into(),
        dst_port: 6000,
    };
    let p = join_one(vec![i, o]);
    assert_eq!(p.tx_host.as_deref(), Some("192.0.2.7"));
    assert_eq!(p.rx_host.as_deref(), Some("198.51.100.9"));
    assert_eq!(p.seg.dwell, Some(70 * US));
    assert_eq!(p.flow_key(), "192.0.2.7>198.51.100.9/rtp/00001234");
}

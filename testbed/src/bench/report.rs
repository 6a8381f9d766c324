//! The benchmark's table: medians and spreads over runs, the demarc/coturn
//! ratios, and the probe's overhead, as Markdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use demarc_agent::dwell::DwellHistogram;

use super::{Config, Kind, Measurement};

/// The `q` quantile of a dwell histogram: the middle of the bucket holding it.
pub fn bucket_quantile(h: &DwellHistogram, q: f64) -> Option<f64> {
    h.quantile_bucket(q).map(|(lo, hi)| (lo + hi) as f64 / 2.0)
}

/// Median and (min, max) of the values.
fn spread(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    Some((mid, v[0], v[v.len() - 1]))
}

/// `median unit (min–max)`, each divided by `scale`.
fn cell(values: &[f64], scale: f64, digits: usize, unit: &str) -> String {
    match spread(values) {
        Some((m, lo, hi)) => format!(
            "{:.d$}{unit} ({:.d$}–{:.d$})",
            m / scale,
            lo / scale,
            hi / scale,
            d = digits
        ),
        None => "—".into(),
    }
}

/// ns as µs, with a decimal below 10 µs (the fast path's dwell is sub-µs).
fn micros(ns: f64) -> String {
    let us = ns / 1e3;
    if us < 10.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.0}")
    }
}

/// The whole report.
pub fn markdown(measurements: &[Measurement]) -> String {
    let mut by: BTreeMap<Config, Vec<&Measurement>> = BTreeMap::new();
    for m in measurements {
        by.entry(m.config).or_default().push(m);
    }
    let median = |c: &Config| {
        by.get(c)
            .and_then(|ms| spread(&ms.iter().map(|m| m.max_rate).collect::<Vec<_>>()))
            .map(|s| s.0)
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| server | payload | probe | messages/s at <1% loss | relayed datagrams/s | CPU ns / relayed datagram | server process / server CPU busy | RTT p50 / p99 µs | dwell p50 / p99 µs (moderate) | dwell p50 / p99 µs (at max) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for (config, ms) in &by {
        let col = |f: &dyn Fn(&Measurement) -> Option<f64>| -> Vec<f64> {
            ms.iter().filter_map(|m| f(m)).collect()
        };
        let limited = if ms.iter().any(|m| m.generator_limited) {
            " ≥ (generator-limited)"
        } else {
            ""
        };
        let pair = |a: Vec<f64>, b: Vec<f64>| match (spread(&a), spread(&b)) {
            (Some(a), Some(b)) => format!("{} / {}", micros(a.0), micros(b.0)),
            _ => "—".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} B | {} | {}{limited} | {} | {} | {} / {} | {} | {} | {} |",
            config.kind,
            config.payload,
            if config.probe { "on" } else { "off" },
            cell(&col(&|m| Some(m.max_rate)), 1e3, 1, "k"),
            cell(&col(&|m| Some(2.0 * m.max_rate)), 1e3, 0, "k"),
            cell(&col(&|m| Some(m.cpu_ns_per_datagram)), 1.0, 0, ""),
            cell(&col(&|m| Some(100.0 * m.core_share)), 1.0, 0, "%"),
            cell(&col(&|m| Some(100.0 * m.core_busy)), 1.0, 0, "%"),
            pair(col(&|m| Some(m.rtt.0)), col(&|m| Some(m.rtt.1))),
            pair(
                col(&|m| m.dwell_moderate.map(|d| d.0)),
                col(&|m| m.dwell_moderate.map(|d| d.1))
            ),
            pair(
                col(&|m| m.dwell_max.map(|d| d.0)),
                col(&|m| m.dwell_max.map(|d| d.1))
            ),
        );
    }
    out.push('\n');
    let mut payloads: Vec<usize> = by.keys().map(|c| c.payload).collect();
    payloads.dedup();
    let cfg = |kind, payload, probe| Config {
        payload,
        probe,
        kind,
    };
    for &payload in &payloads {
        for probe in [true, false] {
            for kind in [Kind::Demarc, Kind::DemarcXdp] {
                if let (Some(d), Some(c)) = (
                    median(&cfg(kind, payload, probe)),
                    median(&cfg(Kind::Coturn, payload, probe)),
                ) {
                    let _ = writeln!(
                        out,
                        "- {payload} B, probe {}: {kind}/coturn = {:.2}",
                        if probe { "on" } else { "off" },
                        d / c
                    );
                }
            }
        }
        for kind in [Kind::Demarc, Kind::Coturn] {
            if let (Some(on), Some(off)) = (
                median(&cfg(kind, payload, true)),
                median(&cfg(kind, payload, false)),
            ) {
                let _ = writeln!(
                    out,
                    "- {payload} B, {kind}: throughput with the probe / without = {:.3} (overhead {:.1}%)",
                    on / off,
                    100.0 * (1.0 - on / off)
                );
            }
        }
    }
    let programs = bpf_programs(measurements);
    if !programs.is_empty() {
        out.push_str(
            "\nBPF run time per packet (all probe runs, kernel's run_time_ns / run_cnt):\n\n",
        );
        for (name, (runs, ns)) in programs {
            let _ = writeln!(
                out,
                "- {name}: {:.0} ns over {runs} runs",
                ns as f64 / runs.max(1) as f64
            );
        }
    }
    out
}

/// The headline lines: 160 B (the smallest payload), probe on, the batched
/// user-space relay and the XDP fast path each against coturn.
pub fn headline(measurements: &[Measurement]) -> Option<String> {
    let payload = measurements.iter().map(|m| m.config.payload).min()?;
    let runs = |kind| {
        measurements
            .iter()
            .filter(move |m| m.config.kind == kind && m.config.payload == payload && m.config.probe)
    };
    let rate = |kind| spread(&runs(kind).map(|m| m.max_rate).collect::<Vec<_>>()).map(|s| s.0);
    let coturn = rate(Kind::Coturn)?;
    let ratio = |kind| {
        rate(kind).map_or_else(
            || format!("not measured (no {kind} run with the probe on)"),
            |r| {
                let at_least = if runs(kind).any(|m| m.generator_limited) {
                    " (at least: the load generator could not send faster)"
                } else {
                    ""
                };
                format!("{:.2}{at_least}", r / coturn)
            },
        )
    };
    Some(format!(
        "demarc/coturn userspace = {}\ndemarc/coturn xdp = {}",
        ratio(Kind::Demarc),
        ratio(Kind::DemarcXdp)
    ))
}

fn bpf_programs(measurements: &[Measurement]) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for p in measurements.iter().flat_map(|m| &m.programs) {
        let e = out.entry(p.name.clone()).or_default();
        e.0 += p.run_count;
        e.1 += p.run_time_ns;
    }
    out.retain(|_, (runs, _)| *runs > 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use demarc_agent::dwell::RelayDirection;

    #[test]
    fn quantiles_of_buckets() {
        let mut buckets = vec![0; demarc_ebpf::abi::DWELL_BUCKETS as usize];
        buckets[demarc_ebpf::abi::dwell_bucket(10_000) as usize] = 90;
        buckets[demarc_ebpf::abi::dwell_bucket(200_000) as usize] = 10;
        let h = DwellHistogram {
            listener: 3478,
            direction: RelayDirection::ClientToPeer,
            buckets,
        };
        let p50 = bucket_quantile(&h, 0.5).unwrap();
        let p99 = bucket_quantile(&h, 0.99).unwrap();
        assert!((8_000.0..12_000.0).contains(&p50), "{p50}");
        assert!((160_000.0..240_000.0).contains(&p99), "{p99}");
    }

    #[test]
    fn spread_is_median_min_max() {
        assert_eq!(spread(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(spread(&[4.0, 1.0]), Some((2.5, 1.0, 4.0)));
        assert_eq!(spread(&[]), None);
    }
}

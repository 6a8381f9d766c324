//! `/metrics`: Prometheus text format. Per-flow App-to-App and segment
//! summaries over the last minute of data, and ingest/join counters.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::error::AppError;
use crate::state::{AppState, Counters};
use crate::store::query::{segment_summaries, ProbeRow};

/// Label values may hold anything; quote per the exposition format.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub async fn metrics(State(st): State<AppState>) -> Result<impl IntoResponse, AppError> {
    let mut o = String::new();
    let c = &st.counters;
    let (j, pending) = st.join_stats();
    let counters: [(&str, &str, u64); 16] = [
        (
            "demarc_ingest_batches_total",
            "Batches accepted.",
            Counters::get(&c.batches),
        ),
        (
            "demarc_ingest_records_total",
            "Records accepted.",
            Counters::get(&c.records),
        ),
        (
            "demarc_ingest_duplicate_batches_total",
            "Retried batches already stored.",
            Counters::get(&c.duplicate_batches),
        ),
        (
            "demarc_ingest_rejected_malformed_total",
            "Batches refused with 400.",
            Counters::get(&c.rejected_400),
        ),
        (
            "demarc_ingest_rejected_auth_total",
            "Batches refused with 401.",
            Counters::get(&c.rejected_401),
        ),
        (
            "demarc_ingest_rejected_too_large_total",
            "Batches refused with 413.",
            Counters::get(&c.rejected_413),
        ),
        (
            "demarc_ingest_rejected_timestamp_total",
            "Batches refused with 422.",
            Counters::get(&c.rejected_422),
        ),
        (
            "demarc_ingest_rejected_unavailable_total",
            "Batches refused with 5xx.",
            Counters::get(&c.rejected_503),
        ),
        (
            "demarc_store_errors_total",
            "Failed join writes (retried).",
            Counters::get(&c.store_errors),
        ),
        (
            "demarc_store_dropped_packets_total",
            "Joined packets dropped while the store was unwritable.",
            Counters::get(&c.store_dropped),
        ),
        (
            "demarc_join_records_total",
            "Records handed to the join.",
            j.records,
        ),
        (
            "demarc_join_duplicate_records_total",
            "Second records for the same key, point and host.",
            j.duplicates,
        ),
        (
            "demarc_join_late_records_total",
            "Records for a packet already closed.",
            j.late,
        ),
        (
            "demarc_join_evicted_keys_total",
            "Keys dropped at the pending limit.",
            j.evicted,
        ),
        (
            "demarc_join_packets_total",
            "Packets closed by the join.",
            j.packets,
        ),
        (
            "demarc_join_incomplete_packets_total",
            "Closed packets without App-to-App.",
            j.incomplete,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
    let _ = writeln!(o, "# HELP demarc_join_pending_keys Keys waiting for more records.\n# TYPE demarc_join_pending_keys gauge\ndemarc_join_pending_keys {pending}");

    probe_metrics(&mut o, &crate::store::query::probes(&st.db).await?);

    let to = super::api::extent(&st).await?.map_or(0, |e| e.1) + 1;
    let flows = crate::store::query::flows_since(&st.db, to - 60_000_000_000).await?;
    let _ = writeln!(
        o,
        "# HELP demarc_segment_seconds Segment delay per flow over the last minute of data.\n# TYPE demarc_segment_seconds summary"
    );
    for f in &flows {
        let sums = segment_summaries(&st.db, f.id, to - 60_000_000_000, to)
            .await?
            .segments;
        for (seg, s) in sums {
            let labels = format!(
                "flow=\"{}\",tx_host=\"{}\",rx_host=\"{}\",stream=\"{}\",segment=\"{}\"",
                f.id,
                esc(&f.tx_host),
                esc(&f.rx_host),
                esc(&f.label()),
                seg.name()
            );
            for (q, ns) in [
                ("0.5", s.p50_ns),
                ("0.9", s.p90_ns),
                ("0.99", s.p99_ns),
                ("1", s.max_ns),
            ] {
                let _ = writeln!(
                    o,
                    "demarc_segment_seconds{{{labels},quantile=\"{q}\"}} {}",
                    ns as f64 / 1e9
                );
            }
            let _ = writeln!(o, "demarc_segment_seconds_count{{{labels}}} {}", s.count);
        }
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        o,
    ))
}

/// Name, help and value of a per-probe gauge.
type Gauge = (&'static str, &'static str, fn(&ProbeRow) -> f64);

/// Clock state, last report and the per-point counters of every probe (as
/// reported: cumulative since the probe started, so they reset with it).
fn probe_metrics(o: &mut String, probes: &[ProbeRow]) {
    let gauges: [Gauge; 3] = [
        (
            "demarc_probe_clock_synchronized",
            "1 when the probe's kernel clock is synchronised.",
            |p| f64::from(u8::from(p.clock_synced)),
        ),
        (
            "demarc_probe_clock_maxerror_seconds",
            "The probe's clock maxerror.",
            |p| p.clock_maxerror_ns as f64 / 1e9,
        ),
        (
            "demarc_probe_last_batch_timestamp_seconds",
            "When the probe's last batch arrived (UTC).",
            |p| p.last_seen_ns as f64 / 1e9,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
        for p in probes {
            let _ = writeln!(
                o,
                "{name}{{probe=\"{}\",id=\"{}\"}} {}",
                esc(&p.name),
                esc(&p.id),
                value(p)
            );
        }
    }
    let name = "demarc_probe_point_packets_total";
    let _ = writeln!(
        o,
        "# HELP {name} Per-point counters reported by probes.\n# TYPE {name} counter"
    );
    for p in probes {
        let Some(h) = &p.health else { continue };
        for (point, c) in &h.points {
            for (counter, v) in [
                ("seen", c.seen),
                ("media", c.media),
                ("recorded", c.recorded),
                ("parse_fail", c.parse_fail),
                ("ringbuf_full", c.ringbuf_full),
                ("map_full", c.map_full),
                ("read_fail", c.read_fail),
            ] {
                let _ = writeln!(
                    o,
                    "{name}{{probe=\"{}\",point=\"{point}\",counter=\"{counter}\"}} {v}",
                    esc(&p.name)
                );
            }
        }
    }
}

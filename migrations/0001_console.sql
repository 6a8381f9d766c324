-- demarc-console schema, version 1.
-- Times are UTC nanoseconds (INTEGER), durations nanoseconds.

-- Per-probe ingest tokens; only a SHA-256 of the token is kept.
CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    hash        TEXT    NOT NULL UNIQUE,
    created_ns  INTEGER NOT NULL,
    revoked_ns  INTEGER
);

-- One row per probe (probe.id); the latest health report is kept as JSON
-- because the console only displays it.
CREATE TABLE probes (
    id              TEXT    PRIMARY KEY,
    name            TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    version         TEXT    NOT NULL,
    netns           INTEGER NOT NULL,
    token_id        INTEGER REFERENCES tokens(id),
    first_seen_ns   INTEGER NOT NULL,
    last_seen_ns    INTEGER NOT NULL,
    batches         INTEGER NOT NULL DEFAULT 0,
    records         INTEGER NOT NULL DEFAULT 0,
    clock_mode      TEXT    NOT NULL,
    clock_synced    INTEGER NOT NULL,
    clock_esterror_ns INTEGER NOT NULL,
    clock_maxerror_ns INTEGER NOT NULL,
    clock_source    TEXT    NOT NULL,
    health_json     TEXT    NOT NULL
);

-- Clock state history: a row when a probe's clock state changes.
CREATE TABLE clock_history (
    probe_id        TEXT    NOT NULL REFERENCES probes(id),
    at_ns           INTEGER NOT NULL,
    mode            TEXT    NOT NULL,
    synced          INTEGER NOT NULL,
    esterror_ns     INTEGER NOT NULL,
    maxerror_ns     INTEGER NOT NULL,
    source          TEXT    NOT NULL
);
CREATE INDEX clock_history_probe ON clock_history(probe_id, at_ns);

-- Per-point counters as each batch reported them (cumulative since the probe
-- started); the console takes differences, treating a decrease as a restart.
CREATE TABLE point_counters (
    probe_id        TEXT    NOT NULL REFERENCES probes(id),
    at_ns           INTEGER NOT NULL,
    point           TEXT    NOT NULL,
    seen            INTEGER NOT NULL,
    media           INTEGER NOT NULL,
    recorded        INTEGER NOT NULL,
    parse_fail      INTEGER NOT NULL,
    ringbuf_full    INTEGER NOT NULL,
    map_full        INTEGER NOT NULL,
    read_fail       INTEGER NOT NULL
);
CREATE INDEX point_counters_probe ON point_counters(probe_id, at_ns);

-- Accepted batch ids, for idempotent retries.
CREATE TABLE batches (
    batch_id    TEXT    PRIMARY KEY,
    probe_id    TEXT    NOT NULL,
    received_ns INTEGER NOT NULL,
    records     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX batches_received ON batches(received_ns);

-- A flow is one media stream from a sender host to a receiver host.
CREATE TABLE flows (
    id          INTEGER PRIMARY KEY,
    flow_key    TEXT    NOT NULL UNIQUE,
    tx_host     TEXT    NOT NULL,
    rx_host     TEXT    NOT NULL,
    class       TEXT    NOT NULL,
    ssrc        INTEGER,
    tuple       TEXT    NOT NULL,
    relays      TEXT    NOT NULL,
    first_ns    INTEGER NOT NULL,
    last_ns     INTEGER NOT NULL,
    packets     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX flows_hosts ON flows(tx_host, rx_host);

-- One row per joined packet. Segment columns are NULL when a point is missing.
-- net_up: tx_wire -> first relay_in (or rx_wire when there is no relay);
-- dwell: sum over relays; relay_relay: sum of relay_out -> next relay_in;
-- net_down: last relay_out -> rx_wire; wire: tx_wire -> rx_wire.
-- err_*: clock-error bound of the cross-host segment (sum of both ends).
CREATE TABLE packets (
    id          INTEGER PRIMARY KEY,
    flow_id     INTEGER NOT NULL REFERENCES flows(id),
    key         INTEGER NOT NULL,
    ts_ns       INTEGER NOT NULL,
    seq         INTEGER,
    tx_host_ns  INTEGER,
    net_up_ns   INTEGER,
    dwell_ns    INTEGER,
    relay_relay_ns INTEGER,
    net_down_ns INTEGER,
    rx_host_ns  INTEGER,
    wire_ns     INTEGER,
    app_ns      INTEGER,
    err_up_ns   INTEGER,
    err_mid_ns  INTEGER,
    err_down_ns INTEGER,
    err_wire_ns INTEGER,
    err_app_ns  INTEGER,
    unsynced    INTEGER NOT NULL,
    path_json   TEXT    NOT NULL
);
CREATE INDEX packets_flow_ts ON packets(flow_id, ts_ns);
CREATE INDEX packets_ts ON packets(ts_ns);

-- Dwell per relay hop (a packet through two relays has two rows).
CREATE TABLE dwells (
    relay_host  TEXT    NOT NULL,
    flow_id     INTEGER NOT NULL REFERENCES flows(id),
    ts_ns       INTEGER NOT NULL,
    dwell_ns    INTEGER NOT NULL,
    in_tuple    TEXT    NOT NULL,
    out_tuple   TEXT    NOT NULL
);
CREATE INDEX dwells_relay_ts ON dwells(relay_host, ts_ns);

-- Passive ICE RTT: a binding request out at tx_wire and its success response
-- in at rx_wire of the same host (exact, one clock).
CREATE TABLE rtts (
    host        TEXT    NOT NULL,
    peer_host   TEXT    NOT NULL,
    ts_ns       INTEGER NOT NULL,
    rtt_ns      INTEGER NOT NULL
);
CREATE INDEX rtts_pair_ts ON rtts(host, peer_host, ts_ns);

-- Per-minute rollups per flow and segment, recomputed from packets while the
-- minute is within raw retention, kept much longer.
CREATE TABLE rollups (
    flow_id     INTEGER NOT NULL REFERENCES flows(id),
    minute_ns   INTEGER NOT NULL,
    segment     TEXT    NOT NULL,
    count       INTEGER NOT NULL,
    p50_ns      INTEGER NOT NULL,
    p90_ns      INTEGER NOT NULL,
    p99_ns      INTEGER NOT NULL,
    max_ns      INTEGER NOT NULL,
    err_max_ns  INTEGER,
    PRIMARY KEY (flow_id, minute_ns, segment)
) WITHOUT ROWID;
CREATE INDEX rollups_minute ON rollups(minute_ns);

-- Packets seen per point (point@host) per flow and minute: coverage. Point
-- 'any' (host '') counts the flow's packets seen anywhere, the denominator.
CREATE TABLE coverage (
    flow_id     INTEGER NOT NULL REFERENCES flows(id),
    minute_ns   INTEGER NOT NULL,
    point       TEXT    NOT NULL,
    host        TEXT    NOT NULL,
    packets     INTEGER NOT NULL,
    PRIMARY KEY (flow_id, minute_ns, point, host)
) WITHOUT ROWID;

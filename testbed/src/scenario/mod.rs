//! Scenarios: the whole chain — console, relay, an endpoint probe in `a` and
//! in `b`, the delay lines and WebRTC peers — run for a while, then every
//! measured segment checked against the delay line's log (`check`).
//!
//! Everything a run starts is owned by [`Lab`], whose fields drop in
//! order: probes and relay stop first (they flush), then the delay line,
//! then the namespaces go; the console lives on in the root namespace for
//! as long as the caller keeps it.

pub mod check;
pub mod services;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use crate::browser;
use crate::delayline::log;
use crate::peer::{self, CallOptions, PeerReport};
use crate::topology::{Host, Topology};
use crate::{Config, DelayLine, Error, Result, Schedule, Schedules};
use check::{Direction, DirectionReport, Probe, DIRECTIONS};
use services::{binary, Service};

/// The relay's TURN port at its public address.
pub const TURN_PORT: u16 = 3478;
/// Shared secret of the relay's REST-API credentials; the lab is private.
const TURN_SECRET: &str = "demarc-testbed";
/// Each leg carries half of a direction's one-way delay.
const SYMMETRIC_MS: f64 = 15.0;
const ASYMMETRIC_MS: [f64; 2] = [20.0, 35.0];
const STEP_MS: f64 = 2.0;
/// The console's join window (2 s) and a pipeline pass.
const CONSOLE_SETTLE: Duration = Duration::from_secs(4);
/// Calls at once in `relay-load`.
const LOAD_CALLS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Symmetric,
    Asymmetric,
    Steps,
    RelayLoad,
    /// Symmetric, with headless Chromium as the peers.
    Browser,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Symmetric,
        Kind::Asymmetric,
        Kind::Steps,
        Kind::RelayLoad,
        Kind::Browser,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Symmetric => "symmetric",
            Kind::Asymmetric => "asymmetric",
            Kind::Steps => "steps",
            Kind::RelayLoad => "relay-load",
            Kind::Browser => "browser",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown scenario {s:?}: one of {}", names.join(", "))
            })
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub kind: Kind,
    /// How long the peers send once connected.
    pub duration: Duration,
    /// `steps`: the interval between +2 ms steps on A→B.
    pub step_every: Duration,
    /// `steps`: go back down every other step (the demo's square wave)
    /// instead of climbing.
    pub square: bool,
    /// Headless Chromium as the peers instead of the webrtc crate (always
    /// for `browser`).
    pub chromium: bool,
    pub prefix: String,
    /// Where the console listens (root namespace).
    pub console: SocketAddr,
    /// Logs, database, probe output and the delay line's log.
    pub dir: PathBuf,
}

/// A scheduled change of one direction's delay.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// After the delay line's epoch.
    pub at: Duration,
    pub delta_ns: i64,
}

/// The schedules a scenario gives the legs, and what it says about them.
#[derive(Debug, Clone)]
pub struct Plan {
    pub schedules: Schedules,
    /// Per direction (A→B, B→A): the configured one-way delay, in words.
    pub configured: [String; 2],
    /// Steps of A→B; B→A stays flat.
    pub steps: Vec<Step>,
}

fn half(ms: f64) -> String {
    format!("{}us", (ms * 500.0).round())
}

fn parse(text: &str) -> Schedule {
    text.parse()
        .unwrap_or_else(|e| panic!("built-in schedule {text:?}: {e}"))
}

impl Plan {
    /// `horizon`: how long after the epoch the steps must reach.
    pub fn new(options: &Options, horizon: Duration) -> Plan {
        let [ab, ba] = match options.kind {
            Kind::Asymmetric => ASYMMETRIC_MS,
            _ => [SYMMETRIC_MS; 2],
        };
        let mut steps = Vec::new();
        if options.kind == Kind::Steps {
            let mut at = options.step_every;
            let mut up = true;
            while at < horizon {
                let ms = if up { STEP_MS } else { -STEP_MS };
                steps.push(Step {
                    at,
                    delta_ns: (ms * 1e6) as i64,
                });
                up = !options.square || !up;
                at += options.step_every;
            }
        }
        // The steps go on a-to-relay: the client → relay leg of A→B.
        let mut a_to_relay = half(ab);
        for s in &steps {
            let sign = if s.delta_ns > 0 { "+" } else { "-" };
            a_to_relay.push_str(&format!(
                ",{sign}{}us@{}ms",
                s.delta_ns.abs() / 1000,
                s.at.as_millis()
            ));
        }
        let step_words = match (steps.first(), options.square) {
            (None, _) => String::new(),
            (Some(_), false) => format!(", +{STEP_MS} ms every {:?}", options.step_every),
            (Some(_), true) => format!(", ±{STEP_MS} ms every {:?}", options.step_every),
        };
        Plan {
            schedules: Schedules {
                a_to_relay: parse(&a_to_relay),
                relay_to_b: parse(&half(ab)),
                b_to_relay: parse(&half(ba)),
                relay_to_a: parse(&half(ba)),
            },
            configured: [format!("{ab} ms{step_words}"), format!("{ba} ms")],
            steps,
        }
    }
}

/// Everything a run started; drop order is stop order.
pub struct Lab {
    probes: Vec<(Host, Service, PathBuf)>,
    relay: Option<Service>,
    line: Option<DelayLine>,
    topology: Option<Topology>,
    pub console: Option<Service>,
    pub holds: PathBuf,
    pub epoch_ns: u64,
}

impl Lab {
    /// Checks the machine, then starts the console, the namespaces with the
    /// delay line, the relay and the two probes. On failure everything
    /// already started is stopped and removed.
    pub fn start(options: &Options, plan: &Plan) -> Result<Lab> {
        let console_bin = binary("demarc-console")?;
        let relay_bin = binary("demarc-relay")?;
        let probe_bin = binary("demarc-probe")?;
        services::check_port_free(options.console, "console")?;
        let dir = &options.dir;
        std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let holds = dir.join("holds.jsonl");
        let mut lab = Lab {
            probes: Vec::new(),
            relay: None,
            line: None,
            topology: None,
            console: None,
            holds: holds.clone(),
            epoch_ns: 0,
        };
        // The topology first: it checks for root and iproute2 before
        // anything else is made.
        let topology = lab.topology.insert(Topology::up(&options.prefix)?);
        let db = dir.join("console.db");
        let _ = std::fs::remove_file(&db);
        let db_arg = db.display().to_string();
        let token = |name: &str| -> Result<String> {
            let out = crate::command::output(
                &console_bin,
                &["--db", &db_arg, "token", "create", "--name", name],
            )?;
            Ok(out.trim().to_owned())
        };
        let tokens = [token("a")?, token("b")?, token("relay")?];
        let mut console = Service::start(
            "console",
            &console_bin,
            &[
                "--listen".into(),
                options.console.to_string(),
                "--db".into(),
                db_arg.clone(),
                // Packets reach the pages 2 s after their last record.
                "--join-window".into(),
                "2s".into(),
            ],
            dir,
        )?;
        console.wait_for("demarc-console ready", Duration::from_secs(30))?;
        lab.console = Some(console);

        let line = DelayLine::start(
            topology,
            &Config {
                schedules: plan.schedules.clone(),
                log: holds,
                epoch_ns: None,
                seed: 1,
            },
        )?;
        lab.epoch_ns = line.epoch_ns();
        lab.line = Some(line);

        let relay_ns = topology.netns(Host::Relay);
        let public = Host::Relay.address().to_string();
        let relay_args: Vec<String> = [
            "netns",
            "exec",
            &relay_ns,
            &relay_bin.display().to_string(),
            "--listening-ip",
            &public,
            "--relay-ip",
            &public,
            "--listening-port",
            &TURN_PORT.to_string(),
            "--use-auth-secret",
            "--static-auth-secret",
            TURN_SECRET,
            // The lab's peers, and the relay itself (both peers use relayed
            // candidates on it), are in private ranges TURN refuses by default.
            "--allowed-peer-ip",
            "10.77.0.0/16",
            "--no-tls",
            // The peers delete their allocations on close; nothing to wait for.
            "--drain-timeout",
            "2",
        ]
        .map(String::from)
        .to_vec();
        let mut relay = Service::start("relay", Path::new("ip"), &relay_args, dir)?;
        relay.wait_for("demarc-relay started", Duration::from_secs(30))?;
        lab.relay = Some(relay);

        // Endpoint probes on the peers' interfaces; the relay's dwell probe
        // (`--probe-only`, beside the TURN server) on both of its sides.
        // All run in the root namespace with --netns, so they reach the
        // console on loopback.
        let probes: [(Host, &Path, [&str; 2]); 3] = [
            (Host::A, &probe_bin, ["--iface", "eth0"]),
            (Host::B, &probe_bin, ["--iface", "eth0"]),
            (
                Host::Relay,
                &relay_bin,
                ["--probe-only", "--iface=to-wan-a,to-wan-b"],
            ),
        ];
        for ((host, program, first), token) in probes.into_iter().zip(tokens) {
            let jsonl = dir.join(format!("{host}.jsonl"));
            let mut args: Vec<String> = first.map(String::from).to_vec();
            args.extend([
                "--netns".into(),
                topology.netns(host),
                "--console".into(),
                format!("http://{}", options.console),
                "--token".into(),
                token,
                "--name".into(),
                host.name().into(),
                "--output".into(),
                format!("jsonl:{}", jsonl.display()),
                "--state-dir".into(),
                dir.join(format!("probe-{host}")).display().to_string(),
            ]);
            let mut probe = Service::start(&format!("probe-{host}"), program, &args, dir)?;
            // The start-up report's last line: everything is attached.
            probe.wait_for("  output:", Duration::from_secs(60))?;
            lab.probes.push((host, probe, jsonl));
        }
        Ok(lab)
    }

    pub fn topology(&self) -> &Topology {
        self.topology.as_ref().expect("set while the lab runs")
    }

    /// Stops probes (they flush their output), relay and delay line, removes
    /// the namespaces and returns the probes' records; the console stays.
    pub fn finish(&mut self) -> Result<Vec<Probe>> {
        let mut probes = Vec::new();
        for (host, service, jsonl) in self.probes.drain(..) {
            service.stop()?;
            probes.push(check::read_probe(host.name(), &jsonl)?);
        }
        if let Some(relay) = self.relay.take() {
            relay.stop()?;
        }
        if let Some(line) = self.line.take() {
            line.stop()?;
        }
        if let Some(topology) = self.topology.take() {
            topology.down()?;
        }
        Ok(probes)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Probes and relay before the line, the line before the namespaces.
        self.probes.clear();
        self.relay = None;
        self.line = None;
        self.topology = None;
    }
}

pub fn call_options(duration: Duration, stop: Arc<AtomicBool>) -> CallOptions {
    CallOptions {
        turn: SocketAddr::from((Host::Relay.address(), TURN_PORT)),
        secret: TURN_SECRET.into(),
        duration,
        connect_timeout: Duration::from_secs(30),
        stop,
    }
}

/// A finished scenario: the tables, what failed, and the console (still
/// running until dropped) with the run's data.
pub struct Outcome {
    pub text: String,
    pub failures: Vec<String>,
    pub directions: Vec<DirectionReport>,
    pub peers: Vec<PeerReport>,
    pub console: Option<Service>,
}

/// Runs a scenario to the end (or until `stop` is set) and checks it.
pub fn run(options: &Options, stop: Arc<AtomicBool>) -> Result<Outcome> {
    // Steps must reach past connecting (a few seconds relay-only) and the call.
    let horizon = options.duration + Duration::from_secs(30);
    let plan = Plan::new(options, horizon);
    let mut lab = Lab::start(options, &plan)?;
    println!(
        "console: http://{}/  (direction comparison: http://{}/pairs/a/b)",
        options.console, options.console
    );
    println!("logs:    {}", options.dir.display());
    let call = call_options(options.duration, stop);
    let peers = match options.kind {
        Kind::Browser => browser::call(lab.topology(), &call, &options.dir)?,
        _ if options.chromium => browser::call(lab.topology(), &call, &options.dir)?,
        Kind::RelayLoad => peer::calls(lab.topology(), &call, LOAD_CALLS)?,
        _ => peer::calls(lab.topology(), &call, 1)?,
    };
    let probes = lab.finish()?;
    let holds = log::read(&lab.holds)?;
    let mut outcome = evaluate(&plan, lab.epoch_ns, &probes, &holds, &peers);
    // The console closes a packet one join window after its first record.
    std::thread::sleep(CONSOLE_SETTLE);
    let (compared, wrong) = check::console_agrees(options.console, &probes)?;
    outcome.text.push_str(&format!(
        "console: {compared} packets of its JSON API compared with the probes' records, {} differ\n",
        wrong.len()
    ));
    if compared == 0 {
        outcome.failures.push("the console shows no packet".into());
    }
    outcome.failures.extend(wrong.into_iter().take(10));
    outcome.console = lab.console.take();
    Ok(outcome)
}

/// The checks of DESIGN §7 and the done-when thresholds.
pub fn evaluate(
    plan: &Plan,
    epoch_ns: u64,
    probes: &[Probe],
    holds: &[log::HoldRecord],
    peers: &[PeerReport],
) -> Outcome {
    use std::fmt::Write as _;
    let mut text = String::new();
    let mut failures = Vec::new();
    let relay = probes.iter().any(|p| p.host == Host::Relay.name());
    let directions: Vec<DirectionReport> = DIRECTIONS
        .iter()
        .map(|d| check::direction(probes, holds, *d, relay))
        .collect();
    let rtts: Vec<(&str, Vec<i64>)> = probes
        .iter()
        .filter(|p| p.host != Host::Relay.name())
        .map(|p| (p.host, check::ice_rtts(p)))
        .collect();
    let all_rtts = {
        let mut v: Vec<i64> = rtts.iter().flat_map(|(_, r)| r.iter().copied()).collect();
        v.sort_unstable();
        v
    };
    let wire_p50 = |r: &DirectionReport| {
        r.segment("wire")
            .and_then(|s| check::percentile(&s.measured, 50.0))
    };
    let sum_one_way: Option<i64> = directions.iter().map(wire_p50).sum();
    for (report, configured) in directions.iter().zip(&plan.configured) {
        let _ = write!(text, "{}", check::table(report, configured));
        let Direction { from, to, .. } = report.dir;
        if let Some(one_way) = wire_p50(report) {
            let mut rtt_line = |what: &str, half: i64| {
                let _ = writeln!(
                    text,
                    "  RTT/2 ({what}) {} ms, error {} µs",
                    check::ms(half),
                    check::us(half - one_way)
                );
            };
            if let Some(rtt) = check::percentile(&all_rtts, 50.0) {
                rtt_line(&format!("passive ICE, {} samples", all_rtts.len()), rtt / 2);
            }
            if let Some(sum) = sum_one_way {
                rtt_line("sum of one-way p50s", sum / 2);
            }
        }
        let net: Vec<&check::SegmentStats> = report
            .segments
            .iter()
            .filter(|s| !s.truth.is_empty())
            .filter(|s| !relay || s.name != "wire")
            .collect();
        if net.is_empty() {
            failures.push(format!(
                "{from} → {to}: no packet joined with the delay line's log"
            ));
        }
        for s in net {
            let p99 = check::percentile(&s.error, 99.0).unwrap_or(i64::MAX);
            let min = s.error.first().copied().unwrap_or(0);
            if p99 > check::NETWORK_P99_LIMIT_NS {
                failures.push(format!(
                    "{from} → {to} {}: error p99 {} µs over the {} µs limit",
                    s.name,
                    check::us(p99),
                    check::NETWORK_P99_LIMIT_NS / 1000
                ));
            }
            if min < check::EARLY_LIMIT_NS {
                failures.push(format!(
                    "{from} → {to} {}: a packet measured {} µs shorter than its holds",
                    s.name,
                    check::us(min)
                ));
            }
        }
        if report.app_complete == 0 || report.app_equal != report.app_complete {
            failures.push(format!(
                "{from} → {to}: App-to-App equals the sum of segments on {}/{} packets",
                report.app_equal, report.app_complete
            ));
        }
    }
    check_steps(plan, epoch_ns, &directions, &mut text, &mut failures);
    for p in peers {
        let _ = writeln!(
            text,
            "peer {}: connected after {:.1} s; sent audio {} video {} data {}; received audio {} video {} data {}",
            p.host,
            p.connected_after.as_secs_f64(),
            p.sent.audio,
            p.sent.video,
            p.sent.data,
            p.received.audio,
            p.received.video,
            p.received.data
        );
    }
    let (sent, received) = peers.iter().fold((0, 0), |(s, r), p| {
        (
            s + p.sent.audio + p.sent.video,
            r + p.received.audio + p.received.video,
        )
    });
    // Loss is not expected in the lab; a few packets in flight at the end are.
    if received * 100 < sent * 98 {
        failures.push(format!("peers received {received} of {sent} media packets"));
    }
    Outcome {
        text,
        failures,
        directions,
        peers: peers.to_vec(),
        console: None,
    }
}

/// A segment's series, if it has one.
fn series<'a>(r: &'a DirectionReport, name: &str) -> Option<&'a [(u64, i64)]> {
    r.segment(name)
        .map(|s| s.series.as_slice())
        .filter(|s| !s.is_empty())
}

/// Each step of A→B found within [`check::STEP_WINDOW_NS`] of its time, and
/// B→A's level unmoved there. Steps outside the measured span are skipped.
fn check_steps(
    plan: &Plan,
    epoch_ns: u64,
    directions: &[DirectionReport],
    text: &mut String,
    failures: &mut Vec<String>,
) {
    use std::fmt::Write as _;
    // The stepped leg is client → relay: found on net_up where the relay
    // probe splits the path (the relay's dwell stays out of it), else wire.
    let (Some(ab), Some(ba)) = (
        directions
            .first()
            .and_then(|r| series(r, "net_up").or_else(|| series(r, "wire"))),
        directions.get(1).and_then(|r| series(r, "wire")),
    ) else {
        return;
    };
    let (first, last) = match (ab.first(), ab.last()) {
        (Some(f), Some(l)) => (f.0, l.0),
        _ => return,
    };
    let margin = 2 * check::STEP_WINDOW_NS;
    let mut checked = 0;
    for step in &plan.steps {
        let at = epoch_ns + step.at.as_nanos() as u64;
        if at < first + margin || at + margin > last {
            continue;
        }
        checked += 1;
        match check::find_step(ab, at, step.delta_ns) {
            Some(seen) if seen.abs_diff(at) <= check::STEP_WINDOW_NS => {
                let _ = writeln!(
                    text,
                    "step {:+} ms at {:?}: A → B moved {} ms after it",
                    step.delta_ns as f64 / 1e6,
                    step.at,
                    check::ms(seen as i64 - at as i64)
                );
            }
            Some(seen) => failures.push(format!(
                "step at {:?}: A → B moved {} ms away from it",
                step.at,
                check::ms(seen as i64 - at as i64)
            )),
            None => failures.push(format!("step at {:?}: A → B never moved", step.at)),
        }
        let window = 5 * check::STEP_WINDOW_NS;
        let guard = check::STEP_WINDOW_NS / 5;
        let before = check::level(ba, at - window, at - guard);
        let after = check::level(ba, at + guard, at + window);
        if let (Some(b), Some(a)) = (before, after) {
            if (a - b).abs() > step.delta_ns.abs() / 4 {
                failures.push(format!(
                    "step at {:?}: B → A moved {} ms too",
                    step.at,
                    check::ms(a - b)
                ));
            }
        }
    }
    if !plan.steps.is_empty() && checked == 0 {
        failures.push("no step fell inside the measured call".into());
    }
}

//! Headless Chromium: as WebRTC peers in `a` and `b` (fake camera and
//! microphone, ICE relay-only through the relay), and for screenshots of
//! the console's pages.
//!
//! Chromium looks up Google hosts even with background networking off, so
//! every run maps all host names to nothing but the one it needs, and the
//! peers run with a resolv.conf pointing at 127.0.0.1 bind-mounted over
//! /etc/resolv.conf inside their namespace's own mount namespace (`ip netns
//! exec` makes one) — MACHINE-NOTES.md, "Real browsers as WebRTC peers".

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::peer::{CallOptions, PeerReport, Traffic};
use crate::scenario::services::Service;
use crate::topology::{netns, Host, Topology};
use crate::{Error, Result};

/// Debian's Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The signalling server, in the relay namespace on its public address.
const SIGNAL_PORT: u16 = 8089;
/// The page both browsers load; the query says which side they are.
const PAGE: &str = include_str!("browser/peer.html");

/// Flags every Chromium run here takes: no background traffic, a fresh
/// profile, and no name resolved but `allow`.
fn base_flags(profile: &Path, allow: &str) -> Vec<String> {
    [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-proxy-server",
    ]
    .map(String::from)
    .into_iter()
    .chain([
        format!("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {allow}"),
        format!("--user-data-dir={}", profile.display()),
    ])
    .collect()
}

fn check_chromium() -> Result<()> {
    if Path::new(CHROMIUM).is_file() {
        Ok(())
    } else {
        Err(Error::MissingTool {
            tool: "chromium",
            hint: "install Debian's chromium (scripts/setup.sh does)",
        })
    }
}

/// Screenshots `url` (served on 127.0.0.1) into `file` once its scripts
/// have had `budget` of virtual time to fetch and draw.
pub fn screenshot(url: &str, file: &Path, work: &Path, budget: Duration) -> Result<()> {
    check_chromium()?;
    let profile = work.join("chromium-screenshot");
    let _ = std::fs::remove_dir_all(&profile);
    let mut args = base_flags(&profile, "127.0.0.1");
    args.extend([
        "--window-size=1400,1800".into(),
        "--hide-scrollbars".into(),
        format!("--virtual-time-budget={}", budget.as_millis()),
        format!("--screenshot={}", file.display()),
        url.into(),
    ]);
    let out = std::process::Command::new(CHROMIUM)
        .args(&args)
        .output()
        .map_err(Error::io("running chromium"))?;
    if !file.is_file() {
        return Err(Error::Command {
            cmd: format!("chromium --screenshot {url}"),
            stderr: String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', "; "),
        });
    }
    Ok(())
}

/// Screenshots every page of the console at `console` into `out`: the
/// overview, the direction comparison a/b, the first RTP flow from a, the
/// relay's dwell and the probes. Returns the files written.
pub fn screenshot_console(console: SocketAddr, out: &Path, work: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).map_err(Error::io(format!("creating {}", out.display())))?;
    let (_, flows) = crate::scenario::services::http_get(console, "/api/v1/flows")
        .map_err(Error::io(format!("asking {console} for its flows")))?;
    let flows: Vec<serde_json::Value> = serde_json::from_str(&flows).unwrap_or_default();
    let flow = flows
        .iter()
        .find(|f| f["class"] == "rtp" && f["tx_host"] == "a")
        .and_then(|f| f["id"].as_i64());
    let mut pages = vec![
        ("overview", "/".to_owned()),
        ("pair-a-b", "/pairs/a/b".to_owned()),
        ("relay", "/relays/relay".to_owned()),
        ("probes", "/probes".to_owned()),
    ];
    if let Some(id) = flow {
        pages.push(("flow-a-b-rtp", format!("/flows/{id}")));
    }
    pages
        .into_iter()
        .map(|(name, path)| {
            let file = out.join(format!("{name}.png"));
            screenshot(
                &format!("http://{console}{path}"),
                &file,
                work,
                Duration::from_secs(10),
            )?;
            Ok(file)
        })
        .collect()
}

/// What a browser reports when its call ends (from `getStats`).
#[derive(Debug, Default, Deserialize)]
struct Done {
    audio_sent: u64,
    video_sent: u64,
    data_sent: u64,
    audio_received: u64,
    video_received: u64,
    data_received: u64,
}

/// Runs one call between Chromium in `a` (offerer) and in `b`.
pub fn call(topology: &Topology, options: &CallOptions, work: &Path) -> Result<Vec<PeerReport>> {
    check_chromium()?;
    let server = Signalling::start(topology)?;
    let resolv = work.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\n")
        .map_err(Error::io(format!("writing {}", resolv.display())))?;
    let origin = format!("http://{}", server.addr);
    let started = Instant::now();
    let mut browsers = Vec::new();
    for (host, role) in [(Host::A, "offer"), (Host::B, "answer")] {
        let (username, credential) = crate::peer::rest_credentials(&options.secret, host.name());
        let url = format!(
            "{origin}/?role={role}&turn={}&username={username}&credential={}&seconds={}",
            options.turn,
            urlencode(&credential),
            options.duration.as_secs()
        );
        let profile = work.join(format!("chromium-{host}"));
        let _ = std::fs::remove_dir_all(&profile);
        let mut flags = base_flags(&profile, &Host::Relay.address().to_string());
        flags.extend([
            "--use-fake-device-for-media-stream".into(),
            "--use-fake-ui-for-media-stream".into(),
            "--autoplay-policy=no-user-gesture-required".into(),
            // getUserMedia needs a secure origin; the signalling page is plain HTTP.
            format!("--unsafely-treat-insecure-origin-as-secure={origin}"),
            url,
        ]);
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            topology.netns(host),
            "sh".into(),
            "-c".into(),
            format!(
                "mount --bind {} /etc/resolv.conf && exec {CHROMIUM} \"$@\"",
                resolv.display()
            ),
            "sh".into(),
        ];
        args.extend(flags);
        browsers.push(Service::start(
            &format!("chromium-{host}"),
            Path::new("ip"),
            &args,
            work,
        )?);
    }
    let connected = server.wait(
        |kv| {
            ["a", "b"]
                .iter()
                .all(|h| kv.get(&format!("state-{h}")).map(String::as_str) == Some("connected"))
        },
        options.connect_timeout,
        &options.stop,
    );
    if !connected {
        let states = server.snapshot();
        let state = |h: &str| {
            states
                .get(&format!("state-{h}"))
                .cloned()
                .unwrap_or_else(|| "no report".into())
        };
        return Err(Error::Peer {
            host: Host::A,
            message: format!(
                "Chromium peers did not connect through the relay at {} within {:?} (a: {}, b: {}; logs in {})",
                options.turn,
                options.connect_timeout,
                state("a"),
                state("b"),
                work.display()
            ),
        });
    }
    let connected_after = started.elapsed();
    // The pages end their call after the duration and report their stats.
    server.wait(
        |kv| kv.contains_key("done-a") && kv.contains_key("done-b"),
        options.duration + Duration::from_secs(20),
        &options.stop,
    );
    drop(browsers);
    let kv = server.snapshot();
    let stopped = options.stop.load(Ordering::Relaxed);
    [Host::A, Host::B]
        .into_iter()
        .map(|host| {
            let done: Option<Done> = kv
                .get(&format!("done-{host}"))
                .and_then(|s| serde_json::from_str(s).ok());
            // A call ended early (Ctrl-C) has nothing to report.
            let done = match done {
                Some(d) => d,
                None if stopped => Done::default(),
                None => {
                    return Err(Error::Peer {
                        host,
                        message: "Chromium did not report the end of its call".into(),
                    })
                }
            };
            Ok(PeerReport {
                host,
                connected_after,
                sent: Traffic {
                    audio: done.audio_sent,
                    video: done.video_sent,
                    data: done.data_sent,
                },
                received: Traffic {
                    audio: done.audio_received,
                    video: done.video_received,
                    data: done.data_received,
                },
            })
        })
        .collect()
}

/// The TURN credential is base64: `+` and `/` must survive the query string.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

type Store = Arc<Mutex<HashMap<String, String>>>;

/// A tiny HTTP server in the relay namespace: `GET /` is the page,
/// `POST /kv/NAME` stores a value, `GET /kv/NAME` returns it (404 until
/// set). The browsers exchange their descriptions and report through it.
struct Signalling {
    addr: SocketAddr,
    store: Store,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Signalling {
    fn start(topology: &Topology) -> Result<Signalling> {
        let addr = SocketAddr::from((Host::Relay.address(), SIGNAL_PORT));
        let listener = netns::run(&topology.netns(Host::Relay), || {
            let l = TcpListener::bind(addr).map_err(Error::io(format!("binding {addr}")))?;
            l.set_nonblocking(true)
                .map_err(Error::io("setting the signalling socket non-blocking"))?;
            Ok(l)
        })?;
        let store = Store::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (store.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("signalling".into())
            .spawn(move || serve(listener, s, st))
            .map_err(Error::io("starting the signalling server"))?;
        Ok(Signalling {
            addr,
            store,
            stop,
            thread: Some(thread),
        })
    }

    fn snapshot(&self) -> HashMap<String, String> {
        self.store.lock().expect("not poisoned").clone()
    }

    /// Waits until `ready` holds for the store; false on timeout or stop.
    fn wait(
        &self,
        ready: impl Fn(&HashMap<String, String>) -> bool,
        timeout: Duration,
        stop: &AtomicBool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            if ready(&self.store.lock().expect("not poisoned")) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Signalling {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: TcpListener, store: Store, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, &store) {
                    tracing::debug!("signalling: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => tracing::warn!("signalling: {e}"),
        }
    }
}

fn answer(stream: TcpStream, store: &Store) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, reply) = match (method, path.strip_prefix("/kv/")) {
        ("GET", None) if path == "/" => ("200 OK", "text/html", PAGE.to_owned()),
        ("POST", Some(name)) => {
            let value = String::from_utf8_lossy(&body).into_owned();
            store
                .lock()
                .expect("not poisoned")
                .insert(name.to_owned(), value);
            ("200 OK", "text/plain", String::new())
        }
        ("GET", Some(name)) => match store.lock().expect("not poisoned").get(name) {
            Some(v) => ("200 OK", "application/json", v.clone()),
            None => ("404 Not Found", "text/plain", String::new()),
        },
        _ => ("404 Not Found", "text/plain", String::new()),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{reply}",
        reply.len()
    )
}

/// Where screenshots go: `$DEMARC_ARTIFACTS/testbed/` (default
/// `artifacts/testbed/` at the repository root).
pub fn artifacts() -> PathBuf {
    std::env::var_os("DEMARC_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../artifacts")))
        .join("testbed")
}

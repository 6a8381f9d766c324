//! The demarc programs a scenario runs (console, relay, probes) as child
//! processes: each logs to its own file, is waited for until it says it is
//! ready, and is stopped with SIGINT (its clean stop) when dropped.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How long a program gets to stop cleanly before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// A demarc binary next to this one: `cargo build` puts the workspace's
/// binaries in one directory (tests run from its `deps/`).
pub fn binary(name: &'static str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(Error::io("finding this program"))?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or(Error::MissingTool {
            tool: name,
            hint: "build the workspace first (`cargo build --workspace`): it is looked for next to demarc-testbed",
        })
}

/// Fails with one line when something already listens on `addr`.
pub fn check_port_free(addr: SocketAddr, what: &str) -> Result<()> {
    match TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AddrInUse => Err(Error::PortInUse {
            addr,
            what: what.to_owned(),
        }),
        Err(e) => Err(Error::io(format!("checking {addr} for the {what}"))(e)),
    }
}

/// A running child; dropping it stops it.
#[derive(Debug)]
pub struct Service {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    /// Starts `program args…`, stdout and stderr to `dir/NAME.log`.
    pub fn start(name: &str, program: &Path, args: &[String], dir: &Path) -> Result<Service> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).map_err(Error::io(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(Error::io(format!("opening {}", log.display())))?;
        tracing::debug!("{name}: {} {}", program.display(), args.join(" "));
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // The testbed blocks SIGINT/SIGTERM to take them with sigwait; a
        // child would inherit that mask and never hear its stop signal.
        // SAFETY: pthread_sigmask is async-signal-safe and touches only
        // the child's own mask.
        unsafe {
            command.pre_exec(|| {
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                match libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) {
                    0 => Ok(()),
                    e => Err(std::io::Error::from_raw_os_error(e)),
                }
            });
        }
        let child = command
            .spawn()
            .map_err(Error::io(format!("starting {}", program.display())))?;
        Ok(Service {
            name: name.to_owned(),
            child: Some(child),
            log,
        })
    }

    /// The child's process id (0 once stopped).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Waits until the log has a line containing `needle`; fails with the
    /// program's last line when it exits first or takes longer than `timeout`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.lines().any(|l| l.contains(needle)) {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let last = text.lines().rev().find(|l| !l.trim().is_empty());
                let why = match exited {
                    Some(status) => format!("exited ({status})"),
                    None => format!("not ready after {timeout:?}"),
                };
                return Err(Error::Service {
                    name: self.name.clone(),
                    message: format!("{why}: {}", last.unwrap_or("no output")),
                    log: self.log.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGINT, then waits; kills it after [`STOP_GRACE`].
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait().ok().flatten().is_none() {
            // SAFETY: signals our own child by its pid.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        }
        let deadline = Instant::now() + STOP_GRACE;
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Service {
                    name: self.name.clone(),
                    message: format!("did not stop within {STOP_GRACE:?} of SIGINT: killed"),
                    log: self.log.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!("{e}");
        }
    }
}

/// A plain HTTP/1.0 GET on loopback, enough for the console's JSON API
/// and health check; returns the status and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

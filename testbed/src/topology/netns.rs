//! Named network namespaces (`ip netns add`) and running code inside them.
//!
//! setns(CLONE_NEWNET) moves only the calling thread, so code that must run in
//! a namespace gets a thread of its own: [`run`] for a short task, [`enter`]
//! at the top of a thread the caller spawned for the purpose (before any async
//! runtime is built on it).

use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use crate::{Error, Result};

/// Where `ip netns add` keeps its bind mounts.
const NETNS_DIR: &str = "/run/netns";

pub fn path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Moves the calling thread into namespace `name`. Only for threads made for
/// that purpose: every later socket and device lookup on it happens there.
pub fn enter(name: &str) -> Result<()> {
    let enter_err = |source| Error::EnterNetns {
        name: name.to_owned(),
        source,
    };
    let file = File::open(path(name)).map_err(enter_err)?;
    // SAFETY: a plain syscall on an fd that lives across the call.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(enter_err(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Runs `f` on a fresh thread inside namespace `name` and returns its result.
pub fn run<T: Send>(name: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(name)?;
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Steers receive processing of `iface` in namespace `name` to the CPUs of
/// `mask` (RPS). Through `ip netns exec`, whose fresh sysfs shows the
/// namespace's devices (this process's /sys shows its own).
pub fn rps(name: &str, iface: &str, mask: u64) -> Result<()> {
    let file = format!("/sys/class/net/{iface}/queues/rx-0/rps_cpus");
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", name, "sh", "-c"])
        .arg(format!("echo {mask:x} > {file}"))
        .status()
        .map_err(Error::io(format!("running ip netns exec {name}")))?;
    if !status.success() {
        return Err(Error::io(format!("setting {file} in {name}"))(
            std::io::Error::other(format!("exited with {status}")),
        ));
    }
    Ok(())
}

/// Sets `key = value` pairs (dotted sysctl names) inside namespace `name`.
/// `/proc/sys/net` shows the namespace of the thread that opens it. Missing
/// `net.ipv6.*` keys are skipped: IPv6 may be compiled out.
pub fn sysctl(name: &str, settings: &[(&str, &str)]) -> Result<()> {
    run(name, || {
        for (key, value) in settings {
            let file = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
            match fs::write(&file, value) {
                Err(e) if e.kind() == ErrorKind::NotFound && key.starts_with("net.ipv6.") => {
                    tracing::debug!("{name}: {key} absent (no IPv6), skipped");
                }
                r => r.map_err(Error::io(format!("setting {key}={value} in {name}")))?,
            }
        }
        Ok(())
    })
}

//! Loading and attaching BPF programs, reporting each hook as a HookStatus.
//!
//! Tracepoints are kernel-wide (the programs filter by netns themselves); tc
//! and XDP attach to interfaces, so they are attached from inside the
//! monitored namespace.

use std::{
    os::fd::{AsFd, OwnedFd},
    path::Path,
};

use aya::{
    programs::{ProgramError, SchedClassifier, TcAttachType, TracePoint, Xdp, XdpMode},
    util::KernelVersion,
    Ebpf,
};
use demarc_proto::{ingest::HookStatus, Point};

use crate::{netns::Netns, Error, Result};

const TRACEFS: &str = "/sys/kernel/tracing";

/// Capabilities every probe needs (bits of CapEff): CAP_NET_ADMIN (tc,
/// XDP), CAP_PERFMON (tracing programs), CAP_BPF. `--netns` needs
/// CAP_SYS_ADMIN as well, which entering the namespace reports.
const NEEDED_CAPS: [(u32, &str); 3] = [(12, "CAP_NET_ADMIN"), (38, "CAP_PERFMON"), (39, "CAP_BPF")];

/// Checks what every probe needs before loading: capabilities and kernel BTF.
pub fn preflight() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let missing: Vec<&str> = NEEDED_CAPS
        .iter()
        .filter(|(bit, _)| cap_eff & (1 << bit) == 0)
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(Error::Permission(missing.join(", ")));
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(Error::MissingBtf);
    }
    Ok(())
}

/// Classic tracepoints are found through tracefs, which not every machine
/// mounts at boot.
fn ensure_tracefs() -> Result<()> {
    if !Path::new(TRACEFS).join("events").is_dir() {
        let status = std::process::Command::new("mount")
            .args(["-t", "tracefs", "tracefs", TRACEFS])
            .stderr(std::process::Stdio::null())
            .status()?;
        if !status.success() {
            return Err(Error::Tracefs(std::io::Error::other(format!(
                "mount exited with {status}"
            ))));
        }
    }
    Ok(())
}

fn program_error(name: &str) -> impl FnOnce(ProgramError) -> Error + '_ {
    move |source| Error::Program {
        name: name.into(),
        source,
    }
}

/// Attaches `prog` to the classic tracepoint `syscalls:<tp>`.
pub fn tracepoint(ebpf: &mut Ebpf, prog: &str, tp: &str, point: Point) -> Result<HookStatus> {
    ensure_tracefs()?;
    let p: &mut TracePoint = program(ebpf, prog)?;
    loaded(p.load(), prog)?;
    p.attach("syscalls", tp).map_err(program_error(prog))?;
    Ok(HookStatus {
        point,
        hook: "tracepoint".into(),
        target: format!("syscalls:{tp}"),
        mode: String::new(),
        attached: true,
        note: String::new(),
    })
}

/// Attaches `prog` to tc egress of `iface` (TCX link on 6.6+, clsact before).
pub fn tc_egress(
    ebpf: &mut Ebpf,
    prog: &str,
    netns: &Netns,
    iface: &str,
    point: Point,
) -> Result<HookStatus> {
    tc(ebpf, prog, netns, iface, point, TcAttachType::Egress)
}

fn tc(
    ebpf: &mut Ebpf,
    prog: &str,
    netns: &Netns,
    iface: &str,
    point: Point,
    direction: TcAttachType,
) -> Result<HookStatus> {
    netns.ifindex(iface)?;
    let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
    let p: &mut SchedClassifier = program(ebpf, prog)?;
    loaded(p.load(), prog)?;
    netns.run(|| {
        if !tcx {
            // An existing clsact qdisc is fine; other errors show at attach.
            let _ = aya::programs::tc::qdisc_add_clsact(iface);
        }
        p.attach(iface, direction).map_err(program_error(prog))
    })??;
    Ok(HookStatus {
        point,
        hook: "tc".into(),
        target: iface.into(),
        mode: if tcx { "tcx" } else { "clsact" }.into(),
        attached: true,
        note: String::new(),
    })
}

/// Attaches the ingress point of `iface`: program `xdp` in XDP driver mode
/// where the driver has it, else its twin `tc_prog` at tc ingress. Not XDP
/// skb mode: that copies every packet into a buffer with XDP headroom first
/// (measured on lo: about a third of a relay's throughput), while tc ingress
/// runs a few instructions later on the same skb. An interface that already
/// has an XDP program keeps it and gets tc ingress.
pub fn ingress(
    ebpf: &mut Ebpf,
    (xdp, tc_prog): (&str, &str),
    netns: &Netns,
    iface: &str,
    point: Point,
    fallbacks: &mut Vec<String>,
) -> Result<HookStatus> {
    let Some(driver_err) = xdp_driver(ebpf, xdp, netns, iface)? else {
        return Ok(xdp_status(point, iface, "driver"));
    };
    let status = tc(ebpf, tc_prog, netns, iface, point, TcAttachType::Ingress)?;
    fallbacks.push(format!(
        "XDP driver mode unavailable on {iface} ({driver_err}): {} at tc ingress",
        point.as_str()
    ));
    Ok(status)
}

/// Attaches XDP program `prog` in driver mode, else in skb (generic) mode,
/// for a program that must act on the packet itself (the relay fast path:
/// XDP_TX), which a tc twin cannot do the same way. skb mode copies packets
/// with little headroom, which costs far less than relaying in user space.
pub fn xdp(
    ebpf: &mut Ebpf,
    prog: &str,
    netns: &Netns,
    iface: &str,
    point: Point,
    fallbacks: &mut Vec<String>,
) -> Result<HookStatus> {
    let Some(driver_err) = xdp_driver(ebpf, prog, netns, iface)? else {
        return Ok(xdp_status(point, iface, "driver"));
    };
    let p: &mut Xdp = program(ebpf, prog)?;
    netns
        .run(|| p.attach(iface, XdpMode::Skb))?
        .map_err(program_error(prog))?;
    fallbacks.push(format!(
        "XDP driver mode unavailable on {iface} ({driver_err}): {prog} in skb mode"
    ));
    Ok(xdp_status(point, iface, "skb"))
}

/// Loads `prog` and attaches it in XDP driver mode; the driver's refusal,
/// if it refused.
fn xdp_driver(
    ebpf: &mut Ebpf,
    prog: &str,
    netns: &Netns,
    iface: &str,
) -> Result<Option<ProgramError>> {
    netns.ifindex(iface)?;
    let p: &mut Xdp = program(ebpf, prog)?;
    loaded(p.load(), prog)?;
    Ok(netns.run(|| p.attach(iface, XdpMode::Driver))?.err())
}

fn xdp_status(point: Point, iface: &str, mode: &str) -> HookStatus {
    HookStatus {
        point,
        hook: "xdp".into(),
        target: iface.into(),
        mode: mode.into(),
        attached: true,
        note: String::new(),
    }
}

/// One program serves several interfaces: loading it again is not an error.
fn loaded(r: Result<(), ProgramError>, name: &str) -> Result<()> {
    match r {
        Ok(()) | Err(ProgramError::AlreadyLoaded) => Ok(()),
        Err(e) => Err(program_error(name)(e)),
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let p = ebpf.program_mut(name).ok_or_else(|| Error::Program {
        name: name.into(),
        source: ProgramError::UnexpectedProgramType,
    })?;
    p.try_into().map_err(program_error(name))
}

/// Duplicated fds of the loaded programs, for statistics after start-up.
pub fn program_fds(ebpf: &Ebpf) -> Vec<(String, OwnedFd)> {
    ebpf.programs()
        .filter_map(|(name, p)| {
            let fd = p.fd().ok()?.as_fd().try_clone_to_owned().ok()?;
            Some((name.to_string(), fd))
        })
        .collect()
}

/// Takes a map out of the object so it outlives the programs (draining the
/// ring buffer after detaching).
pub fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map> {
    ebpf.take_map(name).ok_or(Error::MissingMap(name))
}

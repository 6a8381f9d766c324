//! Kernel timestamps → UTC nanoseconds, and the clock state sent with batches.
//!
//! TAI mode: the kernel stamps with CLOCK_TAI, which moves with every wall-clock
//! step, so `utc = tai − tai_offset` (from adjtimex) stays right across steps.
//! Mono mode: the kernel stamps with CLOCK_MONOTONIC and `utc = mono + offset`,
//! where offset = REALTIME − MONOTONIC is sampled by bracketing every second
//! and at once when a timerfd with TFD_TIMER_CANCEL_ON_SET reports a step. A
//! history of (mono time, offset) converts each record with the offset in
//! force when it was taken, even if it is read after a step.

use std::{
    collections::VecDeque,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use demarc_proto::ingest::{ClockMode, ClockState};

/// Offsets kept for records read late; at one per second this is minutes.
const HISTORY: usize = 512;
const REFRESH: Duration = Duration::from_secs(1);

pub struct Clock {
    mode: ClockMode,
    shared: Arc<Shared>,
}

struct Shared {
    /// (raw kernel time from which the offset holds, offset ns), oldest first.
    offsets: Mutex<VecDeque<(u64, i64)>>,
    stop: AtomicBool,
}

impl Clock {
    /// Samples the offset and starts the thread that keeps it current.
    pub fn start(mode: ClockMode) -> io::Result<Self> {
        let (since, offset) = sample(mode);
        let shared = Arc::new(Shared {
            offsets: Mutex::new(VecDeque::from([(since, offset)])),
            stop: AtomicBool::new(false),
        });
        let timer = step_timer()?;
        let bg = shared.clone();
        std::thread::Builder::new()
            .name("demarc-clock".into())
            .spawn(move || watch(mode, &bg, &timer))?;
        Ok(Self { mode, shared })
    }

    pub fn mode(&self) -> ClockMode {
        self.mode
    }

    /// The kernel clock code the BPF programs are loaded with.
    pub fn kernel_code(&self) -> u32 {
        match self.mode {
            ClockMode::Tai => demarc_ebpf::abi::CLOCK_TAI,
            ClockMode::Mono => demarc_ebpf::abi::CLOCK_MONO,
        }
    }

    /// UTC ns of a raw kernel timestamp.
    pub fn to_utc(&self, raw: u64) -> u64 {
        let offsets = self.shared.offsets.lock().unwrap();
        let offset = offsets
            .iter()
            .rev()
            .find(|(since, _)| *since <= raw)
            .or(offsets.front())
            .map_or(0, |(_, o)| *o);
        raw.saturating_add_signed(offset)
    }

    /// The kernel's view of its synchronisation (adjtimex).
    pub fn state(&self) -> ClockState {
        let tx = adjtimex();
        ClockState {
            mode: self.mode,
            synchronized: tx.status & libc::STA_UNSYNC == 0,
            esterror_ns: (tx.esterror.max(0) as u64) * 1_000,
            maxerror_ns: (tx.maxerror.max(0) as u64) * 1_000,
            source: Some("adjtimex".into()),
            kernel_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .map(|id| id.trim().to_string()),
        }
    }

    /// Whether this kernel can stamp with CLOCK_TAI (bpf_ktime_get_tai_ns, 6.1+).
    pub fn kernel_has_tai() -> bool {
        aya::util::KernelVersion::current()
            .is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 1, 0))
    }
}

impl Drop for Clock {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn watch(mode: ClockMode, shared: &Shared, timer: &OwnedFd) {
    while !shared.stop.load(Ordering::Relaxed) {
        let stepped = wait_step(timer, REFRESH);
        if stepped {
            tracing::info!("wall clock was stepped; re-sampled the UTC offset");
            // Re-arm: a cancelled timer stays cancelled until set again.
            let _ = arm(timer);
        }
        let entry = sample(mode);
        let mut offsets = shared.offsets.lock().unwrap();
        // Bracketing jitter is tens of ns; only real changes (slew, step) count.
        if offsets
            .back()
            .is_some_and(|(_, o)| o.abs_diff(entry.1) < 1_000)
        {
            continue;
        }
        if offsets.len() == HISTORY {
            offsets.pop_front();
        }
        offsets.push_back(entry);
    }
}

/// (raw kernel time now, offset raw → UTC).
fn sample(mode: ClockMode) -> (u64, i64) {
    match mode {
        ClockMode::Tai => {
            let tai_s = i64::from(adjtimex().tai);
            (now(libc::CLOCK_TAI), -tai_s * 1_000_000_000)
        }
        ClockMode::Mono => {
            // The narrowest of a few MONOTONIC–REALTIME–MONOTONIC brackets.
            (0..5)
                .map(|_| {
                    let t1 = now(libc::CLOCK_MONOTONIC);
                    let r = now(libc::CLOCK_REALTIME);
                    let t2 = now(libc::CLOCK_MONOTONIC);
                    (t2 - t1, t1, r as i64 - (t1 + (t2 - t1) / 2) as i64)
                })
                .min_by_key(|(width, _, _)| *width)
                .map(|(_, t1, offset)| (t1, offset))
                .expect("five samples")
        }
    }
}

pub(crate) fn now(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// UTC ns now.
pub fn utc_now_ns() -> u64 {
    now(libc::CLOCK_REALTIME)
}

fn adjtimex() -> libc::timex {
    // SAFETY: zeroed timex with modes = 0 only reads the kernel's state.
    unsafe {
        let mut tx: libc::timex = std::mem::zeroed();
        libc::adjtimex(&mut tx);
        tx
    }
}

/// A REALTIME timerfd far in the future that wakes its reader on any step.
fn step_timer() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the fd is owned below.
    let fd = unsafe { libc::timerfd_create(libc::CLOCK_REALTIME, libc::TFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    arm(&fd)?;
    Ok(fd)
}

fn arm(fd: &OwnedFd) -> io::Result<()> {
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: libc::time_t::MAX / 2,
            tv_nsec: 0,
        },
    };
    // SAFETY: valid fd and itimerspec.
    let rc = unsafe {
        libc::timerfd_settime(
            fd.as_raw_fd(),
            libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET,
            &spec,
            std::ptr::null_mut(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits up to `timeout`; true when the wall clock was stepped meanwhile.
fn wait_step(fd: &OwnedFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    if n <= 0 {
        return false;
    }
    let mut buf = [0u8; 8];
    // SAFETY: reading 8 bytes into an 8-byte buffer.
    let r = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
    r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECANCELED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_modes_convert_now_to_utc_now() {
        for (mode, raw_clock) in [
            (ClockMode::Tai, libc::CLOCK_TAI),
            (ClockMode::Mono, libc::CLOCK_MONOTONIC),
        ] {
            let clock = Clock::start(mode).unwrap();
            let utc = clock.to_utc(now(raw_clock));
            let real = utc_now_ns();
            let diff = real.abs_diff(utc);
            assert!(
                diff < 1_000_000,
                "{mode:?}: converted {utc} vs realtime {real}"
            );
        }
    }

    #[test]
    fn records_taken_before_an_offset_change_keep_the_old_offset() {
        let clock = Clock::start(ClockMode::Mono).unwrap();
        let (since, offset) = *clock.shared.offsets.lock().unwrap().back().unwrap();
        clock
            .shared
            .offsets
            .lock()
            .unwrap()
            .push_back((since + 1_000, offset + 5_000_000_000));
        assert_eq!(
            clock.to_utc(since + 999),
            (since + 999).saturating_add_signed(offset)
        );
        assert_eq!(
            clock.to_utc(since + 1_000),
            (since + 1_000).saturating_add_signed(offset + 5_000_000_000)
        );
    }
}

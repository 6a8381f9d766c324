//! The two clocks of the delay line. Holds are timed on CLOCK_MONOTONIC, so a
//! wall-clock step cannot stretch or cut one; what the log says is
//! CLOCK_REALTIME (UTC ns), comparable with probe records because every
//! namespace shares the one kernel clock.

/// One instant read on both clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub real_ns: u64,
    pub mono_ns: u64,
}

impl Stamp {
    pub fn now() -> Stamp {
        Stamp {
            real_ns: now(libc::CLOCK_REALTIME),
            mono_ns: now(libc::CLOCK_MONOTONIC),
        }
    }
}

/// UTC ns.
pub fn realtime_ns() -> u64 {
    now(libc::CLOCK_REALTIME)
}

fn now(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer; these clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until CLOCK_MONOTONIC reads `mono_ns`: an absolute deadline, so
/// time lost to wake-ups does not add up.
pub fn sleep_until(mono_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (mono_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (mono_ns % 1_000_000_000) as libc::c_long,
    };
    // Returns 0 once the deadline passed (at once if it already had) or
    // EINTR, after which the same deadline is simply waited for again.
    // SAFETY: ts is valid; no remaining-time pointer is needed with TIMER_ABSTIME.
    while unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        )
    } == libc::EINTR
    {}
}

/// Makes the calling thread wake on time: timer slack down from the default
/// 50 µs to 1 ns, and SCHED_FIFO where allowed so a busy machine does not
/// delay the wake-up. Without SCHED_FIFO holds are still right on an idle
/// machine, so its absence is reported, not fatal.
pub fn tune_thread() {
    static WARN_ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: prctl and sched_setscheduler with valid arguments; both affect
    // only the calling thread (pid 0).
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
        let param = libc::sched_param { sched_priority: 10 };
        if libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) != 0 {
            let e = std::io::Error::last_os_error();
            WARN_ONCE.call_once(|| {
                tracing::warn!(
                    "delay line runs without SCHED_FIFO ({e}): holds may stretch under load"
                )
            });
        }
    }
}

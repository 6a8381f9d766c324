//! Ctrl-C and friends, turned into an orderly stop: the signals are blocked
//! before any thread exists (threads inherit the mask) and taken with
//! sigwait, so no signal can end the process before it removes what it made.

use std::io;

pub struct Signals(libc::sigset_t);

impl Signals {
    /// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread and every
    /// thread it starts later; call it first thing in `main`.
    pub fn block() -> io::Result<Signals> {
        // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaddset(&mut set, sig);
            }
            match libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) {
                0 => Ok(Signals(set)),
                e => Err(io::Error::from_raw_os_error(e)),
            }
        }
    }

    /// Waits for one of the blocked signals and names it.
    pub fn wait(&self) -> io::Result<&'static str> {
        let mut sig = 0;
        // SAFETY: a valid set and out-pointer.
        match unsafe { libc::sigwait(&self.0, &mut sig) } {
            0 => Ok(match sig {
                libc::SIGINT => "SIGINT",
                libc::SIGTERM => "SIGTERM",
                _ => "SIGHUP",
            }),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }
}

//! One leg of the delay line: a reader thread takes packets from the TUN and
//! decides when each leaves ([`Core`], no I/O); a writer thread sleeps until
//! then and writes the packet back for the kernel to forward.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::mpsc::{Receiver, Sender};

use super::clock::{self, Stamp};
use super::log::Released;
use super::schedule::{Rng, Schedule};
use crate::topology::Leg;
use crate::{Error, Result};

/// Largest packet a TUN hands out (its MTU is 1500; GSO is off without a
/// virtio-net header).
const MAX_PACKET: usize = 65_536;

/// When a packet leaves, decided on arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// D(t) from the schedule, jitter included.
    pub delay_ns: u64,
    /// CLOCK_MONOTONIC ns to release at.
    pub release_mono_ns: u64,
}

/// The timing of one leg: release = max(previous release, arrival + D(t)),
/// so packets leave in the order they came even when the delay drops. All on
/// CLOCK_MONOTONIC: stepping the wall clock moves neither a hold nor a step
/// of the schedule.
#[derive(Debug, Clone)]
pub struct Core {
    schedule: Schedule,
    epoch_mono_ns: i64,
    rng: Rng,
    last_release_mono_ns: u64,
}

impl Core {
    /// `epoch_mono_ns` is time 0 of the schedule's steps.
    pub fn new(schedule: Schedule, epoch_mono_ns: i64, seed: u64) -> Core {
        Core {
            schedule,
            epoch_mono_ns,
            rng: Rng::new(seed),
            last_release_mono_ns: 0,
        }
    }

    pub fn admit(&mut self, arrival_mono_ns: u64) -> Admitted {
        let t = arrival_mono_ns as i64 - self.epoch_mono_ns;
        let delay_ns = self.schedule.delay_at(t, &mut self.rng);
        let release_mono_ns = self.last_release_mono_ns.max(arrival_mono_ns + delay_ns);
        self.last_release_mono_ns = release_mono_ns;
        Admitted {
            delay_ns,
            release_mono_ns,
        }
    }
}

/// A packet waiting in the line.
pub struct Held {
    packet: Vec<u8>,
    arrival: Stamp,
    admitted: Admitted,
}

/// Packets this leg wrote back, and writes that failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegStats {
    pub released: u64,
    pub write_errors: u64,
}

/// The reader: takes every packet the TUN offers until `stop` is readable.
pub fn read(
    leg: Leg,
    tun: &File,
    stop: BorrowedFd<'_>,
    mut core: Core,
    held: Sender<Held>,
) -> Result<()> {
    clock::tune_thread();
    let fail = |e: std::io::Error| Error::DelayLine {
        leg: leg.to_string(),
        message: format!("reading its TUN: {e}"),
    };
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: tun.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of two pollfds for the call.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(fail(e));
        }
        if fds[1].revents != 0 {
            return Ok(());
        }
        loop {
            match (&*tun).read(&mut buf) {
                Ok(n) => {
                    let arrival = Stamp::now();
                    let packet = Held {
                        packet: buf[..n].to_vec(),
                        arrival,
                        admitted: core.admit(arrival.mono_ns),
                    };
                    if held.send(packet).is_err() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(fail(e)),
            }
        }
    }
}

/// The writer: releases each packet at its time, in order, until the reader
/// is gone and the line is empty.
pub fn write(leg: Leg, tun: &File, held: Receiver<Held>, log: Sender<Released>) -> LegStats {
    clock::tune_thread();
    let mut stats = LegStats::default();
    for Held {
        packet,
        arrival,
        admitted,
    } in held
    {
        clock::sleep_until(admitted.release_mono_ns);
        let release = Stamp::now();
        if let Err(e) = (&*tun).write(&packet) {
            if stats.write_errors == 0 {
                tracing::warn!(
                    "delay line {leg}: writing to its TUN: {e} (further errors only counted)"
                );
            }
            stats.write_errors += 1;
            continue;
        }
        stats.released += 1;
        // The log thread only stops after every writer has.
        let _ = log.send(Released {
            leg,
            arrival,
            release,
            delay_ns: admitted.delay_ns,
            packet,
        });
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    /// Monotonic time at the epoch: any value.
    const MONO0: u64 = 5_000 * MS;

    fn at(ms_after_epoch: f64) -> u64 {
        MONO0 + (ms_after_epoch * 1e6) as u64
    }

    fn core(schedule: &str) -> Core {
        Core::new(schedule.parse().unwrap(), MONO0 as i64, 1)
    }

    /// Release times in ms after the epoch.
    fn releases(core: &mut Core, arrivals_ms: &[f64]) -> Vec<f64> {
        arrivals_ms
            .iter()
            .map(|&a| (core.admit(at(a)).release_mono_ns - MONO0) as f64 / 1e6)
            .collect()
    }

    #[test]
    fn without_contention_a_packet_leaves_after_its_delay() {
        let mut c = core("20ms");
        assert_eq!(releases(&mut c, &[0.0, 10.0, 10.5]), [20.0, 30.0, 30.5]);
    }

    #[test]
    fn a_drop_in_delay_waits_for_earlier_packets() {
        // 30 ms until 100 ms, then 10 ms: the packet at 101 ms would leave at
        // 111 ms, before the one at 99 ms (129 ms); it waits for it instead.
        let mut c = core("30ms,10ms@100ms");
        let r = releases(&mut c, &[99.0, 101.0, 125.0]);
        assert_eq!(r, [129.0, 129.0, 135.0]);
        let d: Vec<_> = [99.0, 101.0]
            .iter()
            .map(|&a| c.clone().admit(at(a)).delay_ns)
            .collect();
        assert_eq!(
            d,
            [30 * MS, 10 * MS],
            "delay_ns reports the schedule, not the wait"
        );
    }

    #[test]
    fn a_rise_in_delay_takes_effect_at_once() {
        let mut c = core("20ms,+2ms@2s");
        assert_eq!(releases(&mut c, &[1999.0, 2000.0]), [2019.0, 2022.0]);
    }

    #[test]
    fn releases_never_go_back_under_jitter() {
        let mut c = core("20ms~5ms");
        let arrivals: Vec<f64> = (0..10_000).map(|i| i as f64 * 0.1).collect();
        let r = releases(&mut c, &arrivals);
        assert!(r.windows(2).all(|w| w[0] <= w[1]));
        assert!(r
            .iter()
            .zip(&arrivals)
            .all(|(rel, arr)| rel - arr >= 15.0 - 1e-9));
    }

    #[test]
    fn an_epoch_before_the_clock_s_start_still_counts() {
        // A UTC epoch long before boot lies before monotonic zero.
        let mut c = Core::new("20ms,+2ms@1s".parse().unwrap(), -5_000 * MS as i64, 1);
        assert_eq!(c.admit(0).delay_ns, 22 * MS);
    }
}

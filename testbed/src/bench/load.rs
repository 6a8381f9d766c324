//! The load generator: pairs of TURN clients that talk to each other through
//! the server, each through its own allocation (client-to-client, as
//! `turnutils_uclient -y` does), with ChannelData carrying RTP-like payloads.
//! One message crosses the server twice: client → relay socket of the
//! partner's allocation → partner. Batched system calls let one core drive
//! the server past its limit.

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use demarc_relay::client::TurnClient;
use turn_types::AddressFamily;

use super::mmsg::{self, Slots, BATCH};
use crate::{Error, Result};

const CHANNEL: u16 = 0x4000;
/// ChannelData header, RTP header, send time, kind.
const HEADER: usize = 4;
const RTP: usize = 12;
const MIN_PAYLOAD: usize = RTP + 9;
const SOCKET_BUFFER: libc::c_int = 16 << 20;
/// How long packets still in flight are waited for after a trial.
const TAIL: Duration = Duration::from_millis(300);

const DATA: u8 = 0;
const PING: u8 = 1;
const PONG: u8 = 2;

struct Client {
    socket: UdpSocket,
    ssrc: u32,
    counter: u32,
    /// What this client sends: ChannelData whose payload is `payload` bytes.
    out: Slots,
}

/// The connected clients, ready to send.
pub struct Load {
    clients: Vec<Client>,
    inbox: Slots,
    epoch: Instant,
}

/// What one trial at a set rate did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trial {
    /// Messages per second asked for.
    pub target: f64,
    pub sent: u64,
    pub received: u64,
    pub elapsed: Duration,
    /// Datagrams the generator's own sockets dropped (its receive buffers
    /// overflowed): when non-zero, the loss is the generator's, not the server's.
    pub generator_drops: u64,
}

impl Trial {
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        1.0 - self.received as f64 / self.sent as f64
    }

    /// Messages per second that arrived.
    pub fn delivered_rate(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64()
    }

    /// Whether the generator sent what was asked (else it, not the server, is the limit).
    pub fn kept_pace(&self) -> bool {
        self.sent as f64 >= 0.97 * self.target * self.elapsed.as_secs_f64()
    }
}

impl Load {
    /// Allocates `2 * pairs` clients on `server` and binds each to its
    /// partner's relayed address; messages carry `payload` bytes.
    pub fn connect(
        server: SocketAddr,
        (user, password): (&str, &str),
        pairs: usize,
        payload: usize,
    ) -> Result<Load> {
        let payload = payload.max(MIN_PAYLOAD);
        let turn = |what: &str| {
            let what = format!("{what} on {server}");
            move |e: demarc_relay::client::ClientError| Error::Bench(format!("{what}: {e}"))
        };
        let mut turn_clients = Vec::new();
        let mut relayed = Vec::new();
        for _ in 0..2 * pairs {
            let mut c = TurnClient::new(server, user, password).map_err(turn("client socket"))?;
            relayed.push(c.allocate(AddressFamily::IPV4).map_err(turn("Allocate"))?);
            turn_clients.push(c);
        }
        let mut clients = Vec::new();
        for (i, mut c) in turn_clients.into_iter().enumerate() {
            match c
                .bind(CHANNEL, relayed[i ^ 1])
                .map_err(turn("ChannelBind"))?
            {
                0 => {}
                code => {
                    return Err(Error::Bench(format!(
                        "ChannelBind on {server}: error {code}"
                    )))
                }
            }
            let socket = c.socket;
            let setup = || -> io::Result<()> {
                socket.set_read_timeout(None)?;
                socket.set_nonblocking(true)?;
                socket.connect(server)?;
                force_buffers(&socket)
            };
            setup().map_err(Error::io("preparing a load-generator socket"))?;
            let mut out = Slots::new(HEADER + payload);
            for s in 0..BATCH {
                let slot = out.slot_mut(s);
                slot[..2].copy_from_slice(&CHANNEL.to_be_bytes());
                slot[2..4].copy_from_slice(&(payload as u16).to_be_bytes());
                slot[4] = 0x80; // RTP version 2
                slot[5] = 96; // dynamic payload type
                out.set_len(s, HEADER + payload);
            }
            clients.push(Client {
                socket,
                ssrc: 0x5eed_0000 + i as u32,
                counter: 0,
                out,
            });
        }
        Ok(Load {
            clients,
            inbox: Slots::new(HEADER + payload.max(2048)),
            epoch: Instant::now(),
        })
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Sends at `rate` messages/s for `duration`, spread over every client,
    /// and counts what arrives (waiting [`TAIL`] for the last ones).
    pub fn trial(&mut self, rate: f64, duration: Duration) -> Result<Trial> {
        let drops_before = self.drops()?;
        // Enough per call to amortise it, little enough to stay smooth (~50 µs).
        let chunk = ((rate * 50e-6) as u64).clamp(1, BATCH as u64);
        let (mut sent, mut received) = (0u64, 0u64);
        let mut next = 0;
        let start = Instant::now();
        loop {
            let elapsed = start.elapsed();
            if elapsed >= duration {
                break;
            }
            let due = ((rate * elapsed.as_secs_f64()) as u64).saturating_sub(sent);
            if due >= chunk {
                let now = self.now_ns();
                sent += self.send(next, due.min(BATCH as u64) as usize, now, DATA)? as u64;
                next = (next + 1) % self.clients.len();
            }
            received += self.drain(|_, _, _| {})?;
        }
        let sent_for = start.elapsed();
        let tail = Instant::now() + TAIL;
        while Instant::now() < tail {
            received += self.drain(|_, _, _| {})?;
        }
        Ok(Trial {
            target: rate,
            sent,
            received,
            elapsed: sent_for,
            generator_drops: self.drops()? - drops_before,
        })
    }

    /// Round trips at `pings` per second for `duration`: even clients send
    /// pings, their partners echo them at once; returns each round trip (ns).
    pub fn round_trips(&mut self, pings: f64, duration: Duration) -> Result<Vec<i64>> {
        let (mut rtts, mut echoes) = (Vec::new(), Vec::new());
        let (mut sent, mut next) = (0u64, 0);
        let start = Instant::now();
        let end = start + duration;
        while Instant::now() < end + TAIL {
            let elapsed = start.elapsed().min(duration);
            let due = ((pings * elapsed.as_secs_f64()) as u64).saturating_sub(sent);
            if due > 0 {
                let now = self.now_ns();
                sent += self.send(next, due.min(BATCH as u64) as usize, now, PING)? as u64;
                next = (next + 2) % self.clients.len();
            }
            let now = self.now_ns();
            self.drain(|client, kind, sent_ns| match kind {
                PING => echoes.push((client, sent_ns)),
                PONG => rtts.push(now.saturating_sub(sent_ns) as i64),
                _ => {}
            })?;
            for (client, sent_ns) in echoes.drain(..) {
                self.send(client, 1, sent_ns, PONG)?;
            }
        }
        Ok(rtts)
    }

    /// Sends `n` messages from client `c`, stamped `now_ns` and `kind`.
    fn send(&mut self, c: usize, n: usize, now_ns: u64, kind: u8) -> Result<usize> {
        let client = &mut self.clients[c];
        for s in 0..n {
            let slot = client.out.slot_mut(s);
            let counter = client.counter.wrapping_add(s as u32);
            slot[HEADER + 2..HEADER + 4].copy_from_slice(&(counter as u16).to_be_bytes());
            slot[HEADER + 4..HEADER + 8].copy_from_slice(&counter.to_be_bytes());
            slot[HEADER + 8..HEADER + 12].copy_from_slice(&client.ssrc.to_be_bytes());
            slot[HEADER + RTP..HEADER + RTP + 8].copy_from_slice(&now_ns.to_le_bytes());
            slot[HEADER + RTP + 8] = kind;
        }
        match mmsg::send(&client.socket, &mut client.out, n) {
            Ok(k) => {
                client.counter = client.counter.wrapping_add(k as u32);
                Ok(k)
            }
            // A full send buffer: the caller tries again on its next turn.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock) => Ok(0),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(0),
            Err(e) => Err(Error::io("sending load")(e)),
        }
    }

    /// Reads what is waiting on every socket; calls `seen(client, kind,
    /// sent_ns)` for each ChannelData message and returns how many came.
    fn drain(&mut self, mut seen: impl FnMut(usize, u8, u64)) -> Result<u64> {
        let mut count = 0;
        for (i, client) in self.clients.iter().enumerate() {
            loop {
                match mmsg::recv(&client.socket, &mut self.inbox) {
                    Ok(n) => {
                        for m in 0..n {
                            let d = self.inbox.received(m);
                            if d.len() > HEADER + RTP + 8 && d[0] & 0xc0 == 0x40 {
                                count += 1;
                                let at = HEADER + RTP;
                                let sent_ns =
                                    u64::from_le_bytes(d[at..at + 8].try_into().expect("8 bytes"));
                                seen(i, d[at + 8], sent_ns);
                            }
                        }
                        if n < BATCH {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    // ICMP port unreachable from a server that went away.
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
                    Err(e) => return Err(Error::io("receiving load")(e)),
                }
            }
        }
        Ok(count)
    }

    /// Datagrams dropped so far on the generator's sockets, from the
    /// namespace's socket table.
    fn drops(&self) -> Result<u64> {
        let table = std::fs::read_to_string("/proc/thread-self/net/udp")
            .map_err(Error::io("reading /proc/thread-self/net/udp"))?;
        let ports: Vec<u16> = self
            .clients
            .iter()
            .filter_map(|c| c.socket.local_addr().ok().map(|a| a.port()))
            .collect();
        Ok(udp_drops(&table, &ports))
    }
}

/// Sums the `drops` column of `/proc/net/udp` over sockets bound to `ports`.
fn udp_drops(table: &str, ports: &[u16]) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = fields.get(1)?.rsplit(':').next()?;
            let port = u16::from_str_radix(port, 16).ok()?;
            ports
                .contains(&port)
                .then(|| fields.last()?.parse::<u64>().ok())?
        })
        .sum()
}

/// Large buffers past net.core.{r,w}mem_max (root only): a burst must not
/// be lost in the generator.
fn force_buffers(socket: &UdpSocket) -> io::Result<()> {
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        // SAFETY: setsockopt with a c_int value on a socket we own.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&SOCKET_BUFFER as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_summed_for_our_ports_only() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  1: 0100007F:0D96 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 7\n\
  2: 0100007F:C350 0100007F:0D96 01 00000000:00000000 00:00000000 00000000     0        0 2 2 0000000000000000 5\n\
  3: 0100007F:C351 0100007F:0D96 01 00000000:00000000 00:00000000 00000000     0        0 3 2 0000000000000000 0\n";
        assert_eq!(udp_drops(table, &[0xc350, 0xc351]), 5);
        assert_eq!(udp_drops(table, &[3478]), 7);
        assert_eq!(udp_drops(table, &[9]), 0);
    }

    #[test]
    fn a_trial_reports_loss_and_pace() {
        let t = Trial {
            target: 1000.0,
            sent: 990,
            received: 980,
            elapsed: Duration::from_secs(1),
            generator_drops: 0,
        };
        assert!((t.loss() - 10.0 / 990.0).abs() < 1e-12);
        assert!(t.kept_pace());
        assert!(!Trial { sent: 900, ..t }.kept_pace());
        assert_eq!(t.delivered_rate(), 980.0);
    }
}

//! Relay sockets: a UDP port (or, RFC 6062, a TCP listener) from the
//! configured range on a relay address.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::ops::RangeInclusive;

use socket2::{Domain, Protocol, Socket, Type};
use turn_types::AddressFamily;

use crate::turn::{OpenError, PortRequest};

/// Picks ports for relay sockets.
#[derive(Debug, Clone)]
pub struct PortPicker {
    ips: Vec<IpAddr>,
    ports: RangeInclusive<u16>,
}

impl PortPicker {
    pub fn new(ips: Vec<IpAddr>, ports: RangeInclusive<u16>) -> Self {
        Self { ips, ports }
    }

    /// Binds a socket on the first relay address of `family`, at a port from
    /// a random place in the range (so ports are not predictable); for
    /// [`PortRequest::EvenReserveNext`] also the next port, returned second.
    pub fn bind(
        &self,
        family: AddressFamily,
        request: PortRequest,
    ) -> Result<(UdpSocket, Option<UdpSocket>), OpenError> {
        let ip = self.ip_for(family)?;
        let pair = request == PortRequest::EvenReserveNext;
        let last = *self.ports.end();
        self.scan(|port| {
            if (request != PortRequest::Any && port % 2 == 1) || (pair && port == last) {
                return Ok(None);
            }
            let Some(socket) = try_bind(SocketAddr::new(ip, port), relay_udp_socket)? else {
                return Ok(None);
            };
            if !pair {
                return Ok(Some((socket, None)));
            }
            let next = try_bind(SocketAddr::new(ip, port + 1), relay_udp_socket)?;
            Ok(next.map(|next| (socket, Some(next))))
        })
    }

    /// A listening TCP socket for an RFC 6062 allocation.
    pub fn bind_tcp(&self, family: AddressFamily) -> Result<TcpListener, OpenError> {
        let ip = self.ip_for(family)?;
        self.scan(|port| try_bind(SocketAddr::new(ip, port), tcp_relay_listener))
    }

    fn ip_for(&self, family: AddressFamily) -> Result<IpAddr, OpenError> {
        let want_v4 = family == AddressFamily::IPV4;
        self.ips
            .iter()
            .copied()
            .find(|ip| ip.is_ipv4() == want_v4)
            .ok_or(OpenError::NoAddress)
    }

    /// Tries every port of the range once, from a random start.
    fn scan<T>(
        &self,
        mut try_port: impl FnMut(u16) -> Result<Option<T>, OpenError>,
    ) -> Result<T, OpenError> {
        let (first, last) = (u32::from(*self.ports.start()), u32::from(*self.ports.end()));
        let span = last - first + 1;
        let start = rand::random_range(0..span);
        for i in 0..span {
            if let Some(found) = try_port((first + (start + i) % span) as u16)? {
                return Ok(found);
            }
        }
        Err(OpenError::Exhausted)
    }
}

/// `None` when the port is taken; other errors mean the address is unusable.
fn try_bind<T>(
    addr: SocketAddr,
    bind: fn(SocketAddr) -> io::Result<T>,
) -> Result<Option<T>, OpenError> {
    match bind(addr) {
        Ok(socket) => Ok(Some(socket)),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Ok(None),
        Err(e) => {
            tracing::warn!(%addr, error = %e, "cannot bind relay socket");
            Err(OpenError::NoAddress)
        }
    }
}

/// A non-blocking UDP socket; IPv6 sockets are IPv6-only so `::` and
/// `0.0.0.0` can both be bound on one port.
pub fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A relay port's receive buffer. The default (rmem_default, 208 KiB) holds
/// ~230 packets: 8 ms of a busy stream, less than a scheduling hiccup. The
/// kernel caps it at net.core.rmem_max.
const RELAY_RCVBUF: usize = 1 << 20;

fn relay_udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = udp_socket(addr)?;
    socket2::SockRef::from(&socket).set_recv_buffer_size(RELAY_RCVBUF)?;
    Ok(socket)
}

/// A TCP relay listener. SO_REUSEPORT lets the connections the relay opens
/// to peers (RFC 6062 Connect) start from the same address and port.
fn tcp_relay_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_inside_the_range_and_reports_exhaustion() {
        let picker = PortPicker::new(vec!["127.0.0.1".parse().unwrap()], 47100..=47103);
        let mut held = Vec::new();
        for _ in 0..4 {
            let (s, none) = picker.bind(AddressFamily::IPV4, PortRequest::Any).unwrap();
            assert!(none.is_none());
            let port = s.local_addr().unwrap().port();
            assert!((47100..=47103).contains(&port));
            held.push(s);
        }
        assert_eq!(
            picker
                .bind(AddressFamily::IPV4, PortRequest::Any)
                .unwrap_err(),
            OpenError::Exhausted
        );
        assert_eq!(
            picker
                .bind(AddressFamily::IPV6, PortRequest::Any)
                .unwrap_err(),
            OpenError::NoAddress
        );
    }

    #[test]
    fn even_ports_and_reserved_pairs() {
        let picker = PortPicker::new(vec!["127.0.0.1".parse().unwrap()], 47111..=47120);
        let (even, _) = picker.bind(AddressFamily::IPV4, PortRequest::Even).unwrap();
        assert_eq!(even.local_addr().unwrap().port() % 2, 0);
        let (first, next) = picker
            .bind(AddressFamily::IPV4, PortRequest::EvenReserveNext)
            .unwrap();
        let port = first.local_addr().unwrap().port();
        assert_eq!(port % 2, 0);
        assert_eq!(next.unwrap().local_addr().unwrap().port(), port + 1);
    }
}

//! The I/O loops: client listeners (UDP, TCP, TLS), relay sockets, the
//! expiry timer. Each loop reads, hands the bytes to the state machine under
//! one short lock, and carries out what it returns.
//!
//! The UDP loops work in batches ([`crate::batch`]): one `recvmmsg`, one
//! core lock for all its datagrams, then one `sendmmsg` per outgoing socket.
//! A batch shares its receive time, and each `sendmmsg` its send time, in
//! the reports: one clock read per system call, not per packet.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use turn_types::AddressFamily;

use crate::batch::{self, Batch, Datagram};
use crate::config::Config;
use crate::framing::{self, Frame, CHANNEL_HEADER};
use crate::metrics::Metrics;
use crate::observe::{tai_ns, Direction, Endpoints, PacketObserver, Relayed};
use crate::relays::{udp_socket, PortPicker};
use crate::tls::Acceptor;
use crate::turn::{
    ClientAction, FiveTuple, Now, OpenError, PortRequest, RelaySockets, Server, ToClient, Transport,
};
use crate::Error;

/// Open TCP/TLS client connections at most; more are refused at accept.
const MAX_STREAMS: usize = 4096;
/// A stream that holds no allocation is closed after this much silence, or
/// when it starts a frame longer than any request a client sends before it
/// has an allocation: trickled giant frames cannot pin memory.
const UNALLOCATED_IDLE: Duration = Duration::from_secs(30);
const UNALLOCATED_MAX_FRAME: usize = 4096;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames queued for one stream client before its relayed packets are dropped.
const STREAM_QUEUE: usize = 512;
const UDP_LISTENER_RCVBUF: usize = 4 << 20;

struct RelayEntry {
    socket: Arc<UdpSocket>,
    /// The loop reading from peers; `None` while the port is only reserved.
    task: Option<AbortHandle>,
}

/// An RFC 6062 peer data connection, as the I/O holds it.
enum PeerConn {
    /// Connected, waiting for the client's ConnectionBind.
    Waiting(TcpStream),
    /// Piped to a client data connection.
    Piping(AbortHandle),
}

/// What every loop shares.
struct Shared {
    core: Mutex<Server>,
    metrics: Arc<Metrics>,
    probe: Option<Arc<dyn PacketObserver>>,
    udp_listeners: HashMap<SocketAddr, Arc<UdpSocket>>,
    streams: Mutex<HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>>,
    relays: Mutex<HashMap<SocketAddr, RelayEntry>>,
    /// TCP relay listeners (RFC 6062) and their accept loops.
    tcp_relays: Mutex<HashMap<SocketAddr, AbortHandle>>,
    peer_conns: Mutex<HashMap<u32, PeerConn>>,
    picker: PortPicker,
}

/// The state machine's view of the relay sockets. Holds the core's lock
/// while it runs, so it spawns relay loops but never awaits.
struct Sockets<'a>(&'a Arc<Shared>);

impl RelaySockets for Sockets<'_> {
    fn open(
        &mut self,
        family: AddressFamily,
        port: PortRequest,
    ) -> Result<(SocketAddr, Option<SocketAddr>), OpenError> {
        let (socket, next) = self.0.picker.bind(family, port)?;
        let addr = self.register(socket, true)?;
        let next = match next {
            Some(socket) => match self.register(socket, false) {
                Ok(next) => Some(next),
                Err(e) => {
                    self.close(addr);
                    return Err(e);
                }
            },
            None => None,
        };
        Ok((addr, next))
    }

    fn claim(&mut self, reserved: SocketAddr) {
        let mut relays = lock(&self.0.relays);
        if let Some(entry) = relays.get_mut(&reserved) {
            entry
                .task
                .get_or_insert_with(|| spawn_relay(self.0, entry.socket.clone(), reserved));
        }
    }

    fn open_tcp(&mut self, family: AddressFamily) -> Result<SocketAddr, OpenError> {
        let listener = TcpListener::from_std(self.0.picker.bind_tcp(family)?).map_err(|e| {
            tracing::warn!(error = %e, "cannot register TCP relay listener");
            OpenError::Exhausted
        })?;
        let addr = listener.local_addr().map_err(|_| OpenError::Exhausted)?;
        let task = tokio::spawn(tcp_relay_loop(self.0.clone(), listener, addr)).abort_handle();
        lock(&self.0.tcp_relays).insert(addr, task);
        Ok(addr)
    }

    fn close(&mut self, relay: SocketAddr) {
        if let Some(task) = lock(&self.0.relays).remove(&relay).and_then(|e| e.task) {
            task.abort();
        }
        if let Some(task) = lock(&self.0.tcp_relays).remove(&relay) {
            task.abort();
        }
    }

    fn close_connection(&mut self, id: u32) {
        if let Some(PeerConn::Piping(task)) = lock(&self.0.peer_conns).remove(&id) {
            task.abort();
        }
    }
}

impl Sockets<'_> {
    /// Puts a bound socket under tokio and, unless it is only reserved,
    /// starts relaying on it.
    fn register(&self, socket: std::net::UdpSocket, relay: bool) -> Result<SocketAddr, OpenError> {
        let socket = UdpSocket::from_std(socket).map_err(|e| {
            tracing::warn!(error = %e, "cannot register relay socket");
            OpenError::Exhausted
        })?;
        let addr = socket.local_addr().map_err(|_| OpenError::Exhausted)?;
        let socket = Arc::new(socket);
        let task = relay.then(|| spawn_relay(self.0, socket.clone(), addr));
        lock(&self.0.relays).insert(addr, RelayEntry { socket, task });
        Ok(addr)
    }
}

fn spawn_relay(shared: &Arc<Shared>, socket: Arc<UdpSocket>, addr: SocketAddr) -> AbortHandle {
    tokio::spawn(relay_loop(shared.clone(), socket, addr)).abort_handle()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().expect("no loop panics while holding a lock")
}

impl Shared {
    fn handle_client<'a>(self: &Arc<Self>, from: FiveTuple, data: &'a [u8]) -> ClientAction<'a> {
        self.metrics.client_received(data.len());
        lock(&self.core).handle_client(from, data, Now::system(), &mut Sockets(self))
    }

    async fn to_peer(
        &self,
        client: FiveTuple,
        relay: SocketAddr,
        peer: SocketAddr,
        payload: &[u8],
        recv_tai_ns: u64,
    ) {
        let socket = lock(&self.relays).get(&relay).map(|e| e.socket.clone());
        let Some(socket) = socket else { return };
        if socket.send_to(payload, peer).await.is_err() {
            self.metrics.dropped("send_failed");
            return;
        }
        self.metrics.peer_sent(payload.len());
        self.report(Relayed {
            direction: Direction::ToPeer,
            client,
            relay,
            peer,
            payload,
            recv_tai_ns,
            send_tai_ns: tai_ns(),
        });
    }

    /// Carries out what the state machine asked for; returns the connection
    /// id when a stream has just become an RFC 6062 data connection.
    async fn act(
        self: &Arc<Self>,
        client: FiveTuple,
        action: ClientAction<'_>,
        recv_tai_ns: u64,
    ) -> Option<u32> {
        match action {
            ClientAction::Nothing => {}
            ClientAction::Reply(reply) => {
                self.send_to_client(client, &reply).await;
            }
            ClientAction::ToPeer {
                relay,
                peer,
                payload,
            } => {
                self.to_peer(client, relay, peer, payload, recv_tai_ns)
                    .await
            }
            ClientAction::Connect { id, relay, peer } => {
                tokio::spawn(connect_peer(self.clone(), id, relay, peer));
            }
            ClientAction::Bind { id, reply } => {
                self.send_to_client(client, &reply).await;
                return Some(id);
            }
        }
        None
    }

    fn report(&self, packet: Relayed<'_>) {
        self.metrics.relayed(&packet);
        if let Some(probe) = &self.probe {
            probe.relayed(&packet);
        }
    }

    /// Sends a reply or relayed frame to a client, over its listener (UDP)
    /// or its connection's queue (TCP/TLS).
    async fn send_to_client(&self, client: FiveTuple, frame: &[u8]) -> bool {
        let sent = match client.transport {
            Transport::Udp => match self.udp_listeners.get(&client.local) {
                Some(socket) => socket.send_to(frame, client.remote).await.is_ok(),
                None => false,
            },
            Transport::Tcp | Transport::Tls => return self.queue_to_stream(client, frame),
        };
        self.count_client_send(sent, frame.len())
    }

    /// Queues a frame for a TCP/TLS client; never waits.
    fn queue_to_stream(&self, client: FiveTuple, frame: &[u8]) -> bool {
        let queue = lock(&self.streams).get(&client).cloned();
        let sent = queue.is_some_and(|q| q.try_send(frame.to_vec()).is_ok());
        self.count_client_send(sent, frame.len())
    }

    fn count_client_send(&self, sent: bool, len: usize) -> bool {
        if sent {
            self.metrics.client_sent(len);
        } else {
            self.metrics.dropped("client_send_failed");
        }
        sent
    }

    /// Counts and reports a relayed datagram that went out.
    fn sent(
        &self,
        direction: Direction,
        d: &Datagram,
        frame_len: usize,
        payload: &[u8],
        recv_tai_ns: u64,
        send_tai_ns: u64,
    ) {
        match direction {
            Direction::ToPeer => self.metrics.peer_sent(payload.len()),
            Direction::ToClient => self.metrics.client_sent(frame_len),
        }
        self.report(Relayed {
            direction,
            client: d.client,
            relay: d.relay,
            peer: d.peer,
            payload,
            recv_tai_ns,
            send_tai_ns,
        });
    }

    fn dropped_send(&self, direction: Direction) {
        self.metrics.dropped(match direction {
            Direction::ToPeer => "send_failed",
            Direction::ToClient => "client_send_failed",
        });
    }

    /// Sends a batch's datagrams, one `sendmmsg` series per socket. What
    /// would block is copied to `owned`, to be sent once the socket can
    /// take it.
    fn send_batch(
        &self,
        b: &Batch,
        direction: Direction,
        datagrams: &mut Vec<Datagram>,
        recv_tai_ns: u64,
        owned: &mut Vec<Owned>,
    ) {
        for group in batch::group(datagrams) {
            let via = group[0].via;
            let socket = match direction {
                Direction::ToPeer => lock(&self.relays).get(&via).map(|e| e.socket.clone()),
                Direction::ToClient => self.udp_listeners.get(&via).cloned(),
            };
            // The allocation ended while the batch was handled.
            let Some(socket) = socket else { continue };
            let mut rest = group;
            while !rest.is_empty() {
                match socket.try_io(Interest::WRITABLE, || b.send(socket.as_raw_fd(), rest)) {
                    Ok(n) => {
                        let send_tai_ns = tai_ns();
                        for d in &rest[..n] {
                            let payload = b.bytes(d.payload.clone());
                            self.sent(
                                direction,
                                d,
                                d.frame.len(),
                                payload,
                                recv_tai_ns,
                                send_tai_ns,
                            );
                        }
                        rest = &rest[n..];
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        owned.extend(rest.iter().map(|d| Owned {
                            socket: socket.clone(),
                            datagram: d.clone(),
                            frame: b.bytes(d.frame.clone()).to_vec(),
                            payload: b.bytes(d.payload.clone()).to_vec(),
                            recv_tai_ns,
                        }));
                        break;
                    }
                    Err(_) => {
                        self.dropped_send(direction);
                        rest = &rest[1..];
                    }
                }
            }
        }
        datagrams.clear();
    }
}

/// A datagram sent after its batch, from a buffer of its own: one whose
/// socket was full, or a Data indication.
struct Owned {
    socket: Arc<UdpSocket>,
    datagram: Datagram,
    frame: Vec<u8>,
    payload: Vec<u8>,
    recv_tai_ns: u64,
}

/// What one UDP loop reuses from batch to batch.
#[derive(Default)]
struct Work {
    datagrams: Vec<Datagram>,
    /// Where a peer batch's datagrams go, by slot.
    to_clients: Vec<(usize, ToClient)>,
    /// Answers to clients' requests, carried out after the batch.
    control: Vec<(FiveTuple, ClientAction<'static>)>,
    owned: Vec<Owned>,
}

impl Work {
    /// What a batch left to do that needs awaiting.
    async fn finish(&mut self, shared: &Arc<Shared>, direction: Direction) {
        for (client, action) in self.control.drain(..) {
            // Relayed data is never among them, so no receive time to report.
            shared.act(client, action, 0).await;
        }
        for s in self.owned.drain(..) {
            let d = &s.datagram;
            if s.socket.send_to(&s.frame, d.to).await.is_ok() {
                shared.sent(
                    direction,
                    d,
                    s.frame.len(),
                    &s.payload,
                    s.recv_tai_ns,
                    tai_ns(),
                );
            } else {
                shared.dropped_send(direction);
            }
        }
    }
}

/// A running server.
pub struct Running {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
    endpoints: Endpoints,
    tls: Option<Acceptor>,
}

impl Running {
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// SIGHUP: re-read the TLS certificate and key.
    pub fn reload_tls(&self) -> Result<(), crate::tls::TlsError> {
        self.tls.as_ref().map_or(Ok(()), Acceptor::reload)
    }

    pub fn allocations(&self) -> usize {
        lock(&self.shared.core).allocation_count()
    }

    /// Keeps the XDP fast path's routes in step with the channels until the
    /// server stops.
    pub fn start_fast_path(&mut self, installer: crate::fastpath::Installer) {
        let shared = self.shared.clone();
        self.tasks
            .spawn(crate::fastpath::run(installer, move |seen| {
                let core = lock(&shared.core);
                let epoch = core.fast_epoch();
                (seen != Some(epoch)).then(|| {
                    let now = Instant::now();
                    (epoch, core.fast_channels(now), now)
                })
            }));
    }

    /// SIGTERM: refuse new allocations, let the others end, stop after
    /// `timeout` at the latest.
    pub async fn drain(mut self, timeout: Duration) {
        lock(&self.shared.core).drain();
        let deadline = tokio::time::Instant::now() + timeout;
        while self.allocations() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.tasks.shutdown().await;
        for task in lock(&self.shared.relays)
            .drain()
            .filter_map(|(_, e)| e.task)
        {
            task.abort();
        }
        for (_, task) in lock(&self.shared.tcp_relays).drain() {
            task.abort();
        }
        for (_, conn) in lock(&self.shared.peer_conns).drain() {
            if let PeerConn::Piping(task) = conn {
                task.abort();
            }
        }
    }
}

/// Binds every listener and starts the loops.
pub async fn start(
    config: Config,
    probe: Option<Arc<dyn PacketObserver>>,
) -> Result<Running, Error> {
    let metrics = Arc::new(Metrics::default());
    let bind_err = |addr: SocketAddr| move |source: io::Error| Error::Bind { addr, source };
    let tls = config.tls.clone().map(Acceptor::load).transpose()?;

    let mut udp = Vec::new();
    let mut listeners = Vec::new();
    let mut port = config.port;
    for &ip in &config.listening_ips {
        if config.udp {
            let addr = SocketAddr::new(ip, port);
            let socket = UdpSocket::from_std(udp_listener(addr).map_err(bind_err(addr))?)
                .map_err(bind_err(addr))?;
            let local = socket.local_addr().map_err(bind_err(addr))?;
            // Port 0 (tests): every later listener takes the port UDP got.
            port = local.port();
            listeners.push((Transport::Udp, local));
            udp.push((local, Arc::new(socket)));
        }
    }
    let mut tcp = Vec::new();
    for &ip in &config.listening_ips {
        if config.tcp {
            let listener = tcp_listener(SocketAddr::new(ip, port))?;
            port = listener
                .local_addr()
                .map_err(bind_err(SocketAddr::new(ip, port)))?
                .port();
            listeners.push((Transport::Tcp, listener.local_addr().expect("bound")));
            tcp.push((Transport::Tcp, listener));
        }
    }
    if tls.is_some() {
        let mut tls_port = config.tls_port;
        for &ip in &config.listening_ips {
            let listener = tcp_listener(SocketAddr::new(ip, tls_port))?;
            let local = listener.local_addr().expect("bound");
            tls_port = local.port();
            listeners.push((Transport::Tls, local));
            tcp.push((Transport::Tls, listener));
        }
    }

    let endpoints = Endpoints {
        listeners,
        relay_ips: config.relay_ips.clone(),
        relay_ports: config.min_port..=config.max_port,
    };
    let shared = Arc::new(Shared {
        core: Mutex::new(Server::new(config.settings.clone(), metrics.clone())),
        metrics,
        probe,
        udp_listeners: udp.iter().cloned().collect(),
        streams: Mutex::new(HashMap::new()),
        relays: Mutex::new(HashMap::new()),
        tcp_relays: Mutex::new(HashMap::new()),
        peer_conns: Mutex::new(HashMap::new()),
        picker: PortPicker::new(config.relay_ips.clone(), config.min_port..=config.max_port),
    });

    let mut tasks = JoinSet::new();
    for (local, socket) in udp {
        tasks.spawn(udp_loop(shared.clone(), socket, local));
    }
    let slots = Arc::new(Semaphore::new(MAX_STREAMS));
    for (transport, listener) in tcp {
        tasks.spawn(accept_loop(
            shared.clone(),
            listener,
            transport,
            tls.clone().filter(|_| transport == Transport::Tls),
            slots.clone(),
        ));
    }
    tasks.spawn(expiry_loop(shared.clone()));
    if let Some(addr) = config.metrics {
        let listener = TcpListener::bind(addr).await.map_err(bind_err(addr))?;
        tasks.spawn(crate::metrics::serve(listener, shared.metrics.clone()));
    }
    if let Some(probe) = &shared.probe {
        probe.started(&endpoints);
    }
    Ok(Running {
        shared,
        tasks,
        endpoints,
        tls,
    })
}

/// Every UDP client shares this socket: a larger receive buffer absorbs the
/// bursts of many calls (the kernel caps it at net.core.rmem_max).
fn udp_listener(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = udp_socket(addr)?;
    socket2::SockRef::from(&socket).set_recv_buffer_size(UDP_LISTENER_RCVBUF)?;
    Ok(socket)
}

fn tcp_listener(addr: SocketAddr) -> Result<TcpListener, Error> {
    let bind = || -> io::Result<TcpListener> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        TcpListener::from_std(socket.into())
    };
    bind().map_err(|source| Error::Bind { addr, source })
}

/// Reads a client listener: waits only after a receive found it empty, so
/// readiness is never missed.
async fn udp_loop(shared: Arc<Shared>, socket: Arc<UdpSocket>, local: SocketAddr) {
    batch_loop(shared, socket, local, Direction::ToPeer, client_batch).await;
}

/// One batch of a UDP loop: read the socket (bound to the address given),
/// handle what came, queue what goes out.
type HandleBatch =
    fn(&Arc<Shared>, &UdpSocket, SocketAddr, &mut Batch, &mut Work) -> io::Result<()>;

/// A UDP socket's loop: a batch per readiness, its leftovers sent, a yield.
async fn batch_loop(
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    addr: SocketAddr,
    direction: Direction,
    handle: HandleBatch,
) {
    let mut work = Work::default();
    loop {
        if socket.readable().await.is_err() {
            continue;
        }
        // ICMP errors surface as receive errors on some kernels; the socket is fine.
        let batch = batch::with(|b| handle(&shared, &socket, addr, b, &mut work));
        work.finish(&shared, direction).await;
        if batch.is_ok() {
            // Let the other loops read what this batch sent them before
            // more arrives: relay sockets' buffers are small.
            tokio::task::yield_now().await;
        }
    }
}

/// One `recvmmsg` from a client listener, handled under one core lock.
fn client_batch(
    shared: &Arc<Shared>,
    socket: &UdpSocket,
    local: SocketAddr,
    b: &mut Batch,
    work: &mut Work,
) -> io::Result<()> {
    let n = socket.try_io(Interest::READABLE, || b.recv(socket.as_raw_fd(), local))?;
    let recv_tai_ns = tai_ns();
    let now = Now::system();
    let mut core = lock(&shared.core);
    for i in 0..n {
        let (len, remote) = b.received(i);
        let client = FiveTuple {
            transport: Transport::Udp,
            local,
            remote,
        };
        let at = b.payload(i);
        shared.metrics.client_received(len);
        let data = b.bytes(at.clone());
        // UDP clients get no TCP allocations, so never a data connection.
        match core.handle_client(client, data, now, &mut Sockets(shared)) {
            ClientAction::Nothing => {}
            ClientAction::ToPeer {
                relay,
                peer,
                payload,
            } => {
                // The payload is a slice of the datagram: keep its place.
                let start = at.start + (payload.as_ptr() as usize - data.as_ptr() as usize);
                let payload = start..start + payload.len();
                work.datagrams.push(Datagram {
                    via: relay,
                    to: peer,
                    frame: payload.clone(),
                    payload,
                    client,
                    relay,
                    peer,
                });
            }
            ClientAction::Reply(reply) => work.control.push((client, ClientAction::Reply(reply))),
            ClientAction::Connect { id, relay, peer } => work
                .control
                .push((client, ClientAction::Connect { id, relay, peer })),
            ClientAction::Bind { id, reply } => work
                .control
                .push((client, ClientAction::Bind { id, reply })),
        }
    }
    drop(core);
    shared.send_batch(
        b,
        Direction::ToPeer,
        &mut work.datagrams,
        recv_tai_ns,
        &mut work.owned,
    );
    Ok(())
}

/// Reads an allocation's relay socket, like [`udp_loop`].
async fn relay_loop(shared: Arc<Shared>, socket: Arc<UdpSocket>, relay: SocketAddr) {
    batch_loop(shared, socket, relay, Direction::ToClient, peer_batch).await;
}

/// One `recvmmsg` from a relay socket, handled under one core lock.
/// ChannelData to UDP clients is framed in place and batched; Data
/// indications and TCP/TLS clients need a buffer of their own anyway.
fn peer_batch(
    shared: &Arc<Shared>,
    socket: &UdpSocket,
    relay: SocketAddr,
    b: &mut Batch,
    work: &mut Work,
) -> io::Result<()> {
    let n = socket.try_io(Interest::READABLE, || b.recv(socket.as_raw_fd(), relay))?;
    let recv_tai_ns = tai_ns();
    let now = Instant::now();
    let mut core = lock(&shared.core);
    for i in 0..n {
        let (len, peer) = b.received(i);
        shared.metrics.peer_received(len);
        if let Some(to) = core.handle_peer(relay, peer, len, now) {
            work.to_clients.push((i, to));
        }
    }
    drop(core);
    for (i, ToClient { client, channel }) in work.to_clients.drain(..) {
        let (len, peer) = b.received(i);
        let payload = b.payload(i);
        let mut datagram = Datagram {
            via: client.local,
            to: client.remote,
            frame: payload.clone(),
            payload,
            client,
            relay,
            peer,
        };
        let sent = match (channel, client.transport) {
            (Some(number), transport) => {
                let frame_len =
                    framing::channel_data_in_place(b.slot_mut(i), number, len, transport);
                let slot = datagram.payload.start - CHANNEL_HEADER;
                datagram.frame = slot..slot + frame_len;
                if transport == Transport::Udp {
                    work.datagrams.push(datagram);
                    continue;
                }
                shared.queue_to_stream(client, b.bytes(datagram.frame.clone()))
            }
            (None, transport) => {
                let payload = b.bytes(datagram.payload.clone());
                let indication = framing::data_indication(peer, payload);
                if transport != Transport::Udp {
                    shared.queue_to_stream(client, &indication)
                } else if let Some(listener) = shared.udp_listeners.get(&client.local) {
                    work.owned.push(Owned {
                        socket: listener.clone(),
                        datagram,
                        frame: indication,
                        payload: payload.to_vec(),
                        recv_tai_ns,
                    });
                    continue;
                } else {
                    shared.count_client_send(false, 0)
                }
            }
        };
        if sent {
            shared.report(Relayed {
                direction: Direction::ToClient,
                client,
                relay,
                peer,
                payload: b.bytes(datagram.payload),
                recv_tai_ns,
                send_tai_ns: tai_ns(),
            });
        }
    }
    shared.send_batch(
        b,
        Direction::ToClient,
        &mut work.datagrams,
        recv_tai_ns,
        &mut work.owned,
    );
    Ok(())
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    transport: Transport,
    tls: Option<Acceptor>,
    slots: Arc<Semaphore>,
) {
    let local = listener.local_addr().expect("bound");
    loop {
        let Ok((stream, remote)) = listener.accept().await else {
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            shared.metrics.dropped("too_many_streams");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let client = FiveTuple {
            transport,
            local,
            remote,
        };
        let shared = shared.clone();
        let acceptor = tls.as_ref().map(Acceptor::get);
        tokio::spawn(async move {
            match acceptor {
                None => serve_stream(shared, stream, client).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(tls_stream)) => serve_stream(shared, tls_stream, client).await,
                        _ => shared.metrics.dropped("tls_handshake"),
                    }
                }
            }
            drop(slot);
        });
    }
}

/// One TCP/TLS client: frames in, a queue out, its allocation ends with it.
async fn serve_stream<S>(shared: Arc<Shared>, stream: S, client: FiveTuple)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (queue, mut outgoing) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    lock(&shared.streams).insert(client, queue);
    let write_task = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if writer.write_all(&frame).await.is_err() {
                break;
            }
        }
    });

    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 4096];
    'conn: loop {
        let idle = !lock(&shared.core).has_allocation(client);
        let read = reader.read(&mut chunk);
        let n = if idle {
            match tokio::time::timeout(UNALLOCATED_IDLE, read).await {
                Ok(r) => r,
                Err(_) => break,
            }
        } else {
            read.await
        };
        let n = match n {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let recv_tai_ns = tai_ns();
        buf.extend_from_slice(&chunk[..n]);
        loop {
            let len = match framing::stream_frame(&buf) {
                Frame::Complete(len) => len,
                Frame::Partial if idle && buf.len() > UNALLOCATED_MAX_FRAME => {
                    shared.metrics.dropped("stream_oversized");
                    break 'conn;
                }
                Frame::Partial => break,
                Frame::Invalid => {
                    shared.metrics.dropped("stream_garbage");
                    break 'conn;
                }
            };
            let action = shared.handle_client(client, &buf[..len]);
            if let Some(id) = shared.act(client, action, recv_tai_ns).await {
                // Bytes after the ConnectionBind already belong to the peer.
                let leftover = buf.split_off(len);
                let peer = lock(&shared.peer_conns).remove(&id);
                let queue = lock(&shared.streams).get(&client).cloned();
                if let (Some(PeerConn::Waiting(peer)), Some(queue)) = (peer, queue) {
                    let piping = tokio::spawn(pipe(reader, leftover, peer, queue));
                    lock(&shared.peer_conns).insert(id, PeerConn::Piping(piping.abort_handle()));
                    let _ = piping.await;
                    lock(&shared.peer_conns).remove(&id);
                }
                lock(&shared.core).connection_closed(id);
                break 'conn;
            }
            buf.drain(..len);
        }
    }
    lock(&shared.streams).remove(&client);
    lock(&shared.core).client_closed(client, &mut Sockets(&shared));
    // Let queued replies go out before the connection closes.
    let _ = tokio::time::timeout(Duration::from_secs(1), write_task).await;
}

/// Accepts peers on a TCP relay listener (RFC 6062 §5.3).
async fn tcp_relay_loop(shared: Arc<Shared>, listener: TcpListener, relay: SocketAddr) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let attempt = lock(&shared.core).peer_incoming(relay, peer, Instant::now());
        let Some((client, id, request)) = attempt else {
            continue;
        };
        lock(&shared.peer_conns).insert(id, PeerConn::Waiting(stream));
        shared.send_to_client(client, &request).await;
    }
}

/// Connects from a TCP relay address to a peer (RFC 6062 §5.2), then lets
/// the state machine answer the client's Connect.
async fn connect_peer(shared: Arc<Shared>, id: u32, relay: SocketAddr, peer: SocketAddr) {
    let connect = async {
        let socket = match relay {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }?;
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(relay)?;
        socket.connect(peer).await
    };
    let stream = tokio::time::timeout(crate::connections::BIND_TIMEOUT, connect)
        .await
        .ok()
        .and_then(Result::ok);
    let connected = stream.is_some();
    // Stored before the answer goes out, so a quick ConnectionBind finds it.
    if let Some(stream) = stream {
        lock(&shared.peer_conns).insert(id, PeerConn::Waiting(stream));
    }
    let answer = lock(&shared.core).peer_connected(id, connected, Instant::now());
    match answer {
        Some((client, reply)) => {
            shared.send_to_client(client, &reply).await;
        }
        // The allocation went away meanwhile.
        None => {
            lock(&shared.peer_conns).remove(&id);
        }
    }
}

/// Copies a bound data connection both ways until either side ends.
async fn pipe<R: AsyncRead + Unpin>(
    mut client: R,
    leftover: Vec<u8>,
    peer: TcpStream,
    to_client: mpsc::Sender<Vec<u8>>,
) {
    let (mut from_peer, mut to_peer) = peer.into_split();
    let up = async {
        to_peer.write_all(&leftover).await?;
        tokio::io::copy(&mut client, &mut to_peer).await
    };
    let down = async {
        let mut buf = vec![0u8; 16384];
        loop {
            let n = from_peer.read(&mut buf).await?;
            // The client's queue applies backpressure to the peer here.
            if n == 0 || to_client.send(buf[..n].to_vec()).await.is_err() {
                return Ok::<_, io::Error>(0);
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

async fn expiry_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        lock(&shared.core).expire(Instant::now(), &mut Sockets(&shared));
    }
}

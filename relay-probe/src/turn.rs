//! The TURN server state machine (RFC 8656, RFC 6156), sans I/O.
//!
//! Wire formats come from `turn-types` / `stun-types` (the turn-proto
//! family); the state is owned here because `turn-server-proto` 0.7.3 keeps
//! per-source nonce state it never frees, has no credential callback or user
//! removal, and allocates per relayed packet. See `docs/relay.md`.
//!
//! The I/O loop feeds datagrams / stream frames in and carries out the
//! returned actions. Relay sockets are opened through [`RelaySockets`] so the
//! machine stays testable without sockets.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use turn_types::attribute::{
    AdditionalAddressFamily, AddressErrorCode, ChannelNumber, ConnectionId, Data as DataAttr,
    EvenPort, Lifetime, RequestedAddressFamily, RequestedTransport, ReservationToken,
    XorPeerAddress, XorRelayedAddress,
};
use turn_types::message::{
    ALLOCATE, CHANNEL_BIND, CONNECT, CONNECTION_ATTEMPT, CONNECTION_BIND, CREATE_PERMISSION,
    REFRESH, SEND,
};
use turn_types::stun::attribute::{
    AttributeType, ErrorCode, Fingerprint, MessageIntegrity, MessageIntegritySha256, Nonce,
    PasswordAlgorithm, PasswordAlgorithms, Realm, Software, Username, XorMappedAddress,
};
use turn_types::stun::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageHeader,
    MessageIntegrityCredentials, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec,
    TransactionId, BINDING,
};
use turn_types::stun::prelude::{Attribute, AttributeStaticType, AttributeWrite};
use turn_types::AddressFamily;

use crate::auth::{Credentials, NonceCheck, Nonces};
use crate::connections::{Connections, State as ConnectionState};
use crate::metrics::Metrics;
use crate::policy::PeerPolicy;
use crate::quota::{Bucket, Quota};

/// Permissions and channels one allocation may hold: keeps an authenticated
/// but hostile client's memory bounded too.
const MAX_PERMISSIONS: usize = 1024;
const SOFTWARE: &str = concat!("demarc-relay ", env!("CARGO_PKG_VERSION"));

/// How a client reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// A client's 5-tuple as the server sees it; identifies its allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub transport: Transport,
    /// The listening address the client talks to.
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// The time, both ways the machine needs it: monotonic for lifetimes, UNIX
/// seconds for nonces and REST-API usernames.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub unix: u64,
}

impl Now {
    pub fn system() -> Self {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            mono: Instant::now(),
            unix,
        }
    }
}

/// `external-ip=public[/private]`: what to advertise for a relay address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalIp {
    pub public: IpAddr,
    pub private: Option<IpAddr>,
}

/// Everything the machine is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub realm: String,
    pub credentials: Credentials,
    pub policy: PeerPolicy,
    pub user_quota: u32,
    pub total_quota: u32,
    /// Bytes per second per allocation and direction; 0 is unlimited.
    pub max_bps: u64,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    pub nonce_lifetime: Duration,
    pub external_ips: Vec<ExternalIp>,
}

impl Default for Settings {
    /// RFC 8656's lifetimes and coturn's defaults.
    fn default() -> Self {
        Self {
            realm: "demarc".into(),
            credentials: Credentials {
                separator: ':',
                ..Default::default()
            },
            policy: PeerPolicy::default(),
            user_quota: 0,
            total_quota: 0,
            max_bps: 0,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            nonce_lifetime: Duration::from_secs(600),
            external_ips: Vec::new(),
        }
    }
}

/// Why a relay socket could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// No relay address of that family is configured (440).
    NoAddress,
    /// Every port in the range is taken (508).
    Exhausted,
}

/// Which port a relay socket gets (EVEN-PORT, RFC 8656 §14.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRequest {
    Any,
    Even,
    /// An even port, and the next one held for a later Allocate that
    /// names its RESERVATION-TOKEN (RTP/RTCP pairs).
    EvenReserveNext,
}

/// Opens and closes the UDP sockets that face peers.
pub trait RelaySockets {
    /// Opens a relay socket; with [`PortRequest::EvenReserveNext`] also
    /// holds the next port (returned second) without relaying on it yet.
    fn open(
        &mut self,
        family: AddressFamily,
        port: PortRequest,
    ) -> Result<(SocketAddr, Option<SocketAddr>), OpenError>;
    /// Starts relaying on a socket that `open` held.
    fn claim(&mut self, reserved: SocketAddr);
    /// Opens a TCP relay listener (RFC 6062).
    fn open_tcp(&mut self, family: AddressFamily) -> Result<SocketAddr, OpenError>;
    /// Closes a relay socket or TCP relay listener.
    fn close(&mut self, relay: SocketAddr);
    /// Drops an RFC 6062 peer data connection, pending or bound.
    fn close_connection(&mut self, id: u32);
}

/// How long a reserved port waits for its Allocate (RFC 8656 §7.2: 30 s).
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// What to do with a client's datagram or stream frame.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientAction<'a> {
    Nothing,
    /// Send to the client it came from.
    Reply(Vec<u8>),
    /// Send `payload` (borrowed from the input: no copy) from relay socket
    /// `relay` to `peer`.
    ToPeer {
        relay: SocketAddr,
        peer: SocketAddr,
        payload: &'a [u8],
    },
    /// RFC 6062 Connect: open a TCP connection from `relay` to `peer` and
    /// report the outcome to [`Server::peer_connected`], which answers.
    Connect {
        id: u32,
        relay: SocketAddr,
        peer: SocketAddr,
    },
    /// RFC 6062 ConnectionBind accepted: send `reply`, then this stream
    /// carries connection `id`'s bytes, unframed, both ways.
    Bind {
        id: u32,
        reply: Vec<u8>,
    },
}

/// Where a peer's datagram goes and how it is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToClient {
    pub client: FiveTuple,
    /// ChannelData on this channel, else a Data indication.
    pub channel: Option<u16>,
}

/// A channel the kernel may relay (the XDP fast path, `fastpath`): IPv4
/// UDP client on a listener with a fixed address, no rate limit. `expires`
/// is when the channel, its permission or the allocation ends, whichever
/// comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastChannel {
    pub client: SocketAddrV4,
    pub listener: SocketAddrV4,
    pub channel: u16,
    pub relay: SocketAddrV4,
    pub peer: SocketAddrV4,
    /// The peer is a relay address of this server (client to client).
    pub peer_is_relay: bool,
    pub expires: Instant,
}

#[derive(Debug)]
struct Channel {
    peer: SocketAddr,
    expires: Instant,
}

#[derive(Debug)]
struct Allocation {
    username: String,
    /// An RFC 6062 TCP allocation: the relay is a TCP listener.
    tcp: bool,
    /// The request that created it, so a retransmitted Allocate gets the
    /// same answer instead of 437.
    transaction: TransactionId,
    relays: Vec<SocketAddr>,
    expires: Instant,
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, Channel>,
    channel_of_peer: HashMap<SocketAddr, u16>,
    up: Option<Bucket>,
    down: Option<Bucket>,
}

impl Allocation {
    fn relay_for(&self, peer: IpAddr) -> Option<SocketAddr> {
        self.relays
            .iter()
            .copied()
            .find(|r| r.is_ipv4() == peer.is_ipv4())
    }

    fn permitted(&self, peer: IpAddr, now: Instant) -> bool {
        self.permissions.get(&peer).is_some_and(|&t| t > now)
    }
}

/// An error answer: the code, and for 420 the attributes not understood.
#[derive(Debug, PartialEq, Eq)]
struct Failure {
    code: u16,
    unknown: Vec<AttributeType>,
}

impl From<u16> for Failure {
    fn from(code: u16) -> Self {
        Self {
            code,
            unknown: Vec::new(),
        }
    }
}

enum Success {
    Allocated {
        relays: Vec<SocketAddr>,
        failed_family: Option<(AddressFamily, u16)>,
        reservation: Option<u64>,
        lifetime: u32,
    },
    Lifetime(u32),
    Empty,
}

/// The authenticated sender of a request.
struct Caller {
    username: String,
    credentials: MessageIntegrityCredentials,
}

/// The TURN server's state.
#[derive(Debug)]
pub struct Server {
    settings: Settings,
    nonces: Nonces,
    quota: Quota,
    allocations: HashMap<FiveTuple, Allocation>,
    by_relay: HashMap<SocketAddr, FiveTuple>,
    /// RESERVATION-TOKEN → held port and when the hold ends.
    reservations: HashMap<u64, (SocketAddr, Instant)>,
    connections: Connections,
    draining: bool,
    metrics: Arc<Metrics>,
    /// Bumped whenever the set of fast channels or their expiry may change.
    fast_epoch: u64,
}

/// Attributes every authenticated request may carry besides its own.
const AUTH_ATTRIBUTES: &[AttributeType] = &[
    Username::TYPE,
    Realm::TYPE,
    Nonce::TYPE,
    MessageIntegrity::TYPE,
    MessageIntegritySha256::TYPE,
    Fingerprint::TYPE,
    PasswordAlgorithm::TYPE,
    PasswordAlgorithms::TYPE,
    Software::TYPE,
];

impl Server {
    pub fn new(settings: Settings, metrics: Arc<Metrics>) -> Self {
        let nonces = Nonces::random(settings.nonce_lifetime.as_secs());
        let quota = Quota::new(settings.user_quota, settings.total_quota);
        Self {
            settings,
            nonces,
            quota,
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            reservations: HashMap::new(),
            connections: Connections::default(),
            draining: false,
            metrics,
            fast_epoch: 0,
        }
    }

    /// Stop granting allocations; existing ones run until they end.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    pub fn has_allocation(&self, client: FiveTuple) -> bool {
        self.allocations.contains_key(&client)
    }

    /// Changes whenever [`Self::fast_channels`] may answer differently.
    pub fn fast_epoch(&self) -> u64 {
        self.fast_epoch
    }

    /// Every channel the kernel may relay for now, with when it must stop.
    pub fn fast_channels(&self, now: Instant) -> Vec<FastChannel> {
        let v4 = |a: SocketAddr| match a {
            SocketAddr::V4(a) if !a.ip().is_unspecified() => Some(a),
            _ => None,
        };
        let mut out = Vec::new();
        for (from, allocation) in &self.allocations {
            let (Transport::Udp, Some(client), Some(listener), false, None, None) = (
                from.transport,
                v4(from.remote),
                v4(from.local),
                allocation.tcp,
                &allocation.up,
                &allocation.down,
            ) else {
                continue;
            };
            for (&channel, c) in &allocation.channels {
                let (Some(peer), Some(relay)) =
                    (v4(c.peer), allocation.relay_for(c.peer.ip()).and_then(v4))
                else {
                    continue;
                };
                let Some(&permitted) = allocation.permissions.get(&c.peer.ip()) else {
                    continue;
                };
                let expires = c.expires.min(permitted).min(allocation.expires);
                if expires > now {
                    out.push(FastChannel {
                        client,
                        listener,
                        channel,
                        relay,
                        peer,
                        peer_is_relay: self.by_relay.contains_key(&c.peer),
                        expires,
                    });
                }
            }
        }
        out
    }

    /// A datagram (UDP) or one complete frame (TCP/TLS) from a client.
    pub fn handle_client<'a>(
        &mut self,
        from: FiveTuple,
        data: &'a [u8],
        now: Now,
        relays: &mut dyn RelaySockets,
    ) -> ClientAction<'a> {
        match data.first() {
            Some(0x40..=0x7f) => self.channel_data(from, data, now.mono),
            Some(0..=3) => self.stun(from, data, now, relays),
            _ => {
                self.metrics.dropped("not_turn");
                ClientAction::Nothing
            }
        }
    }

    /// A datagram from `peer` on relay socket `relay`, `len` bytes long.
    pub fn handle_peer(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        len: usize,
        now: Instant,
    ) -> Option<ToClient> {
        let client = *self.by_relay.get(&relay)?;
        let allocation = self.allocations.get_mut(&client)?;
        if !allocation.permitted(peer.ip(), now) {
            self.metrics.dropped("no_permission");
            return None;
        }
        if let Some(bucket) = &mut allocation.down {
            if !bucket.take(len, now) {
                self.metrics.dropped("max_bps");
                return None;
            }
        }
        let channel = allocation
            .channel_of_peer
            .get(&peer)
            .copied()
            .filter(|c| allocation.channels[c].expires > now);
        Some(ToClient { client, channel })
    }

    /// Removes what has expired; call about once a second.
    pub fn expire(&mut self, now: Instant, relays: &mut dyn RelaySockets) {
        let expired: Vec<FiveTuple> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(k, _)| *k)
            .collect();
        for client in expired {
            self.remove(client, relays, "expired");
        }
        for id in self.connections.expire(now) {
            relays.close_connection(id);
        }
        self.reservations.retain(|_, (addr, expires)| {
            let keep = *expires > now;
            if !keep {
                relays.close(*addr);
            }
            keep
        });
        for allocation in self.allocations.values_mut() {
            let before = allocation.permissions.len() + allocation.channels.len();
            allocation.permissions.retain(|_, t| *t > now);
            let channels = &mut allocation.channels;
            channels.retain(|_, c| c.expires > now);
            allocation
                .channel_of_peer
                .retain(|_, n| channels.contains_key(n));
            // The kernel stops at `expires` by itself; this drops the entries.
            if allocation.permissions.len() + allocation.channels.len() != before {
                self.fast_epoch += 1;
            }
        }
    }

    /// A stream client went away: its allocation goes with it (RFC 8656 §3.1).
    pub fn client_closed(&mut self, client: FiveTuple, relays: &mut dyn RelaySockets) {
        self.remove(client, relays, "connection closed");
    }

    fn remove(&mut self, client: FiveTuple, relays: &mut dyn RelaySockets, why: &str) {
        if let Some(allocation) = self.allocations.remove(&client) {
            self.fast_epoch += 1;
            tracing::info!(
                ?client,
                user = allocation.username,
                relays = ?allocation.relays,
                why,
                "allocation ended"
            );
            for relay in &allocation.relays {
                self.by_relay.remove(relay);
                relays.close(*relay);
            }
            for id in self.connections.remove_client(client) {
                relays.close_connection(id);
            }
            self.quota.release(&allocation.username);
            self.metrics.set_allocations(self.allocations.len());
        }
    }

    fn channel_data<'a>(
        &mut self,
        from: FiveTuple,
        data: &'a [u8],
        now: Instant,
    ) -> ClientAction<'a> {
        let Ok(frame) = turn_types::channel::ChannelData::parse(data) else {
            self.metrics.dropped("malformed");
            return ClientAction::Nothing;
        };
        let payload = &data[4..4 + frame.data().len()];
        let Some(allocation) = self.allocations.get_mut(&from) else {
            self.metrics.dropped("no_allocation");
            return ClientAction::Nothing;
        };
        let Some(channel) = allocation
            .channels
            .get(&frame.id())
            .filter(|c| c.expires > now)
        else {
            self.metrics.dropped("unknown_channel");
            return ClientAction::Nothing;
        };
        let peer = channel.peer;
        self.forward(from, peer, payload, now)
    }

    /// Client → peer, after the permission and rate checks both framings share.
    fn forward<'a>(
        &mut self,
        from: FiveTuple,
        peer: SocketAddr,
        payload: &'a [u8],
        now: Instant,
    ) -> ClientAction<'a> {
        let Some(allocation) = self.allocations.get_mut(&from) else {
            self.metrics.dropped("no_allocation");
            return ClientAction::Nothing;
        };
        if !allocation.permitted(peer.ip(), now) {
            self.metrics.dropped("no_permission");
            return ClientAction::Nothing;
        }
        let Some(relay) = allocation.relay_for(peer.ip()) else {
            self.metrics.dropped("family_mismatch");
            return ClientAction::Nothing;
        };
        if let Some(bucket) = &mut allocation.up {
            if !bucket.take(payload.len(), now) {
                self.metrics.dropped("max_bps");
                return ClientAction::Nothing;
            }
        }
        ClientAction::ToPeer {
            relay,
            peer,
            payload,
        }
    }

    fn stun<'a>(
        &mut self,
        from: FiveTuple,
        data: &'a [u8],
        now: Now,
        relays: &mut dyn RelaySockets,
    ) -> ClientAction<'a> {
        let msg = match Message::from_bytes(data) {
            Ok(msg) => msg,
            Err(_) => {
                self.metrics.dropped("malformed");
                return bad_request_to_garbage(data).map_or(ClientAction::Nothing, |reply| {
                    self.metrics.error(ErrorCode::BAD_REQUEST);
                    ClientAction::Reply(reply)
                });
            }
        };
        match msg.class() {
            MessageClass::Request => self.request(from, &msg, now, relays),
            MessageClass::Indication if msg.method() == SEND => {
                self.send_indication(from, &msg, data, now.mono)
            }
            _ => {
                self.metrics.dropped("unexpected_stun");
                ClientAction::Nothing
            }
        }
    }

    fn send_indication<'a>(
        &mut self,
        from: FiveTuple,
        msg: &Message<'_>,
        data: &'a [u8],
        now: Instant,
    ) -> ClientAction<'a> {
        let peer = msg
            .attribute::<XorPeerAddress>()
            .map(|a| a.addr(msg.transaction_id()));
        // Slice the DATA value out of the input so the payload is not copied.
        let payload = msg
            .raw_attribute_and_offset(DataAttr::TYPE)
            .map(|(offset, raw)| (offset + 4, usize::from(raw.header.length())));
        match (peer, payload) {
            (Ok(peer), Some((start, len))) => {
                self.forward(from, peer, &data[start..start + len], now)
            }
            _ => {
                self.metrics.dropped("malformed");
                ClientAction::Nothing
            }
        }
    }

    fn request(
        &mut self,
        from: FiveTuple,
        msg: &Message<'_>,
        now: Now,
        relays: &mut dyn RelaySockets,
    ) -> ClientAction<'static> {
        let method = msg.method();
        if method == BINDING {
            let mut reply = Message::builder_success(msg, MessageWriteVec::with_capacity(64));
            add(
                &mut reply,
                &XorMappedAddress::new(from.remote, msg.transaction_id()),
            );
            reply.add_fingerprint().expect("fingerprint fits");
            return ClientAction::Reply(reply.finish());
        }
        let caller = match self.authenticate(from, msg, now) {
            Ok(caller) => caller,
            Err(reply) => return ClientAction::Reply(reply),
        };
        if method == CONNECT {
            return match self.connect(from, msg, &caller, now.mono) {
                Ok((id, relay, peer)) => ClientAction::Connect { id, relay, peer },
                Err(failure) => ClientAction::Reply(self.respond(from, msg, &caller, Err(failure))),
            };
        }
        if method == CONNECTION_BIND {
            return match self.connection_bind(from, msg, &caller, now.mono) {
                Ok(id) => ClientAction::Bind {
                    id,
                    reply: self.respond(from, msg, &caller, Ok(Success::Empty)),
                },
                Err(failure) => ClientAction::Reply(self.respond(from, msg, &caller, Err(failure))),
            };
        }
        let result = if method == ALLOCATE {
            self.allocate(from, msg, &caller, now.mono, relays)
        } else if method == REFRESH {
            self.refresh(from, msg, now.mono, relays)
        } else if method == CREATE_PERMISSION {
            self.create_permission(from, msg, now.mono)
        } else if method == CHANNEL_BIND {
            self.channel_bind(from, msg, now.mono)
        } else {
            Err(ErrorCode::BAD_REQUEST.into())
        };
        ClientAction::Reply(self.respond(from, msg, &caller, result))
    }

    /// Long-term credentials: 401 with a fresh nonce when unsigned, 438 for a
    /// stale nonce, 441 when a different user speaks on an allocation's 5-tuple.
    fn authenticate(
        &mut self,
        from: FiveTuple,
        msg: &Message<'_>,
        now: Now,
    ) -> Result<Caller, Vec<u8>> {
        let signed = msg.has_attribute(MessageIntegrity::TYPE)
            || msg.has_attribute(MessageIntegritySha256::TYPE);
        if !signed {
            return Err(self.challenge(from, msg, now, ErrorCode::UNAUTHORIZED));
        }
        let (Ok(username), Ok(realm), Ok(nonce)) = (
            msg.attribute::<Username>(),
            msg.attribute::<Realm>(),
            msg.attribute::<Nonce>(),
        ) else {
            self.metrics.error(ErrorCode::BAD_REQUEST);
            return Err(unsigned_error(msg, ErrorCode::BAD_REQUEST));
        };
        if realm.realm() != self.settings.realm {
            return Err(self.challenge(from, msg, now, ErrorCode::UNAUTHORIZED));
        }
        if self.nonces.check(nonce.nonce(), from.remote.ip(), now.unix) == NonceCheck::Stale {
            return Err(self.challenge(from, msg, now, ErrorCode::STALE_NONCE));
        }
        let username = username.username();
        let Ok(passwords) = self.settings.credentials.passwords(username, now.unix) else {
            return Err(self.challenge(from, msg, now, ErrorCode::UNAUTHORIZED));
        };
        let credentials = passwords
            .into_iter()
            .map(|password| -> MessageIntegrityCredentials {
                LongTermKeyCredentials::new(username.into(), password, realm.realm().into()).into()
            })
            .find(|credentials| msg.validate_integrity(credentials).is_ok());
        let Some(credentials) = credentials else {
            return Err(self.challenge(from, msg, now, ErrorCode::UNAUTHORIZED));
        };
        let caller = Caller {
            username: username.to_string(),
            credentials,
        };
        if self
            .allocations
            .get(&from)
            .is_some_and(|a| a.username != caller.username)
        {
            return Err(self.respond(from, msg, &caller, Err(ErrorCode::WRONG_CREDENTIALS.into())));
        }
        Ok(caller)
    }

    /// An unsigned 401/438 carrying the realm and a new nonce.
    fn challenge(&self, from: FiveTuple, msg: &Message<'_>, now: Now, code: u16) -> Vec<u8> {
        self.metrics.error(code);
        let nonce = self.nonces.issue(from.remote.ip(), now.unix);
        let mut reply = Message::builder_error(msg, MessageWriteVec::with_capacity(160));
        add(&mut reply, &error_code(code));
        add(
            &mut reply,
            &Realm::new(&self.settings.realm).expect("realm was validated"),
        );
        add(
            &mut reply,
            &Nonce::new(&nonce).expect("nonce is short ASCII"),
        );
        reply.add_fingerprint().expect("fingerprint fits");
        reply.finish()
    }

    fn respond(
        &self,
        from: FiveTuple,
        msg: &Message<'_>,
        caller: &Caller,
        result: Result<Success, Failure>,
    ) -> Vec<u8> {
        let txid = msg.transaction_id();
        let reply = match result {
            Ok(success) => {
                let mut reply = Message::builder_success(msg, MessageWriteVec::with_capacity(128));
                match success {
                    Success::Allocated {
                        relays,
                        failed_family,
                        reservation,
                        lifetime,
                    } => {
                        for relay in relays {
                            add(
                                &mut reply,
                                &XorRelayedAddress::new(self.advertised(relay), txid),
                            );
                        }
                        if let Some((family, code)) = failed_family {
                            add(&mut reply, &AddressErrorCode::new(family, error_code(code)));
                        }
                        if let Some(token) = reservation {
                            add(&mut reply, &ReservationToken::new(token));
                        }
                        add(&mut reply, &Lifetime::new(lifetime));
                        add(&mut reply, &XorMappedAddress::new(from.remote, txid));
                    }
                    Success::Lifetime(lifetime) => add(&mut reply, &Lifetime::new(lifetime)),
                    Success::Empty => {}
                }
                reply
            }
            Err(failure) => {
                self.metrics.error(failure.code);
                if failure.code == ErrorCode::UNKNOWN_ATTRIBUTE {
                    Message::unknown_attributes(
                        msg,
                        &failure.unknown,
                        MessageWriteVec::with_capacity(128),
                    )
                } else {
                    let mut reply = Message::builder_error(msg, MessageWriteVec::with_capacity(96));
                    add(&mut reply, &error_code(failure.code));
                    reply
                }
            }
        };
        seal(reply, &caller.credentials)
    }

    /// RFC 6062 §5.2 Connect: checks, then hands the connecting to the I/O.
    fn connect(
        &mut self,
        from: FiveTuple,
        msg: &Message<'_>,
        caller: &Caller,
        now: Instant,
    ) -> Result<(u32, SocketAddr, SocketAddr), Failure> {
        check_known(msg, &[XorPeerAddress::TYPE])?;
        let is_tcp = self
            .allocations
            .get(&from)
            .ok_or(Failure::from(ErrorCode::ALLOCATION_MISMATCH))?
            .tcp;
        if !is_tcp {
            return Err(ErrorCode::BAD_REQUEST.into());
        }
        let peers = self.peers(from, msg)?;
        let [peer] = peers[..] else {
            return Err(ErrorCode::BAD_REQUEST.into());
        };
        if self.connections.has_peer(from, peer) {
            return Err(ErrorCode::CONNECTION_ALREADY_EXISTS.into());
        }
        if !self.connections.has_room(from) {
            return Err(ErrorCode::INSUFFICIENT_CAPACITY.into());
        }
        let relay = self.allocations[&from]
            .relay_for(peer.ip())
            .expect("family checked by peers()");
        let state = ConnectionState::Connecting {
            transaction: msg.transaction_id(),
            credentials: caller.credentials.clone(),
        };
        Ok((self.connections.add(from, peer, state, now), relay, peer))
    }

    /// The I/O's outcome of a [`ClientAction::Connect`]: the Connect answer
    /// for the control connection (success with CONNECTION-ID, or 447).
    pub fn peer_connected(
        &mut self,
        id: u32,
        connected: bool,
        now: Instant,
    ) -> Option<(FiveTuple, Vec<u8>)> {
        let connection = self.connections.get(id)?;
        let ConnectionState::Connecting {
            transaction,
            credentials,
        } = connection.state.clone()
        else {
            return None;
        };
        let client = connection.client;
        let (class, attribute): (_, Box<dyn AttributeWrite>) = if connected {
            self.connections.set_state(id, ConnectionState::Ready, now);
            (MessageClass::Success, Box::new(ConnectionId::new(id)))
        } else {
            self.connections.remove(id);
            self.metrics.error(ErrorCode::CONNECTION_TIMEOUT_OR_FAILURE);
            let code = error_code(ErrorCode::CONNECTION_TIMEOUT_OR_FAILURE);
            (MessageClass::Error, Box::new(code))
        };
        let mut reply = Message::builder(
            MessageType::from_class_method(class, CONNECT),
            transaction,
            MessageWriteVec::with_capacity(96),
        );
        add(&mut reply, attribute.as_ref());
        Some((client, seal(reply, &credentials)))
    }

    /// A peer connected to a TCP relay listener (RFC 6062 §5.3): with a
    /// permission, the client gets a ConnectionAttempt indication (as coturn
    /// sends and its clients expect) on its control connection; the I/O keeps
    /// the peer's stream under the returned id.
    pub fn peer_incoming(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        now: Instant,
    ) -> Option<(FiveTuple, u32, Vec<u8>)> {
        let client = *self.by_relay.get(&relay)?;
        let allocation = self.allocations.get(&client)?;
        if !allocation.tcp || !allocation.permitted(peer.ip(), now) {
            self.metrics.dropped("no_permission");
            return None;
        }
        if !self.connections.has_room(client) {
            self.metrics.dropped("too_many_connections");
            return None;
        }
        let id = self
            .connections
            .add(client, peer, ConnectionState::Ready, now);
        let txid = TransactionId::generate();
        let mut msg = Message::builder(
            MessageType::from_class_method(MessageClass::Indication, CONNECTION_ATTEMPT),
            txid,
            MessageWriteVec::with_capacity(64),
        );
        add(&mut msg, &ConnectionId::new(id));
        add(&mut msg, &XorPeerAddress::new(peer, txid));
        msg.add_fingerprint().expect("fingerprint fits");
        Some((client, id, msg.finish()))
    }

    /// RFC 6062 §5.4 ConnectionBind on a new data connection.
    fn connection_bind(
        &mut self,
        from: FiveTuple,
        msg: &Message<'_>,
        caller: &Caller,
        now: Instant,
    ) -> Result<u32, Failure> {
        check_known(msg, &[ConnectionId::TYPE])?;
        if from.transport == Transport::Udp || self.allocations.contains_key(&from) {
            return Err(ErrorCode::BAD_REQUEST.into());
        }
        let id = msg
            .attribute::<ConnectionId>()
            .map_err(|_| Failure::from(ErrorCode::BAD_REQUEST))?
            .id();
        let connection = self
            .connections
            .get(id)
            .filter(|c| matches!(c.state, ConnectionState::Ready))
            .ok_or(Failure::from(ErrorCode::BAD_REQUEST))?;
        let owner = self
            .allocations
            .get(&connection.client)
            .ok_or(Failure::from(ErrorCode::BAD_REQUEST))?;
        if owner.username != caller.username {
            return Err(ErrorCode::WRONG_CREDENTIALS.into());
        }
        self.connections.set_state(id, ConnectionState::Bound, now);
        Ok(id)
    }

    /// A data connection ended; forget its id.
    pub fn connection_closed(&mut self, id: u32) {
        self.connections.remove(id);
    }

    /// The address clients are told for a relay socket (`external-ip`).
    fn advertised(&self, relay: SocketAddr) -> SocketAddr {
        let mapped = self.settings.external_ips.iter().find(|e| match e.private {
            Some(private) => private == relay.ip(),
            None => e.public.is_ipv4() == relay.is_ipv4(),
        });
        mapped.map_or(relay, |e| SocketAddr::new(e.public, relay.port()))
    }

    fn allocate(
        &mut self,
        from: FiveTuple,
        msg: &Message<'_>,
        caller: &Caller,
        now: Instant,
        relays: &mut dyn RelaySockets,
    ) -> Result<Success, Failure> {
        if let Some(existing) = self.allocations.get(&from) {
            if existing.transaction != msg.transaction_id() {
                return Err(ErrorCode::ALLOCATION_MISMATCH.into());
            }
            return Ok(Success::Allocated {
                relays: existing.relays.clone(),
                failed_family: None,
                reservation: None,
                lifetime: remaining(existing.expires, now),
            });
        }
        check_known(
            msg,
            &[
                RequestedTransport::TYPE,
                Lifetime::TYPE,
                EvenPort::TYPE,
                RequestedAddressFamily::TYPE,
                AdditionalAddressFamily::TYPE,
                ReservationToken::TYPE,
            ],
        )?;
        let transport = msg
            .attribute::<RequestedTransport>()
            .map_err(|_| Failure::from(ErrorCode::BAD_REQUEST))?;
        let requested = msg.attribute::<RequestedAddressFamily>().ok();
        let additional = msg.attribute::<AdditionalAddressFamily>().ok();
        let even_port = msg.attribute::<EvenPort>().ok();
        let token = msg.attribute::<ReservationToken>().ok();
        let tcp = match transport.protocol() {
            RequestedTransport::UDP => false,
            // RFC 6062 §5.1: only over a TCP/TLS control connection, and
            // without the UDP-only attributes.
            RequestedTransport::TCP
                if from.transport != Transport::Udp
                    && even_port.is_none()
                    && additional.is_none()
                    && !msg.has_attribute(ReservationToken::TYPE) =>
            {
                true
            }
            RequestedTransport::TCP => return Err(ErrorCode::BAD_REQUEST.into()),
            _ => return Err(ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL.into()),
        };
        if msg.has_attribute(ReservationToken::TYPE)
            && (token.is_none()
                || requested.is_some()
                || additional.is_some()
                || even_port.is_some())
        {
            return Err(ErrorCode::BAD_REQUEST.into());
        }
        let families = match (requested, additional) {
            (Some(_), Some(_)) => return Err(ErrorCode::BAD_REQUEST.into()),
            (Some(r), None) => vec![r.family()],
            (None, Some(a)) if a.family() == AddressFamily::IPV6 && even_port.is_none() => {
                vec![AddressFamily::IPV4, AddressFamily::IPV6]
            }
            (None, Some(_)) => return Err(ErrorCode::BAD_REQUEST.into()),
            (None, None) => vec![AddressFamily::IPV4],
        };
        if self.draining {
            return Err(ErrorCode::INSUFFICIENT_CAPACITY.into());
        }
        if !self.quota.acquire(&caller.username) {
            return Err(ErrorCode::ALLOCATION_QUOTA_REACHED.into());
        }
        let port = match even_port {
            None => PortRequest::Any,
            Some(e) if e.requested() => PortRequest::EvenReserveNext,
            Some(_) => PortRequest::Even,
        };
        let opened = match token {
            Some(token) => self.claim_reservation(token.token(), relays),
            None if tcp => open_tcp_relay(families[0], relays),
            None => open_relays(&families, port, relays),
        };
        let (opened, failed_family, reserved) = match opened {
            Ok(opened) => opened,
            Err(code) => {
                self.quota.release(&caller.username);
                return Err(code.into());
            }
        };
        let reservation = reserved.map(|addr| {
            let token = rand::random();
            self.reservations
                .insert(token, (addr, now + RESERVATION_LIFETIME));
            token
        });
        let lifetime = self.lifetime(msg.attribute::<Lifetime>().ok(), true);
        let bucket = (self.settings.max_bps > 0).then(|| Bucket::new(self.settings.max_bps, now));
        for relay in &opened {
            self.by_relay.insert(*relay, from);
        }
        self.allocations.insert(
            from,
            Allocation {
                username: caller.username.clone(),
                tcp,
                transaction: msg.transaction_id(),
                relays: opened.clone(),
                expires: now + lifetime,
                permissions: HashMap::new(),
                channels: HashMap::new(),
                channel_of_peer: HashMap::new(),
                up: bucket.clone(),
                down: bucket,
            },
        );
        tracing::info!(
            client = ?from,
            user = caller.username,
            relays = ?opened,
            lifetime_s = lifetime.as_secs(),
            "allocation created"
        );
        self.metrics.allocation_created();
        self.metrics.set_allocations(self.allocations.len());
        Ok(Success::Allocated {
            relays: opened,
            failed_family,
            reservation,
            lifetime: lifetime.as_secs() as u32,
        })
    }

    /// The port a RESERVATION-TOKEN held; an unknown or expired token is 508.
    fn claim_reservation(&mut self, token: u64, relays: &mut dyn RelaySockets) -> Opened {
        let (addr, _) = self
            .reservations
            .remove(&token)
            .ok_or(ErrorCode::INSUFFICIENT_CAPACITY)?;
        relays.claim(addr);
        Ok((vec![addr], None, None))
    }

    /// RFC 8656 §7.2 / §7.3: the requested lifetime capped at the maximum;
    /// an Allocate never gets less than the default.
    fn lifetime(&self, requested: Option<Lifetime>, at_least_default: bool) -> Duration {
        let s = &self.settings;
        let wanted = requested.map_or(s.default_lifetime, |l| {
            Duration::from_secs(l.seconds().into()).min(s.max_lifetime)
        });
        if at_least_default {
            wanted.max(s.default_lifetime)
        } else {
            wanted
        }
    }

    fn refresh(
        &mut self,
        from: FiveTuple,
        msg: &Message<'_>,
        now: Instant,
        relays: &mut dyn RelaySockets,
    ) -> Result<Success, Failure> {
        check_known(msg, &[Lifetime::TYPE, RequestedAddressFamily::TYPE])?;
        if !self.allocations.contains_key(&from) {
            return Err(ErrorCode::ALLOCATION_MISMATCH.into());
        }
        let lifetime = self.lifetime(msg.attribute::<Lifetime>().ok(), false);
        if lifetime.is_zero() {
            self.remove(from, relays, "deleted");
            return Ok(Success::Lifetime(0));
        }
        if let Some(allocation) = self.allocations.get_mut(&from) {
            allocation.expires = now + lifetime;
            self.fast_epoch += 1;
        }
        Ok(Success::Lifetime(lifetime.as_secs() as u32))
    }

    /// The peer addresses of a request, each checked against the allocation's
    /// families (443) and the peer policy (403).
    fn peers(&self, from: FiveTuple, msg: &Message<'_>) -> Result<Vec<SocketAddr>, Failure> {
        let allocation = self
            .allocations
            .get(&from)
            .ok_or(Failure::from(ErrorCode::ALLOCATION_MISMATCH))?;
        let txid = msg.transaction_id();
        let peers: Vec<SocketAddr> = msg
            .iter_attributes()
            .filter(|(_, raw)| raw.get_type() == XorPeerAddress::TYPE)
            .map(|(_, raw)| XorPeerAddress::try_from(&raw).map(|a| a.addr(txid)))
            .collect::<Result<_, _>>()
            .map_err(|_| Failure::from(ErrorCode::BAD_REQUEST))?;
        if peers.is_empty() {
            return Err(ErrorCode::BAD_REQUEST.into());
        }
        for peer in &peers {
            if allocation.relay_for(peer.ip()).is_none() {
                return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH.into());
            }
            if !self.settings.policy.permits(peer.ip()) {
                self.metrics.peer_denied();
                return Err(ErrorCode::FORBIDDEN.into());
            }
        }
        Ok(peers)
    }

    fn create_permission(
        &mut self,
        from: FiveTuple,
        msg: &Message<'_>,
        now: Instant,
    ) -> Result<Success, Failure> {
        check_known(msg, &[XorPeerAddress::TYPE])?;
        let peers = self.peers(from, msg)?;
        let expires = now + self.settings.permission_lifetime;
        let allocation = self.allocations.get_mut(&from).expect("checked by peers()");
        for peer in peers {
            if allocation.permissions.len() >= MAX_PERMISSIONS
                && !allocation.permissions.contains_key(&peer.ip())
            {
                return Err(ErrorCode::INSUFFICIENT_CAPACITY.into());
            }
            allocation.permissions.insert(peer.ip(), expires);
        }
        self.fast_epoch += 1;
        Ok(Success::Empty)
    }

    fn channel_bind(
        &mut self,
        from: FiveTuple,
        msg: &Message<'_>,
        now: Instant,
    ) -> Result<Success, Failure> {
        check_known(msg, &[XorPeerAddress::TYPE, ChannelNumber::TYPE])?;
        let number = msg
            .attribute::<ChannelNumber>()
            .map_err(|_| Failure::from(ErrorCode::BAD_REQUEST))?
            .channel();
        // RFC 8656 §12 narrowed the range to 0x4000–0x4FFF (RFC 7983's 64–79),
        // but RFC 5766 clients, turnutils_uclient among them, still pick up to
        // 0x7FFE, and coturn accepts them; so does this server.
        if !(0x4000..=0x7ffe).contains(&number) {
            return Err(ErrorCode::BAD_REQUEST.into());
        }
        let peers = self.peers(from, msg)?;
        let [peer] = peers[..] else {
            return Err(ErrorCode::BAD_REQUEST.into());
        };
        let allocation = self.allocations.get_mut(&from).expect("checked by peers()");
        let bound_peer = allocation.channels.get(&number).map(|c| c.peer);
        let bound_number = allocation.channel_of_peer.get(&peer).copied();
        if bound_peer.is_some_and(|p| p != peer) || bound_number.is_some_and(|n| n != number) {
            return Err(ErrorCode::BAD_REQUEST.into());
        }
        if !allocation.permissions.contains_key(&peer.ip())
            && allocation.permissions.len() >= MAX_PERMISSIONS
        {
            return Err(ErrorCode::INSUFFICIENT_CAPACITY.into());
        }
        allocation.channels.insert(
            number,
            Channel {
                peer,
                expires: now + self.settings.channel_lifetime,
            },
        );
        allocation.channel_of_peer.insert(peer, number);
        allocation
            .permissions
            .insert(peer.ip(), now + self.settings.permission_lifetime);
        self.fast_epoch += 1;
        Ok(Success::Empty)
    }
}

/// Relay addresses opened, the family that failed (dual allocation), and the
/// port held for a reservation; or the error code.
type Opened = Result<
    (
        Vec<SocketAddr>,
        Option<(AddressFamily, u16)>,
        Option<SocketAddr>,
    ),
    u16,
>;

/// Opens one relay socket per family. A dual allocation may succeed for one
/// family (RFC 8656 §7.2), a single one may not.
fn open_relays(
    families: &[AddressFamily],
    port: PortRequest,
    relays: &mut dyn RelaySockets,
) -> Opened {
    let mut opened = Vec::new();
    let mut failed = None;
    let mut reserved = None;
    for &family in families {
        match relays.open(family, port) {
            Ok((addr, next)) => {
                opened.push(addr);
                reserved = reserved.or(next);
            }
            Err(OpenError::NoAddress) => {
                failed = Some((family, ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED))
            }
            Err(OpenError::Exhausted) => failed = Some((family, ErrorCode::INSUFFICIENT_CAPACITY)),
        }
    }
    match (opened.is_empty(), failed) {
        (true, Some((_, code))) => Err(code),
        (true, None) => Err(ErrorCode::SERVER_ERROR),
        (false, _) => Ok((opened, failed, reserved)),
    }
}

/// Opens the listener of a TCP allocation.
fn open_tcp_relay(family: AddressFamily, relays: &mut dyn RelaySockets) -> Opened {
    match relays.open_tcp(family) {
        Ok(addr) => Ok((vec![addr], None, None)),
        Err(OpenError::NoAddress) => Err(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED),
        Err(OpenError::Exhausted) => Err(ErrorCode::INSUFFICIENT_CAPACITY),
    }
}

/// SOFTWARE, MESSAGE-INTEGRITY and FINGERPRINT: the end of every signed message.
fn seal(mut msg: MessageWriteVec, credentials: &MessageIntegrityCredentials) -> Vec<u8> {
    add(&mut msg, &Software::new(SOFTWARE).expect("short"));
    msg.add_message_integrity(credentials, IntegrityAlgorithm::Sha1)
        .expect("integrity added once");
    msg.add_fingerprint().expect("fingerprint fits");
    msg.finish()
}

/// Seconds until `expires`, for a retransmitted Allocate's answer.
fn remaining(expires: Instant, now: Instant) -> u32 {
    expires.saturating_duration_since(now).as_secs() as u32
}

fn error_code(code: u16) -> ErrorCode {
    ErrorCode::builder(code).build().expect("known code")
}

fn add(msg: &mut MessageWriteVec, attribute: &dyn AttributeWrite) {
    msg.add_attribute(attribute)
        .expect("each attribute is added once, before integrity");
}

fn unsigned_error(msg: &Message<'_>, code: u16) -> Vec<u8> {
    let mut reply = Message::builder_error(msg, MessageWriteVec::with_capacity(64));
    add(&mut reply, &error_code(code));
    reply.add_fingerprint().expect("fingerprint fits");
    reply.finish()
}

/// 420 for comprehension-required attributes the method does not know.
/// DONT-FRAGMENT lands here: the relay does not set DF (RFC 8656 §7.2).
fn check_known(msg: &Message<'_>, known: &[AttributeType]) -> Result<(), Failure> {
    let unknown: Vec<AttributeType> = msg
        .iter_attributes()
        .map(|(_, raw)| raw.get_type())
        .filter(|t| {
            t.comprehension_required() && !known.contains(t) && !AUTH_ATTRIBUTES.contains(t)
        })
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            code: ErrorCode::UNKNOWN_ATTRIBUTE,
            unknown,
        })
    }
}

/// A 400 for a request whose header parses but whose body does not
/// (RFC 8489 §6.3.1); anything less is dropped silently.
fn bad_request_to_garbage(data: &[u8]) -> Option<Vec<u8>> {
    let header = MessageHeader::from_bytes(data.get(..MessageHeader::LENGTH)?).ok()?;
    if header.get_type().class() != MessageClass::Request {
        return None;
    }
    let mtype = MessageType::from_class_method(MessageClass::Error, header.get_type().method());
    let mut reply = Message::builder(mtype, header.transaction_id(), MessageWriteVec::new());
    add(&mut reply, &error_code(ErrorCode::BAD_REQUEST));
    Some(reply.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::rest_password;
    use crate::fuzz::FakeSockets;
    use turn_types::attribute::DontFragment;
    use turn_types::stun::message::{IntegrityAlgorithm, Method};

    const REALM: &str = "example.org";

    fn settings() -> Settings {
        let mut s = Settings {
            realm: REALM.into(),
            ..Settings::default()
        };
        s.credentials.users.insert("alice".into(), "pw".into());
        s.credentials.users.insert("bob".into(), "pw2".into());
        s.credentials.secrets = vec!["old".into(), "new".into()];
        s.external_ips = vec![ExternalIp {
            public: "203.0.113.1".parse().unwrap(),
            private: Some("10.0.0.1".parse().unwrap()),
        }];
        s
    }

    struct Harness {
        server: Server,
        sockets: FakeSockets,
        now: Now,
    }

    fn client(port: u16) -> FiveTuple {
        FiveTuple {
            transport: Transport::Udp,
            local: "192.0.2.1:3478".parse().unwrap(),
            remote: SocketAddr::new("198.51.100.7".parse().unwrap(), port),
        }
    }

    const PEER: &str = "198.51.100.99:4000";

    fn peer() -> SocketAddr {
        PEER.parse().unwrap()
    }

    /// A request; signed with (user, password) when given, using the nonce
    /// the server handed out for `from`.
    struct Req<'a> {
        method: Method,
        attrs: Vec<Box<dyn AttributeWrite + 'a>>,
        user: Option<(&'a str, String)>,
        nonce: Option<String>,
        txid: Option<TransactionId>,
    }

    fn req<'a>(method: Method) -> Req<'a> {
        Req {
            method,
            attrs: Vec::new(),
            user: None,
            nonce: None,
            txid: None,
        }
    }

    impl<'a> Req<'a> {
        fn attr(mut self, a: impl AttributeWrite + 'a) -> Self {
            self.attrs.push(Box::new(a));
            self
        }
        fn user(mut self, name: &'a str, password: &str) -> Self {
            self.user = Some((name, password.to_string()));
            self
        }
        fn build(&self) -> Vec<u8> {
            let mut msg = match self.txid {
                Some(txid) => Message::builder(
                    MessageType::from_class_method(MessageClass::Request, self.method),
                    txid,
                    MessageWriteVec::new(),
                ),
                None => Message::builder_request(self.method, MessageWriteVec::new()),
            };
            for a in &self.attrs {
                msg.add_attribute(a.as_ref()).unwrap();
            }
            if let Some((name, password)) = &self.user {
                msg.add_attribute(&Username::new(name).unwrap()).unwrap();
                msg.add_attribute(&Realm::new(REALM).unwrap()).unwrap();
                let nonce = self.nonce.clone().unwrap_or_else(|| "none".into());
                msg.add_attribute(&Nonce::new(&nonce).unwrap()).unwrap();
                let creds: MessageIntegrityCredentials =
                    LongTermKeyCredentials::new(name.to_string(), password.clone(), REALM.into())
                        .into();
                msg.add_message_integrity(&creds, IntegrityAlgorithm::Sha1)
                    .unwrap();
            }
            msg.add_fingerprint().unwrap();
            msg.finish()
        }
    }

    /// The reply's error code, 0 for success.
    fn code(reply: &[u8]) -> u16 {
        let msg = Message::from_bytes(reply).unwrap();
        match msg.class() {
            MessageClass::Success => 0,
            MessageClass::Error => msg.attribute::<ErrorCode>().unwrap().code(),
            other => panic!("not a response: {other:?}"),
        }
    }

    impl Harness {
        fn new(settings: Settings) -> Self {
            Self {
                server: Server::new(settings, Arc::new(Metrics::default())),
                sockets: FakeSockets::default(),
                now: Now {
                    mono: Instant::now(),
                    unix: 1_700_000_000,
                },
            }
        }

        fn send<'a>(&mut self, from: FiveTuple, data: &'a [u8]) -> ClientAction<'a> {
            self.server
                .handle_client(from, data, self.now, &mut self.sockets)
        }

        fn reply(&mut self, from: FiveTuple, data: &[u8]) -> Vec<u8> {
            match self.send(from, data) {
                ClientAction::Reply(r) => r,
                other => panic!("expected a reply, got {other:?}"),
            }
        }

        /// Sends `r`, first collecting a nonce with an unsigned attempt.
        fn call(&mut self, from: FiveTuple, mut r: Req<'_>) -> Vec<u8> {
            if r.user.is_some() && r.nonce.is_none() {
                r.nonce = Some(self.nonce(from));
            }
            let bytes = r.build();
            self.reply(from, &bytes)
        }

        fn nonce(&mut self, from: FiveTuple) -> String {
            let reply = self.reply(from, &req(ALLOCATE).build());
            let msg = Message::from_bytes(&reply).unwrap();
            assert_eq!(msg.attribute::<ErrorCode>().unwrap().code(), 401);
            assert_eq!(msg.attribute::<Realm>().unwrap().realm(), REALM);
            msg.attribute::<Nonce>().unwrap().nonce().to_string()
        }

        fn allocate(&mut self, from: FiveTuple, user: &str, password: &str) -> Vec<u8> {
            self.call(
                from,
                req(ALLOCATE)
                    .attr(RequestedTransport::new(RequestedTransport::UDP))
                    .user(user, password),
            )
        }

        fn permit(&mut self, from: FiveTuple, peer: SocketAddr) -> u16 {
            let txid = TransactionId::generate();
            let mut r = req(CREATE_PERMISSION)
                .attr(XorPeerAddress::new(peer, txid))
                .user("alice", "pw");
            r.txid = Some(txid);
            code(&self.call(from, r))
        }

        fn bind(&mut self, from: FiveTuple, channel: u16, peer: SocketAddr) -> u16 {
            let txid = TransactionId::generate();
            let mut r = req(CHANNEL_BIND)
                .attr(ChannelNumber::new(channel))
                .attr(XorPeerAddress::new(peer, txid))
                .user("alice", "pw");
            r.txid = Some(txid);
            code(&self.call(from, r))
        }
    }

    fn allocated() -> (Harness, FiveTuple) {
        let mut h = Harness::new(settings());
        let c = client(1000);
        assert_eq!(code(&h.allocate(c, "alice", "pw")), 0);
        (h, c)
    }

    #[test]
    fn binding_answers_without_auth() {
        let mut h = Harness::new(settings());
        let reply = h.reply(client(1), &req(BINDING).build());
        let msg = Message::from_bytes(&reply).unwrap();
        let mapped = msg.attribute::<XorMappedAddress>().unwrap();
        assert_eq!(mapped.addr(msg.transaction_id()), client(1).remote);
    }

    #[test]
    fn allocate_flow_and_response_contents() {
        let mut h = Harness::new(settings());
        let c = client(1000);
        let reply = h.allocate(c, "alice", "pw");
        let msg = Message::from_bytes(&reply).unwrap();
        assert_eq!(code(&reply), 0);
        let creds: MessageIntegrityCredentials =
            LongTermKeyCredentials::new("alice".into(), "pw".into(), REALM.into()).into();
        msg.validate_integrity(&creds).expect("response is signed");
        let relayed = msg.attribute::<XorRelayedAddress>().unwrap();
        let relayed = relayed.addr(msg.transaction_id());
        assert_eq!(
            relayed.ip(),
            "203.0.113.1".parse::<IpAddr>().unwrap(),
            "external-ip"
        );
        assert_eq!(relayed.port(), h.sockets.open[0].port());
        assert_eq!(msg.attribute::<Lifetime>().unwrap().seconds(), 600);
        assert_eq!(h.server.allocation_count(), 1);
    }

    #[test]
    fn auth_failures_have_their_codes() {
        let mut h = Harness::new(settings());
        let c = client(1000);
        assert_eq!(code(&h.allocate(c, "alice", "wrong")), 401);
        assert_eq!(code(&h.allocate(c, "mallory", "pw")), 401);
        let mut stale = req(ALLOCATE)
            .attr(RequestedTransport::new(RequestedTransport::UDP))
            .user("alice", "pw");
        stale.nonce = Some("5.deadbeef".into());
        assert_eq!(code(&h.call(c, stale)), 438);
        // A nonce given to another client IP address is stale here.
        let mut elsewhere = client(1000);
        elsewhere.remote.set_ip("198.51.100.8".parse().unwrap());
        let other_nonce = h.nonce(elsewhere);
        let mut moved = req(ALLOCATE)
            .attr(RequestedTransport::new(RequestedTransport::UDP))
            .user("alice", "pw");
        moved.nonce = Some(other_nonce);
        assert_eq!(code(&h.call(c, moved)), 438);
        // A nonce past its lifetime.
        let mut r = req(ALLOCATE)
            .attr(RequestedTransport::new(RequestedTransport::UDP))
            .user("alice", "pw");
        r.nonce = Some(h.nonce(c));
        h.now.unix += 601;
        assert_eq!(code(&h.call(c, r)), 438);
        // Signed but without USERNAME/REALM/NONCE.
        let mut msg = Message::builder_request(ALLOCATE, MessageWriteVec::new());
        let creds: MessageIntegrityCredentials =
            LongTermKeyCredentials::new("alice".into(), "pw".into(), REALM.into()).into();
        msg.add_message_integrity(&creds, IntegrityAlgorithm::Sha1)
            .unwrap();
        assert_eq!(code(&h.reply(c, &msg.finish())), 400);
        assert_eq!(h.server.allocation_count(), 0);
    }

    #[test]
    fn rest_api_credentials_rotation_and_expiry() {
        let mut h = Harness::new(settings());
        let user = format!("{}:carol", h.now.unix + 60);
        for secret in ["old", "new"] {
            let c = client(if secret == "old" { 1 } else { 2 });
            let reply = h.allocate(c, &user, &rest_password(secret, &user));
            assert_eq!(code(&reply), 0, "secret {secret}");
        }
        let c = client(3);
        assert_eq!(
            code(&h.allocate(c, &user, &rest_password("other", &user))),
            401
        );
        // Expiry is checked on every request, not only on Allocate.
        let refresh = |h: &mut Harness| {
            let r = req(REFRESH).user(&user, &rest_password("new", &user));
            let mut r = Req {
                user: Some((user.as_str(), rest_password("new", &user))),
                ..r
            };
            r.nonce = Some(h.nonce(client(2)));
            code(&h.call(client(2), r))
        };
        assert_eq!(refresh(&mut h), 0);
        h.now.unix += 61;
        assert_eq!(refresh(&mut h), 401);
    }

    #[test]
    fn another_user_on_the_same_five_tuple_is_441() {
        let (mut h, c) = allocated();
        let reply = h.call(c, req(REFRESH).user("bob", "pw2"));
        assert_eq!(code(&reply), 441);
    }

    #[test]
    fn second_allocate_is_437_but_a_retransmission_is_answered_again() {
        let mut h = Harness::new(settings());
        let c = client(1000);
        let nonce = h.nonce(c);
        let mut first = req(ALLOCATE)
            .attr(RequestedTransport::new(RequestedTransport::UDP))
            .user("alice", "pw");
        first.nonce = Some(nonce.clone());
        let bytes = first.build();
        let a = h.reply(c, &bytes);
        let b = h.reply(c, &bytes);
        assert_eq!((code(&a), code(&b)), (0, 0));
        assert_eq!(h.sockets.open.len(), 1, "no second relay socket");
        assert_eq!(code(&h.allocate(c, "alice", "pw")), 437);
    }

    #[test]
    fn allocate_attribute_errors() {
        let mut h = Harness::new(settings());
        let c = client(1000);
        let sctp = req(ALLOCATE)
            .attr(RequestedTransport::new(132))
            .user("alice", "pw");
        assert_eq!(code(&h.call(c, sctp)), 442);
        assert_eq!(code(&h.call(c, req(ALLOCATE).user("alice", "pw"))), 400);
        let df = req(ALLOCATE)
            .attr(RequestedTransport::new(RequestedTransport::UDP))
            .attr(DontFragment::new())
            .user("alice", "pw");
        let reply = h.call(c, df);
        assert_eq!(code(&reply), 420);
        let both = req(ALLOCATE)
            .attr(RequestedTransport::new(RequestedTransport::UDP))
            .attr(RequestedAddressFamily::new(AddressFamily::IPV6))
            .attr(AdditionalAddressFamily::new(AddressFamily::IPV6))
            .user("alice", "pw");
        assert_eq!(code(&h.call(c, both)), 400);
        h.sockets.no_v6 = true;
        let v6 = req(ALLOCATE)
            .attr(RequestedTransport::new(RequestedTransport::UDP))
            .attr(RequestedAddressFamily::new(AddressFamily::IPV6))
            .user("alice", "pw");
        assert_eq!(code(&h.call(c, v6)), 440);
        let bogus_token = req(ALLOCATE)
            .attr(RequestedTransport::new(RequestedTransport::UDP))
            .attr(ReservationToken::new(42))
            .user("alice", "pw");
        assert_eq!(code(&h.call(c, bogus_token)), 508);
        assert_eq!(h.server.allocation_count(), 0);
        assert_eq!(
            h.server.quota.total(),
            0,
            "failed allocations give quota back"
        );
    }

    #[test]
    fn dual_allocation_reports_the_family_that_failed() {
        let mut h = Harness::new(settings());
        h.sockets.no_v6 = true;
        let dual = req(ALLOCATE)
            .attr(RequestedTransport::new(RequestedTransport::UDP))
            .attr(AdditionalAddressFamily::new(AddressFamily::IPV6))
            .user("alice", "pw");
        let reply = h.call(client(1), dual);
        let msg = Message::from_bytes(&reply).unwrap();
        assert_eq!(code(&reply), 0);
        let err = msg.attribute::<AddressErrorCode>().unwrap();
        assert_eq!(err.family(), AddressFamily::IPV6);
        assert_eq!(err.error().code(), 440);
    }

    #[test]
    fn even_port_reservation_is_claimed_by_token() {
        let mut h = Harness::new(settings());
        let first = req(ALLOCATE)
            .attr(RequestedTransport::new(RequestedTransport::UDP))
            .attr(EvenPort::new(true))
            .user("alice", "pw");
        let reply = h.call(client(1), first);
        let msg = Message::from_bytes(&reply).unwrap();
        let token = msg.attribute::<ReservationToken>().unwrap().token();
        let reserved = h.sockets.reserved[0];
        let second = req(ALLOCATE)
            .attr(RequestedTransport::new(RequestedTransport::UDP))
            .attr(ReservationToken::new(token))
            .user("alice", "pw");
        let reply = h.call(client(2), second);
        let msg = Message::from_bytes(&reply).unwrap();
        let relayed = msg.attribute::<XorRelayedAddress>().unwrap();
        assert_eq!(relayed.addr(msg.transaction_id()).port(), reserved.port());
        assert!(h.sockets.reserved.is_empty());
        // An unclaimed reservation is closed after 30 s.
        let third = req(ALLOCATE)
            .attr(RequestedTransport::new(RequestedTransport::UDP))
            .attr(EvenPort::new(true))
            .user("alice", "pw");
        assert_eq!(code(&h.call(client(3), third)), 0);
        assert_eq!(h.sockets.reserved.len(), 1);
        h.server
            .expire(h.now.mono + Duration::from_secs(31), &mut h.sockets);
        assert!(h.sockets.reserved.is_empty());
    }

    #[test]
    fn peer_policy_answers_403_for_every_denied_form() {
        for (addr, range) in crate::policy::tests::DENIED_BY_DEFAULT {
            let peer = SocketAddr::new(addr.parse().unwrap(), 9);
            let (mut h, c) = allocated();
            if peer.is_ipv6() {
                let v6 = req(ALLOCATE)
                    .attr(RequestedTransport::new(RequestedTransport::UDP))
                    .attr(RequestedAddressFamily::new(AddressFamily::IPV6))
                    .user("alice", "pw");
                assert_eq!(code(&h.call(client(2), v6)), 0);
                assert_eq!(h.permit(client(2), peer), 403, "{addr}");
                assert_eq!(h.bind(client(2), 0x4000, peer), 403, "{addr}");
            } else {
                assert_eq!(h.permit(c, peer), 403, "{addr}");
                assert_eq!(h.bind(c, 0x4000, peer), 403, "{addr}");
            }
            let mut open = settings();
            open.policy.allowed.push(range.parse().unwrap());
            let mut h = Harness::new(open);
            let c = if peer.is_ipv6() {
                let v6 = req(ALLOCATE)
                    .attr(RequestedTransport::new(RequestedTransport::UDP))
                    .attr(RequestedAddressFamily::new(AddressFamily::IPV6))
                    .user("alice", "pw");
                assert_eq!(code(&h.call(client(2), v6)), 0);
                client(2)
            } else {
                assert_eq!(code(&h.allocate(client(1), "alice", "pw")), 0);
                client(1)
            };
            assert_eq!(h.permit(c, peer), 0, "{addr} with {range}");
        }
    }

    #[test]
    fn permission_errors() {
        let (mut h, c) = allocated();
        assert_eq!(h.permit(client(9), peer()), 437, "no allocation");
        let v6_peer: SocketAddr = "[2001:db8::1]:9".parse().unwrap();
        assert_eq!(h.permit(c, v6_peer), 443);
        let none = req(CREATE_PERMISSION).user("alice", "pw");
        assert_eq!(code(&h.call(c, none)), 400);
    }

    #[test]
    fn channel_data_relays_both_ways_without_copying() {
        let (mut h, c) = allocated();
        assert_eq!(h.bind(c, 0x3fff, peer()), 400, "below the channel range");
        assert_eq!(h.bind(c, 0x4001, peer()), 0);
        assert_eq!(h.bind(c, 0x4002, peer()), 400, "peer already on 0x4001");
        let other: SocketAddr = "198.51.100.98:1".parse().unwrap();
        assert_eq!(h.bind(c, 0x4001, other), 400, "channel already bound");
        assert_eq!(h.bind(c, 0x4001, peer()), 0, "refresh");

        let frame = b"\x40\x01\x00\x05hello\x00\x00\x00";
        match h.send(c, frame) {
            ClientAction::ToPeer {
                relay,
                peer: to,
                payload,
            } => {
                assert_eq!(relay, h.sockets.open[0]);
                assert_eq!(to, peer());
                assert_eq!(payload, b"hello");
                assert!(
                    std::ptr::eq(payload.as_ptr(), frame[4..].as_ptr()),
                    "borrowed"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            h.send(c, b"\x40\x09\x00\x01x"),
            ClientAction::Nothing,
            "unknown channel"
        );
        assert_eq!(
            h.send(c, b"\x40\x01\x00\x09short"),
            ClientAction::Nothing,
            "truncated"
        );
        let relay = h.sockets.open[0];
        let now = h.now.mono;
        assert_eq!(
            h.server.handle_peer(relay, peer(), 5, now),
            Some(ToClient {
                client: c,
                channel: Some(0x4001)
            })
        );
        assert_eq!(
            h.server.handle_peer(relay, other, 5, now),
            None,
            "no permission"
        );
        // Channel bindings outlive permissions (600 s vs 300 s), but data
        // needs both.
        let later = now + Duration::from_secs(301);
        assert_eq!(h.server.handle_peer(relay, peer(), 5, later), None);
    }

    #[test]
    fn send_indication_needs_a_permission() {
        let (mut h, c) = allocated();
        let send = |peer: SocketAddr| {
            let txid = TransactionId::generate();
            let mut msg = Message::builder(
                MessageType::from_class_method(MessageClass::Indication, SEND),
                txid,
                MessageWriteVec::new(),
            );
            msg.add_attribute(&XorPeerAddress::new(peer, txid)).unwrap();
            msg.add_attribute(&DataAttr::new(b"media")).unwrap();
            msg.finish()
        };
        let bytes = send(peer());
        assert_eq!(h.send(c, &bytes), ClientAction::Nothing);
        assert_eq!(h.permit(c, peer()), 0);
        match h.send(c, &bytes) {
            ClientAction::ToPeer { payload, .. } => assert_eq!(payload, b"media"),
            other => panic!("{other:?}"),
        }
        // Data back without a channel is a Data indication.
        let relay = h.sockets.open[0];
        let to = h.server.handle_peer(relay, peer(), 5, h.now.mono).unwrap();
        assert_eq!(to.channel, None);
    }

    #[test]
    fn quotas_answer_486() {
        let mut s = settings();
        s.user_quota = 1;
        s.total_quota = 2;
        let mut h = Harness::new(s);
        assert_eq!(code(&h.allocate(client(1), "alice", "pw")), 0);
        assert_eq!(code(&h.allocate(client(2), "alice", "pw")), 486);
        assert_eq!(code(&h.allocate(client(3), "bob", "pw2")), 0);
        let user = format!("{}:carol", h.now.unix + 60);
        let password = rest_password("new", &user);
        assert_eq!(code(&h.allocate(client(4), &user, &password)), 486);
        // A deleted allocation gives its quota back.
        let delete = req(REFRESH).attr(Lifetime::new(0)).user("alice", "pw");
        assert_eq!(code(&h.call(client(1), delete)), 0);
        assert_eq!(code(&h.allocate(client(4), &user, &password)), 0);
    }

    #[test]
    fn refresh_lifetimes_and_expiry() {
        let (mut h, c) = allocated();
        let long = req(REFRESH)
            .attr(Lifetime::new(100_000))
            .user("alice", "pw");
        let reply = h.call(c, long);
        let msg = Message::from_bytes(&reply).unwrap();
        assert_eq!(
            msg.attribute::<Lifetime>().unwrap().seconds(),
            3600,
            "capped"
        );
        let short = req(REFRESH).attr(Lifetime::new(30)).user("alice", "pw");
        assert_eq!(code(&h.call(c, short)), 0);
        let relay = h.sockets.open[0];
        h.server
            .expire(h.now.mono + Duration::from_secs(29), &mut h.sockets);
        assert_eq!(h.server.allocation_count(), 1);
        h.server
            .expire(h.now.mono + Duration::from_secs(31), &mut h.sockets);
        assert_eq!(h.server.allocation_count(), 0);
        assert!(!h.sockets.open.contains(&relay), "relay socket closed");
        assert_eq!(h.server.handle_peer(relay, peer(), 1, h.now.mono), None);
        assert_eq!(code(&h.call(c, req(REFRESH).user("alice", "pw"))), 437);
    }

    #[test]
    fn stream_client_closing_frees_its_allocation() {
        let mut h = Harness::new(settings());
        let mut c = client(1);
        c.transport = Transport::Tcp;
        assert_eq!(code(&h.allocate(c, "alice", "pw")), 0);
        h.server.client_closed(c, &mut h.sockets);
        assert_eq!(h.server.allocation_count(), 0);
        assert!(h.sockets.open.is_empty());
    }

    #[test]
    fn draining_refuses_new_allocations_only() {
        let (mut h, c) = allocated();
        h.server.drain();
        assert_eq!(code(&h.allocate(client(2), "alice", "pw")), 508);
        assert_eq!(h.permit(c, peer()), 0, "existing allocations keep working");
    }

    #[test]
    fn fast_channels_are_bound_udp_channels_until_their_first_expiry() {
        let mut s = settings();
        // The fake relay addresses are private ones: allow them as peers.
        s.policy.allowed = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = Harness::new(s);
        let c = client(1000);
        assert_eq!(code(&h.allocate(c, "alice", "pw")), 0);
        let epoch = h.server.fast_epoch();
        assert!(h.server.fast_channels(h.now.mono).is_empty());
        assert_eq!(h.bind(c, 0x4000, peer()), 0);
        assert_ne!(h.server.fast_epoch(), epoch, "a new channel is news");
        let [f] = h.server.fast_channels(h.now.mono)[..] else {
            panic!("one channel");
        };
        let v4 = |a: SocketAddr| match a {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!(),
        };
        assert_eq!(f.client, v4(c.remote));
        assert_eq!(f.listener, v4(c.local));
        assert_eq!((f.channel, f.peer), (0x4000, v4(peer())));
        assert_eq!(f.relay, v4(h.sockets.open[0]));
        assert!(!f.peer_is_relay);
        // The permission (300 s) ends before the channel (600 s).
        assert_eq!(
            f.expires,
            h.now.mono + h.server.settings.permission_lifetime
        );
        assert!(h.server.fast_channels(f.expires).is_empty());

        // A second client's channel to the first one's relay address.
        let c2 = client(2000);
        assert_eq!(code(&h.allocate(c2, "alice", "pw")), 0);
        assert_eq!(h.bind(c2, 0x4001, h.sockets.open[0]), 0);
        let fast = h.server.fast_channels(h.now.mono);
        let to_relay = fast.iter().find(|f| f.channel == 0x4001).unwrap();
        assert!(to_relay.peer_is_relay);

        // Expiry and deletion show in the epoch.
        let epoch = h.server.fast_epoch();
        h.server
            .expire(h.now.mono + Duration::from_secs(1), &mut h.sockets);
        assert_eq!(h.server.fast_epoch(), epoch, "nothing ended");
        h.server.expire(f.expires, &mut h.sockets);
        assert_ne!(h.server.fast_epoch(), epoch);
    }

    #[test]
    fn max_bps_drops_the_excess() {
        let mut s = settings();
        s.max_bps = 1000;
        let mut h = Harness::new(s);
        let c = client(1);
        assert_eq!(code(&h.allocate(c, "alice", "pw")), 0);
        assert_eq!(h.bind(c, 0x4000, peer()), 0);
        let mut frame = vec![0x40, 0x00, 0x03, 0x20];
        frame.resize(4 + 800, 0);
        assert!(matches!(h.send(c, &frame), ClientAction::ToPeer { .. }));
        assert_eq!(h.send(c, &frame), ClientAction::Nothing);
        // The kernel does not meter: such channels never go fast.
        assert!(h.server.fast_channels(h.now.mono).is_empty());
    }

    #[test]
    fn garbage_is_dropped_and_malformed_requests_get_400() {
        let mut h = Harness::new(settings());
        let c = client(1);
        for junk in [
            &b""[..],
            b"\xff\xff",
            b"\x80\x00\x00\x00rtp",
            b"\x00\x01\x00",
        ] {
            assert_eq!(h.send(c, junk), ClientAction::Nothing);
        }
        // A valid header whose attribute overruns the message.
        let mut bad = req(BINDING).build();
        bad.truncate(20);
        bad[3] = 8;
        bad.extend_from_slice(&[0x00, 0x06, 0x00, 0x40, b'a', b'b', b'c', b'd']);
        let reply = h.reply(c, &bad);
        assert_eq!(code(&reply), 400);
    }

    #[test]
    fn unauthenticated_floods_leave_no_state() {
        let mut h = Harness::new(settings());
        for port in 1..=5000u16 {
            let from = client(port);
            h.reply(from, &req(ALLOCATE).build());
            h.allocate(from, "alice", "wrong");
        }
        assert_eq!(h.server.allocation_count(), 0);
        assert!(h.server.by_relay.is_empty() && h.server.reservations.is_empty());
        assert_eq!(h.server.quota.total(), 0);
        assert!(h.sockets.open.is_empty());
    }

    fn tcp_client(port: u16) -> FiveTuple {
        FiveTuple {
            transport: Transport::Tcp,
            ..client(port)
        }
    }

    fn tcp_allocation() -> Req<'static> {
        req(ALLOCATE)
            .attr(RequestedTransport::new(RequestedTransport::TCP))
            .user("alice", "pw")
    }

    /// Sends a request, returning the action (Connect and Bind are not replies).
    fn act(h: &mut Harness, from: FiveTuple, mut r: Req<'_>) -> ClientAction<'static> {
        r.nonce = Some(h.nonce(from));
        let bytes = r.build();
        match h.send(from, &bytes) {
            ClientAction::Reply(reply) => ClientAction::Reply(reply),
            ClientAction::Connect { id, relay, peer } => ClientAction::Connect { id, relay, peer },
            ClientAction::Bind { id, reply } => ClientAction::Bind { id, reply },
            other => panic!("unexpected {other:?}"),
        }
    }

    fn connect_req(peer: SocketAddr) -> Req<'static> {
        let txid = TransactionId::generate();
        let mut r = req(CONNECT)
            .attr(XorPeerAddress::new(peer, txid))
            .user("alice", "pw");
        r.txid = Some(txid);
        r
    }

    fn bind_req(id: u32, user: &'static str, password: &str) -> Req<'static> {
        req(CONNECTION_BIND)
            .attr(ConnectionId::new(id))
            .user(user, password)
    }

    #[test]
    fn tcp_allocations_only_over_streams_and_without_udp_attributes() {
        let mut h = Harness::new(settings());
        assert_eq!(code(&h.call(client(1), tcp_allocation())), 400, "over UDP");
        let even = req(ALLOCATE)
            .attr(RequestedTransport::new(RequestedTransport::TCP))
            .attr(EvenPort::new(false))
            .user("alice", "pw");
        assert_eq!(code(&h.call(tcp_client(1), even)), 400);
        assert_eq!(code(&h.call(tcp_client(1), tcp_allocation())), 0);
        assert_eq!(h.server.allocation_count(), 1);
    }

    #[test]
    fn connect_then_bind_a_data_connection() {
        let mut h = Harness::new(settings());
        let control = tcp_client(1);
        assert_eq!(code(&h.call(control, tcp_allocation())), 0);
        let ClientAction::Connect {
            id,
            relay,
            peer: to,
        } = act(&mut h, control, connect_req(peer()))
        else {
            panic!("Connect is handed to the I/O");
        };
        assert_eq!((relay, to), (h.sockets.open[0], peer()));
        let again = act(&mut h, control, connect_req(peer()));
        let ClientAction::Reply(reply) = again else {
            panic!()
        };
        assert_eq!(code(&reply), 446, "one connection per peer");
        let denied = act(&mut h, control, connect_req("10.0.0.5:80".parse().unwrap()));
        let ClientAction::Reply(reply) = denied else {
            panic!()
        };
        assert_eq!(code(&reply), 403);

        let (to_client, answer) = h.server.peer_connected(id, true, h.now.mono).unwrap();
        assert_eq!(to_client, control);
        let msg = Message::from_bytes(&answer).unwrap();
        assert_eq!(code(&answer), 0);
        assert_eq!(msg.attribute::<ConnectionId>().unwrap().id(), id);
        let creds: MessageIntegrityCredentials =
            LongTermKeyCredentials::new("alice".into(), "pw".into(), REALM.into()).into();
        msg.validate_integrity(&creds)
            .expect("the deferred answer is signed");

        let data = tcp_client(2);
        let ClientAction::Reply(reply) = act(&mut h, data, bind_req(id, "bob", "pw2")) else {
            panic!()
        };
        assert_eq!(code(&reply), 441, "only the allocation's user may bind");
        let ClientAction::Bind { id: bound, reply } =
            act(&mut h, data, bind_req(id, "alice", "pw"))
        else {
            panic!("ConnectionBind turns the stream into a pipe");
        };
        assert_eq!((bound, code(&reply)), (id, 0));
        let ClientAction::Reply(reply) = act(&mut h, tcp_client(3), bind_req(id, "alice", "pw"))
        else {
            panic!()
        };
        assert_eq!(code(&reply), 400, "bound once only");
        // The control connection ending takes the data connection with it.
        h.server.client_closed(control, &mut h.sockets);
        assert_eq!(h.sockets.closed_connections, vec![id]);
    }

    #[test]
    fn failed_connects_answer_447_and_unbound_connections_expire() {
        let mut h = Harness::new(settings());
        let control = tcp_client(1);
        assert_eq!(code(&h.call(control, tcp_allocation())), 0);
        let ClientAction::Connect { id, .. } = act(&mut h, control, connect_req(peer())) else {
            panic!()
        };
        let (_, answer) = h.server.peer_connected(id, false, h.now.mono).unwrap();
        assert_eq!(code(&answer), 447);
        assert_eq!(
            h.server.peer_connected(id, true, h.now.mono),
            None,
            "forgotten"
        );
        let ClientAction::Connect { id, .. } = act(&mut h, control, connect_req(peer())) else {
            panic!()
        };
        h.server.peer_connected(id, true, h.now.mono).unwrap();
        h.server
            .expire(h.now.mono + Duration::from_secs(31), &mut h.sockets);
        assert_eq!(h.sockets.closed_connections, vec![id]);
    }

    #[test]
    fn incoming_peers_need_a_permission() {
        let mut h = Harness::new(settings());
        let control = tcp_client(1);
        assert_eq!(code(&h.call(control, tcp_allocation())), 0);
        let relay = h.sockets.open[0];
        assert_eq!(h.server.peer_incoming(relay, peer(), h.now.mono), None);
        assert_eq!(h.permit(control, peer()), 0);
        let (to, id, attempt) = h.server.peer_incoming(relay, peer(), h.now.mono).unwrap();
        assert_eq!(to, control);
        let msg = Message::from_bytes(&attempt).unwrap();
        assert!(msg.has_class(MessageClass::Indication) && msg.has_method(CONNECTION_ATTEMPT));
        assert_eq!(msg.attribute::<ConnectionId>().unwrap().id(), id);
        let addr = msg.attribute::<XorPeerAddress>().unwrap();
        assert_eq!(addr.addr(msg.transaction_id()), peer());
        let bound = act(&mut h, tcp_client(2), bind_req(id, "alice", "pw"));
        assert!(matches!(bound, ClientAction::Bind { .. }));
        // UDP allocations have no listener to connect to.
        let (mut h, c) = allocated();
        let relay = h.sockets.open[0];
        assert_eq!(h.permit(c, peer()), 0);
        assert_eq!(h.server.peer_incoming(relay, peer(), h.now.mono), None);
        let ClientAction::Reply(reply) = act(&mut h, c, connect_req(peer())) else {
            panic!()
        };
        assert_eq!(code(&reply), 400, "Connect on a UDP allocation");
    }
}

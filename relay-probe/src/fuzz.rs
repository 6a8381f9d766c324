//! Drives the state machine with arbitrary bytes: the body of the cargo-fuzz
//! target (`fuzz/`) and of the bounded stable run in the unit tests.
//!
//! Random bytes rarely carry a valid MESSAGE-INTEGRITY, so the input can
//! also ask the harness to sign a request it describes: that way the
//! authenticated handlers see fuzzed attributes too, not only the 401 path.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use turn_types::message::{
    ALLOCATE, CHANNEL_BIND, CONNECT, CONNECTION_BIND, CREATE_PERMISSION, REFRESH, SEND,
};
use turn_types::stun::attribute::{
    AttributeType, Fingerprint, MessageIntegrity, MessageIntegritySha256, Nonce, RawAttribute,
    Realm, Username,
};
use turn_types::stun::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageIntegrityCredentials,
    MessageType, MessageWrite, MessageWriteExt, MessageWriteVec, Method, TransactionId, BINDING,
};
use turn_types::stun::prelude::AttributeStaticType;
use turn_types::AddressFamily;

use crate::metrics::Metrics;
use crate::turn::{
    ClientAction, FiveTuple, Now, OpenError, PortRequest, RelaySockets, Server, Settings, Transport,
};

const USER: &str = "fuzz";
const PASSWORD: &str = "pw";

/// Relay sockets that exist only as addresses.
#[derive(Debug, Default)]
pub struct FakeSockets {
    next_port: u16,
    pub open: Vec<SocketAddr>,
    pub reserved: Vec<SocketAddr>,
    pub closed_connections: Vec<u32>,
    pub no_v6: bool,
}

impl RelaySockets for FakeSockets {
    fn open(
        &mut self,
        family: AddressFamily,
        port: PortRequest,
    ) -> Result<(SocketAddr, Option<SocketAddr>), OpenError> {
        let ip: IpAddr = match family {
            AddressFamily::IPV4 => [10, 0, 0, 1].into(),
            AddressFamily::IPV6 if self.no_v6 => return Err(OpenError::NoAddress),
            AddressFamily::IPV6 => "fd00::1".parse().expect("literal"),
        };
        self.next_port = (self.next_port.max(50000) + 2) & !1;
        let addr = SocketAddr::new(ip, self.next_port);
        self.open.push(addr);
        let next = (port == PortRequest::EvenReserveNext).then(|| {
            let next = SocketAddr::new(ip, self.next_port + 1);
            self.reserved.push(next);
            next
        });
        Ok((addr, next))
    }

    fn claim(&mut self, reserved: SocketAddr) {
        self.reserved.retain(|r| *r != reserved);
        self.open.push(reserved);
    }

    fn open_tcp(&mut self, family: AddressFamily) -> Result<SocketAddr, OpenError> {
        self.open(family, PortRequest::Any).map(|(addr, _)| addr)
    }

    fn close(&mut self, relay: SocketAddr) {
        self.open.retain(|r| *r != relay);
        self.reserved.retain(|r| *r != relay);
    }

    fn close_connection(&mut self, id: u32) {
        self.closed_connections.push(id);
    }
}

/// Reads the input front to back; running out of bytes ends the run.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::from(self.byte()?) * 4 + usize::from(self.byte()? % 4);
        let len = len.min(self.0.len());
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(taken)
    }
}

fn client(selector: u8) -> FiveTuple {
    let transport = match selector % 3 {
        0 => Transport::Udp,
        1 => Transport::Tcp,
        _ => Transport::Tls,
    };
    FiveTuple {
        transport,
        local: SocketAddr::from(([192, 0, 2, 1], 3478)),
        remote: SocketAddr::from(([198, 51, 100, 7], 1000 + u16::from(selector % 4))),
    }
}

const METHODS: [Method; 8] = [
    ALLOCATE,
    REFRESH,
    CREATE_PERMISSION,
    CHANNEL_BIND,
    BINDING,
    SEND,
    CONNECT,
    CONNECTION_BIND,
];

/// A signed request whose attributes come from the input.
fn signed(method: Method, raw_attrs: &[u8], nonce: &str) -> Vec<u8> {
    let mut msg = Message::builder(
        MessageType::from_class_method(MessageClass::Request, method),
        TransactionId::generate(),
        MessageWriteVec::new(),
    );
    // Each attribute: type (2 bytes), length (1 byte), value.
    let mut raw = Input(raw_attrs);
    while let (Some(hi), Some(lo), Some(len)) = (raw.byte(), raw.byte(), raw.byte()) {
        let atype = AttributeType::new(u16::from_be_bytes([hi, lo]));
        let len = usize::from(len).min(raw.0.len());
        let (value, rest) = raw.0.split_at(len);
        raw.0 = rest;
        // The writer reserves these for its own methods (and panics otherwise).
        if [
            MessageIntegrity::TYPE,
            MessageIntegritySha256::TYPE,
            Fingerprint::TYPE,
        ]
        .contains(&atype)
        {
            continue;
        }
        // Duplicates and misplaced attributes are refused by the writer; a
        // fuzzer may still try, the harness just skips them.
        let _ = msg.add_attribute(&RawAttribute::new(atype, value));
    }
    let _ = msg.add_attribute(&Username::new(USER).expect("short"));
    let _ = msg.add_attribute(&Realm::new("fuzz").expect("short"));
    let _ = msg.add_attribute(&Nonce::new(nonce).expect("short"));
    let creds: MessageIntegrityCredentials =
        LongTermKeyCredentials::new(USER.into(), PASSWORD.into(), "fuzz".into()).into();
    let _ = msg.add_message_integrity(&creds, IntegrityAlgorithm::Sha1);
    msg.finish()
}

/// One fuzz case. Never panics unless the server does. Returns the
/// allocations alive at the end, so tests can tell the signing works.
pub fn run(data: &[u8]) -> usize {
    let mut settings = Settings {
        realm: "fuzz".into(),
        max_bps: 100_000,
        user_quota: 3,
        ..Settings::default()
    };
    settings
        .credentials
        .users
        .insert(USER.into(), PASSWORD.into());
    settings.policy.allow_loopback = true;
    let mut server = Server::new(settings, Arc::new(Metrics::default()));
    let mut sockets = FakeSockets::default();
    let mut now = Now {
        mono: std::time::Instant::now(),
        unix: 1_700_000_000,
    };
    let mut input = Input(data);
    let mut nonce = String::new();
    while let Some(op) = input.byte() {
        let Some(selector) = input.byte() else { break };
        let from = client(selector);
        let action = match op % 5 {
            0 => {
                let Some(bytes) = input.bytes() else { break };
                consume(server.handle_client(from, bytes, now, &mut sockets))
            }
            1 => {
                let Some(method) = input.byte() else { break };
                let Some(attrs) = input.bytes() else { break };
                let method = METHODS[usize::from(method) % METHODS.len()];
                let request = signed(method, attrs, &nonce);
                match server.handle_client(from, &request, now, &mut sockets) {
                    // The I/O would connect; let the input decide how that went.
                    ClientAction::Connect { id, .. } => {
                        let answer = server.peer_connected(id, selector % 2 == 0, now.mono);
                        answer.and_then(|(_, reply)| consume(ClientAction::Reply(reply)))
                    }
                    action => consume(action),
                }
            }
            2 => {
                let Some(&relay) = sockets.open.get(usize::from(selector) % 4) else {
                    continue;
                };
                let peer = SocketAddr::from(([127, 0, 0, 1], u16::from(selector)));
                if selector % 2 == 0 {
                    server.handle_peer(relay, peer, usize::from(selector) * 8, now.mono);
                } else {
                    server.peer_incoming(relay, peer, now.mono);
                }
                None
            }
            3 => {
                let step = Duration::from_secs(u64::from(selector));
                now.mono += step;
                now.unix += step.as_secs();
                server.expire(now.mono, &mut sockets);
                None
            }
            _ => {
                let Some(bytes) = input.bytes() else { break };
                let _ = crate::framing::stream_frame(bytes);
                None
            }
        };
        // Keep the latest nonce so signed requests can pass authentication.
        if let Some(found) = action {
            nonce = found;
        }
    }
    server.allocation_count()
}

/// Checks a reply parses, and returns the nonce it carries, if any.
fn consume(action: ClientAction<'_>) -> Option<String> {
    let ClientAction::Reply(reply) = action else {
        return None;
    };
    let msg = Message::from_bytes(&reply).expect("the server's replies parse");
    msg.attribute::<Nonce>().ok().map(|n| n.nonce().to_string())
}

#[cfg(test)]
mod tests {
    /// unsigned Allocate (for a nonce), signed Allocate (REQUESTED-TRANSPORT
    /// UDP), CreatePermission to 127.0.0.1, ChannelData, peer data
    const SEEDS: &[&[u8]] = &[
        b"\x00\x00\x05\x00\x00\x03\x00\x00\x21\x12\xa4\x42abcdefghijkl",
        b"\x01\x00\x00\x01\x03\x00\x19\x04\x11\x00\x00\x00",
        b"\x01\x00\x02\x02\x03\x00\x12\x08\x00\x01\x2e\xb2\x5e\x12\xa4\x43",
        b"\x00\x00\x02\x00\x40\x00\x00\x04ping\x02\x00\x03\x10",
    ];

    #[test]
    fn seeds_get_past_authentication() {
        assert_eq!(super::run(&SEEDS[..2].concat()), 1);
        assert_eq!(super::run(&SEEDS.concat()), 1);
    }

    /// The stable-toolchain stand-in for `cargo fuzz run`: random inputs and
    /// mutated seeds for a bounded count, no coverage feedback.
    #[test]
    fn bounded_random_run_does_not_panic() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let iterations: usize = std::env::var("DEMARC_FUZZ_ITERATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000);
        for _ in 0..iterations {
            let mut data: Vec<u8> = SEEDS.concat();
            let len = (next() % 512) as usize;
            if next() % 2 == 0 {
                data.truncate(len.min(data.len()));
            }
            for _ in 0..(next() % 32) {
                let i = (next() as usize) % (data.len() + 1);
                data.insert(i, next() as u8);
            }
            for _ in 0..(next() % 16) {
                let i = (next() as usize) % data.len().max(1);
                if let Some(b) = data.get_mut(i) {
                    *b ^= next() as u8;
                }
            }
            super::run(&data);
        }
    }
}

//! A minimal blocking TURN client over UDP: long-term credentials, Allocate,
//! CreatePermission, ChannelBind. For the tests (requests real clients cannot
//! be made to send, exact error codes) and the benchmark's load generator,
//! which sets up allocations with it and then sends ChannelData itself.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use turn_types::attribute::{
    ChannelNumber, RequestedAddressFamily, RequestedTransport, XorPeerAddress, XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION};
use turn_types::stun::attribute::{ErrorCode, Nonce, Realm, Username};
use turn_types::stun::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageIntegrityCredentials,
    MessageType, MessageWrite, MessageWriteExt, MessageWriteVec, Method, TransactionId,
};
use turn_types::stun::prelude::AttributeWrite;
use turn_types::AddressFamily;

/// How long a request waits for its answer (no retransmission: loopback).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("the server's answer is not a STUN response")]
    NotAResponse,
    #[error("the server refused: error {0}")]
    Refused(u16),
    #[error("the server kept asking for credentials (401/438 after a fresh nonce)")]
    NoNonce,
}

pub type Result<T> = std::result::Result<T, ClientError>;

pub struct TurnClient {
    pub socket: UdpSocket,
    server: SocketAddr,
    user: String,
    password: String,
    realm: String,
    nonce: String,
}

impl TurnClient {
    /// A client on a fresh socket of the server's address family.
    pub fn new(server: SocketAddr, user: &str, password: &str) -> Result<Self> {
        let bind = if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let socket = UdpSocket::bind(bind)?;
        socket.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        Ok(Self {
            socket,
            server,
            user: user.into(),
            password: password.into(),
            realm: String::new(),
            nonce: String::new(),
        })
    }

    /// Sends raw bytes and returns the next datagram that arrives.
    pub fn roundtrip(&self, request: &[u8]) -> Result<Vec<u8>> {
        self.socket.send_to(request, self.server)?;
        let mut buf = vec![0u8; 2048];
        let (n, _) = self.socket.recv_from(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Sends a signed request, learning realm and nonce from a 401/438
    /// first. Returns the response's error code (0 for success) and bytes.
    pub fn request(
        &mut self,
        method: Method,
        attrs: &dyn Fn(TransactionId) -> Vec<Box<dyn AttributeWrite>>,
    ) -> Result<(u16, Vec<u8>)> {
        for _ in 0..2 {
            let txid = TransactionId::generate();
            let mut msg = Message::builder(
                MessageType::from_class_method(MessageClass::Request, method),
                txid,
                MessageWriteVec::new(),
            );
            // Attribute writes fail only past 64 KiB; these are a few bytes.
            let mut add = |a: &dyn AttributeWrite| msg.add_attribute(a).expect("small attribute");
            for a in attrs(txid) {
                add(a.as_ref());
            }
            if !self.nonce.is_empty() {
                add(&Username::new(&self.user).expect("short user"));
                add(&Realm::new(&self.realm).expect("server's realm"));
                add(&Nonce::new(&self.nonce).expect("server's nonce"));
                let creds: MessageIntegrityCredentials = LongTermKeyCredentials::new(
                    self.user.clone(),
                    self.password.clone(),
                    self.realm.clone(),
                )
                .into();
                msg.add_message_integrity(&creds, IntegrityAlgorithm::Sha1)
                    .expect("integrity fits");
            }
            let reply = self.roundtrip(&msg.finish())?;
            let code = response_code(&reply)?;
            if code == 401 || code == 438 {
                let parsed = Message::from_bytes(&reply).map_err(|_| ClientError::NotAResponse)?;
                if let (Ok(realm), Ok(nonce)) =
                    (parsed.attribute::<Realm>(), parsed.attribute::<Nonce>())
                {
                    let fresh = self.nonce.is_empty() || code == 438;
                    self.realm = realm.realm().into();
                    self.nonce = nonce.nonce().into();
                    if fresh {
                        continue;
                    }
                }
            }
            return Ok((code, reply));
        }
        Err(ClientError::NoNonce)
    }

    /// Allocates a UDP relay of `family`; returns the relayed address.
    pub fn allocate(&mut self, family: AddressFamily) -> Result<SocketAddr> {
        let (code, reply) = self.request(ALLOCATE, &|_| {
            let mut attrs: Vec<Box<dyn AttributeWrite>> =
                vec![Box::new(RequestedTransport::new(RequestedTransport::UDP))];
            if family == AddressFamily::IPV6 {
                attrs.push(Box::new(RequestedAddressFamily::new(family)));
            }
            attrs
        })?;
        if code != 0 {
            return Err(ClientError::Refused(code));
        }
        let msg = Message::from_bytes(&reply).map_err(|_| ClientError::NotAResponse)?;
        let relayed = msg
            .attribute::<XorRelayedAddress>()
            .map_err(|_| ClientError::NotAResponse)?;
        Ok(relayed.addr(msg.transaction_id()))
    }

    /// CreatePermission for `peer`; the answer's error code (0: success).
    pub fn permit(&mut self, peer: SocketAddr) -> Result<u16> {
        let (code, _) = self.request(CREATE_PERMISSION, &|txid| {
            vec![Box::new(XorPeerAddress::new(peer, txid))]
        })?;
        Ok(code)
    }

    /// ChannelBind of `channel` to `peer`; the answer's error code.
    pub fn bind(&mut self, channel: u16, peer: SocketAddr) -> Result<u16> {
        let (code, _) = self.request(CHANNEL_BIND, &|txid| {
            vec![
                Box::new(ChannelNumber::new(channel)),
                Box::new(XorPeerAddress::new(peer, txid)),
            ]
        })?;
        Ok(code)
    }
}

/// 0 for a success response, else the ERROR-CODE.
pub fn response_code(reply: &[u8]) -> Result<u16> {
    let msg = Message::from_bytes(reply).map_err(|_| ClientError::NotAResponse)?;
    match msg.class() {
        MessageClass::Success => Ok(0),
        MessageClass::Error => msg
            .attribute::<ErrorCode>()
            .map(|e| e.code())
            .map_err(|_| ClientError::NotAResponse),
        _ => Err(ClientError::NotAResponse),
    }
}

//! RFC 6062 peer data connections of TCP allocations: their ids, whose they
//! are, and how long one may wait to be bound.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use turn_types::stun::message::{MessageIntegrityCredentials, TransactionId};

use crate::turn::FiveTuple;

/// RFC 6062 §5.2/§5.3: a connection not bound within 30 s is closed.
pub const BIND_TIMEOUT: Duration = Duration::from_secs(30);
/// Peer connections one allocation may hold; more are refused (508 for
/// Connect, closed for incoming), so a permitted peer cannot pile them up.
pub const MAX_PER_ALLOCATION: usize = 256;

#[derive(Debug, Clone)]
pub enum State {
    /// The server is connecting to the peer for a Connect request; its
    /// answer waits for the outcome.
    Connecting {
        transaction: TransactionId,
        credentials: MessageIntegrityCredentials,
    },
    /// Established, waiting for the client's ConnectionBind.
    Ready,
    /// Carrying data over a client data connection.
    Bound,
}

#[derive(Debug, Clone)]
pub struct Connection {
    /// The control connection of the allocation it belongs to.
    pub client: FiveTuple,
    pub peer: SocketAddr,
    pub state: State,
    expires: Instant,
}

#[derive(Debug, Default)]
pub struct Connections {
    by_id: HashMap<u32, Connection>,
}

impl Connections {
    /// A new connection with a fresh, unguessable id (it authorises the bind).
    pub fn add(&mut self, client: FiveTuple, peer: SocketAddr, state: State, now: Instant) -> u32 {
        let id = loop {
            let id = rand::random();
            if id != 0 && !self.by_id.contains_key(&id) {
                break id;
            }
        };
        self.by_id.insert(
            id,
            Connection {
                client,
                peer,
                state,
                expires: now + BIND_TIMEOUT,
            },
        );
        id
    }

    /// Whether `client`'s allocation may take another connection.
    pub fn has_room(&self, client: FiveTuple) -> bool {
        self.by_id.values().filter(|c| c.client == client).count() < MAX_PER_ALLOCATION
    }

    /// Whether `client` has a connection to `peer`, in any state (446).
    pub fn has_peer(&self, client: FiveTuple, peer: SocketAddr) -> bool {
        self.by_id
            .values()
            .any(|c| c.client == client && c.peer == peer)
    }

    pub fn get(&self, id: u32) -> Option<&Connection> {
        self.by_id.get(&id)
    }

    /// Moves `id` to `state`; the bind deadline restarts.
    pub fn set_state(&mut self, id: u32, state: State, now: Instant) {
        if let Some(c) = self.by_id.get_mut(&id) {
            c.state = state;
            c.expires = now + BIND_TIMEOUT;
        }
    }

    pub fn remove(&mut self, id: u32) -> Option<Connection> {
        self.by_id.remove(&id)
    }

    /// Removes connections still unbound at their deadline; returns their ids.
    pub fn expire(&mut self, now: Instant) -> Vec<u32> {
        let expired: Vec<u32> = self
            .by_id
            .iter()
            .filter(|(_, c)| !matches!(c.state, State::Bound) && c.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            self.by_id.remove(id);
        }
        expired
    }

    /// Removes every connection of `client`'s allocation; returns their ids.
    pub fn remove_client(&mut self, client: FiveTuple) -> Vec<u32> {
        let ids: Vec<u32> = self
            .by_id
            .iter()
            .filter(|(_, c)| c.client == client)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.by_id.remove(id);
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turn::Transport;

    fn client(port: u16) -> FiveTuple {
        FiveTuple {
            transport: Transport::Tcp,
            local: "192.0.2.1:3478".parse().unwrap(),
            remote: SocketAddr::from(([198, 51, 100, 1], port)),
        }
    }

    #[test]
    fn unbound_connections_expire_bound_ones_do_not() {
        let now = Instant::now();
        let peer: SocketAddr = "203.0.113.9:80".parse().unwrap();
        let mut c = Connections::default();
        let a = c.add(client(1), peer, State::Ready, now);
        let b = c.add(
            client(1),
            "203.0.113.9:81".parse().unwrap(),
            State::Ready,
            now,
        );
        c.set_state(b, State::Bound, now);
        assert!(c.has_peer(client(1), peer));
        assert!(!c.has_peer(client(2), peer));
        assert_eq!(c.expire(now + BIND_TIMEOUT), vec![a]);
        assert!(c.get(b).is_some());
        assert_eq!(c.remove_client(client(1)), vec![b]);
        assert!(c.get(b).is_none());
    }

    #[test]
    fn an_allocation_holds_a_bounded_number() {
        let now = Instant::now();
        let mut c = Connections::default();
        for port in 0..MAX_PER_ALLOCATION as u16 {
            assert!(c.has_room(client(1)));
            c.add(
                client(1),
                SocketAddr::from(([203, 0, 113, 1], port)),
                State::Ready,
                now,
            );
        }
        assert!(!c.has_room(client(1)));
        assert!(c.has_room(client(2)));
    }
}

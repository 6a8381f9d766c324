//! Long-term credentials (RFC 8489 §9.2): static users, coturn's REST-API
//! shared secrets, and stateless nonces.
//!
//! Nonces carry their own expiry and a MAC over it and the client's IP
//! address, so an unauthenticated request leaves no state behind: a flood of
//! them costs CPU, never memory. The port is left out because clients reuse a
//! nonce on their other connections (RFC 6062 data connections do).

use std::collections::HashMap;
use std::net::IpAddr;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

/// Where passwords come from.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// `user=name:password` entries.
    pub users: HashMap<String, String>,
    /// `static-auth-secret` values; the first signs nothing, all are tried
    /// in order so a secret can be rotated without cutting anyone off.
    pub secrets: Vec<String>,
    /// coturn's `rest-api-separator` between expiry and user name.
    pub separator: char,
}

/// Why a username was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    Unknown,
    Expired,
}

impl Credentials {
    /// The candidate passwords for `username` at `unix_now` (seconds).
    ///
    /// A static user has one; a REST-API username has one per configured
    /// secret. The caller checks MESSAGE-INTEGRITY against each.
    pub fn passwords(&self, username: &str, unix_now: u64) -> Result<Vec<String>, Rejected> {
        if let Some(password) = self.users.get(username) {
            return Ok(vec![password.clone()]);
        }
        if self.secrets.is_empty() {
            return Err(Rejected::Unknown);
        }
        // coturn's scheme: `expiry[:user]`, expiry in UNIX seconds, checked on
        // every request (not only when the allocation is made).
        let expiry = username.split(self.separator).next().unwrap_or_default();
        let expiry: u64 = expiry.parse().map_err(|_| Rejected::Unknown)?;
        if expiry < unix_now {
            return Err(Rejected::Expired);
        }
        Ok(self
            .secrets
            .iter()
            .map(|secret| rest_password(secret, username))
            .collect())
    }
}

/// The TURN REST-API password: base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &str, username: &str) -> String {
    let mut mac = HmacSha1::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Issues and checks nonces without remembering them.
#[derive(Clone)]
pub struct Nonces {
    key: [u8; 32],
    lifetime_secs: u64,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces")
            .field("lifetime_secs", &self.lifetime_secs)
            .finish_non_exhaustive()
    }
}

/// A nonce's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Valid,
    /// Ours, but expired, or issued to another IP address: answer 438.
    Stale,
}

impl Nonces {
    pub fn new(key: [u8; 32], lifetime_secs: u64) -> Self {
        Self { key, lifetime_secs }
    }

    /// A random key: nonces do not survive a restart, clients just get a 438.
    pub fn random(lifetime_secs: u64) -> Self {
        Self::new(rand::random(), lifetime_secs)
    }

    pub fn issue(&self, client: IpAddr, unix_now: u64) -> String {
        let expiry = unix_now + self.lifetime_secs;
        format!("{expiry:x}.{}", self.mac(client, expiry))
    }

    pub fn check(&self, nonce: &str, client: IpAddr, unix_now: u64) -> NonceCheck {
        let Some((expiry, mac)) = nonce.split_once('.') else {
            return NonceCheck::Stale;
        };
        let Ok(expiry) = u64::from_str_radix(expiry, 16) else {
            return NonceCheck::Stale;
        };
        if expiry < unix_now || mac != self.mac(client, expiry) {
            return NonceCheck::Stale;
        }
        NonceCheck::Valid
    }

    fn mac(&self, client: IpAddr, expiry: u64) -> String {
        let mut mac = HmacSha1::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(&expiry.to_be_bytes());
        mac.update(client.to_string().as_bytes());
        let tag = mac.finalize().into_bytes();
        // 12 bytes of tag are plenty against guessing within one nonce lifetime.
        tag[..12].iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            users: HashMap::from([("alice".into(), "pw".into())]),
            secrets: vec!["old".into(), "new".into()],
            separator: ':',
        }
    }

    #[test]
    fn static_user_has_its_password() {
        assert_eq!(creds().passwords("alice", 0), Ok(vec!["pw".to_string()]));
    }

    #[test]
    fn rest_user_gets_one_password_per_secret() {
        let got = creds().passwords("2000:bob", 1000).unwrap();
        assert_eq!(
            got,
            vec![
                rest_password("old", "2000:bob"),
                rest_password("new", "2000:bob")
            ]
        );
    }

    #[test]
    fn rest_user_expiry_is_checked() {
        assert_eq!(creds().passwords("999:bob", 1000), Err(Rejected::Expired));
        assert_eq!(creds().passwords("bob", 1000), Err(Rejected::Unknown));
        let no_secrets = Credentials {
            secrets: vec![],
            ..creds()
        };
        assert_eq!(
            no_secrets.passwords("2000:bob", 1000),
            Err(Rejected::Unknown)
        );
    }

    #[test]
    fn rest_password_matches_coturn_reference() {
        // `echo -n 1600000000:user | openssl dgst -binary -sha1 -hmac secret | base64`
        assert_eq!(
            rest_password("secret", "1600000000:user"),
            "BwzEW9gDEHXnNCRCm1qZLqyo+hg="
        );
    }

    #[test]
    fn nonce_round_trip_expiry_and_binding() {
        let nonces = Nonces::new([7; 32], 600);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let n = nonces.issue(a, 1000);
        assert_eq!(nonces.check(&n, a, 1000), NonceCheck::Valid);
        assert_eq!(nonces.check(&n, a, 1600), NonceCheck::Valid);
        assert_eq!(nonces.check(&n, a, 1601), NonceCheck::Stale);
        assert_eq!(nonces.check(&n, b, 1000), NonceCheck::Stale);
        assert_eq!(nonces.check("garbage", a, 1000), NonceCheck::Stale);
        assert_eq!(nonces.check("zz.00", a, 1000), NonceCheck::Stale);
        let other = Nonces::new([8; 32], 600);
        assert_eq!(other.check(&n, a, 1000), NonceCheck::Stale);
    }
}

//! Names and numeric codes of measurement points, TURN framings and protocol
//! classes (`docs/architecture.md`, "Numeric codes"). The codes are the kernel
//! ABI; the snake_case names are what JSON carries.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A name or code that is not one of an enum's variants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("unknown {what} name {name:?}")]
    UnknownName { what: &'static str, name: String },
    #[error("unknown {what} code {code}")]
    UnknownCode { what: &'static str, code: u8 },
}

// One table per enum so code, name and serde spelling cannot drift apart.
macro_rules! coded_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal => $str:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[repr(u8)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $str)] $variant = $code, )+
        }

        impl $name {
            /// Every variant, in code order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name used in JSON, logs and the console.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $str, )+
                }
            }

            /// The ABI code.
            pub const fn code(self) -> u8 {
                self as u8
            }
        }

        impl TryFrom<u8> for $name {
            type Error = NameError;

            fn try_from(code: u8) -> Result<Self, NameError> {
                match code {
                    $( $code => Ok($name::$variant), )+
                    _ => Err(NameError::UnknownCode { what: $what, code }),
                }
            }
        }

        impl From<$name> for u8 {
            fn from(v: $name) -> u8 {
                v as u8
            }
        }

        impl FromStr for $name {
            type Err = NameError;

            fn from_str(s: &str) -> Result<Self, NameError> {
                match s {
                    $( $str => Ok($name::$variant), )+
                    _ => Err(NameError::UnknownName { what: $what, name: s.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

coded_enum! {
    /// Where on a packet's path a timestamp was taken.
    Point, "point" {
        /// The application hands the datagram to the kernel (syscall entry).
        AppSend = 0 => "app_send",
        /// Last kernel point before the NIC (tc egress).
        TxWire = 1 => "tx_wire",
        /// First kernel point after the NIC (XDP).
        RxWire = 2 => "rx_wire",
        /// The application takes the datagram (syscall exit).
        AppRecv = 3 => "app_recv",
        /// The packet reaches the relay host (XDP on the relay).
        RelayIn = 4 => "relay_in",
        /// The relayed packet leaves the relay host (tc egress on the relay).
        RelayOut = 5 => "relay_out",
    }
}

coded_enum! {
    /// How the inner payload was carried in the UDP datagram.
    Framing, "framing" {
        /// The UDP payload is the inner payload.
        Bare = 0 => "bare",
        /// TURN ChannelData (4-byte header).
        ChannelData = 1 => "channel_data",
        /// TURN Send indication (client → server), payload in DATA.
        Send = 2 => "send",
        /// TURN Data indication (server → client), payload in DATA.
        Data = 3 => "data",
    }
}

coded_enum! {
    /// RFC 7983 class of the inner payload.
    Class, "class" {
        Other = 0 => "other",
        Rtp = 1 => "rtp",
        Rtcp = 2 => "rtcp",
        Dtls = 3 => "dtls",
        Stun = 4 => "stun",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_all<T>(all: &[T], codes: &[(u8, &str)])
    where
        T: Copy
            + fmt::Debug
            + PartialEq
            + TryFrom<u8, Error = NameError>
            + FromStr<Err = NameError>
            + fmt::Display
            + Serialize
            + for<'de> Deserialize<'de>,
        u8: From<T>,
    {
        assert_eq!(all.len(), codes.len());
        for (&v, &(code, name)) in all.iter().zip(codes) {
            assert_eq!(u8::from(v), code);
            assert_eq!(v.to_string(), name);
            assert_eq!(T::try_from(code).unwrap(), v);
            assert_eq!(name.parse::<T>().unwrap(), v);
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), v);
        }
        assert!(T::try_from(codes.len() as u8).is_err());
        assert!(T::try_from(255).is_err());
        assert!("nope".parse::<T>().is_err());
        assert!(serde_json::from_str::<T>("\"nope\"").is_err());
    }

    // The tables below restate docs/architecture.md by hand, independently of the macro.
    #[test]
    fn point_codes_match_the_doc() {
        check_all(
            Point::ALL,
            &[
                (0, "app_send"),
                (1, "tx_wire"),
                (2, "rx_wire"),
                (3, "app_recv"),
                (4, "relay_in"),
                (5, "relay_out"),
            ],
        );
    }

    #[test]
    fn framing_codes_match_the_doc() {
        check_all(
            Framing::ALL,
            &[(0, "bare"), (1, "channel_data"), (2, "send"), (3, "data")],
        );
    }

    #[test]
    fn class_codes_match_the_doc() {
        check_all(
            Class::ALL,
            &[
                (0, "other"),
                (1, "rtp"),
                (2, "rtcp"),
                (3, "dtls"),
                (4, "stun"),
            ],
        );
    }

    #[test]
    fn errors_name_what_was_wrong() {
        assert_eq!(
            Point::try_from(9).unwrap_err().to_string(),
            "unknown point code 9"
        );
        assert_eq!(
            "udp".parse::<Class>().unwrap_err().to_string(),
            "unknown class name \"udp\""
        );
    }
}

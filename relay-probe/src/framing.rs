//! TURN framing on the client side: where a frame ends on a stream, the
//! ChannelData header, and Data indications.

use std::net::SocketAddr;

use turn_types::attribute::{Data as DataAttr, XorPeerAddress};
use turn_types::message::DATA;
use turn_types::stun::message::{
    Message, MessageClass, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec,
    TransactionId,
};

use crate::turn::Transport;

/// Room in front of a peer's payload for the ChannelData header, so the
/// header is written in place and the payload is never copied.
pub const CHANNEL_HEADER: usize = 4;

/// What the start of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A whole frame of this many bytes (ChannelData padding included).
    Complete(usize),
    /// Need more bytes.
    Partial,
    /// Neither STUN nor ChannelData: the stream is garbage, close it.
    Invalid,
}

/// Splits a TCP/TLS byte stream into STUN messages and ChannelData frames
/// (RFC 8656 §12.5: ChannelData is padded to four bytes on streams).
pub fn stream_frame(buf: &[u8]) -> Frame {
    let Some(&first) = buf.first() else {
        return Frame::Partial;
    };
    if buf.len() < 4 {
        return match first {
            0..=3 | 0x40..=0x7f => Frame::Partial,
            _ => Frame::Invalid,
        };
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let total = match first {
        0..=3 if len % 4 == 0 => 20 + len,
        0x40..=0x7f => (4 + len).next_multiple_of(4),
        _ => return Frame::Invalid,
    };
    if buf.len() >= total {
        Frame::Complete(total)
    } else {
        Frame::Partial
    }
}

/// Writes the ChannelData header for a `payload_len`-byte payload that
/// already sits at `buf[CHANNEL_HEADER..]`, zero-pads it for streams, and
/// returns the frame's length.
pub fn channel_data_in_place(
    buf: &mut [u8],
    channel: u16,
    payload_len: usize,
    transport: Transport,
) -> usize {
    buf[..2].copy_from_slice(&channel.to_be_bytes());
    buf[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
    let unpadded = CHANNEL_HEADER + payload_len;
    let total = match transport {
        Transport::Udp => unpadded,
        Transport::Tcp | Transport::Tls => unpadded.next_multiple_of(4),
    };
    buf[unpadded..total].fill(0);
    total
}

/// A Data indication carrying `payload` from `peer`.
pub fn data_indication(peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let txid = TransactionId::generate();
    let mut msg = Message::builder(
        MessageType::from_class_method(MessageClass::Indication, DATA),
        txid,
        MessageWriteVec::with_capacity(payload.len() + 48),
    );
    msg.add_attribute(&XorPeerAddress::new(peer, txid))
        .expect("fresh message");
    msg.add_attribute(&DataAttr::new(payload))
        .expect("payload fits a STUN message");
    msg.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_frames() {
        assert_eq!(stream_frame(&[]), Frame::Partial);
        assert_eq!(stream_frame(&[0x00, 0x01]), Frame::Partial);
        assert_eq!(
            stream_frame(&[0x17, 0x03, 0x03]),
            Frame::Invalid,
            "TLS on the TCP port"
        );
        assert_eq!(
            stream_frame(b"\x16\x03\x01\x02\x00"),
            Frame::Invalid,
            "TLS hello"
        );
        // 'G' falls in the RFC 5766 channel range: waits for 8239 bytes, then
        // the idle timeout closes it.
        assert_eq!(stream_frame(b"GET / HTTP/1.1"), Frame::Partial);
        let mut stun = vec![0x00, 0x01, 0x00, 0x04];
        stun.resize(24, 0);
        assert_eq!(stream_frame(&stun[..23]), Frame::Partial);
        assert_eq!(stream_frame(&stun), Frame::Complete(24));
        assert_eq!(
            stream_frame(&[0x00, 0x01, 0x00, 0x03]),
            Frame::Invalid,
            "unaligned"
        );
        // 5-byte payload pads to 12 on a stream.
        let channel = [0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0, 0x40];
        assert_eq!(stream_frame(&channel[..11]), Frame::Partial);
        assert_eq!(stream_frame(&channel), Frame::Complete(12));
    }

    #[test]
    fn channel_header_written_in_place() {
        let mut buf = [0xffu8; 16];
        buf[4..9].copy_from_slice(b"hello");
        assert_eq!(
            channel_data_in_place(&mut buf, 0x4001, 5, Transport::Udp),
            9
        );
        assert_eq!(&buf[..9], b"\x40\x01\x00\x05hello");
        assert_eq!(
            channel_data_in_place(&mut buf, 0x4001, 5, Transport::Tcp),
            12
        );
        assert_eq!(&buf[9..12], &[0, 0, 0]);
        let frame = turn_types::channel::ChannelData::parse(&buf[..12]).unwrap();
        assert_eq!(frame.data(), b"hello");
    }

    #[test]
    fn data_indication_round_trips() {
        let peer: SocketAddr = "[2001:db8::1]:9".parse().unwrap();
        let bytes = data_indication(peer, b"media");
        let msg = Message::from_bytes(&bytes).unwrap();
        assert!(msg.has_class(MessageClass::Indication) && msg.has_method(DATA));
        let addr = msg.attribute::<XorPeerAddress>().unwrap();
        assert_eq!(addr.addr(msg.transaction_id()), peer);
        assert_eq!(msg.attribute::<DataAttr>().unwrap().data(), b"media");
    }
}

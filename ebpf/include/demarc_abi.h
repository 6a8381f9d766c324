/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * demarc kernel ↔ agent ABI: the one source of the record layout.
 *
 * Fixed-width fields only, explicit padding, no bool/enum/bitfields, so the
 * Rust mirror (demarc-ebpf/src/abi.rs) can be checked field by field. build.rs
 * extracts sizes, offsets and constants from this header and the Rust mirror
 * asserts them at compile time. Bump DEMARC_ABI_VERSION on any change.
 */
#ifndef DEMARC_ABI_H
#define DEMARC_ABI_H

#ifdef __BPF__
#include <linux/types.h>
#else
#include <stdint.h>
typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef uint64_t __u64;
#endif

#define DEMARC_ABI_VERSION 2

/* Measurement points (docs/architecture.md). */
#define DEMARC_POINT_APP_SEND 0
#define DEMARC_POINT_TX_WIRE 1
#define DEMARC_POINT_RX_WIRE 2
#define DEMARC_POINT_APP_RECV 3
#define DEMARC_POINT_RELAY_IN 4
#define DEMARC_POINT_RELAY_OUT 5
#define DEMARC_POINTS 6

/* TURN framing of the datagram around the inner payload. */
#define DEMARC_FRAMING_BARE 0
#define DEMARC_FRAMING_CHANNEL_DATA 1
#define DEMARC_FRAMING_SEND 2
#define DEMARC_FRAMING_DATA 3

/* RFC 7983 class of the inner payload. */
#define DEMARC_CLASS_OTHER 0
#define DEMARC_CLASS_RTP 1
#define DEMARC_CLASS_RTCP 2
#define DEMARC_CLASS_DTLS 3
#define DEMARC_CLASS_STUN 4

/* Clock the kernel stamps with; the agent converts to UTC. */
#define DEMARC_CLOCK_TAI 0
#define DEMARC_CLOCK_MONO 1

/* Key bytes hashed: the first 64 of the inner payload. */
#define DEMARC_KEY_PREFIX 64

/* Per-CPU counters: index = point * DEMARC_CNT_KINDS + kind. */
#define DEMARC_CNT_SEEN 0         /* UDP datagrams of the monitored scope */
#define DEMARC_CNT_MEDIA 1        /* of which media (framed or RFC 7983 class) */
#define DEMARC_CNT_RECORDED 2     /* of which sampled and written */
#define DEMARC_CNT_PARSE_FAIL 3   /* malformed TURN/STUN framing, bad IP/UDP */
#define DEMARC_CNT_RINGBUF_FULL 4 /* sampled but the ring buffer had no room */
#define DEMARC_CNT_MAP_FULL 5     /* a state map (recv args, relay match) was full */
#define DEMARC_CNT_READ_FAIL 6    /* user/kernel memory could not be read */
#define DEMARC_CNT_RELAY_MATCH 7  /* relay_out matched a relay_in (dwell recorded) */
#define DEMARC_CNT_KINDS 8
#define DEMARC_COUNTERS (DEMARC_POINTS * DEMARC_CNT_KINDS)

/*
 * Relay dwell (relay_in → relay_out, matched in the kernel by key).
 * port_roles[port] says what a relay UDP port is: a client-facing listener
 * (slot 1..DEMARC_RELAY_LISTENERS) or a peer-facing relay port.
 * Histograms: index = ((slot - 1) * 2 + direction) * DEMARC_DWELL_BUCKETS + bucket,
 * bucket = 4 * bit_length(dwell_ns) + the two bits below the top one (log2
 * with 4 sub-buckets per octave; demarc_ebpf::abi::dwell_bucket_bounds).
 */
#define DEMARC_ROLE_NONE 0
#define DEMARC_ROLE_PEER 255
#define DEMARC_RELAY_LISTENERS 4
#define DEMARC_DIR_CLIENT_TO_PEER 0
#define DEMARC_DIR_PEER_TO_CLIENT 1
#define DEMARC_DWELL_BUCKETS 256
#define DEMARC_DWELL_HISTS (DEMARC_RELAY_LISTENERS * 2)

struct demarc_record {
	__u64 key;         /* demarc-key-v1 of the inner payload */
	__u64 ts_ns;       /* raw kernel clock (DEMARC_CLOCK_*), agent converts */
	__u32 netns;       /* network namespace inode */
	__u32 ifindex;     /* 0 at syscall points */
	__u32 payload_len; /* inner payload length */
	__u32 wire_len;    /* UDP payload length including TURN framing */
	__u32 ssrc;        /* RTP/RTCP SSRC, else 0 */
	__u32 tgid;        /* process at syscall points, else 0 */
	__u16 seq;         /* RTP sequence number, else 0 */
	__u16 channel;     /* TURN channel number for ChannelData, else 0 */
	__u16 stun_type;   /* STUN message type when class is STUN, else 0 */
	__u16 sport;       /* host byte order */
	__u16 dport;       /* host byte order */
	__u8 point;        /* DEMARC_POINT_* */
	__u8 framing;      /* DEMARC_FRAMING_* */
	__u8 class;        /* DEMARC_CLASS_* */
	__u8 family;       /* 4 or 6; 0 when the address is unknown */
	__u8 _pad0[2];
	__u8 stun_txid[12];
	__u8 saddr[16];    /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u8 _pad1[4];
};

_Static_assert(sizeof(struct demarc_record) == 104, "demarc_record size");
_Static_assert(__builtin_offsetof(struct demarc_record, key) == 0, "key");
_Static_assert(__builtin_offsetof(struct demarc_record, ts_ns) == 8, "ts_ns");
_Static_assert(__builtin_offsetof(struct demarc_record, netns) == 16, "netns");
_Static_assert(__builtin_offsetof(struct demarc_record, ifindex) == 20, "ifindex");
_Static_assert(__builtin_offsetof(struct demarc_record, payload_len) == 24, "payload_len");
_Static_assert(__builtin_offsetof(struct demarc_record, wire_len) == 28, "wire_len");
_Static_assert(__builtin_offsetof(struct demarc_record, ssrc) == 32, "ssrc");
_Static_assert(__builtin_offsetof(struct demarc_record, tgid) == 36, "tgid");
_Static_assert(__builtin_offsetof(struct demarc_record, seq) == 40, "seq");
_Static_assert(__builtin_offsetof(struct demarc_record, channel) == 42, "channel");
_Static_assert(__builtin_offsetof(struct demarc_record, stun_type) == 44, "stun_type");
_Static_assert(__builtin_offsetof(struct demarc_record, sport) == 46, "sport");
_Static_assert(__builtin_offsetof(struct demarc_record, dport) == 48, "dport");
_Static_assert(__builtin_offsetof(struct demarc_record, point) == 50, "point");
_Static_assert(__builtin_offsetof(struct demarc_record, framing) == 51, "framing");
_Static_assert(__builtin_offsetof(struct demarc_record, class) == 52, "class");
_Static_assert(__builtin_offsetof(struct demarc_record, family) == 53, "family");
_Static_assert(__builtin_offsetof(struct demarc_record, stun_txid) == 56, "stun_txid");
_Static_assert(__builtin_offsetof(struct demarc_record, saddr) == 68, "saddr");
_Static_assert(__builtin_offsetof(struct demarc_record, daddr) == 84, "daddr");
_Static_assert(__builtin_offsetof(struct demarc_record, _pad1) == 100, "_pad1");

/*
 * Relay fast path (relay_fast, XDP): datagrams of channels the relay has
 * bound are relayed in the kernel. The relay (user space) owns both maps and
 * keeps them in step with its allocations; a packet without a live entry
 * goes up to user space as before. IPv4 only. Addresses, ports and channel
 * numbers are in network byte order, as on the wire, so the program compares
 * and copies them without swapping.
 *
 * fast_chan: ChannelData from a client to a listener.
 * fast_peer: a datagram from a peer to a relay port.
 * Both map to a demarc_fast_route: the packet leaves from src to dst, as
 * ChannelData on `channel` (to a client) or bare UDP (channel 0, to a peer).
 * A channel whose peer is another allocation on this relay is installed as
 * one route straight to that allocation's client (client to client in one
 * pass), never as a route to the relay's own address.
 */
struct demarc_fast_chan_key {
	__u32 client_ip;
	__u32 server_ip;   /* the listener address the client sent to */
	__u16 client_port;
	__u16 server_port;
	__u16 channel;
	__u16 _pad;
};

struct demarc_fast_peer_key {
	__u32 peer_ip;
	__u32 relay_ip;
	__u16 peer_port;
	__u16 relay_port;
};

struct demarc_fast_route {
	__u64 expires_ns;  /* CLOCK_MONOTONIC; later packets go to user space */
	__u32 src_ip;
	__u32 dst_ip;
	__u16 src_port;
	__u16 dst_port;
	__u16 channel;     /* ChannelData channel to a client, 0 to a peer */
	__u8 slot;         /* listener slot of the client side (dwell histogram) */
	__u8 dir;          /* DEMARC_DIR_* the dwell is counted under */
};

#define DEMARC_FAST_ENTRIES 65536
/* Per-CPU fast_stats: [dir * 2] packets, [dir * 2 + 1] inner payload bytes,
 * dir being the direction the packet arrived in (DEMARC_DIR_*). */
#define DEMARC_FAST_STATS 4

_Static_assert(sizeof(struct demarc_fast_chan_key) == 16, "demarc_fast_chan_key size");
_Static_assert(sizeof(struct demarc_fast_peer_key) == 12, "demarc_fast_peer_key size");
_Static_assert(sizeof(struct demarc_fast_route) == 24, "demarc_fast_route size");

#endif /* DEMARC_ABI_H */

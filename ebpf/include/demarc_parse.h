/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Packet key (demarc-key-v1), TURN framing and RFC 7983 classification, the C
 * twin of demarc_proto::{key, parse}. docs/architecture.md is the spec and
 * ebpf/testdata/vectors.json pins both sides to it.
 *
 * The parser reads bytes through demarc_load(), so one body serves tc (skb),
 * XDP and syscall (user memory) programs; the source kind is a constant at
 * every call site, so the switch folds away after inlining.
 */
#ifndef DEMARC_PARSE_H
#define DEMARC_PARSE_H

#include "demarc_abi.h"

#define DEMARC_SRC_SKB 1
#define DEMARC_SRC_XDP 2
#define DEMARC_SRC_USER 3

#define DEMARC_STUN_COOKIE 0x2112A442
#define DEMARC_STUN_SEND_IND 0x0016
#define DEMARC_STUN_DATA_IND 0x0017
#define DEMARC_STUN_ATTR_DATA 0x0013
#define DEMARC_STUN_MAX_ATTRS 16

#define DEMARC_PARSE_MEDIA 1
#define DEMARC_PARSE_NOT_MEDIA 0
#define DEMARC_PARSE_MALFORMED (-1)
#define DEMARC_PARSE_READ_FAIL (-2)
#define DEMARC_PARSE_COUNTED (-3) /* failed and already counted by the caller */

struct demarc_src {
	void *ctx;        /* skb or xdp_md */
	const __u8 *uptr; /* user buffer (DEMARC_SRC_USER) */
	__u32 base;       /* offset of the UDP payload in the packet */
	__u32 limit;      /* bytes readable from uptr (DEMARC_SRC_USER) */
	__u32 kind;
};

struct demarc_pkt {
	__u64 key;
	__u32 wire_len;
	__u32 inner_off;
	__u32 payload_len;
	__u32 ssrc;
	__u16 seq;
	__u16 channel;
	__u16 stun_type;
	__u8 framing;
	__u8 class;
	__u8 stun_txid[12];
	__u8 _pad[4];
	__u8 prefix[DEMARC_KEY_PREFIX];
};

static __always_inline long demarc_load(const struct demarc_src *s, __u32 off, void *dst,
					__u32 len)
{
	switch (s->kind) {
	case DEMARC_SRC_SKB:
		return bpf_skb_load_bytes(s->ctx, s->base + off, dst, len);
	case DEMARC_SRC_XDP:
		return bpf_xdp_load_bytes(s->ctx, s->base + off, dst, len);
	default:
		/* Only the first iovec is mapped; never read past it. */
		if (off > s->limit || len > s->limit - off)
			return -1;
		return bpf_probe_read_user(dst, len, s->uptr + off);
	}
}

static __always_inline __u16 demarc_be16(const __u8 *p)
{
	return ((__u16)p[0] << 8) | p[1];
}

static __always_inline __u32 demarc_be32(const __u8 *p)
{
	return ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | p[3];
}

static __always_inline __u64 demarc_rotl(__u64 x, int r)
{
	return (x << r) | (x >> (64 - r));
}

/* demarc-key-v1 over a zero-padded 64-byte prefix and the full length. */
static __always_inline __u64 demarc_key(const __u8 *prefix, __u32 len)
{
	const __u64 k1 = 0x87c37b91114253d5ULL, k2 = 0x4cf5ad432745937fULL;
	__u64 h = 0x646d72636b657931ULL ^ (__u64)len;

#pragma unroll
	for (int i = 0; i < DEMARC_KEY_PREFIX / 8; i++) {
		__u64 w;
		__builtin_memcpy(&w, prefix + 8 * i, 8);
		h ^= demarc_rotl(w * k1, 31) * k2;
		h = demarc_rotl(h, 27) * 5 + 0x52dce729;
	}
	h ^= (__u64)len;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

/* Loads the first min(len, 64) bytes at off into p->prefix, zero-padded. */
static __always_inline long demarc_load_prefix(const struct demarc_src *s, struct demarc_pkt *p,
					       __u32 off, __u32 len)
{
	__u32 m = len < DEMARC_KEY_PREFIX ? len : DEMARC_KEY_PREFIX;

	__builtin_memset(p->prefix, 0, DEMARC_KEY_PREFIX);
	/* Opaque to clang, so the checks below stay and give the verifier 1 <= m <= 64. */
	asm volatile("%0 &= 0x7f" : "+r"(m));
	if (m == 0)
		return 0;
	if (m > DEMARC_KEY_PREFIX)
		return -1;
	return demarc_load(s, off, p->prefix, m);
}

static __always_inline void demarc_classify(struct demarc_pkt *p)
{
	const __u8 *q = p->prefix;
	__u32 n = p->payload_len;
	__u8 b0 = q[0], b1 = q[1];

	p->class = DEMARC_CLASS_OTHER;
	p->ssrc = 0;
	p->seq = 0;
	p->stun_type = 0;
	__builtin_memset(p->stun_txid, 0, sizeof(p->stun_txid));
	if (n == 0)
		return;
	if (b0 <= 3) {
		if (n >= 20 && demarc_be32(q + 4) == DEMARC_STUN_COOKIE) {
			p->class = DEMARC_CLASS_STUN;
			p->stun_type = demarc_be16(q);
			__builtin_memcpy(p->stun_txid, q + 8, 12);
		}
	} else if (b0 >= 20 && b0 <= 63) {
		p->class = DEMARC_CLASS_DTLS;
	} else if (b0 >= 128 && b0 <= 191) {
		if (n >= 2 && b1 >= 192 && b1 <= 223) {
			p->class = DEMARC_CLASS_RTCP;
			if (n >= 8)
				p->ssrc = demarc_be32(q + 4);
		} else if (n >= 12) {
			p->class = DEMARC_CLASS_RTP;
			p->seq = demarc_be16(q + 2);
			p->ssrc = demarc_be32(q + 8);
		}
	}
}

/*
 * Parses the UDP payload of length wire_len. Returns DEMARC_PARSE_MEDIA when
 * the packet is TURN-framed or of an RFC 7983 media class, NOT_MEDIA for other
 * UDP, MALFORMED for broken TURN/STUN framing, READ_FAIL when bytes could not
 * be read.
 */
static __always_inline int demarc_parse(const struct demarc_src *s, __u32 wire_len,
					struct demarc_pkt *p)
{
	__u8 h[8];

	p->wire_len = wire_len;
	p->framing = DEMARC_FRAMING_BARE;
	p->channel = 0;
	p->inner_off = 0;
	p->payload_len = wire_len;
	if (wire_len == 0)
		return DEMARC_PARSE_NOT_MEDIA;
	/* The common case (bare RTP) needs this one read only. */
	if (demarc_load_prefix(s, p, 0, wire_len))
		return DEMARC_PARSE_READ_FAIL;
	__builtin_memcpy(h, p->prefix, 8);

	if (h[0] >= 64 && h[0] <= 127) {
		__u32 dlen = demarc_be16(h + 2);
		int fits = wire_len >= 4 && 4 + dlen <= wire_len;

		/*
		 * 64–79: RFC 8656 channels, so a bad length is malformed. 80–127:
		 * RFC 5766's wider range (coturn clients) shares its first byte with
		 * QUIC, so only an exact fit (at most 3 bytes of padding) counts.
		 */
		if (h[0] <= 79 && !fits)
			return DEMARC_PARSE_MALFORMED;
		if (h[0] <= 79 || (fits && wire_len - (4 + dlen) < 4)) {
			p->framing = DEMARC_FRAMING_CHANNEL_DATA;
			p->channel = demarc_be16(h);
			p->inner_off = 4;
			p->payload_len = dlen;
		}
	} else if (h[0] <= 3) {
		__u16 type = demarc_be16(h);
		__u32 mlen = demarc_be16(h + 2), end, off = 20, data_len = 0;
		int found = 0;

		if (wire_len < 20 || demarc_be32(h + 4) != DEMARC_STUN_COOKIE || (mlen & 3) ||
		    20 + mlen > wire_len)
			return DEMARC_PARSE_MALFORMED;
		if (type == DEMARC_STUN_SEND_IND || type == DEMARC_STUN_DATA_IND) {
			end = 20 + mlen;
#pragma unroll
			for (int i = 0; i < DEMARC_STUN_MAX_ATTRS; i++) {
				__u8 a[4];
				__u32 alen;

				if (off + 4 > end)
					break;
				if (demarc_load(s, off, a, 4))
					return DEMARC_PARSE_READ_FAIL;
				alen = demarc_be16(a + 2);
				if (demarc_be16(a) == DEMARC_STUN_ATTR_DATA) {
					if (off + 4 + alen > end)
						return DEMARC_PARSE_MALFORMED;
					data_len = alen;
					found = 1;
					break;
				}
				off += 4 + ((alen + 3) & ~3U);
			}
			if (!found)
				return DEMARC_PARSE_MALFORMED;
			p->framing = type == DEMARC_STUN_SEND_IND ? DEMARC_FRAMING_SEND
								  : DEMARC_FRAMING_DATA;
			p->inner_off = off + 4;
			p->payload_len = data_len;
		}
	}
	if (p->framing != DEMARC_FRAMING_BARE &&
	    demarc_load_prefix(s, p, p->inner_off, p->payload_len))
		return DEMARC_PARSE_READ_FAIL;

	demarc_classify(p);
	p->key = demarc_key(p->prefix, p->payload_len);
	if (p->framing == DEMARC_FRAMING_BARE && p->class == DEMARC_CLASS_OTHER)
		return DEMARC_PARSE_NOT_MEDIA;
	return DEMARC_PARSE_MEDIA;
}

/*
 * A datagram known to carry bare payload (the peer side of a TURN relay
 * port): nothing to unframe, and relayed data whatever its class.
 */
static __always_inline int demarc_parse_bare(const struct demarc_src *s, __u32 wire_len,
					     struct demarc_pkt *p)
{
	p->wire_len = wire_len;
	p->framing = DEMARC_FRAMING_BARE;
	p->channel = 0;
	p->inner_off = 0;
	p->payload_len = wire_len;
	if (demarc_load_prefix(s, p, 0, wire_len))
		return DEMARC_PARSE_READ_FAIL;
	demarc_classify(p);
	p->key = demarc_key(p->prefix, wire_len);
	return DEMARC_PARSE_MEDIA;
}

#endif /* DEMARC_PARSE_H */

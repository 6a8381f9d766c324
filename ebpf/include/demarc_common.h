/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * What the endpoint and relay programs share: maps for records and counters,
 * load-time configuration, the clock, record emission and the Ethernet/IP/UDP
 * walk in front of demarc_parse().
 */
#ifndef DEMARC_COMMON_H
#define DEMARC_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "demarc_parse.h"

/* Set by the agent before load (EbpfLoader::set_global). */
const volatile __u32 cfg_netns = 0;            /* netns inode of the monitored scope */
const volatile __u32 cfg_clock = DEMARC_CLOCK_TAI;
const volatile __u64 cfg_sample_threshold = 1ULL << 32; /* record iff key>>32 < this */
const volatile __u16 cfg_port_lo = 0;          /* record iff either port is in range */
const volatile __u16 cfg_port_hi = 0xffff;

#define DEMARC_RINGBUF_BYTES (8 << 20)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, DEMARC_RINGBUF_BYTES);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, DEMARC_COUNTERS);
} counters SEC(".maps");

/* Where a datagram was seen: its addresses as that point sees them. */
struct demarc_tuple {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 _pad[3];
};

/* Big per-packet state lives here, not on the 512-byte stack. */
struct demarc_scratch {
	struct demarc_pkt pkt;
	struct demarc_tuple tuple;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct demarc_scratch);
	__uint(max_entries, 1);
} scratch SEC(".maps");

/* Forces BTF for the record type, as libbpf-bootstrap does. */
struct demarc_record _demarc_record_btf = {0};

static __always_inline __u64 demarc_now(void)
{
	return cfg_clock == DEMARC_CLOCK_MONO ? bpf_ktime_get_ns() : bpf_ktime_get_tai_ns();
}

static __always_inline void demarc_count(__u32 point, __u32 kind)
{
	__u32 idx = point * DEMARC_CNT_KINDS + kind;
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		*v += 1;
}

static __always_inline struct demarc_scratch *demarc_scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&scratch, &zero);
}

static __always_inline int demarc_port_in_scope(__u16 a, __u16 b)
{
	return (a >= cfg_port_lo && a <= cfg_port_hi) || (b >= cfg_port_lo && b <= cfg_port_hi);
}

static __always_inline int demarc_sampled(__u64 key)
{
	return (key >> 32) < cfg_sample_threshold;
}

/* Counts the parse outcome; for media, writes a record when sampled. */
static __always_inline void demarc_emit(int verdict, const struct demarc_pkt *p,
					const struct demarc_tuple *t, __u32 point, __u64 ts,
					__u32 ifindex, __u32 tgid)
{
	struct demarc_record *r;

	if (verdict == DEMARC_PARSE_MALFORMED) {
		demarc_count(point, DEMARC_CNT_PARSE_FAIL);
		return;
	}
	if (verdict == DEMARC_PARSE_READ_FAIL) {
		demarc_count(point, DEMARC_CNT_READ_FAIL);
		return;
	}
	if (verdict != DEMARC_PARSE_MEDIA)
		return;
	demarc_count(point, DEMARC_CNT_MEDIA);
	if (!demarc_sampled(p->key))
		return;
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		demarc_count(point, DEMARC_CNT_RINGBUF_FULL);
		return;
	}
	r->key = p->key;
	r->ts_ns = ts;
	r->netns = cfg_netns;
	r->ifindex = ifindex;
	r->payload_len = p->payload_len;
	r->wire_len = p->wire_len;
	r->ssrc = p->ssrc;
	r->tgid = tgid;
	r->seq = p->seq;
	r->channel = p->channel;
	r->stun_type = p->stun_type;
	r->sport = t->sport;
	r->dport = t->dport;
	r->point = point;
	r->framing = p->framing;
	r->class = p->class;
	r->family = t->family;
	r->_pad0[0] = 0;
	r->_pad0[1] = 0;
	__builtin_memcpy(r->stun_txid, p->stun_txid, sizeof(r->stun_txid));
	__builtin_memcpy(r->saddr, t->saddr, sizeof(r->saddr));
	__builtin_memcpy(r->daddr, t->daddr, sizeof(r->daddr));
	__builtin_memset(r->_pad1, 0, sizeof(r->_pad1));
	/*
	 * A wake-up per record costs more than the record: the agent polls on a
	 * timer and is woken only when a quarter of the buffer is in use.
	 */
	bpf_ringbuf_submit(r, bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >
					      DEMARC_RINGBUF_BYTES / 4
				      ? BPF_RB_FORCE_WAKEUP
				      : BPF_RB_NO_WAKEUP);
	demarc_count(point, DEMARC_CNT_RECORDED);
}

struct demarc_iphdr4 {
	__u8 vihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__be16 check;
	__u8 saddr[4];
	__u8 daddr[4];
};

struct demarc_iphdr6 {
	__be32 vtcfl;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct demarc_udphdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__be16 check;
};

/*
 * Walks Ethernet → IPv4/IPv6 → UDP at offset 0 of the packet. On success sets
 * s->base to the UDP payload, fills the tuple and returns the UDP payload
 * length; returns -1 for packets that are not unfragmented UDP (not counted)
 * and -2 for a broken UDP header (counted as parse failure).
 */
static __always_inline int demarc_l3l4(struct demarc_src *s, __u32 pkt_len,
				       struct demarc_tuple *t)
{
	struct ethhdr eth;
	struct demarc_udphdr udp;
	__u32 l4;

	s->base = 0;
	if (demarc_load(s, 0, &eth, sizeof(eth)))
		return -1;
	if (eth.h_proto == bpf_htons(ETH_P_IP)) {
		struct demarc_iphdr4 ip;
		__u32 ihl;

		if (demarc_load(s, sizeof(eth), &ip, sizeof(ip)))
			return -1;
		ihl = (ip.vihl & 0x0f) * 4;
		if (ip.protocol != IPPROTO_UDP || ihl < sizeof(ip) ||
		    (ip.frag_off & bpf_htons(0x3fff)))
			return -1;
		l4 = sizeof(eth) + ihl;
		t->family = 4;
		__builtin_memset(t->saddr, 0, sizeof(t->saddr));
		__builtin_memset(t->daddr, 0, sizeof(t->daddr));
		__builtin_memcpy(t->saddr, ip.saddr, 4);
		__builtin_memcpy(t->daddr, ip.daddr, 4);
	} else if (eth.h_proto == bpf_htons(ETH_P_IPV6)) {
		struct demarc_iphdr6 ip;

		if (demarc_load(s, sizeof(eth), &ip, sizeof(ip)))
			return -1;
		/* Extension headers are rare on media paths; such packets are skipped. */
		if (ip.nexthdr != IPPROTO_UDP)
			return -1;
		l4 = sizeof(eth) + sizeof(ip);
		t->family = 6;
		__builtin_memcpy(t->saddr, ip.saddr, 16);
		__builtin_memcpy(t->daddr, ip.daddr, 16);
	} else {
		return -1;
	}
	if (demarc_load(s, l4, &udp, sizeof(udp))) {
		/* No ports to scope by: 0 keeps a --ports filter from counting it. */
		t->sport = 0;
		t->dport = 0;
		return -2;
	}
	t->sport = bpf_ntohs(udp.source);
	t->dport = bpf_ntohs(udp.dest);
	if (bpf_ntohs(udp.len) < sizeof(udp) || l4 + bpf_ntohs(udp.len) > pkt_len)
		return -2;
	s->base = l4 + sizeof(udp);
	return bpf_ntohs(udp.len) - sizeof(udp);
}

/*
 * Counts and parses the UDP payload found by demarc_l3l4 (udp_len < 0: a
 * broken UDP header, counted here as a parse failure). Call it only for
 * packets in scope, so unrelated traffic never moves the counters.
 */
static __always_inline int demarc_wire_parse(struct demarc_src *s, int udp_len, __u32 point,
					     struct demarc_pkt *p, int bare)
{
	if (udp_len < 0) {
		demarc_count(point, DEMARC_CNT_PARSE_FAIL);
		return DEMARC_PARSE_COUNTED;
	}
	demarc_count(point, DEMARC_CNT_SEEN);
	return bare ? demarc_parse_bare(s, udp_len, p) : demarc_parse(s, udp_len, p);
}

/* One endpoint wire point (tc or XDP): the packet from the Ethernet header on. */
static __always_inline void demarc_wire(struct demarc_src s, __u32 pkt_len, __u32 point,
					__u32 ifindex)
{
	__u64 ts = demarc_now();
	struct demarc_scratch *sc = demarc_scratch();
	int udp_len, verdict;

	if (!sc)
		return;
	udp_len = demarc_l3l4(&s, pkt_len, &sc->tuple);
	if (udp_len == -1 || !demarc_port_in_scope(sc->tuple.sport, sc->tuple.dport))
		return;
	verdict = demarc_wire_parse(&s, udp_len, point, &sc->pkt, 0);
	demarc_emit(verdict, &sc->pkt, &sc->tuple, point, ts, ifindex, 0);
}

#endif /* DEMARC_COMMON_H */

// SPDX-License-Identifier: GPL-2.0-only
/*
 * Relay dwell probe: relay_in (XDP) and relay_out (tc egress) on the relay
 * host's interfaces, matched in the kernel by packet key, so every relayed
 * packet's dwell lands in a histogram (complete, not sampled); sampled
 * packets also go out as records. Works beside any TURN server on the given
 * ports (ours or coturn).
 */
#include "demarc_common.h"

char LICENSE[] SEC("license") = "GPL";

/* Role of each local UDP port (DEMARC_ROLE_*), set by the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u8);
	__uint(max_entries, 65536);
} port_roles SEC(".maps");

/*
 * Packets between relay_in and relay_out: a direct-mapped table indexed by
 * the packet key, not a hash map. An array slot is found without a hash or
 * lock (the verifier inlines the lookup), where an LRU hash update and
 * delete cost several hundred ns per packet. A packet whose slot still holds
 * another live one replaces it; the other's dwell is lost and counted. Slots
 * are written key last and read key-value-key, so a slot that another CPU
 * rewrites meanwhile is not taken for a match.
 */
#define INFLIGHT_SLOTS 65536

struct inflight {
	__u64 key;     /* 0: empty */
	__u64 mono_ns; /* dwell is measured on CLOCK_MONOTONIC: immune to steps */
	__u8 dir;
	__u8 slot; /* listener slot for client→peer; 0 until known */
	__u8 _pad[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct inflight);
	__uint(max_entries, INFLIGHT_SLOTS);
} inflight SEC(".maps");

/* Keeps the compiler from merging or reordering the key accesses around it. */
#define slot_key(f) (*(volatile __u64 *)&(f)->key)

/* A slot older than this is a packet the relay dropped: free to reuse. */
#define INFLIGHT_STALE_NS 1000000000ULL

static __always_inline struct inflight *inflight_slot(__u64 key)
{
	__u32 i = (__u32)(key ^ (key >> 32)) & (INFLIGHT_SLOTS - 1);

	return bpf_map_lookup_elem(&inflight, &i);
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, DEMARC_DWELL_HISTS * DEMARC_DWELL_BUCKETS);
} dwell_hist SEC(".maps");

static __always_inline __u8 port_role(__u16 port)
{
	__u32 k = port;
	__u8 *r = bpf_map_lookup_elem(&port_roles, &k);

	return r ? *r : DEMARC_ROLE_NONE;
}

/* 4 * bit_length(v) + the two bits below the top one. */
static __always_inline __u32 dwell_bucket(__u64 v)
{
	__u32 bits = 0;

	if (v >> 32) { bits += 32; v >>= 32; }
	if (v >> 16) { bits += 16; v >>= 16; }
	if (v >> 8) { bits += 8; v >>= 8; }
	if (v >> 4) { bits += 4; v >>= 4; }
	if (v >> 2) { bits += 2; v >>= 2; }
	if (v >> 1) { bits += 1; v >>= 1; }
	bits += v; /* bit length of the original value */
	return bits;
}

static __always_inline void dwell_add(__u32 slot, __u32 dir, __u64 dwell)
{
	__u32 bits = dwell_bucket(dwell), sub = 0, idx;
	__u64 *c;

	if (bits >= 3)
		sub = (dwell >> (bits - 3)) & 3;
	idx = (((slot - 1) & (DEMARC_RELAY_LISTENERS - 1)) * 2 + (dir & 1)) * DEMARC_DWELL_BUCKETS +
	      ((bits * 4 + sub) & (DEMARC_DWELL_BUCKETS - 1));
	c = bpf_map_lookup_elem(&dwell_hist, &idx);
	if (c)
		*c += 1;
}

/*
 * The record's timestamp on the probe's clock: the dwell's monotonic reading
 * where that is the probe's clock, else a second reading, taken only for a
 * sampled packet (a clock read costs ~30 ns in a VM).
 */
static __always_inline __u64 relay_record_ts(const struct demarc_pkt *p, __u64 mono)
{
	if (cfg_clock == DEMARC_CLOCK_MONO || !demarc_sampled(p->key))
		return mono;
	return bpf_ktime_get_tai_ns();
}

static __always_inline void relay_in_common(struct demarc_src *s, __u32 pkt_len, __u32 ifindex)
{
	struct demarc_scratch *sc = demarc_scratch();
	int udp_len, verdict;
	struct inflight *f;
	__u64 mono;
	__u8 role;

	if (!sc)
		return;
	udp_len = demarc_l3l4(s, pkt_len, &sc->tuple);
	if (udp_len == -1)
		return;
	role = port_role(sc->tuple.dport);
	if (role == DEMARC_ROLE_NONE)
		return;
	/* Read after the cheap checks: other traffic pays no clock read. Both
	 * points read at the same place, so the dwell is not shifted. */
	mono = bpf_ktime_get_ns();
	/* Whatever a peer sends to a relay port is payload for a client. */
	verdict = demarc_wire_parse(s, udp_len, DEMARC_POINT_RELAY_IN, &sc->pkt,
				    role == DEMARC_ROLE_PEER);
	/* Only data is relayed: framed from clients, anything to a relay port. */
	if (verdict == DEMARC_PARSE_MEDIA && sc->pkt.key &&
	    (role == DEMARC_ROLE_PEER || sc->pkt.framing != DEMARC_FRAMING_BARE)) {
		f = inflight_slot(sc->pkt.key);
		if (f) {
			__u64 held = slot_key(f);

			if (held && held != sc->pkt.key && mono - f->mono_ns < INFLIGHT_STALE_NS)
				demarc_count(DEMARC_POINT_RELAY_IN, DEMARC_CNT_MAP_FULL);
			slot_key(f) = 0;
			f->mono_ns = mono;
			f->dir = role == DEMARC_ROLE_PEER ? DEMARC_DIR_PEER_TO_CLIENT
							  : DEMARC_DIR_CLIENT_TO_PEER;
			f->slot = role == DEMARC_ROLE_PEER ? 0 : role;
			slot_key(f) = sc->pkt.key;
		}
	}
	demarc_emit(verdict, &sc->pkt, &sc->tuple, DEMARC_POINT_RELAY_IN,
		    relay_record_ts(&sc->pkt, mono), ifindex, 0);
}

SEC("xdp")
int relay_in(struct xdp_md *ctx)
{
	struct demarc_src s = {.ctx = ctx, .kind = DEMARC_SRC_XDP};

	relay_in_common(&s, bpf_xdp_get_buff_len(ctx), ctx->ingress_ifindex);
	return XDP_PASS;
}

/* relay_in at tc ingress where the driver has no native XDP (see rx_wire_tc). */
SEC("classifier")
int relay_in_tc(struct __sk_buff *skb)
{
	struct demarc_src s = {.ctx = skb, .kind = DEMARC_SRC_SKB};

	relay_in_common(&s, skb->len, skb->ifindex); /* the receiving device here */
	return -1;
}

SEC("classifier")
int relay_out(struct __sk_buff *skb)
{
	struct demarc_src s = {.ctx = skb, .kind = DEMARC_SRC_SKB};
	struct demarc_scratch *sc = demarc_scratch();
	struct inflight *f;
	int udp_len, verdict;
	__u64 mono;
	__u8 role;

	if (!sc)
		return -1;
	udp_len = demarc_l3l4(&s, skb->len, &sc->tuple);
	if (udp_len == -1)
		return -1;
	role = port_role(sc->tuple.sport);
	if (role == DEMARC_ROLE_NONE)
		return -1;
	mono = bpf_ktime_get_ns();
	verdict = demarc_wire_parse(&s, udp_len, DEMARC_POINT_RELAY_OUT, &sc->pkt,
				    role == DEMARC_ROLE_PEER);
	if (verdict == DEMARC_PARSE_MEDIA && sc->pkt.key) {
		f = inflight_slot(sc->pkt.key);
		if (f && slot_key(f) == sc->pkt.key) {
			__u64 in_ns = f->mono_ns;
			__u8 dir = f->dir, in_slot = f->slot;
			__u32 slot = dir == DEMARC_DIR_CLIENT_TO_PEER ? in_slot : role;

			/* Frees the slot only if it still holds this packet, which
			 * also proves the fields read above were this packet's. */
			if (__sync_val_compare_and_swap(&f->key, sc->pkt.key, 0) == sc->pkt.key &&
			    slot != DEMARC_ROLE_PEER && slot != 0) {
				dwell_add(slot, dir, mono - in_ns);
				demarc_count(DEMARC_POINT_RELAY_OUT, DEMARC_CNT_RELAY_MATCH);
			}
		}
	}
	demarc_emit(verdict, &sc->pkt, &sc->tuple, DEMARC_POINT_RELAY_OUT,
		    relay_record_ts(&sc->pkt, mono), skb->ifindex, 0);
	return -1; /* TC_ACT_UNSPEC / TCX_NEXT */
}

// SPDX-License-Identifier: GPL-2.0-only
/*
 * Relay dwell probe: relay_in (XDP) and relay_out (tc egress) on the relay
 * host's interfaces, matched in the kernel by packet key, so every relayed
 * packet's dwell lands in a histogram (complete, not sampled); sampled
 * packets also go out as records. Works beside any TURN server on the given
 * ports (ours or coturn).
 *
 * relay_fast is relay_in plus a fast path: datagrams of channels the relay
 * has installed in fast_chan/fast_peer are rewritten and sent on from XDP,
 * never reaching user space; it then records what relay_out would have.
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

/*
 * Fast path routes, filled by the relay (demarc_abi.h). Not preallocated:
 * only a relay using the fast path pays for entries, and a replaced entry
 * is freed after an RCU grace period, so a lookup never sees it reused.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct demarc_fast_chan_key);
	__type(value, struct demarc_fast_route);
	__uint(max_entries, DEMARC_FAST_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} fast_chan SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct demarc_fast_peer_key);
	__type(value, struct demarc_fast_route);
	__uint(max_entries, DEMARC_FAST_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} fast_peer SEC(".maps");

/* Packets and inner payload bytes relayed here, by arrival direction. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, DEMARC_FAST_STATS);
} fast_stats SEC(".maps");

#define AF_INET 2
#define CHAN_HDR 4    /* ChannelData header: channel number, length */
#define RELAY_TTL 64  /* what the relay's own socket sends with (IPDEFTTL) */

/* The headers relay_fast rewrites: IPv4 without options. */
struct fast_hdr {
	struct ethhdr eth;
	struct demarc_iphdr4 ip;
	struct demarc_udphdr udp;
};

static __always_inline __u32 load32(const void *p)
{
	__u32 v;

	__builtin_memcpy(&v, p, sizeof(v));
	return v;
}

static __always_inline __u16 load16(const void *p)
{
	__u16 v;

	__builtin_memcpy(&v, p, sizeof(v));
	return v;
}

/*
 * RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'): a checksum follows a change of
 * its words from m to m'. Words are summed as they lie in memory (RFC 1071:
 * the sum does not depend on byte order); a 16-bit word may be passed as
 * 32 bits and an absent word as 0, both add nothing modulo 0xffff.
 */
static __always_inline __u64 csum_change(__u32 from, __u32 to)
{
	return (__u64)(__u32)~from + to;
}

static __always_inline __u16 csum_update(__u16 check, __u64 change)
{
	__u64 s = (__u16)~check + change;

	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return ~s;
}

/*
 * The fast path of relay_fast, for a parsed media datagram (role: its
 * destination port's). Returns XDP_PASS, the packet untouched, unless a live
 * route sends it on from here; then it is rewritten, counted and recorded as
 * relay_out would have, and the verdict is XDP_TX or XDP_REDIRECT.
 */
static __always_inline int relay_fast_path(struct xdp_md *ctx, struct demarc_scratch *sc,
					   __u8 role, __u64 mono)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct demarc_pkt *pkt = &sc->pkt;
	struct fast_hdr *p = data, h;
	struct demarc_fast_route *r, rt;
	__u32 ifindex = ctx->ingress_ifindex, in_hdr = 0, out_hdr, idx, mtu = 0;
	__u32 in_dir = role == DEMARC_ROLE_PEER ? DEMARC_DIR_PEER_TO_CLIENT
						 : DEMARC_DIR_CLIENT_TO_PEER;
	__u64 ip_change, udp_change, end, *n;
	__be16 ulen, chan[2] = {0, 0};
	__u16 ttl_proto, check;
	int delta, act = XDP_TX;

	/* demarc_l3l4 has checked the rest: UDP, unfragmented, within the frame. */
	if ((void *)(p + 1) > data_end || p->eth.h_proto != bpf_htons(ETH_P_IP) ||
	    p->ip.vihl != 0x45 ||
	    p->ip.tot_len != bpf_htons(sizeof(p->ip) + sizeof(p->udp) + pkt->wire_len))
		return XDP_PASS;
	if (role == DEMARC_ROLE_PEER) {
		struct demarc_fast_peer_key k = {
			.peer_ip = load32(p->ip.saddr),
			.relay_ip = load32(p->ip.daddr),
			.peer_port = p->udp.source,
			.relay_port = p->udp.dest,
		};

		r = bpf_map_lookup_elem(&fast_peer, &k);
	} else {
		struct demarc_fast_chan_key k = {
			.client_ip = load32(p->ip.saddr),
			.server_ip = load32(p->ip.daddr),
			.client_port = p->udp.source,
			.server_port = p->udp.dest,
			.channel = bpf_htons(pkt->channel),
		};

		/* Padding after ChannelData (allowed over UDP) is left to the relay. */
		if (pkt->framing != DEMARC_FRAMING_CHANNEL_DATA ||
		    pkt->payload_len + CHAN_HDR != pkt->wire_len ||
		    (void *)(p + 1) + CHAN_HDR > data_end)
			return XDP_PASS;
		in_hdr = CHAN_HDR;
		r = bpf_map_lookup_elem(&fast_chan, &k);
	}
	if (!r)
		return XDP_PASS;
	rt = *r; /* one reading, however the relay updates the entry */
	if (mono >= rt.expires_ns)
		return XDP_PASS;
	out_hdr = rt.channel ? CHAN_HDR : 0;
	delta = (int)out_hdr - (int)in_hdr;

	/* The next hop, decided before anything is written. */
	__builtin_memcpy(&h, p, sizeof(h));
	if (rt.dst_ip == load32(p->ip.saddr)) {
		/* Back to the sender: its MAC is the next hop, the link the same. */
		__builtin_memcpy(h.eth.h_dest, p->eth.h_source, ETH_ALEN);
		__builtin_memcpy(h.eth.h_source, p->eth.h_dest, ETH_ALEN);
		if (delta > 0 && bpf_check_mtu(ctx, 0, &mtu, delta, 0) != BPF_MTU_CHK_RET_SUCCESS)
			return XDP_PASS;
	} else {
		/* tot_len makes the lookup check the route's MTU for the new size. */
		struct bpf_fib_lookup fib = {
			.family = AF_INET,
			.l4_protocol = IPPROTO_UDP,
			.sport = rt.src_port,
			.dport = rt.dst_port,
			.tot_len = bpf_ntohs(p->ip.tot_len) + delta,
			.ifindex = ifindex,
			.tos = p->ip.tos,
			.ipv4_src = rt.src_ip,
			.ipv4_dst = rt.dst_ip,
		};

		if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
			return XDP_PASS;
		__builtin_memcpy(h.eth.h_dest, fib.dmac, ETH_ALEN);
		__builtin_memcpy(h.eth.h_source, fib.smac, ETH_ALEN);
		if (fib.ifindex != ifindex) {
			act = XDP_REDIRECT;
			ifindex = fib.ifindex;
		}
	}

	/*
	 * New headers, checksums updated for what changed: the addresses (in
	 * both, UDP's pseudo-header has them), ports, lengths (UDP's twice),
	 * TTL and the ChannelData header (the payload behind it moves by 4
	 * bytes, an even offset, so its sum stays).
	 */
	ulen = bpf_htons(sizeof(h.udp) + pkt->payload_len + out_hdr);
	if (in_hdr)
		__builtin_memcpy(chan, p + 1, sizeof(chan));
	ip_change = csum_change(load32(h.ip.saddr), rt.src_ip) +
		    csum_change(load32(h.ip.daddr), rt.dst_ip);
	udp_change = ip_change + csum_change(load32(&h.udp.source), load32(&rt.src_port)) +
		     2 * csum_change(h.udp.len, ulen) + csum_change(load32(chan), 0);
	if (out_hdr) {
		chan[0] = rt.channel;
		chan[1] = bpf_htons(pkt->payload_len);
		udp_change += csum_change(0, load32(chan));
	}
	ttl_proto = load16(&h.ip.ttl);
	h.ip.ttl = RELAY_TTL;
	ip_change += csum_change(ttl_proto, load16(&h.ip.ttl)) +
		     csum_change(h.ip.tot_len, bpf_htons(bpf_ntohs(h.ip.tot_len) + delta));
	h.ip.tot_len = bpf_htons(bpf_ntohs(h.ip.tot_len) + delta);
	h.ip.check = csum_update(h.ip.check, ip_change);
	__builtin_memcpy(h.ip.saddr, &rt.src_ip, 4);
	__builtin_memcpy(h.ip.daddr, &rt.dst_ip, 4);
	h.udp.source = rt.src_port;
	h.udp.dest = rt.dst_port;
	h.udp.len = ulen;
	/* A zero UDP checksum means none; a computed zero is sent as 0xffff. */
	if (h.udp.check) {
		check = csum_update(h.udp.check, udp_change);
		h.udp.check = check ? check : 0xffff;
	}

	/* Grow or shrink at the front: the payload stays where it is. */
	if (delta && bpf_xdp_adjust_head(ctx, -delta))
		return XDP_PASS; /* nothing written yet */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	p = data;
	/* Cannot fail: the lengths were checked above; the verifier wants it. */
	if ((void *)(p + 1) + sizeof(chan) > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(p, &h, sizeof(h));
	if (out_hdr)
		__builtin_memcpy(p + 1, chan, sizeof(chan));

	idx = in_dir * 2;
	n = bpf_map_lookup_elem(&fast_stats, &idx);
	if (n)
		*n += 1;
	idx++;
	n = bpf_map_lookup_elem(&fast_stats, &idx);
	if (n)
		*n += pkt->payload_len;
	/* What relay_out would have seen: the same key, the new addresses and framing. */
	__builtin_memcpy(sc->tuple.saddr, &rt.src_ip, 4);
	__builtin_memcpy(sc->tuple.daddr, &rt.dst_ip, 4);
	sc->tuple.sport = bpf_ntohs(rt.src_port);
	sc->tuple.dport = bpf_ntohs(rt.dst_port);
	pkt->framing = out_hdr ? DEMARC_FRAMING_CHANNEL_DATA : DEMARC_FRAMING_BARE;
	pkt->channel = bpf_ntohs(rt.channel);
	pkt->inner_off = out_hdr;
	pkt->wire_len = pkt->payload_len + out_hdr;
	end = bpf_ktime_get_ns();
	if (rt.slot >= 1 && rt.slot <= DEMARC_RELAY_LISTENERS) {
		dwell_add(rt.slot, rt.dir, end - mono);
		demarc_count(DEMARC_POINT_RELAY_OUT, DEMARC_CNT_RELAY_MATCH);
	}
	demarc_count(DEMARC_POINT_RELAY_OUT, DEMARC_CNT_SEEN);
	demarc_emit(DEMARC_PARSE_MEDIA, pkt, &sc->tuple, DEMARC_POINT_RELAY_OUT,
		    relay_record_ts(pkt, end), ifindex, 0);
	return act == XDP_TX ? XDP_TX : bpf_redirect(ifindex, 0);
}

/*
 * relay_in's work, shared by relay_in, relay_in_tc and relay_fast: parse,
 * count and sample the packet, then note it in flight for relay_out. fast
 * is relay_fast's context (NULL for the others, which folds the fast path
 * away); a packet relayed there is never in flight. Returns the XDP verdict.
 */
static __always_inline int relay_in_common(struct demarc_src *s, __u32 pkt_len, __u32 ifindex,
					   struct xdp_md *fast)
{
	struct demarc_scratch *sc = demarc_scratch();
	int udp_len, verdict, act;
	struct inflight *f;
	__u64 mono;
	__u8 role;

	if (!sc)
		return XDP_PASS;
	udp_len = demarc_l3l4(s, pkt_len, &sc->tuple);
	if (udp_len == -1)
		return XDP_PASS;
	role = port_role(sc->tuple.dport);
	if (role == DEMARC_ROLE_NONE)
		return XDP_PASS;
	/* Read after the cheap checks: other traffic pays no clock read. Both
	 * points read at the same place, so the dwell is not shifted. */
	mono = bpf_ktime_get_ns();
	/* Whatever a peer sends to a relay port is payload for a client. */
	verdict = demarc_wire_parse(s, udp_len, DEMARC_POINT_RELAY_IN, &sc->pkt,
				    role == DEMARC_ROLE_PEER);
	demarc_emit(verdict, &sc->pkt, &sc->tuple, DEMARC_POINT_RELAY_IN,
		    relay_record_ts(&sc->pkt, mono), ifindex, 0);
	if (fast && verdict == DEMARC_PARSE_MEDIA) {
		act = relay_fast_path(fast, sc, role, mono);
		if (act != XDP_PASS)
			return act;
	}
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
	return XDP_PASS;
}

SEC("xdp")
int relay_in(struct xdp_md *ctx)
{
	struct demarc_src s = {.ctx = ctx, .kind = DEMARC_SRC_XDP};

	return relay_in_common(&s, bpf_xdp_get_buff_len(ctx), ctx->ingress_ifindex, NULL);
}

/* relay_in at tc ingress where the driver has no native XDP (see rx_wire_tc). */
SEC("classifier")
int relay_in_tc(struct __sk_buff *skb)
{
	struct demarc_src s = {.ctx = skb, .kind = DEMARC_SRC_SKB};

	relay_in_common(&s, skb->len, skb->ifindex, NULL); /* the receiving device here */
	return -1;
}

/* relay_in, and the fast path for packets of installed routes (attach instead of relay_in). */
SEC("xdp")
int relay_fast(struct xdp_md *ctx)
{
	struct demarc_src s = {.ctx = ctx, .kind = DEMARC_SRC_XDP};

	return relay_in_common(&s, bpf_xdp_get_buff_len(ctx), ctx->ingress_ifindex, ctx);
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

// SPDX-License-Identifier: GPL-2.0-only
/*
 * Endpoint probe: app_send (syscall entry), tx_wire (tc egress), rx_wire
 * (XDP), app_recv (syscall exit). See docs/architecture.md.
 */
#include "vmlinux_min.h"
#include "demarc_common.h"
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define SOCK_DGRAM 2
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define MSG_PEEK 2
#define MAX_MMSG 1024
#define MAX_IOV 8

/* Userspace ABI of the socket syscalls (fixed on x86_64, no CO-RE needed). */
struct u_iovec {
	__u64 base;
	__u64 len;
};

struct u_msghdr {
	__u64 name;
	__s32 namelen;
	__u32 _pad;
	__u64 iov;
	__u64 iovlen;
	__u64 control;
	__u64 controllen;
	__u32 flags;
	__u32 _pad2;
};

struct u_mmsghdr {
	struct u_msghdr hdr;
	__u32 len;
	__u32 _pad;
};

struct u_sockaddr {
	__u16 family;
	__be16 port;
	union {
		__u8 v4[4];
		struct {
			__u32 flowinfo;
			__u8 v6[16];
		};
	};
};

/* Classic tracepoint contexts of syscalls:sys_enter_* / sys_exit_*. */
struct sys_enter_ctx {
	__u64 _common;
	__s64 id;
	__u64 args[6];
};

struct sys_exit_ctx {
	__u64 _common;
	__s64 id;
	__s64 ret;
};

#define RECV_FROM 1
#define RECV_MSG 2
#define RECV_MMSG 3

/* What sys_enter_recv* saw, for sys_exit_recv* of the same thread. */
struct recv_args {
	__u64 buf;  /* recvfrom: buffer; recvmsg/recvmmsg: msghdr array */
	__u64 addr; /* recvfrom: source sockaddr */
	__u32 kind;
	__u32 _pad;
	struct demarc_tuple local;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64);
	__type(value, struct recv_args);
	__uint(max_entries, 16384);
} recv_args SEC(".maps");

/* ---- wire points ---- */

SEC("classifier")
int tx_wire(struct __sk_buff *skb)
{
	struct demarc_src s = {.ctx = skb, .kind = DEMARC_SRC_SKB};

	demarc_wire(s, skb->len, DEMARC_POINT_TX_WIRE, skb->ifindex);
	return -1; /* TC_ACT_UNSPEC / TCX_NEXT: never change the packet's fate */
}

SEC("xdp")
int rx_wire(struct xdp_md *ctx)
{
	struct demarc_src s = {.ctx = ctx, .kind = DEMARC_SRC_XDP};
	__u32 len = bpf_xdp_get_buff_len(ctx);

	demarc_wire(s, len, DEMARC_POINT_RX_WIRE, ctx->ingress_ifindex);
	return XDP_PASS;
}

/*
 * rx_wire at tc ingress, where the driver has no native XDP: skb-mode XDP
 * would first copy every packet into a buffer with XDP headroom.
 */
SEC("classifier")
int rx_wire_tc(struct __sk_buff *skb)
{
	struct demarc_src s = {.ctx = skb, .kind = DEMARC_SRC_SKB};

	demarc_wire(s, skb->len, DEMARC_POINT_RX_WIRE, skb->ifindex); /* the receiving device here */
	return -1;
}

/* ---- syscall points ---- */

/* Bytes of struct sock read at once: sock_common up to skc_v6_rcv_saddr. */
#define SK_HEAD 96

/*
 * Copies sk->__sk_common.FIELD from the head read in one go (one helper call
 * instead of one per field), or reads it alone where this kernel's layout
 * puts it further out.
 */
#define SK_FIELD(head, sk, field, dst, size)                                                      \
	do {                                                                                      \
		__u32 _off = bpf_core_field_offset(struct sock, __sk_common.field);               \
		if (_off + (size) <= SK_HEAD)                                                     \
			__builtin_memcpy((dst), (head) + _off, (size));                           \
		else                                                                              \
			bpf_core_read((dst), (size), &(sk)->__sk_common.field);                   \
	} while (0)

/*
 * fd of the current task → its UDP socket in the monitored netns: fills t
 * with the local address as source and the connected peer (if any) as
 * destination; -1 for anything else.
 */
static __always_inline int udp_sock_tuple(__u64 fd, struct demarc_tuple *t)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds, *f = NULL;
	struct socket *so;
	struct sock *sk;
	struct net *net = NULL;
	__u8 head[SK_HEAD];
	__u16 family = 0, port = 0;

	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return -1;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return -1;
	if ((BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return -1;
	so = BPF_CORE_READ(f, private_data);
	if (!so || BPF_CORE_READ(so, type) != SOCK_DGRAM)
		return -1;
	sk = BPF_CORE_READ(so, sk);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP)
		return -1;
	if (bpf_probe_read_kernel(head, SK_HEAD, sk))
		return -1;
	SK_FIELD(head, sk, skc_net.net, &net, sizeof(net));
	if (cfg_netns && BPF_CORE_READ(net, ns.inum) != cfg_netns)
		return -1;

	__builtin_memset(t, 0, sizeof(*t));
	SK_FIELD(head, sk, skc_family, &family, 2);
	if (family == AF_INET) {
		t->family = 4;
		SK_FIELD(head, sk, skc_rcv_saddr, t->saddr, 4);
		SK_FIELD(head, sk, skc_daddr, t->daddr, 4);
	} else if (family == AF_INET6) {
		t->family = 6;
		SK_FIELD(head, sk, skc_v6_rcv_saddr, t->saddr, 16);
		SK_FIELD(head, sk, skc_v6_daddr, t->daddr, 16);
	} else {
		return -1;
	}
	SK_FIELD(head, sk, skc_num, &t->sport, 2);
	SK_FIELD(head, sk, skc_dport, &port, 2);
	t->dport = bpf_ntohs(port);
	return 0;
}

/* Reads a user sockaddr (unconnected sockets name the peer per call). */
static __always_inline void sockaddr_into(__u64 uaddr, __u8 *addr, __u16 *port)
{
	struct u_sockaddr sa;

	if (!uaddr || bpf_probe_read_user(&sa, sizeof(sa), (void *)uaddr))
		return;
	if (sa.family == AF_INET) {
		__builtin_memset(addr, 0, 16);
		__builtin_memcpy(addr, sa.v4, 4);
	} else if (sa.family == AF_INET6) {
		__builtin_memcpy(addr, sa.v6, 16);
	} else {
		return;
	}
	*port = bpf_ntohs(sa.port);
}

/* The tuple of a datagram: on send the peer is the destination, on receive the source. */
static __always_inline void datagram_tuple(struct demarc_tuple *t, const struct demarc_tuple *local,
					   __u32 point, __u64 uaddr)
{
	if (point == DEMARC_POINT_APP_SEND) {
		*t = *local;
		sockaddr_into(uaddr, t->daddr, &t->dport);
		return;
	}
	t->family = local->family;
	__builtin_memcpy(t->saddr, local->daddr, 16);
	__builtin_memcpy(t->daddr, local->saddr, 16);
	t->sport = local->dport;
	t->dport = local->sport;
	sockaddr_into(uaddr, t->saddr, &t->sport);
}

/* One datagram at a syscall point: user buffer buf (first iovec), total len. */
static __always_inline void syscall_datagram(struct demarc_scratch *sc, __u32 point, __u64 ts,
					     __u64 buf, __u32 first_len, __u32 len)
{
	struct demarc_src s = {
		.uptr = (const __u8 *)buf, .limit = first_len, .kind = DEMARC_SRC_USER};
	int verdict;

	if (!demarc_port_in_scope(sc->tuple.sport, sc->tuple.dport))
		return;
	demarc_count(point, DEMARC_CNT_SEEN);
	verdict = demarc_parse(&s, len, &sc->pkt);
	demarc_emit(verdict, &sc->pkt, &sc->tuple, point, ts, 0, bpf_get_current_pid_tgid() >> 32);
}

/* First iovec's base and length, and the total length, of a user msghdr. */
static __always_inline int msg_payload(const struct u_msghdr *m, __u64 *base, __u32 *first,
				       __u32 *total)
{
	struct u_iovec iov[MAX_IOV];
	__u64 n = m->iovlen, sum = 0;
	/* n in 1..MAX_IOV, written so the verifier sees the bound of the read size. */
	__u32 nread = (n & (MAX_IOV - 1)) ?: MAX_IOV;

	if (n == 0 || n > MAX_IOV)
		return -1;
	if (bpf_probe_read_user(iov, sizeof(struct u_iovec) * nread, (void *)m->iov))
		return -1;
#pragma unroll
	for (int i = 0; i < MAX_IOV; i++)
		if (i < n)
			sum += iov[i].len;
	*base = iov[0].base;
	*first = iov[0].len > 0xffff ? 0xffff : iov[0].len;
	*total = sum > 0xffff ? 0xffff : sum;
	return 0;
}

/*
 * One datagram described by a user msghdr. received < 0 on send (length from
 * the iovecs); on receive the length the kernel returned.
 */
static __always_inline void msghdr_datagram(struct demarc_scratch *sc, __u32 point, __u64 ts,
					    const struct u_msghdr *m, __s64 received,
					    const struct demarc_tuple *local)
{
	__u64 buf;
	__u32 first, total;

	if (msg_payload(m, &buf, &first, &total)) {
		demarc_count(point, DEMARC_CNT_READ_FAIL);
		return;
	}
	if (received >= 0) {
		total = received > 0xffff ? 0xffff : received;
		if (first > total)
			first = total;
	}
	datagram_tuple(&sc->tuple, local, point, m->name);
	syscall_datagram(sc, point, ts, buf, first, total);
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int app_send_sendto(struct sys_enter_ctx *ctx)
{
	__u64 ts = demarc_now();
	struct demarc_scratch *sc;
	struct demarc_tuple local;
	__u32 len = ctx->args[2] > 0xffff ? 0xffff : ctx->args[2];

	if (udp_sock_tuple(ctx->args[0], &local) || !(sc = demarc_scratch()))
		return 0;
	datagram_tuple(&sc->tuple, &local, DEMARC_POINT_APP_SEND, ctx->args[4]);
	syscall_datagram(sc, DEMARC_POINT_APP_SEND, ts, ctx->args[1], len, len);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int app_send_sendmsg(struct sys_enter_ctx *ctx)
{
	__u64 ts = demarc_now();
	struct demarc_scratch *sc;
	struct demarc_tuple local;
	struct u_msghdr m;

	if (udp_sock_tuple(ctx->args[0], &local) || !(sc = demarc_scratch()))
		return 0;
	if (bpf_probe_read_user(&m, sizeof(m), (void *)ctx->args[1])) {
		demarc_count(DEMARC_POINT_APP_SEND, DEMARC_CNT_READ_FAIL);
		return 0;
	}
	msghdr_datagram(sc, DEMARC_POINT_APP_SEND, ts, &m, -1, &local);
	return 0;
}

struct mmsg_loop {
	__u64 vec;
	__u64 ts;
	__u32 point;
	__u32 count;
	struct demarc_tuple local;
};

static long mmsg_one(__u32 i, struct mmsg_loop *l)
{
	struct demarc_scratch *sc = demarc_scratch();
	struct u_mmsghdr mm;

	if (!sc || i >= l->count)
		return 1;
	if (bpf_probe_read_user(&mm, sizeof(mm), (void *)(l->vec + (__u64)i * sizeof(mm)))) {
		demarc_count(l->point, DEMARC_CNT_READ_FAIL);
		return 0;
	}
	/* On receive the kernel has written each message's length to msg_len. */
	msghdr_datagram(sc, l->point, l->ts, &mm.hdr,
			l->point == DEMARC_POINT_APP_RECV ? (__s64)mm.len : -1, &l->local);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int app_send_sendmmsg(struct sys_enter_ctx *ctx)
{
	struct mmsg_loop l = {.ts = demarc_now(), .point = DEMARC_POINT_APP_SEND};

	if (udp_sock_tuple(ctx->args[0], &l.local))
		return 0;
	l.vec = ctx->args[1];
	l.count = ctx->args[2] > MAX_MMSG ? MAX_MMSG : ctx->args[2];
	bpf_loop(l.count, mmsg_one, &l, 0);
	return 0;
}

static __always_inline int recv_enter(struct sys_enter_ctx *ctx, __u32 kind)
{
	struct recv_args a = {.kind = kind, .buf = ctx->args[1]};
	__u64 id = bpf_get_current_pid_tgid();

	if (kind != RECV_MMSG && (ctx->args[kind == RECV_FROM ? 3 : 2] & MSG_PEEK))
		return 0;
	if (udp_sock_tuple(ctx->args[0], &a.local))
		return 0;
	if (kind == RECV_FROM)
		a.addr = ctx->args[4];
	if (bpf_map_update_elem(&recv_args, &id, &a, BPF_ANY))
		demarc_count(DEMARC_POINT_APP_RECV, DEMARC_CNT_MAP_FULL);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int app_recv_enter_recvfrom(struct sys_enter_ctx *ctx)
{
	return recv_enter(ctx, RECV_FROM);
}

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int app_recv_enter_recvmsg(struct sys_enter_ctx *ctx)
{
	return recv_enter(ctx, RECV_MSG);
}

SEC("tracepoint/syscalls/sys_enter_recvmmsg")
int app_recv_enter_recvmmsg(struct sys_enter_ctx *ctx)
{
	return recv_enter(ctx, RECV_MMSG);
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int app_recv_exit_recvfrom(struct sys_exit_ctx *ctx)
{
	__u64 ts = demarc_now(), id = bpf_get_current_pid_tgid();
	struct recv_args *a = bpf_map_lookup_elem(&recv_args, &id);
	struct demarc_scratch *sc;
	__u32 len;

	if (!a)
		return 0;
	if (ctx->ret > 0 && (sc = demarc_scratch())) {
		len = ctx->ret > 0xffff ? 0xffff : ctx->ret;
		datagram_tuple(&sc->tuple, &a->local, DEMARC_POINT_APP_RECV, a->addr);
		syscall_datagram(sc, DEMARC_POINT_APP_RECV, ts, a->buf, len, len);
	}
	bpf_map_delete_elem(&recv_args, &id);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int app_recv_exit_recvmsg(struct sys_exit_ctx *ctx)
{
	__u64 ts = demarc_now(), id = bpf_get_current_pid_tgid();
	struct recv_args *a = bpf_map_lookup_elem(&recv_args, &id);
	struct demarc_scratch *sc;
	struct u_msghdr m;

	if (!a)
		return 0;
	if (ctx->ret > 0 && (sc = demarc_scratch())) {
		if (bpf_probe_read_user(&m, sizeof(m), (void *)a->buf))
			demarc_count(DEMARC_POINT_APP_RECV, DEMARC_CNT_READ_FAIL);
		else
			msghdr_datagram(sc, DEMARC_POINT_APP_RECV, ts, &m, ctx->ret, &a->local);
	}
	bpf_map_delete_elem(&recv_args, &id);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_recvmmsg")
int app_recv_exit_recvmmsg(struct sys_exit_ctx *ctx)
{
	struct mmsg_loop l = {.ts = demarc_now(), .point = DEMARC_POINT_APP_RECV};
	__u64 id = bpf_get_current_pid_tgid();
	struct recv_args *a = bpf_map_lookup_elem(&recv_args, &id);

	if (!a)
		return 0;
	if (ctx->ret > 0) {
		l.vec = a->buf;
		l.local = a->local;
		l.count = ctx->ret > MAX_MMSG ? MAX_MMSG : ctx->ret;
		bpf_loop(l.count, mmsg_one, &l, 0);
	}
	bpf_map_delete_elem(&recv_args, &id);
	return 0;
}

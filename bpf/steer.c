//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
//
// steer: the MAC-steering XDP program of virtif-xdp. For every frame on a NIC
// queue it decides whether the frame belongs to a virtual interface (vif) and,
// if so, redirects it into that vif's AF_XDP socket for the same queue.
// Everything else goes on to the host kernel (XDP_PASS). Rules, in order:
//
//   1. destination MAC is a vif's registered unicast MAC       -> that vif
//   2. ARP request (IPv4 over Ethernet) for a vif's IPv4 address -> that vif
//   3. destination MAC is a multicast MAC a vif joined         -> that vif
//   4. a vif is promiscuous                                    -> that vif
//   5. otherwise                                               -> host
//
// ARP comes before joined multicast so that a vif that joined the broadcast
// address cannot take the ARP requests meant for another vif.
//
// A frame whose vif has no socket on this queue passes to the host and is
// counted (never black-holed); so do runts, and frames that cannot carry
// their vif's tag while tagging is on. Built with bpf2go (see gen.go).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "wire.h"

#define DEFAULT_MAX_VIFS 64
#define DEFAULT_MAX_QUEUES 64
#define DEFAULT_MAX_MACS 1024
#define DEFAULT_MAX_IPV4S 1024

// Counter columns of the stats map; keep in step with rule* in counters.go.
enum rule {
	RULE_UNICAST = 0,   // redirected by rule 1
	RULE_MULTICAST = 1, // redirected by rule 3
	RULE_ARP = 2,       // redirected by rule 2
	RULE_PROMISC = 3,   // redirected by rule 4
	RULE_PASS = 4,      // matched nothing, passed (host row)
	RULE_NOSOCK = 5,    // matched a vif without a socket on this queue, passed
	RULE_RUNT = 6,      // too short to parse, passed (host row)
	RULE_NOMETA = 7,    // matched a vif but could not be tagged (no XDP metadata), passed
	RULE_MAX = 8,
};

// Row 0 of the stats map is the host; vif v uses row v+1.
#define HOST_ROW 0

// Set by the loader before the program is loaded (spec.Variables).
volatile const __u32 max_vifs = DEFAULT_MAX_VIFS;
volatile const __u32 queue_stride = DEFAULT_MAX_QUEUES;
// Non-zero: tag fails as on a driver without XDP metadata (tests only; the
// verifier prunes the check when it is zero).
volatile const __u32 no_meta = 0;

// xsks[vif*queue_stride + queue] is the vif's AF_XDP socket on that queue.
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, DEFAULT_MAX_VIFS * DEFAULT_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

// The first FAST_MACS unicast MACs (a vif's own), also in macs, checked
// before it: with a few vifs, steering a unicast frame, or passing one that
// is the host's, costs no hash. hi and lo are the MAC's first four and last
// two bytes as loaded from the frame; vif1 is 1 + the vif, 0 for an empty
// slot; more is non-zero when some unicast MACs are only in macs.
#define FAST_MACS 4
struct fast_mac {
	__u32 hi;
	__u16 lo;
	__u16 vif1;
};
struct fast_macs {
	struct fast_mac e[FAST_MACS];
	__u32 more;
	__u32 pad;
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fast_macs);
} fast SEC(".maps");

// Unicast and joined multicast MACs -> vif.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_MAX_MACS);
	__type(key, struct mac_key);
	__type(value, __u32);
} macs SEC(".maps");

// IPv4 address (network byte order) -> vif, for ARP requests.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_MAX_IPV4S);
	__type(key, __u32);
	__type(value, __u32);
} ipv4s SEC(".maps");

// promisc[0] is 1 + the vif that takes unmatched frames, 0 for none.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} promisc SEC(".maps");

// tagging[0] != 0: several vifs share the NIC's sockets, so redirected
// frames carry their vif in XDP metadata (see tag). Off for a lone vif: the
// receiver knows whose every frame is, and the metadata costs (measured on a
// veth in copy mode: a fifth of the receive rate).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tagging SEC(".maps");

// stats[row*RULE_MAX + rule], per CPU.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, (DEFAULT_MAX_VIFS + 1) * RULE_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 row, __u32 rule)
{
	__u32 key = row * RULE_MAX + rule;
	__u64 *c = bpf_map_lookup_elem(&stats, &key);

	// Per-CPU slot, and XDP does not migrate mid-run: no atomic needed.
	if (c)
		*c += 1;
}

// tag writes META_TAG|vif into the 4 bytes of XDP metadata in front of the
// frame and returns 0, or -1 when it cannot (a driver without XDP metadata).
// Sockets can be shared by several vifs (one UMEM per NIC queue is all the
// kernel allows), and the tag tells the receiver whose frame it is without
// repeating these rules in userspace.
#define META_TAG 0x5ef00000u
static __always_inline int tag(struct xdp_md *ctx, __u32 vif)
{
	if (no_meta)
		return -1;
	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(__u32)))
		return -1;
	__u32 *meta = (void *)(long)ctx->data_meta;
	if ((void *)(meta + 1) > (void *)(long)ctx->data)
		return -1;
	*meta = META_TAG | vif;
	return 0;
}

// deliver redirects to vif's socket on this queue, or passes to the host
// when there is none: bpf_redirect_map's flags give the action for a missing
// entry (5.3+), so one map access both redirects and tells a missing socket
// apart, to be counted. The tag, when tagging is on, goes on only once the
// redirect is certain; a frame that cannot be tagged (a driver without XDP
// metadata) passes to the host, since the receiver could not tell whose it
// is, and counts as NoMeta: the receiver watches that count and then turns
// tagging off for good, finding each frame's vif by these rules itself.
static __always_inline int deliver(struct xdp_md *ctx, __u32 vif, __u32 rule)
{
	__u32 q = ctx->rx_queue_index;
	__u32 why = RULE_NOSOCK;

	if (vif < max_vifs && q < queue_stride) {
		if (bpf_redirect_map(&xsks, vif * queue_stride + q, XDP_PASS) == XDP_REDIRECT) {
			__u32 zero = 0;
			__u32 *on = bpf_map_lookup_elem(&tagging, &zero);

			if (!on || !*on || tag(ctx, vif) == 0) {
				count(vif + 1, rule);
				return XDP_REDIRECT;
			}
			why = RULE_NOMETA;
		}
	}
	if (vif < max_vifs)
		count(vif + 1, why);
	count(HOST_ROW, why);
	return XDP_PASS;
}

// "xdp.frags" loads the program with BPF_F_XDP_HAS_FRAGS (5.18), so drivers
// hand it multi-buffer frames (jumbo frames larger than a page; veth allows
// an MTU beyond a page only to such a program). It reads the Ethernet header
// and an ARP body through ctx->data..data_end, the first buffer, which holds
// them (a first buffer too short passes as a runt), and
// bpf_xdp_adjust_meta works on that buffer's headroom, frags or not. A
// kernel before 5.18 refuses the flag; the loader then loads it without.
SEC("xdp.frags")
int steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct mac_key key = {};
	__u32 *vif = NULL;
	__u32 zero = 0;
	int need_hash = 1;

	if ((void *)(eth + 1) > data_end) {
		count(HOST_ROW, RULE_RUNT);
		return XDP_PASS;
	}

	int multicast = eth->h_dest[0] & 1;
	if (!multicast) {
		struct fast_macs *f = bpf_map_lookup_elem(&fast, &zero);

		if (f) {
			__u32 hi = *(__u32 *)eth->h_dest;
			__u16 lo = *(__u16 *)(eth->h_dest + 4);

#pragma unroll
			for (int i = 0; i < FAST_MACS; i++)
				if (f->e[i].vif1 && f->e[i].hi == hi && f->e[i].lo == lo)
					return deliver(ctx, f->e[i].vif1 - 1, RULE_UNICAST);
			need_hash = f->more != 0;
		}
	}
	if (need_hash) {
		__builtin_memcpy(key.addr, eth->h_dest, ETH_ALEN);
		vif = bpf_map_lookup_elem(&macs, &key);
		if (vif && !multicast)
			return deliver(ctx, *vif, RULE_UNICAST);
	}

	if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
		struct arp_ipv4 *arp = (void *)(eth + 1);

		if ((void *)(arp + 1) > data_end) {
			count(HOST_ROW, RULE_RUNT);
			return XDP_PASS;
		}
		if (arp->htype == bpf_htons(1) && arp->ptype == bpf_htons(ETH_P_IP) &&
		    arp->hlen == ETH_ALEN && arp->plen == 4 && arp->oper == bpf_htons(1)) {
			__u32 tpa;
			__u32 *owner;

			__builtin_memcpy(&tpa, arp->tpa, sizeof(tpa));
			owner = bpf_map_lookup_elem(&ipv4s, &tpa);
			if (owner)
				return deliver(ctx, *owner, RULE_ARP);
		}
	}

	if (vif)
		return deliver(ctx, *vif, RULE_MULTICAST);

	__u32 *p = bpf_map_lookup_elem(&promisc, &zero);
	if (p && *p)
		return deliver(ctx, *p - 1, RULE_PROMISC);

	count(HOST_ROW, RULE_PASS);
	return XDP_PASS;
}

char __license[] SEC("license") = "Dual MIT/GPL";

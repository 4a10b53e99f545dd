//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
//
// vswitch: the XDP programs of `virtif-xdp switch`, which shares one NIC
// between tenant processes, each behind a veth pair of its own (the switch
// end beside the NIC, the tenant end in the tenant's namespace). Frames move
// between the NIC and the switch ends by DEVMAP redirects, in the kernel.
//
// switch_nic, on the NIC, for every frame:
//   1. destination MAC is a tenant's unicast MAC          -> that tenant
//   2. ARP request for a tenant's registered IPv4 address -> that tenant
//   3. destination MAC is a multicast MAC a tenant joined -> that tenant
//   4. otherwise                                          -> XDP_PASS (host)
// A tenant whose port is gone from the DEVMAP: the frame passes (counted).
//
// switch_tenant, on each switch end of a tenant's veth pair, for every frame
// the tenant sent:
//   - source MAC not one of the tenant's registered unicast MACs -> drop,
//     counted as spoofed;
//   - rules 1-3 name another tenant -> redirect to that tenant's port;
//     (the tenant itself: out of the NIC, as for nobody)
//   - otherwise -> redirect out of the NIC (port 0).
//
// Ports: 0 is the NIC, t (1..max_ports-1) tenant t's switch-side veth.
// Built with bpf2go by generate.sh, as steer.c is.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "wire.h"

#define DEFAULT_MAX_PORTS 1024
#define DEFAULT_MAX_MACS 4096
#define DEFAULT_MAX_IPV4S 4096

// Counter columns of the stats map, per port; keep in step with swStat* in
// vswitch.go.
enum sw_stat {
	SW_FROM_NIC = 0,    // NIC -> this tenant (switch_nic redirected)
	SW_TO_NIC = 1,      // this tenant -> NIC
	SW_TO_TENANT = 2,   // this tenant -> another tenant
	SW_FROM_TENANT = 3, // another tenant -> this tenant
	SW_SPOOFED = 4,     // sent with a source MAC not its own: dropped
	SW_NOPORT = 5,      // destination port missing in the DEVMAP: passed (NIC) or dropped (tenant)
	SW_PASS = 6,        // row 0: NIC frame for nobody, passed to the host
	SW_RUNT = 7,        // too short to parse: passed (NIC) or dropped (tenant)
	SW_MAX = 8,
};

volatile const __u32 max_ports = DEFAULT_MAX_PORTS;

// ports[p] is the ifindex of port p: 0 the NIC, else a tenant's switch end.
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, DEFAULT_MAX_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} ports SEC(".maps");

// Unicast MACs and joined multicast MACs -> tenant port.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_MAX_MACS);
	__type(key, struct mac_key);
	__type(value, __u32);
} macs SEC(".maps");

// IPv4 address (network byte order) -> tenant port, for ARP requests.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_MAX_IPV4S);
	__type(key, __u32);
	__type(value, __u32);
} ipv4s SEC(".maps");

// ifindex of a tenant's switch end -> its port, for switch_tenant.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DEFAULT_MAX_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} ifports SEC(".maps");

// stats[port*SW_MAX + stat], per CPU.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DEFAULT_MAX_PORTS * SW_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 port, __u32 stat)
{
	__u32 key = port * SW_MAX + stat;
	__u64 *c = bpf_map_lookup_elem(&stats, &key);

	if (c)
		*c += 1;
}

// owner applies rules 1-3 to the frame: the tenant port it is for, 0 for
// none, -1 for a runt.
static __always_inline int owner(struct ethhdr *eth, void *data_end)
{
	struct mac_key key = {};
	__u32 *p;

	__builtin_memcpy(key.addr, eth->h_dest, ETH_ALEN);
	p = bpf_map_lookup_elem(&macs, &key);
	if (p && !(eth->h_dest[0] & 1))
		return *p;
	if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
		struct arp_ipv4 *arp = (void *)(eth + 1);

		if ((void *)(arp + 1) > data_end)
			return -1;
		if (arp->htype == bpf_htons(1) && arp->ptype == bpf_htons(ETH_P_IP) &&
		    arp->hlen == ETH_ALEN && arp->plen == 4 && arp->oper == bpf_htons(1)) {
			__u32 tpa;
			__u32 *o;

			__builtin_memcpy(&tpa, arp->tpa, sizeof(tpa));
			o = bpf_map_lookup_elem(&ipv4s, &tpa);
			if (o)
				return *o;
		}
	}
	if (p)
		return *p;
	return 0;
}

// Both programs are "xdp.frags" (BPF_F_XDP_HAS_FRAGS, 5.18): veth takes a
// program on an MTU beyond a page only if it is, and hands it jumbo frames
// in several buffers. They read only the Ethernet header and an ARP body,
// in the first buffer, and a DEVMAP redirect carries the whole frame. A
// kernel before 5.18 refuses the flag; LoadSwitch then loads them without.
SEC("xdp.frags")
int switch_nic(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end) {
		count(0, SW_RUNT);
		return XDP_PASS;
	}
	int p = owner(eth, data_end);
	if (p < 0) {
		count(0, SW_RUNT);
		return XDP_PASS;
	}
	if (p == 0 || (__u32)p >= max_ports) {
		count(0, SW_PASS);
		return XDP_PASS;
	}
	if (bpf_redirect_map(&ports, p, XDP_PASS) == XDP_REDIRECT) {
		count(p, SW_FROM_NIC);
		return XDP_REDIRECT;
	}
	count(p, SW_NOPORT);
	return XDP_PASS;
}

SEC("xdp.frags")
int switch_tenant(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 *self = bpf_map_lookup_elem(&ifports, &ifindex);

	if (!self) {
		count(0, SW_NOPORT);
		return XDP_DROP;
	}
	__u32 me = *self;
	if ((void *)(eth + 1) > data_end) {
		count(me, SW_RUNT);
		return XDP_DROP;
	}
	struct mac_key src = {};
	__builtin_memcpy(src.addr, eth->h_source, ETH_ALEN);
	__u32 *mine = bpf_map_lookup_elem(&macs, &src);
	if (!mine || *mine != me || (eth->h_source[0] & 1)) {
		count(me, SW_SPOOFED);
		return XDP_DROP;
	}
	int p = owner(eth, data_end);
	if (p < 0) {
		count(me, SW_RUNT);
		return XDP_DROP;
	}
	// A tenant's own address (its ARP probe, say) goes out, not back to it.
	if (p > 0 && (__u32)p != me && (__u32)p < max_ports) {
		if (bpf_redirect_map(&ports, p, XDP_DROP) == XDP_REDIRECT) {
			count(me, SW_TO_TENANT);
			count(p, SW_FROM_TENANT);
			return XDP_REDIRECT;
		}
		count(me, SW_NOPORT);
		return XDP_DROP;
	}
	if (bpf_redirect_map(&ports, 0, XDP_DROP) == XDP_REDIRECT) {
		count(me, SW_TO_NIC);
		return XDP_REDIRECT;
	}
	count(me, SW_NOPORT);
	return XDP_DROP;
}

char __license[] SEC("license") = "Dual MIT/GPL";

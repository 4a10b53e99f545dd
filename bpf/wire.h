// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
//
// wire.h: what steer.c and vswitch.c both read off the wire, and the key
// both use for a MAC in a hash map.

#ifndef VIRTIF_WIRE_H
#define VIRTIF_WIRE_H

#include <linux/types.h>
#include <linux/if_ether.h>

// A MAC as a hash-map key: six bytes and two of zero padding.
struct mac_key {
	__u8 addr[ETH_ALEN];
	__u16 pad; // always zero
};

// ARP for IPv4 over Ethernet (RFC 826), packed as on the wire.
struct arp_ipv4 {
	__be16 htype;
	__be16 ptype;
	__u8 hlen;
	__u8 plen;
	__be16 oper;
	__u8 sha[ETH_ALEN];
	__u8 spa[4];
	__u8 tha[ETH_ALEN];
	__u8 tpa[4];
} __attribute__((packed));

#endif

/* afpacket_ref: the AF_PACKET reference for virtif-xdp's benchmarks — rxdrop
 * on one TPACKET_V3 socket: an mmap'ed, block-based RX ring, no fanout,
 * counting frames and bytes block by block and sleeping in poll() when the
 * next block is still the kernel's. The usual fast path without XDP, so the
 * yardstick for "how much does AF_XDP buy". Written in C because that is how
 * the programs it stands for (tcpdump's libpcap, Suricata, netsniff-ng) use
 * TPACKET_V3. */
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ref.h"

#define BLOCK_SIZE (1u << 20) /* 1 MiB blocks */
#define BLOCK_NR 64
#define FRAME_SIZE 2048       /* only a hint in V3; frames are packed */
#define RETIRE_MS 10          /* a partly filled block goes to user space after this */

static void die(const char *what, int err)
{
	fprintf(stderr, "afpacket_ref: %s: %s\n", what, strerror(err));
	if (err == EPERM)
		fprintf(stderr, "afpacket_ref: run as root (CAP_NET_RAW)\n");
	exit(1);
}

int main(int argc, char **argv)
{
	struct ref_opts opt;
	ref_parse(argc, argv, &opt, 1);
	if (opt.queue != 0)
		fprintf(stderr, "afpacket_ref: -q %u ignored: one socket sees every queue\n", opt.queue);

	int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	if (fd < 0)
		die("socket(AF_PACKET)", errno);
	int v = TPACKET_V3;
	if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v, sizeof(v)))
		die("PACKET_VERSION TPACKET_V3", errno);
	struct tpacket_req3 req = {
		.tp_block_size = BLOCK_SIZE,
		.tp_block_nr = BLOCK_NR,
		.tp_frame_size = FRAME_SIZE,
		.tp_frame_nr = BLOCK_SIZE / FRAME_SIZE * BLOCK_NR,
		.tp_retire_blk_tov = RETIRE_MS,
	};
	if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)))
		die("PACKET_RX_RING", errno);
	size_t len = (size_t)BLOCK_SIZE * BLOCK_NR;
	uint8_t *ring = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_LOCKED, fd, 0);
	if (ring == MAP_FAILED)
		die("mmap RX ring", errno);
	/* Bind after the ring exists, so no frame lands on the ordinary queue. */
	struct sockaddr_ll sll = {
		.sll_family = AF_PACKET,
		.sll_protocol = htons(ETH_P_ALL),
		.sll_ifindex = (int)opt.ifindex,
	};
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)))
		die("bind", errno);
	/* Start from zero: forget what arrived between socket() and bind(). */
	struct tpacket_stats_v3 st;
	socklen_t slen = sizeof(st);
	getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &st, &slen);

	uint64_t packets = 0, bytes = 0, polls = 0;
	unsigned blk = 0;
	struct pollfd pfd = { .fd = fd, .events = POLLIN | POLLERR };
	struct ref_clock clock = { 0 };
	ref_ready("afpacket", "rxdrop");
	ref_start_timer(opt.seconds);
	clock.start = ref_now();
	while (!ref_stop) {
		struct tpacket_block_desc *bd = (void *)(ring + (size_t)blk * BLOCK_SIZE);
		if (!(__atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER)) {
			polls++;
			poll(&pfd, 1, 100);
			continue;
		}
		struct tpacket3_hdr *h = (void *)((uint8_t *)bd + bd->hdr.bh1.offset_to_first_pkt);
		uint32_t n = bd->hdr.bh1.num_pkts;
		for (uint32_t i = 0; i < n; i++) {
			bytes += h->tp_len;
			h = (void *)((uint8_t *)h + h->tp_next_offset);
		}
		packets += n;
		ref_mark(&clock);
		__atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
		blk = (blk + 1) % BLOCK_NR;
	}
	slen = sizeof(st);
	if (getsockopt(fd, SOL_PACKET, PACKET_STATISTICS, &st, &slen))
		die("PACKET_STATISTICS", errno);
	char extra[256];
	snprintf(extra, sizeof(extra), ",\"kernel_packets\":%u,\"drops\":%u,\"freeze_q_cnt\":%u,\"polls\":%llu",
		 st.tp_packets, st.tp_drops, st.tp_freeze_q_cnt, (unsigned long long)polls);
	ref_report("afpacket", MODE_RXDROP, packets, bytes, &clock, extra);
	munmap(ring, len);
	close(fd);
	return 0;
}

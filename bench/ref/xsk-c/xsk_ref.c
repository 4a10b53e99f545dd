/* xsk_ref: the C reference for virtif-xdp's benchmarks — one AF_XDP socket on
 * libxdp's <xdp/xsk.h>, modes rxdrop, txonly and l2fwd, modelled on the
 * kernel's samples/bpf/xdpsock (batch 64, need_wakeup, busy loop).
 *
 * xsk_socket__create loads libxdp's default XDP program, which redirects
 * every frame arriving on the bound queue into the socket, and removes it
 * again in xsk_socket__delete. That is what a reference wants: no filter,
 * the plainest AF_XDP path. */
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <xdp/xsk.h>

#include "ref.h"

#define NUM_FRAMES 4096
#define FRAME_SIZE XSK_UMEM__DEFAULT_FRAME_SIZE
#define BATCH 64
#define FQ_SIZE (XSK_RING_PROD__DEFAULT_NUM_DESCS * 2) /* room for every frame */
#define CQ_SIZE XSK_RING_CONS__DEFAULT_NUM_DESCS
#define RX_SIZE XSK_RING_CONS__DEFAULT_NUM_DESCS
#define TX_SIZE XSK_RING_PROD__DEFAULT_NUM_DESCS

struct xsk {
	struct xsk_ring_prod fq, tx;
	struct xsk_ring_cons cq, rx;
	struct xsk_umem *umem;
	struct xsk_socket *sock;
	void *buffer;
	int fd;
	uint32_t outstanding; /* TX descriptors not yet completed */
	uint32_t frame_nb;    /* txonly: next frame to send from */
	uint64_t rx_pkts, rx_bytes, tx_pkts, tx_bytes;
	uint64_t wakeups;
	struct ref_clock clock;
};

static struct ref_opts opt;

static void die(const char *what, int err)
{
	fprintf(stderr, "xsk_ref: %s: %s\n", what, strerror(err));
	if (err == EPERM)
		fprintf(stderr, "xsk_ref: run as root (CAP_NET_ADMIN, CAP_BPF, CAP_NET_RAW)\n");
	exit(1);
}

/* kick_tx makes the kernel send what is on the TX ring (copy mode always
 * needs it). EAGAIN, EBUSY and ENOBUFS mean "busy, try again later". */
static void kick_tx(struct xsk *x)
{
	x->wakeups++;
	if (sendto(x->fd, NULL, 0, MSG_DONTWAIT, NULL, 0) >= 0)
		return;
	if (errno == EAGAIN || errno == EBUSY || errno == ENOBUFS || errno == ENETDOWN)
		return;
	die("sendto (TX kick)", errno);
}

/* idle is what the loop does when there is nothing to receive: with
 * need_wakeup set on the fill ring, poll() wakes the driver; -p sleeps there. */
static void idle(struct xsk *x)
{
	if (!opt.poll && !xsk_ring_prod__needs_wakeup(&x->fq))
		return;
	struct pollfd p = { .fd = x->fd, .events = POLLIN };
	x->wakeups++;
	poll(&p, 1, opt.poll ? 100 : 0);
}

static void rx_drop(struct xsk *x)
{
	uint32_t idx_rx, idx_fq;
	unsigned n = xsk_ring_cons__peek(&x->rx, BATCH, &idx_rx);
	if (!n) {
		idle(x);
		return;
	}
	/* Every frame not on the RX ring is on the fill ring, which holds them
	 * all, so this reservation cannot fail. */
	while (xsk_ring_prod__reserve(&x->fq, n, &idx_fq) != n)
		idle(x);
	for (unsigned i = 0; i < n; i++) {
		const struct xdp_desc *d = xsk_ring_cons__rx_desc(&x->rx, idx_rx++);
		x->rx_bytes += d->len;
		*xsk_ring_prod__fill_addr(&x->fq, idx_fq++) = d->addr;
	}
	xsk_ring_prod__submit(&x->fq, n);
	xsk_ring_cons__release(&x->rx, n);
	x->rx_pkts += n;
	ref_mark(&x->clock);
}

static void complete_tx_only(struct xsk *x)
{
	uint32_t idx;
	if (!x->outstanding)
		return;
	if (xsk_ring_prod__needs_wakeup(&x->tx))
		kick_tx(x);
	unsigned n = xsk_ring_cons__peek(&x->cq, BATCH, &idx);
	if (n) {
		xsk_ring_cons__release(&x->cq, n);
		x->outstanding -= n;
		x->tx_pkts += n;
		x->tx_bytes += (uint64_t)n * opt.size;
	}
}

static void tx_only(struct xsk *x)
{
	uint32_t idx;
	if (xsk_ring_prod__reserve(&x->tx, BATCH, &idx) == BATCH) {
		for (unsigned i = 0; i < BATCH; i++) {
			struct xdp_desc *d = xsk_ring_prod__tx_desc(&x->tx, idx + i);
			d->addr = (uint64_t)((x->frame_nb + i) % NUM_FRAMES) * FRAME_SIZE;
			d->len = opt.size;
		}
		xsk_ring_prod__submit(&x->tx, BATCH);
		x->outstanding += BATCH;
		x->frame_nb = (x->frame_nb + BATCH) % NUM_FRAMES;
	}
	complete_tx_only(x);
}

/* complete_tx_l2fwd returns completed frames to the fill ring. */
static void complete_tx_l2fwd(struct xsk *x)
{
	uint32_t idx_cq, idx_fq;
	if (!x->outstanding)
		return;
	if (xsk_ring_prod__needs_wakeup(&x->tx))
		kick_tx(x);
	unsigned n = xsk_ring_cons__peek(&x->cq, BATCH, &idx_cq);
	if (!n)
		return;
	while (xsk_ring_prod__reserve(&x->fq, n, &idx_fq) != n)
		idle(x);
	for (unsigned i = 0; i < n; i++)
		*xsk_ring_prod__fill_addr(&x->fq, idx_fq++) = *xsk_ring_cons__comp_addr(&x->cq, idx_cq++);
	xsk_ring_prod__submit(&x->fq, n);
	xsk_ring_cons__release(&x->cq, n);
	x->outstanding -= n;
	x->tx_pkts += n;
}

static void l2fwd(struct xsk *x)
{
	uint32_t idx_rx, idx_tx;
	complete_tx_l2fwd(x);
	unsigned n = xsk_ring_cons__peek(&x->rx, BATCH, &idx_rx);
	if (!n) {
		idle(x);
		return;
	}
	while (xsk_ring_prod__reserve(&x->tx, n, &idx_tx) != n) {
		if (ref_stop) {
			/* Received but not forwarded: count them, give them back. */
			xsk_ring_cons__release(&x->rx, n);
			x->rx_pkts += n;
			return;
		}
		complete_tx_l2fwd(x);
		if (xsk_ring_prod__needs_wakeup(&x->tx))
			kick_tx(x);
	}
	for (unsigned i = 0; i < n; i++) {
		const struct xdp_desc *in = xsk_ring_cons__rx_desc(&x->rx, idx_rx++);
		struct xdp_desc *out = xsk_ring_prod__tx_desc(&x->tx, idx_tx++);
		uint8_t *p = xsk_umem__get_data(x->buffer, in->addr);
		uint8_t tmp[6];
		memcpy(tmp, p, 6);
		memcpy(p, p + 6, 6);
		memcpy(p + 6, tmp, 6);
		out->addr = in->addr;
		out->len = in->len;
		x->rx_bytes += in->len;
		x->tx_bytes += in->len;
	}
	xsk_ring_prod__submit(&x->tx, n);
	xsk_ring_cons__release(&x->rx, n);
	x->outstanding += n;
	x->rx_pkts += n;
	ref_mark(&x->clock);
}

static void setup(struct xsk *x)
{
	size_t len = (size_t)NUM_FRAMES * FRAME_SIZE;
	x->buffer = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (x->buffer == MAP_FAILED)
		die("mmap UMEM", errno);
	struct xsk_umem_config ucfg = {
		.fill_size = FQ_SIZE,
		.comp_size = CQ_SIZE,
		.frame_size = FRAME_SIZE,
		.frame_headroom = XSK_UMEM__DEFAULT_FRAME_HEADROOM,
	};
	int err = xsk_umem__create(&x->umem, x->buffer, len, &x->fq, &x->cq, &ucfg);
	if (err)
		die("xsk_umem__create", -err);

	struct xsk_socket_config scfg = {
		.rx_size = RX_SIZE,
		.tx_size = TX_SIZE,
		.libxdp_flags = 0, /* load libxdp's default redirect program */
		.xdp_flags = opt.xdp_mode == 1 ? XDP_FLAGS_DRV_MODE : opt.xdp_mode == 2 ? XDP_FLAGS_SKB_MODE : 0,
		.bind_flags = XDP_USE_NEED_WAKEUP | (opt.zerocopy ? XDP_ZEROCOPY : XDP_COPY),
	};
	err = xsk_socket__create(&x->sock, opt.ifname, opt.queue, x->umem,
				 opt.mode == MODE_TXONLY ? NULL : &x->rx,
				 opt.mode == MODE_RXDROP ? NULL : &x->tx, &scfg);
	if (err)
		die("xsk_socket__create", -err);
	x->fd = xsk_socket__fd(x->sock);

	if (opt.mode == MODE_TXONLY) {
		for (unsigned i = 0; i < NUM_FRAMES; i++)
			ref_udp_frame((uint8_t *)x->buffer + (size_t)i * FRAME_SIZE, opt.size, opt.dst, opt.src);
		return;
	}
	uint32_t idx;
	if (xsk_ring_prod__reserve(&x->fq, NUM_FRAMES, &idx) != NUM_FRAMES)
		die("fill ring reserve", ENOSPC);
	for (unsigned i = 0; i < NUM_FRAMES; i++)
		*xsk_ring_prod__fill_addr(&x->fq, idx++) = (uint64_t)i * FRAME_SIZE;
	xsk_ring_prod__submit(&x->fq, NUM_FRAMES);
}

int main(int argc, char **argv)
{
	struct xsk x = { 0 };
	ref_parse(argc, argv, &opt, 3);
	setup(&x);

	ref_ready("xsk-c", ref_mode_names[opt.mode]);
	ref_start_timer(opt.seconds);
	x.clock.start = ref_now();
	while (!ref_stop) {
		switch (opt.mode) {
		case MODE_RXDROP: rx_drop(&x); break;
		case MODE_TXONLY: tx_only(&x); break;
		case MODE_L2FWD: l2fwd(&x); break;
		}
	}
	struct xdp_statistics st = { 0 };
	socklen_t slen = sizeof(st);
	if (getsockopt(x.fd, SOL_XDP, XDP_STATISTICS, &st, &slen))
		die("getsockopt XDP_STATISTICS", errno);
	struct xdp_options xo = { 0 };
	socklen_t olen = sizeof(xo);
	getsockopt(x.fd, SOL_XDP, XDP_OPTIONS, &xo, &olen);

	char extra[512];
	snprintf(extra, sizeof(extra),
		 ",\"rx_packets\":%llu,\"tx_packets\":%llu,\"bind\":\"%s\",\"wakeups\":%llu,"
		 "\"rx_dropped\":%llu,\"rx_invalid_descs\":%llu,\"tx_invalid_descs\":%llu,"
		 "\"rx_ring_full\":%llu,\"rx_fill_ring_empty_descs\":%llu,\"tx_ring_empty_descs\":%llu",
		 (unsigned long long)x.rx_pkts, (unsigned long long)x.tx_pkts,
		 (xo.flags & XDP_OPTIONS_ZEROCOPY) ? "zerocopy" : "copy", (unsigned long long)x.wakeups,
		 (unsigned long long)st.rx_dropped, (unsigned long long)st.rx_invalid_descs,
		 (unsigned long long)st.tx_invalid_descs, (unsigned long long)st.rx_ring_full,
		 (unsigned long long)st.rx_fill_ring_empty_descs, (unsigned long long)st.tx_ring_empty_descs);
	uint64_t pkts = opt.mode == MODE_RXDROP ? x.rx_pkts : x.tx_pkts;
	uint64_t bytes = opt.mode == MODE_RXDROP ? x.rx_bytes : x.tx_bytes;
	ref_report("xsk-c", opt.mode, pkts, bytes, &x.clock, extra);

	xsk_socket__delete(x.sock);
	xsk_umem__delete(x.umem);
	munmap(x.buffer, (size_t)NUM_FRAMES * FRAME_SIZE);
	return 0;
}

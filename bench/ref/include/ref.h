/* ref.h: what the C reference programs share — the command line, the run
 * timer, the test frame and the one-line JSON summary. Header-only so each
 * reference still builds with one compiler call. */
#ifndef VIRTIF_REF_H
#define VIRTIF_REF_H

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <net/if.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

enum ref_mode { MODE_RXDROP, MODE_TXONLY, MODE_L2FWD };

static const char *ref_mode_names[] = { "rxdrop", "txonly", "l2fwd" };

struct ref_opts {
	const char *ifname;
	unsigned ifindex;
	unsigned queue;
	double seconds;
	unsigned size;
	enum ref_mode mode;
	uint8_t dst[6], src[6];
	int zerocopy;   /* -z: ask for XDP_ZEROCOPY instead of XDP_COPY */
	int xdp_mode;   /* 0 auto, 1 native (-N), 2 generic (-S) */
	int poll;       /* -p: always sleep in poll() when idle */
};

/* The loop checks this once per batch; SIGALRM (the -d timer), SIGINT and
 * SIGTERM set it. */
static volatile sig_atomic_t ref_stop;

static void ref_on_signal(int sig) { (void)sig; ref_stop = 1; }

static double ref_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int ref_parse_mac(const char *s, uint8_t mac[6])
{
	unsigned b[6];
	if (sscanf(s, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6)
		return -1;
	for (int i = 0; i < 6; i++) {
		if (b[i] > 255)
			return -1;
		mac[i] = b[i];
	}
	return 0;
}

static void ref_usage(const char *prog, const char *modes, FILE *f)
{
	fprintf(f,
		"usage: %s -i IFNAME [-m %s] [-q QUEUE] [-d SECONDS] [-s SIZE]\n"
		"          [--dst MAC] [--src MAC] [-z] [-N|-S] [-p]\n"
		"  -i, --interface  interface to run on (required)\n"
		"  -m, --mode       %s (default rxdrop)\n"
		"  -q, --queue      queue id (default 0)\n"
		"  -d, --duration   seconds to run (default 10)\n"
		"  -s, --size       frame size for txonly, 60..3000 (default 64)\n"
		"      --dst/--src  MACs of the txonly frame (default broadcast / 02:00:00:00:00:01)\n"
		"  -z, --zerocopy   XDP_ZEROCOPY (default XDP_COPY)\n"
		"  -N, --native     attach the XDP program in driver mode\n"
		"  -S, --generic    attach it in generic (SKB) mode\n"
		"  -p, --poll       sleep in poll() whenever idle (default: busy loop)\n"
		"Prints one JSON line when the time is up or on SIGINT/SIGTERM.\n",
		prog, modes, modes);
}

/* ref_parse exits with status 2 on bad usage, as most CLI tools do. */
static void ref_parse(int argc, char **argv, struct ref_opts *o, int allowed_modes)
{
	static const struct option longopts[] = {
		{ "interface", required_argument, 0, 'i' },
		{ "mode", required_argument, 0, 'm' },
		{ "queue", required_argument, 0, 'q' },
		{ "duration", required_argument, 0, 'd' },
		{ "size", required_argument, 0, 's' },
		{ "dst", required_argument, 0, 'D' },
		{ "src", required_argument, 0, 'R' },
		{ "zerocopy", no_argument, 0, 'z' },
		{ "native", no_argument, 0, 'N' },
		{ "generic", no_argument, 0, 'S' },
		{ "poll", no_argument, 0, 'p' },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *modes = allowed_modes == 1 ? "rxdrop" : "rxdrop|txonly|l2fwd";
	memset(o, 0, sizeof(*o));
	o->seconds = 10;
	o->size = 64;
	memset(o->dst, 0xff, 6);
	memcpy(o->src, (uint8_t[6]){ 0x02, 0, 0, 0, 0, 1 }, 6);
	int c;
	while ((c = getopt_long(argc, argv, "i:m:q:d:s:zNSph", longopts, NULL)) != -1) {
		char *end;
		switch (c) {
		case 'i': o->ifname = optarg; break;
		case 'm':
			o->mode = (enum ref_mode)-1;
			for (int m = 0; m < allowed_modes; m++)
				if (!strcmp(optarg, ref_mode_names[m]))
					o->mode = m;
			if ((int)o->mode < 0) {
				fprintf(stderr, "%s: unknown mode %s (want %s)\n", argv[0], optarg, modes);
				exit(2);
			}
			break;
		case 'q':
			o->queue = strtoul(optarg, &end, 0);
			if (*end) goto bad;
			break;
		case 'd':
			o->seconds = strtod(optarg, &end);
			if (*end || o->seconds <= 0) goto bad;
			break;
		case 's':
			o->size = strtoul(optarg, &end, 0);
			if (*end || o->size < 60 || o->size > 3000) goto bad;
			break;
		case 'D': if (ref_parse_mac(optarg, o->dst)) goto bad; break;
		case 'R': if (ref_parse_mac(optarg, o->src)) goto bad; break;
		case 'z': o->zerocopy = 1; break;
		case 'N': o->xdp_mode = 1; break;
		case 'S': o->xdp_mode = 2; break;
		case 'p': o->poll = 1; break;
		case 'h': ref_usage(argv[0], modes, stdout); exit(0);
		default: ref_usage(argv[0], modes, stderr); exit(2);
		bad:
			fprintf(stderr, "%s: bad value %s for -%c\n", argv[0], optarg, c);
			exit(2);
		}
	}
	if (!o->ifname || optind != argc) {
		ref_usage(argv[0], modes, stderr);
		exit(2);
	}
	o->ifindex = if_nametoindex(o->ifname);
	if (!o->ifindex) {
		fprintf(stderr, "%s: no interface %s in this network namespace: %s\n", argv[0], o->ifname, strerror(errno));
		exit(1);
	}
}

/* ref_start_timer arms SIGALRM after the run time and routes SIGINT and
 * SIGTERM to the same stop flag. */
static void ref_start_timer(double seconds)
{
	struct sigaction sa = { .sa_handler = ref_on_signal };
	sigaction(SIGALRM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	struct itimerval it = { 0 };
	it.it_value.tv_sec = (time_t)seconds;
	it.it_value.tv_usec = (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6);
	setitimer(ITIMER_REAL, &it, NULL);
}

static inline uint16_t ref_csum(const uint8_t *p, int len)
{
	uint32_t sum = 0;
	for (int i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* ref_udp_frame writes the same frame as trafficgen.UDPFrame:
 * Ethernet/IPv4/UDP 198.18.0.1:9 -> 198.18.0.2:9, IP checksum set, UDP
 * checksum 0, size bytes in all. */
static inline void ref_udp_frame(uint8_t *f, unsigned size, const uint8_t dst[6], const uint8_t src[6])
{
	memset(f, 0, size);
	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	f[12] = 0x08;
	uint8_t *ip = f + 14;
	ip[0] = 0x45;
	ip[2] = (size - 14) >> 8;
	ip[3] = (size - 14) & 0xff;
	ip[6] = 0x40;
	ip[8] = 64;
	ip[9] = 17;
	memcpy(ip + 12, (uint8_t[4]){ 198, 18, 0, 1 }, 4);
	memcpy(ip + 16, (uint8_t[4]){ 198, 18, 0, 2 }, 4);
	uint16_t c = ref_csum(ip, 20);
	ip[10] = c >> 8;
	ip[11] = c & 0xff;
	uint8_t *udp = ip + 20;
	udp[1] = 9;
	udp[3] = 9;
	udp[4] = (size - 34) >> 8;
	udp[5] = (size - 34) & 0xff;
}

/* ref_ready tells a harness on stderr that the program is set up (socket
 * bound, XDP program attached): a generator started now loses nothing. */
static inline void ref_ready(const char *system, const char *detail)
{
	fprintf(stderr, "ready: %s %s\n", system, detail);
	fflush(stderr);
}

/* ref_clock times a run. Receiving modes report the time from the first to
 * the last frame received, so the rate is not diluted by the start-up and
 * by the quiet tail a harness leaves to let the counters settle; "wall_seconds"
 * is the whole run. */
struct ref_clock {
	double start, first, last;
};

static inline void ref_mark(struct ref_clock *c)
{
	double t = ref_now();
	if (c->first == 0)
		c->first = t;
	c->last = t;
}

/* ref_report prints the one JSON line; extra is ",\"key\":value..." or "". */
static void ref_report(const char *system, enum ref_mode mode, uint64_t packets, uint64_t bytes,
		       const struct ref_clock *c, const char *extra)
{
	double wall = ref_now() - c->start;
	double secs = wall;
	if (mode != MODE_TXONLY && packets > 1 && c->last > c->first)
		secs = c->last - c->first;
	printf("{\"system\":\"%s\",\"mode\":\"%s\",\"packets\":%llu,\"bytes\":%llu,"
	       "\"seconds\":%.6f,\"pps\":%.1f,\"wall_seconds\":%.6f%s}\n",
	       system, ref_mode_names[mode], (unsigned long long)packets, (unsigned long long)bytes,
	       secs, secs > 0 ? packets / secs : 0.0, wall, extra);
	fflush(stdout);
}

#endif

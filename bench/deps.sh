#!/bin/sh
# Installs the Debian packages the benchmark's reference programs build with:
# a C toolchain, pkg-config, and libxdp/libbpf headers for bench/ref/xsk-c;
# and DPDK's dpdk-testpmd (in Debian 12's dpdk-dev) with its af_xdp PMD
# (librte-net-af-xdp23),
# which the harness runs as another reference; and perf (linux-perf), which
# the switch benchmark runs when VIRTIF_SWITCH_PERF asks for a profile.
# Run as root. Installs only what is missing.
set -eu
debs="gcc make pkg-config libc6-dev libxdp-dev libbpf-dev dpdk dpdk-dev librte-net-af-xdp23 linux-perf"
missing=""
for p in $debs; do
	dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -z "$missing" ]; then
	exit 0
fi
echo "bench/deps.sh: installing:$missing"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing

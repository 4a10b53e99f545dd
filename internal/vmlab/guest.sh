#!/bin/sh
# Runs inside the guest as its first process after init.sh (the host's root
# filesystem, read-only, with a tmpfs on /run: HOME and TMPDIR are under
# /run/vmlab, and the host's /tmp stays visible for a checkout there). Reads
# /run/vmlab/out/plan, written by run.sh:
#   KDIR=<unpacked kernel>   (first line)
#   <name> <timeout-seconds> <dir> <command...>   (one line per step)
# and runs each step in <dir> (a path on the host's filesystem), its output
# in /run/vmlab/out/<name>.out and its exit status in <name>.rc. The guest's
# NICs are renamed by MAC (run.sh sets them) to the names the plan uses;
# /run/vmlab/out/guest.txt records the kernel and the NICs as the guest saw
# them. Powers off at the end, whatever happened.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
HOME=/run/vmlab/home
TMPDIR=/run/vmlab/tmp
export PATH HOME TMPDIR
out=/run/vmlab/out
mkdir -p "$out" "$HOME" "$TMPDIR" /run/vmlab/lab
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out "$out" || {
	echo "vmlab: cannot mount the results folder"
	busybox poweroff -f
}
trap 'sync; busybox poweroff -f' EXIT
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
ip link set lo up

kdir=$(sed -n 's/^KDIR=//p' "$out/plan")
# The kernel asks /sbin/modprobe for modules (veth, bridge); the host has no
# /lib/modules for this kernel, so point it at the unpacked one.
printf '#!/bin/sh\nexec /sbin/modprobe -d %s "$@"\n' "$kdir" > /run/vmlab/lab/modprobe
chmod +x /run/vmlab/lab/modprobe
echo /run/vmlab/lab/modprobe > /proc/sys/kernel/modprobe
/run/vmlab/lab/modprobe veth 2>/dev/null

# NIC names from MACs: lines "NIC NAME MAC" of the plan.
names() {
	sed -n 's/^NIC //p' "$out/plan" | while read -r name mac; do
		for d in /sys/class/net/*; do
			[ "$(cat "$d/address")" = "$mac" ] || continue
			[ "$(basename "$d")" = "$name" ] || ip link set "$(basename "$d")" name "$name"
		done
	done
}
# reset puts every NIC back after a step that died without its cleanup (a
# test binary that panicked leaves its namespaces, a NIC it unplugged
# stays unplugged, promiscuous mode and queue counts stay as set): namespaces
# deleted, the PCI bus rescanned, names set, and each NIC back in the root
# namespace, down, not promiscuous, MTU 1500, no address, the queues it
# booted with.
reset() {
	reset_nics
	for name in $(sed -n 's/^NIC \([^ ]*\) .*/\1/p' "$out/plan"); do
		ip link set "$name" down promisc off mtu 1500 2>/dev/null
		ip addr flush dev "$name" 2>/dev/null
		q=$(cat "/run/vmlab/lab/queues.$name" 2>/dev/null)
		[ -n "$q" ] && ethtool -L "$name" combined "$q" 2>/dev/null
	done
}
reset_nics() {
	ip -all netns delete 2>/dev/null
	echo 1 > /sys/bus/pci/rescan
	i=0
	while [ $i -lt 100 ]; do
		names
		missing=0
		for name in $(sed -n 's/^NIC \([^ ]*\) .*/\1/p' "$out/plan"); do
			[ -e "/sys/class/net/$name" ] || missing=1
		done
		[ $missing -eq 0 ] && return
		sleep 0.2
		i=$((i + 1))
	done
	echo "vmlab: NICs missing after reset: $(ls /sys/class/net | tr '\n' ' ')"
}
# nics_here says whether every NIC of the plan is in the root namespace.
nics_here() {
	for name in $(sed -n 's/^NIC \([^ ]*\) .*/\1/p' "$out/plan"); do
		[ -e "/sys/class/net/$name" ] || return 1
	done
}
names
for name in $(sed -n 's/^NIC \([^ ]*\) .*/\1/p' "$out/plan"); do
	ethtool -l "$name" 2>/dev/null | awk '/^Combined:/ { c = $2 } END { if (c != "") print c }' > "/run/vmlab/lab/queues.$name"
done
{
	echo "kernel: $(uname -r)"
	echo "cmdline: $(cat /proc/cmdline)"
	for d in /sys/class/net/*; do
		n=$(basename "$d")
		[ "$n" = lo ] && continue
		echo "nic $n: $(cat "$d/address") driver=$(basename "$(readlink "$d/device/driver")") rx-queues=$(ls -d "$d"/queues/rx-* | wc -l) features=$(cat "$d/device/features" 2>/dev/null)"
		ethtool -l "$n" 2>&1 | sed 's/^/  /'
	done
} > "$out/guest.txt" 2>&1

grep -v '^KDIR=\|^NIC ' "$out/plan" | while read -r name secs dir cmd; do
	echo "vmlab: step $name"
	start=$(date +%s)
	(cd "$dir" && eval "timeout -k 10 $secs $cmd") > "$out/$name.out" 2>&1 < /dev/null
	echo $? > "$out/$name.rc"
	echo "vmlab: step $name exit $(cat "$out/$name.rc") after $(($(date +%s) - start)) s"
	# A step that passed and left no namespace and every NIC in place
	# cleaned up after itself; the full reset costs up to a minute of TCG.
	if [ "$(cat "$out/$name.rc")" = 0 ] && [ -z "$(ip netns list)" ] && nics_here; then
		continue
	fi
	start=$(date +%s)
	reset
	echo "vmlab: reset after $(($(date +%s) - start)) s"
done

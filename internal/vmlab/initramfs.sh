#!/bin/sh
# Builds the initramfs for one unpacked kernel (fetch.sh's <dir> and
# <release>): busybox-static, the modules the guest needs before its root is
# there, and init. Module dependencies are resolved by depmod and modprobe
# from the kernel's own modules.dep (6.1 builds virtio, virtio_ring and
# virtio_pci as modules; 6.12 and later build them in), and compressed
# modules are unpacked so busybox's insmod can load them.
# Usage: initramfs.sh DIR RELEASE OUT.cpio.gz
set -eu
dir=$1 rel=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
mods="virtio_pci virtio_net 9pnet_virtio 9p"
[ -f "$dir/lib/modules/$rel/modules.dep" ] || depmod -b "$dir" "$rel"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/mod" "$tmp/proc" "$tmp/sys" "$tmp/dev" "$tmp/root"
cp /bin/busybox "$tmp/bin/busybox"
: > "$tmp/mod/order"
for m in $mods; do
	# "insmod /path/x.ko.xz" lines in load order; builtin modules print
	# "builtin x" and need nothing.
	deps=$(modprobe -d "$dir" -S "$rel" --show-depends "$m")
	echo "$deps" | while read -r verb path _; do
		[ "$verb" = insmod ] || continue
		base=$(basename "$path")
		name=${base%.ko*}.ko
		grep -qx "$name" "$tmp/mod/order" && continue
		case $base in
		*.ko.xz) xz -dc "$path" > "$tmp/mod/$name" ;;
		*.ko.zst) zstd -qdc "$path" > "$tmp/mod/$name" ;;
		*.ko.gz) gzip -dc "$path" > "$tmp/mod/$name" ;;
		*) cp "$path" "$tmp/mod/$name" ;;
		esac
		echo "$name" >> "$tmp/mod/order"
	done
done
cp "$here/init.sh" "$tmp/init"
chmod +x "$tmp/init"
(cd "$tmp" && find . | cpio -o -H newc --quiet) | gzip -1 > "$out"

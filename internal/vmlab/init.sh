#!/bin/busybox sh
# The guest's first process (initramfs.sh packs it as /init): loads the
# modules initramfs.sh packed, mounts the host's root filesystem read-only
# over 9p with a tmpfs on /run, where the tests write (not on /tmp: the
# checkout the script runs from may be under the host's /tmp, as a CI
# clone often is), and hands over to the script
# named by vmlab.script= on the kernel command line (a path on the host's
# filesystem), which powers the guest off when it is done.
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /mod/order); do
	insmod "/mod/$m" || echo "vmlab: insmod $m failed"
done
script=
for a in $(cat /proc/cmdline); do
	case $a in vmlab.script=*) script=${a#vmlab.script=} ;; esac
done
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose root /root; then
	echo "vmlab: cannot mount the host's root over 9p"
	poweroff -f
fi
mount -t tmpfs -o mode=755 run /root/run
mount --move /proc /root/proc
mount --move /sys /root/sys
mount --move /dev /root/dev
exec switch_root /root /bin/sh "$script"

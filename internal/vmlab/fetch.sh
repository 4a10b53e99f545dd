#!/bin/sh
# Fetches Debian's kernel packages, as packages, through a private apt
# configuration, and unpacks them into the cache. The machine's own apt
# configuration is read once (for the mirror it already uses) and never
# written: the private sources list, package lists, cache and state live
# under $VMLAB_CACHE/apt.
#
# Kernels, each resolved from its suite's package list (newest version):
#   6.1   bookworm's linux-image-amd64
#   6.12  bookworm-backports' linux-image-amd64
#   new   trixie-backports' linux-image-amd64 (7.x: linux-image-* depends on
#         linux-binary-unsigned-* and linux-modules-*; every linux-* package
#         of the same version it depends on is fetched)
#
# Prints one line per kernel: "<name> <release> <dir>", where <dir> holds
# boot/vmlinuz-<release> and lib/modules/<release>. A second run fetches
# nothing: apt-get update is skipped while the lists are younger than
# VMLAB_LISTS_MAX_AGE seconds (default a day), and an unpacked kernel is
# reused. Usage: fetch.sh [6.1|6.12|new]...
set -eu
cache=${VMLAB_CACHE:-/var/cache/virtif-xdp}
apt=$cache/apt
kernels=$cache/kernels
mkdir -p "$apt/etc/preferences.d" "$apt/state/lists/partial" "$apt/cache/archives/partial" "$apt/debs" "$kernels"

mirror=${VMLAB_MIRROR:-}
if [ -z "$mirror" ]; then
	# The first Debian mirror the machine's own apt names (deb822 or
	# one-line format).
	mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
		awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }')
fi
if [ -z "$mirror" ]; then
	mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }')
fi
if [ -z "$mirror" ]; then
	echo "fetch.sh: no Debian mirror in /etc/apt; set VMLAB_MIRROR" >&2
	exit 1
fi

keyring=/usr/share/keyrings/debian-archive-keyring.gpg
cat > "$apt/etc/sources.list.new" <<SRC
deb [signed-by=$keyring] $mirror bookworm main
deb [signed-by=$keyring] $mirror bookworm-backports main
deb [signed-by=$keyring] $mirror trixie-backports main
SRC
mv "$apt/etc/sources.list.new" "$apt/etc/sources.list"

aptopts() {
	# Every folder apt reads or writes is ours; sourceparts=- drops the
	# machine's sources.list.d.
	echo "-o Dir::Etc::sourcelist=$apt/etc/sources.list -o Dir::Etc::sourceparts=- \
-o Dir::Etc::preferencesparts=$apt/etc/preferences.d -o Dir::Etc::preferences=$apt/etc/preferences \
-o Dir::State=$apt/state -o Dir::State::status=$apt/state/status \
-o Dir::Cache=$apt/cache -o APT::Architecture=amd64 -o APT::Architectures=amd64 \
-o APT::Sandbox::User=root -o Acquire::Languages=none -o APT::Get::List-Cleanup=0 -qq"
}
[ -f "$apt/state/status" ] || : > "$apt/state/status"

stamp=$apt/state/updated
maxage=${VMLAB_LISTS_MAX_AGE:-86400}
now=$(date +%s)
if [ ! -f "$stamp" ] || [ $((now - $(cat "$stamp"))) -gt "$maxage" ]; then
	echo "fetch.sh: apt-get update (private lists in $apt)" >&2
	# shellcheck disable=SC2046
	apt-get $(aptopts) update >&2
	echo "$now" > "$stamp"
fi

# depends PKG/SUITE: the linux-* packages PKG depends on, one per line.
depends() {
	# shellcheck disable=SC2046
	apt-cache $(aptopts) show "$1" 2>/dev/null | awk '/^Depends:|^Pre-Depends:/ { sub(/^[A-Za-z-]+: */, ""); print; exit }' |
		tr ',|' '\n\n' | sed 's/ *(.*//; s/^ *//; s/:any$//' | grep '^linux-' || true
}

# version PKG/SUITE: the newest version of PKG in SUITE.
version() {
	# shellcheck disable=SC2046
	apt-cache $(aptopts) show "$1" 2>/dev/null | awk '/^Version:/ { print $2; exit }'
}

# fetch NAME SUITE: resolves linux-image-amd64 of SUITE to the concrete
# packages, downloads and unpacks them.
fetch() {
	name=$1 suite=$2
	meta=$(depends "linux-image-amd64/$suite" | grep '^linux-image-' | head -n1)
	if [ -z "$meta" ]; then
		echo "fetch.sh: linux-image-amd64 has no linux-image-* dependency in $suite" >&2
		exit 1
	fi
	ver=$(version "$meta/$suite")
	# The image and the linux-* packages of the same source it depends on
	# (7.x: linux-binary-unsigned-*, linux-modules-*).
	pkgs="$meta"
	for d in $(depends "$meta/$suite"); do
		case $d in
		linux-base | linux-initramfs-tool | linux-image-* | linux-kbuild-*) ;;
		linux-*) [ "$(version "$d/$suite")" = "$ver" ] && pkgs="$pkgs $d" ;;
		esac
	done
	rel=${meta#linux-image-}
	dir=$kernels/$rel
	if [ ! -f "$dir/.done" ] || [ "$(cat "$dir/.done")" != "$ver $pkgs" ]; then
		rm -rf "$dir"
		mkdir -p "$dir"
		for p in $pkgs; do
			deb=$(ls "$apt/debs/${p}_"*"_amd64.deb" 2>/dev/null | grep -F "_$(echo "$ver" | sed 's/^[0-9]*://')_" || true)
			if [ -z "$deb" ]; then
				echo "fetch.sh: download $p=$ver" >&2
				# shellcheck disable=SC2046
				(cd "$apt/debs" && apt-get $(aptopts) download "$p=$ver" >&2)
				deb=$(ls "$apt/debs/${p}_"*"_amd64.deb" | grep -F "_$(echo "$ver" | sed 's/^[0-9]*://')_")
			fi
			dpkg-deb -x "$deb" "$dir"
		done
		# From 7.x the packages use the merged /usr layout and keep the
		# image beside the modules; give every kernel the same layout.
		if [ ! -e "$dir/lib/modules" ] && [ -d "$dir/usr/lib/modules" ]; then
			ln -s usr/lib "$dir/lib"
		fi
		if [ ! -e "$dir/boot/vmlinuz-$rel" ] && [ -f "$dir/lib/modules/$rel/vmlinuz" ]; then
			mkdir -p "$dir/boot"
			ln -s "../lib/modules/$rel/vmlinuz" "$dir/boot/vmlinuz-$rel"
		fi
		echo "$ver $pkgs" > "$dir/.done"
	fi
	[ -f "$dir/boot/vmlinuz-$rel" ] || { echo "fetch.sh: $dir/boot/vmlinuz-$rel missing" >&2; exit 1; }
	[ -d "$dir/lib/modules/$rel" ] || { echo "fetch.sh: $dir/lib/modules/$rel missing" >&2; exit 1; }
	echo "$name $rel $dir"
}

[ $# -gt 0 ] || set -- 6.1 6.12 new
for k in "$@"; do
	case $k in
	6.1) fetch 6.1 bookworm ;;
	6.12) fetch 6.12 bookworm-backports ;;
	new) fetch new trixie-backports ;;
	*) echo "fetch.sh: unknown kernel $k (6.1, 6.12, new)" >&2; exit 2 ;;
	esac
done

#!/usr/bin/env bash
# Regenerates the XDP steering object (steer_bpfel.o) and its Go loader
# (steer_bpfel.go) from steer.c, and the switch's (vswitch_bpfel.{o,go})
# from vswitch.c, with bpf2go, installing Debian's clang-14,
# llvm-14 and libbpf-dev first when they are missing.
#
#   bpf/generate.sh          regenerate in place
#   bpf/generate.sh --check  regenerate into a temporary directory and fail
#                            if the committed files differ from the source
#
# The toolchain is pinned (clang-14 from Debian bookworm, bpf2go v0.22.0) and
# bpf2go strips DWARF, drops the clang ident and maps the source directory to
# a relative path, so the object is byte-for-byte reproducible.
set -euo pipefail
cd "$(dirname "$0")"

BPF2GO=github.com/cilium/ebpf/cmd/bpf2go@v0.22.0
CC=clang-14
STRIP=llvm-strip-14
# clang -target bpf does not search the multiarch include folder, where
# Debian keeps asm/types.h (pulled in by linux/types.h); name it.
MULTIARCH=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
CFLAGS="-O2 -g -Wall -Werror -I/usr/include/$MULTIARCH"

check=0
case "${1:-}" in
"") ;;
--check) check=1 ;;
*)
	echo "usage: $0 [--check]" >&2
	exit 2
	;;
esac

need=""
command -v "$CC" >/dev/null 2>&1 || need="$need clang-14"
command -v "$STRIP" >/dev/null 2>&1 || need="$need llvm-14"
[ -f /usr/include/bpf/bpf_helpers.h ] || need="$need libbpf-dev"
[ -f /usr/include/linux/bpf.h ] || need="$need linux-libc-dev"
if [ -n "$need" ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "generate.sh: missing$need; install as root: apt-get install$need" >&2
		exit 1
	fi
	echo "generate.sh: installing$need"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi

out=.
if [ "$check" = 1 ]; then
	out=$(mktemp -d)
	trap 'rm -rf "$out"' EXIT
fi

GOPACKAGE=bpf go run "$BPF2GO" -output-dir "$out" -target bpfel \
	-cc "$CC" -strip "$STRIP" -cflags "$CFLAGS" steer steer.c
# The switch's programs (virtif-xdp switch), built the same way.
GOPACKAGE=bpf go run "$BPF2GO" -output-dir "$out" -target bpfel \
	-cc "$CC" -strip "$STRIP" -cflags "$CFLAGS" vswitch vswitch.c

if [ "$check" = 1 ]; then
	status=0
	for f in steer_bpfel.o steer_bpfel.go vswitch_bpfel.o vswitch_bpfel.go; do
		if ! cmp -s "$out/$f" "$f"; then
			echo "generate.sh --check: bpf/$f does not match bpf/${f%_bpfel.*}.c; run bpf/generate.sh and commit the result" >&2
			status=1
		fi
	done
	[ "$status" = 0 ] && echo "generate.sh --check: bpf/steer_bpfel.{o,go} and bpf/vswitch_bpfel.{o,go} match bpf/steer.c and bpf/vswitch.c (with bpf/wire.h)"
	exit "$status"
fi

# virtif-xdp — build, test and benchmark. Everything runs as root on Linux;
# `make deps` installs the few Debian packages the tests and tools call.
GO        ?= go
PKGS      ?= ./...
FUZZTIME  ?= 5s
# Debian packages the tests use at run time (tcpdump reads our pcap files,
# ping, ip, ethtool and sysctl drive the labs, curl is one more HTTP client,
# capsh runs the privilege test as nobody).
# bench/deps.sh adds the C toolchain, libxdp and perf for the benchmarks;
# bpf/generate.sh adds clang-14 for the BPF check. internal/depcheck's
# TestMakeDepsInstallTools fails when the tree runs a program none installs.
TEST_DEBS := tcpdump iputils-ping iproute2 libcap2-bin ethtool procps curl

# Debian packages the kernel lab (make test-kernels) uses: QEMU, the guest's
# busybox, and the tools that build its initramfs and set up its NICs.
VM_DEBS := qemu-system-x86 busybox-static cpio kmod xz-utils zstd ethtool iproute2

.PHONY: all build test race fuzz soak vet lint bench bench-go deps vmdeps generate bpfcheck demo clean test-kernels test-kernels-smoke kernels-ci

all: build

build:
	$(GO) build $(PKGS)
	$(GO) build -o virtif-xdp ./cmd/virtif-xdp

# The main job: builds a veth lab, runs vif0 on it over AF_XDP, checks
# traffic both ways, prints what happened and tears the lab down.
demo: build
	./virtif-xdp demo

# Installs, on a fresh Debian machine, what the tests and benchmarks call.
deps:
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	sh bench/deps.sh

# Installs what the kernel lab needs (only what is missing).
vmdeps:
	@missing=""; for p in $(VM_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Boots Debian's 6.1, 6.12 and newest kernel (fetched as packages through a
# private apt configuration, cached in /var/cache/virtif-xdp) under QEMU and
# runs the integration tests and the demo there on virtio-net NIC pairs;
# writes bench/results/kernels.{md,json}. KERNELS picks some of them.
KERNELS ?= 6.1 6.12 new
test-kernels: vmdeps deps
	sh internal/vmlab/kernels.sh full $(KERNELS)

# The same with a few tests per kernel (steering, send, two vifs, two
# queues, a vanishing NIC, zero-copy) and the demo: bench/results/kernels-smoke.*.
test-kernels-smoke: vmdeps deps
	sh internal/vmlab/kernels.sh smoke $(KERNELS)

# Regenerates the XDP object from bpf/steer.c (installs clang-14 if missing).
generate:
	bpf/generate.sh

# Fails if the committed XDP object is not what bpf/steer.c compiles to.
bpfcheck:
	bpf/generate.sh --check

vet:
	$(GO) vet $(PKGS)

# gofmt, and the library builds off Linux: the Linux-only packages are
# excluded there, virtif/xdp answers errors.ErrUnsupported.
lint: vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	GOOS=darwin $(GO) build ./...
	GOOS=darwin $(GO) vet ./virtif/... ./netstack/...

race:
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

# Every fuzz target, a few seconds each (FUZZTIME).
# Go's fuzzing coordinator (before go1.27, golang/go#75804) can fail a target
# with a bare "context deadline exceeded" as -fuzztime runs out, having found
# nothing; a real finding always writes its input ("Failing input written
# to"). Such a run is tried again, twice at most; anything else fails.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
		for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/^func //'); do \
			for try in 1 2 3; do \
				echo "fuzz $$pkg $$f"; \
				if $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg > .fuzz.out 2>&1; then \
					cat .fuzz.out; break; fi; \
				cat .fuzz.out; \
				if [ $$try -lt 3 ] && grep -q 'context deadline exceeded' .fuzz.out && ! grep -q 'Failing input written to' .fuzz.out; then \
					echo "fuzz $$f: the coordinator's deadline race (golang/go#75804), no input found: again"; continue; fi; \
				rm -f .fuzz.out; exit 1; \
			done; \
		done; \
	done; rm -f .fuzz.out

test: deps lint bpfcheck race fuzz kernels-ci

# What make test runs of the kernel lab: the smoke profile on every kernel of
# the matrix, its matrix written to the cache (VMLAB_CACHE/out) instead of
# bench/results, so a test run leaves the tree as it was.
kernels-ci: vmdeps deps
	VMLAB_RESULTS=$${VMLAB_CACHE:-/var/cache/virtif-xdp}/out sh internal/vmlab/kernels.sh smoke $(KERNELS)

# The churn and soak test at length: make test runs 1000 cycles.
SOAK_CYCLES ?= 20000
soak:
	$(GO) test -count=1 -timeout 60m -run '^TestIntegrationChurnSoak$$' -v ./virtif/xdp/ -args -soak.cycles=$(SOAK_CYCLES)

# The comparison the README shows: virtif-xdp against the kernel's XDP_DROP,
# C on libxdp, gVisor's pkg/xdp, DPDK's af_xdp PMD and AF_PACKET, the CPU
# cost per frame at a paced rate and request/response latency in three wait
# modes, interleaved, written to bench/results and spliced into README.md;
# then TCP bulk transfer into the userspace stack against gVisor's AF_PACKET
# endpoint and the kernel's TCP at MTU 1500 and 9000 (tables spliced into
# README.md too), and rxdrop/l2fwd through the switch's tenant port against
# the direct path (bench/results/switch.txt, read in switch.md).
BENCH_ROUNDS ?= 5
BENCH_SECONDS ?= 3
TCP_BENCH = $(GO) test -run '^$$' -bench TCPCompare -benchtime 1x ./netstack/
# $(call bench_into,COMMAND,FILE): COMMAND's output into FILE and shown,
# failing when COMMAND fails (sh has no pipefail for `| tee`).
bench_into = $(1) > $(2); s=$$?; cat $(2); exit $$s
bench: deps
	$(GO) run ./bench/harness -rounds $(BENCH_ROUNDS) -seconds $(BENCH_SECONDS) -out bench/results -readme README.md
	$(call bench_into,TCP_ROUNDS=$(BENCH_ROUNDS) $(TCP_BENCH),bench/results/tcp.txt)
	$(call bench_into,TCP_MTU=9000 TCP_ROUNDS=$(BENCH_ROUNDS) $(TCP_BENCH),bench/results/tcp9000.txt)
	$(GO) run ./bench/harness -tcp bench/results/tcp.txt,bench/results/tcp9000.txt -readme README.md
	$(call bench_into,$(GO) test -run '^$$' -bench SwitchVsDirect -benchtime 1x ./cmd/virtif-xdp/,bench/results/switch.txt)

# Every Go benchmark (ring operations, send/deliver paths, rxdrop/txonly over
# veth): packets per second and allocations.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

clean:
	$(GO) clean -testcache

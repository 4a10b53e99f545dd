package bpf

// The object is built for little-endian BPF only (bpfel: amd64, arm64, ...).
// generate.sh pins the toolchain so that the committed steer_bpfel.o is
// reproducible and `generate.sh --check` can compare it byte for byte.
//go:generate ./generate.sh

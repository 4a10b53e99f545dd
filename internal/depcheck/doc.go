// Package depcheck holds only a test: TestMakeDepsInstallTools checks that
// every program the code, the tests and the scripts of the tree run is in
// a Debian package that `make deps` or `make vmdeps` installs (or that
// bpf/generate.sh installs for itself), so that a fresh machine passes
// `make test`.
package depcheck

//go:build !race

package virtif

const raceEnabled = false

package virtif

import "strings"

// Flags are the interface flags. The values are NetBSD's IFF_* from
// <net/if.h>, so they read the same as ifconfig's output there.
type Flags uint32

const (
	FlagUp        Flags = 0x0001 // administratively up (Up)
	FlagBroadcast Flags = 0x0002 // broadcast capable, set at clone
	FlagRunning   Flags = 0x0040 // resources allocated: set by virtif_init, cleared by virtif_stop
	FlagPromisc   Flags = 0x0100 // receives every frame (SetPromisc)
	FlagOActive   Flags = 0x0400 // output in progress: frames queued for or inside virtif_start
	FlagSimplex   Flags = 0x0800 // cannot hear its own transmissions, set at clone
	FlagMulticast Flags = 0x8000 // multicast capable, set at clone
)

var flagNames = []struct {
	f    Flags
	name string
}{
	{FlagUp, "UP"}, {FlagBroadcast, "BROADCAST"}, {FlagRunning, "RUNNING"},
	{FlagPromisc, "PROMISC"}, {FlagOActive, "OACTIVE"}, {FlagSimplex, "SIMPLEX"},
	{FlagMulticast, "MULTICAST"},
}

// String formats the flags as ifconfig does: "UP,BROADCAST,RUNNING".
func (f Flags) String() string {
	var b strings.Builder
	for _, n := range flagNames {
		if f&n.f != 0 {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(n.name)
		}
	}
	return b.String()
}

package mem_test

import (
	"fmt"
	"net"

	"github.com/virtif-xdp/virtif-xdp/virtif"
	_ "github.com/virtif-xdp/virtif-xdp/virtif/mem"
)

// Two interfaces on the in-memory segment "seg0" exchange a frame each way.
func Example() {
	c, err := virtif.NewCloner(virtif.ClonerConfig{})
	if err != nil {
		panic(err)
	}
	defer c.Close()

	got := make(chan string)
	var vifs [2]*virtif.Interface
	for n := range vifs {
		ifp, err := c.Create() // vif0, vif1
		if err != nil {
			panic(err)
		}
		if err := ifp.SetLinkStr("mem:seg0"); err != nil {
			panic(err)
		}
		name := ifp.Name()
		ifp.SetInput(func(frame []byte, promisc bool) {
			// frame is valid only during the call: format it now.
			got <- fmt.Sprintf("%s got %q (%d bytes)", name, frame[14:], len(frame))
		})
		if err := ifp.Up(); err != nil {
			panic(err)
		}
		vifs[n] = ifp
	}
	// Fixed MACs so the output is stable (b2:0a:RR:... has a random byte).
	for n, ifp := range vifs {
		_ = ifp.Down()
		if err := ifp.SetHardwareAddr(net.HardwareAddr{0x02, 0, 0, 0, 0, byte(n + 1)}); err != nil {
			panic(err)
		}
		_ = ifp.Up()
	}
	send := func(from, to *virtif.Interface, payload string) {
		hdr := append(append(to.HardwareAddr(), from.HardwareAddr()...), 0x88, 0xb5) // local experimental EtherType
		if err := from.Output([][]byte{hdr, []byte(payload)}); err != nil {
			panic(err)
		}
		fmt.Println(<-got)
	}
	send(vifs[0], vifs[1], "hello vif1")
	send(vifs[1], vifs[0], "hello vif0")
	st := vifs[0].Stats()
	fmt.Printf("vif0: out %d frames %d bytes, in %d frames %d bytes\n", st.OPackets, st.OBytes, st.IPackets, st.IBytes)
	// Output:
	// vif1 got "hello vif1" (24 bytes)
	// vif0 got "hello vif0" (24 bytes)
	// vif0: out 1 frames 24 bytes, in 1 frames 24 bytes
}

//go:build linux

package trafficgen

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

const (
	// liveChunk bounds one BPF_PROG_RUN call, seconds at the generator's
	// rate. Each call sets up and tears down the run's page pool, which
	// costs tens of milliseconds (bench/results/notes.md), so calls must be
	// long; timed and paced runs are ended by a signal instead.
	liveChunk = 1 << 24
	// liveMaxFrame: live mode takes at most a page less XDP headroom and
	// skb_shared_info; 3 KiB fits every 4 KiB-page kernel.
	liveMaxFrame = 3072
)

// progRunAttr is the BPF_PROG_RUN member of union bpf_attr (80 bytes).
type progRunAttr struct {
	progFD      uint32
	retval      uint32
	dataSizeIn  uint32
	dataSizeOut uint32
	dataIn      uint64
	dataOut     uint64
	repeat      uint32
	duration    uint32
	ctxSizeIn   uint32
	ctxSizeOut  uint32
	ctxIn       uint64
	ctxOut      uint64
	flags       uint32
	cpu         uint32
	batchSize   uint32
	_           uint32
}

// xdpMD is struct xdp_md, the context handed to BPF_PROG_RUN.
type xdpMD struct {
	data, dataEnd, dataMeta      uint32
	ingressIfindex, rxQueueIndex uint32
	egressIfindex                uint32
}

// Live transmits copies of a frame out of a network interface with
// BPF_PROG_RUN in live-frame mode (BPF_F_TEST_XDP_LIVE_FRAMES, Linux 5.18):
// the kernel runs an XDP program that returns XDP_TX over each copy as if
// the frame had arrived on the interface, and so sends it back out. On the
// peer end of a veth pair every copy arrives at the other end — which must
// have an XDP program attached (a Sink, an AF_XDP socket's program), or veth
// drops the frames.
//
// The program counts the frames it runs in a per-CPU map, so Send reports
// exactly how many were sent even when a signal cuts a run short. A frame
// the receiving veth cannot queue (its 256-entry ring is full) is dropped
// there and counted in that end's rx_dropped, not here.
//
// Live keeps one OS thread inside the network namespace NewLive was called
// from, so its methods may be called from any goroutine.
type Live struct {
	mu      sync.Mutex // serialises Send, SendPaced and Close
	c       *counted
	pace    *pacer
	ifindex int
	tid     int // the worker thread, for the signal that ends a run
	req     chan liveReq
	res     chan liveRes
	closed  bool

	// Owned by the worker; on the heap so the kernel reads stable memory.
	attr progRunAttr
	ctx  xdpMD
}

type liveReq struct {
	frame []byte
	count int
	dur   time.Duration // > 0: send for this long instead of count frames
	pps   int
	cpu   int // >= 0: pin the worker thread instead of sending
}

type liveRes struct {
	n   int
	err error
}

// NewLive loads the generator for the interface ifindex. Call it on a locked
// thread inside the interface's network namespace (netlab's Lab.Do(Peer,
// ...)): the kernel resolves the ifindex in the calling thread's namespace,
// and Live keeps running there. Needs CAP_BPF + CAP_NET_ADMIN (root) and
// CAP_SYS_ADMIN to enter the namespace from its own thread.
func NewLive(ifindex int) (*Live, error) {
	nsfd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("trafficgen: open own network namespace: %w", os.NewSyscallError("open", err))
	}
	c, err := loadCounted("tg_live_tx", xdpTX, false, 0)
	if err != nil {
		unix.Close(nsfd)
		return nil, err
	}
	pace, err := loadPacer()
	if err != nil {
		unix.Close(nsfd)
		c.close()
		return nil, err
	}
	l := &Live{c: c, pace: pace, ifindex: ifindex, req: make(chan liveReq), res: make(chan liveRes)}
	started := make(chan error, 1)
	go l.worker(nsfd, started)
	if err := <-started; err != nil {
		c.close()
		pace.close()
		return nil, err
	}
	return l, nil
}

// worker owns a thread in the generator's namespace for the Live's life. It
// never unlocks the thread, so the runtime discards the thread when it ends.
func (l *Live) worker(nsfd int, started chan<- error) {
	runtime.LockOSThread()
	err := unix.Setns(nsfd, unix.CLONE_NEWNET)
	unix.Close(nsfd)
	if err != nil {
		started <- fmt.Errorf("trafficgen: enter network namespace: %w", os.NewSyscallError("setns", err))
		return
	}
	l.tid = unix.Gettid()
	started <- nil
	for r := range l.req {
		var res liveRes
		if r.cpu >= 0 {
			var set unix.CPUSet
			set.Set(r.cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				res.err = fmt.Errorf("trafficgen: pin generator to CPU %d: %w", r.cpu, os.NewSyscallError("sched_setaffinity", err))
			}
			l.res <- res
			continue
		}
		switch {
		case r.pps > 0:
			res.n, res.err = l.paced(r.frame, r.count, r.pps)
		case r.dur > 0:
			res.n, res.err = l.timed(r.frame, r.dur)
		default:
			res.n, res.err = l.run(r.frame, r.count)
		}
		l.res <- res
	}
}

// Send transmits count copies of frame and returns how many were sent.
// frame must be 14..3072 bytes (EINVAL otherwise). A kernel without live
// frames answers EINVAL or ENOTSUPP; an ifindex that is not in the namespace
// gives ENODEV.
func (l *Live) Send(frame []byte, count int) (int, error) {
	return l.do(liveReq{frame: frame, count: count, cpu: -1})
}

// Pin binds the generator's thread to one CPU. The receiving veth's NAPI
// then runs there too (XDP_TX schedules it on the sending CPU), which keeps
// the other CPUs for the program under test. A CPU outside the process's
// affinity mask gives EINVAL.
func (l *Live) Pin(cpu int) error {
	if cpu < 0 {
		return fmt.Errorf("trafficgen: pin to CPU %d: %w", cpu, unix.EINVAL)
	}
	return l.call(liveReq{cpu: cpu}).err
}

// SendFor transmits copies of frame for about d and returns how many were
// sent. One long run, ended by a signal to the generator's thread (the
// kernel checks for signals every batch of 64), so its cost is paid once.
func (l *Live) SendFor(frame []byte, d time.Duration) (int, error) {
	if d <= 0 {
		return 0, nil
	}
	return l.do(liveReq{frame: frame, count: 1, dur: d, cpu: -1})
}

// SendPaced transmits count copies of frame at pps frames a second, evenly
// spaced (a stall is caught up by at most 64 frames at once), so a receiver
// that keeps up loses nothing. It returns how many were sent. The pacing is
// done by the XDP program, which drops the copies whose time has not come:
// the generator's CPU is busy for the whole run.
func (l *Live) SendPaced(frame []byte, count, pps int) (int, error) {
	if pps <= 0 || pps > 1e9 {
		return 0, fmt.Errorf("trafficgen: pace %d frames/s: %w", pps, unix.EINVAL)
	}
	return l.do(liveReq{frame: frame, count: count, pps: pps, cpu: -1})
}

func (l *Live) do(r liveReq) (int, error) {
	if len(r.frame) < ethLen || len(r.frame) > liveMaxFrame {
		return 0, fmt.Errorf("trafficgen: live frame of %d bytes (want %d..%d): %w", len(r.frame), ethLen, liveMaxFrame, unix.EINVAL)
	}
	if r.count <= 0 {
		return 0, nil
	}
	res := l.call(r)
	return res.n, res.err
}

// call hands r to the worker thread and waits for its answer.
func (l *Live) call(r liveReq) liveRes {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return liveRes{err: fmt.Errorf("trafficgen: %w", os.ErrClosed)}
	}
	l.req <- r
	return <-l.res
}

// run sends count copies in chunks; the counter in the program says how
// many ran, which is exact even when a run ends early with EINTR.
func (l *Live) run(frame []byte, count int) (int, error) {
	base, err := l.c.total()
	if err != nil {
		return 0, err
	}
	sent := 0
	for sent < count {
		n := min(count-sent, liveChunk)
		err := l.progRun(l.c.prog, frame, n)
		if err != nil && !errors.Is(err, unix.EINTR) {
			return sent, err
		}
		if err == nil {
			sent += n
			continue
		}
		now, terr := l.c.total()
		if terr != nil {
			return sent, terr
		}
		sent = int(now - base)
	}
	return sent, nil
}

// timed sends for d in long runs; a signal ends the last one.
func (l *Live) timed(frame []byte, d time.Duration) (int, error) {
	base, err := l.c.total()
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(d)
	done := func() bool { return !time.Now().Before(deadline) }
	stop := l.interruptWhen(done)
	defer stop()
	for !done() {
		if err = l.progRun(l.c.prog, frame, liveChunk); err != nil && !errors.Is(err, unix.EINTR) {
			break
		}
		err = nil
	}
	now, terr := l.c.total()
	return int(now - base), errors.Join(err, terr)
}

// paced arms the pacing program and runs it until count frames are out.
func (l *Live) paced(frame []byte, count, pps int) (int, error) {
	_, base, err := l.pace.progress()
	if err != nil {
		return 0, err
	}
	if err := l.pace.start(uint64(count), uint64(1e9/pps)); err != nil {
		return 0, err
	}
	done := func() bool {
		rem, _, err := l.pace.progress()
		return err != nil || rem == 0
	}
	stop := l.interruptWhen(done)
	defer stop()
	for !done() {
		if err = l.progRun(l.pace.prog, frame, 1<<31); err != nil && !errors.Is(err, unix.EINTR) {
			break
		}
		err = nil
	}
	_, sent, perr := l.pace.progress()
	if perr == nil {
		// Leave nothing armed should a signal have ended the run early.
		perr = l.pace.start(0, 0)
	}
	return int(sent - base), errors.Join(err, perr)
}

// interruptWhen signals the worker thread every millisecond once cond
// holds, until stop is called: a pending signal makes BPF_PROG_RUN return
// EINTR after its current batch. SIGURG is the Go runtime's own preemption
// signal, which it ignores on a thread in a system call.
func (l *Live) interruptWhen(cond func() bool) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				if cond() {
					_ = unix.Tgkill(unix.Getpid(), l.tid, unix.SIGURG)
				}
			}
		}
	}()
	return func() { close(quit); wg.Wait() }
}

// progRun runs prog repeat times over frame in live mode.
func (l *Live) progRun(prog *ebpf.Program, frame []byte, repeat int) error {
	// data_end must equal the frame length; rx queue 0; no egress.
	l.ctx = xdpMD{dataEnd: uint32(len(frame)), ingressIfindex: uint32(l.ifindex)}
	l.attr = progRunAttr{
		progFD:     uint32(prog.FD()),
		dataSizeIn: uint32(len(frame)),
		dataIn:     uint64(uintptr(unsafe.Pointer(&frame[0]))),
		repeat:     uint32(repeat),
		ctxSizeIn:  uint32(unsafe.Sizeof(l.ctx)),
		ctxIn:      uint64(uintptr(unsafe.Pointer(&l.ctx))),
		flags:      unix.BPF_F_TEST_XDP_LIVE_FRAMES, // Linux 5.18
	}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_RUN, uintptr(unsafe.Pointer(&l.attr)), unsafe.Sizeof(l.attr))
	runtime.KeepAlive(frame)
	if errno != 0 {
		return fmt.Errorf("trafficgen: live BPF_PROG_RUN on ifindex %d: %w", l.ifindex, os.NewSyscallError("bpf", errno))
	}
	return nil
}

// Sent returns how many frames the generator has sent since NewLive.
func (l *Live) Sent() (uint64, error) {
	n, err := l.c.total()
	if err != nil {
		return 0, err
	}
	_, p, err := l.pace.progress()
	return n + p, err
}

// Close stops the generator's thread and unloads the program. It is safe to
// call more than once.
func (l *Live) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	close(l.req)
	return errors.Join(l.c.close(), l.pace.close())
}

// ErrLiveRefused is what LiveAvailable wraps when the kernel refuses
// BPF_PROG_RUN in live-frame mode altogether (seen: a 6.18.44 sandbox build
// answers EPERM to root, whatever the ifindex).
var ErrLiveRefused = errors.New("the kernel refuses live-frame BPF_PROG_RUN (BPF_F_TEST_XDP_LIVE_FRAMES)")

var liveProbe struct {
	once sync.Once
	err  error
}

// LiveAvailable reports, once per process, whether this kernel runs XDP
// programs in live-frame mode: nil if it does, an error wrapping
// ErrLiveRefused if it refuses them, or why the probe could not run. The
// probe sends nothing: it names an ifindex that does not exist, which a
// kernel that has live frames answers with ENODEV.
func LiveAvailable() error {
	liveProbe.once.Do(func() {
		c, err := loadCounted("tg_live_probe", xdpTX, false, 0)
		if err != nil {
			liveProbe.err = err
			return
		}
		defer c.close()
		l := &Live{ifindex: 1<<31 - 1}
		err = l.progRun(c.prog, make([]byte, 64), 1)
		if err != nil && !errors.Is(err, unix.ENODEV) {
			liveProbe.err = fmt.Errorf("%w: %w", ErrLiveRefused, err)
		}
	})
	return liveProbe.err
}

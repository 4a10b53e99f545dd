//go:build linux

package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/virtif-xdp/virtif-xdp/netstack"
)

// vifCollector turns the vif's counters into Prometheus metrics when
// scraped: one Stats() snapshot per scrape, nothing on the data path.
// It is an unchecked collector (Describe sends nothing) because the
// backend's counter names are only known from a snapshot.
type vifCollector struct {
	v      *vif
	mode   string            // the subcommand serving the vif
	labels prometheus.Labels // vif, link
	info   *prometheus.Desc
}

func newVifCollector(mode string, v *vif) *vifCollector {
	link, _ := v.ifc.LinkStr()
	return &vifCollector{
		v:      v,
		mode:   mode,
		labels: prometheus.Labels{"vif": v.ifc.Name(), "link": link},
		info: prometheus.NewDesc("virtif_info", "The vif and how its NIC is served (always 1).",
			[]string{"mac", "attach", "bind", "queues", "mode"},
			prometheus.Labels{"vif": v.ifc.Name(), "link": link}),
	}
}

func (c *vifCollector) Describe(chan<- *prometheus.Desc) {}

func (c *vifCollector) Collect(ch chan<- prometheus.Metric) {
	info := c.v.be.Info()
	ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1,
		c.v.ifc.HardwareAddr().String(), info.Attach, info.Mode, intsString(info.Queues), c.mode)

	st := c.v.ifc.Stats()
	counter := func(name, help string, v uint64, kv ...string) {
		var names, values []string
		for i := 0; i+1 < len(kv); i += 2 {
			names = append(names, kv[i])
			values = append(values, kv[i+1])
		}
		d := prometheus.NewDesc(name, help, names, c.labels)
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), values...)
	}
	counter("virtif_rx_packets_total", "Frames handed to the vif's input handler (if_ipackets).", st.IPackets)
	counter("virtif_rx_bytes_total", "Bytes of those frames.", st.IBytes)
	counter("virtif_rx_errors_total", "Frames shorter than an Ethernet header.", st.IErrors)
	counter("virtif_rx_multicast_packets_total", "Received multicast and broadcast frames.", st.IMcasts)
	rxDrop := "Frames the vif dropped on receive, by reason."
	counter("virtif_rx_dropped_total", rxDrop, st.IFiltered, "reason", "filtered")
	counter("virtif_rx_dropped_total", rxDrop, st.INoHandler, "reason", "no_handler")
	counter("virtif_rx_dropped_total", rxDrop, st.IDrops-st.IFiltered-st.INoHandler, "reason", "not_running")
	counter("virtif_tx_packets_total", "Frames the backend accepted (if_opackets).", st.OPackets)
	counter("virtif_tx_bytes_total", "Bytes of those frames.", st.OBytes)
	counter("virtif_tx_errors_total", "Empty or oversized frames and backend send errors.", st.OErrors)
	counter("virtif_tx_dropped_total", "Frames dropped on send: queue full, interface down.", st.ODrops)
	counter("virtif_tx_multicast_packets_total", "Sent multicast and broadcast frames.", st.OMcasts)
	counter("virtif_tx_coalesced_total", "Sent frames of more than 32 segments, coalesced.", st.Coalesced)
	for _, s := range st.Backend {
		switch {
		case strings.HasPrefix(s.Name, "xdp_host_"):
			counter("virtif_xdp_host_frames_total",
				"Frames the XDP program left to the host kernel, by rule (NIC-wide).",
				s.Value, "rule", strings.TrimPrefix(s.Name, "xdp_host_"))
		case strings.HasPrefix(s.Name, "xdp_"):
			counter("virtif_xdp_rule_frames_total",
				"Frames the XDP program steered to this vif, by rule (nosocket: passed, its socket missing).",
				s.Value, "rule", strings.TrimPrefix(s.Name, "xdp_"))
		case strings.HasPrefix(s.Name, "xsk_"):
			counter("virtif_"+s.Name+"_total",
				"Kernel XDP socket statistic "+strings.TrimPrefix(s.Name, "xsk_")+" (XDP_STATISTICS), summed over the NIC's queues.", s.Value)
		default:
			counter("virtif_backend_"+s.Name+"_total", "AF_XDP backend counter "+s.Name+".", s.Value)
		}
	}
}

// serveMetrics listens on addr and serves /metrics for the vif and the
// extra collectors.
func serveMetrics(addr, mode string, v *vif, extra ...prometheus.Collector) (*http.Server, net.Listener, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	if v != nil { // nil for the switch, which has no vif
		reg.MustRegister(newVifCollector(mode, v))
	}
	reg.MustRegister(extra...)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("metrics server stopped", "err", err)
		}
	}()
	return srv, ln, nil
}

func intsString(v []int) string {
	var b strings.Builder
	for i, x := range v {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, x)
	}
	return b.String()
}

// hostCollector turns what run's userspace host answered into metrics.
type hostCollector struct {
	h                          *netstack.Host
	echoReplies, tcp, echo, rq *prometheus.Desc
	conns                      *prometheus.Desc
}

func newHostCollector(h *netstack.Host, labels prometheus.Labels) *hostCollector {
	return &hostCollector{
		h: h,
		echoReplies: prometheus.NewDesc("virtif_stack_icmp_echo_replies_total",
			"Echo replies the userspace stack sent (it answered a ping), by family.", []string{"family"}, labels),
		tcp: prometheus.NewDesc("virtif_stack_tcp_accepted_total",
			"TCP connections the userspace stack accepted (any service).", nil, labels),
		echo: prometheus.NewDesc("virtif_stack_echo_connections_total",
			"Connections to the userspace host's TCP echo service.", nil, labels),
		rq: prometheus.NewDesc("virtif_stack_http_requests_total",
			"Requests to the userspace host's status page.", nil, labels),
		conns: prometheus.NewDesc("virtif_stack_connections_closed_total",
			"Service connections the userspace host closed for its limits: refused (--max-conns were open) or timed_out (--idle-timeout, --write-timeout).",
			[]string{"reason"}, labels),
	}
}

func (c *hostCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.echoReplies
	ch <- c.tcp
	ch <- c.echo
	ch <- c.rq
	ch <- c.conns
}

func (c *hostCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.h.Counters()
	ch <- prometheus.MustNewConstMetric(c.echoReplies, prometheus.CounterValue, float64(n.EchoRepliesV4), "ipv4")
	ch <- prometheus.MustNewConstMetric(c.echoReplies, prometheus.CounterValue, float64(n.EchoRepliesV6), "ipv6")
	ch <- prometheus.MustNewConstMetric(c.tcp, prometheus.CounterValue, float64(n.TCPAccepted))
	ch <- prometheus.MustNewConstMetric(c.echo, prometheus.CounterValue, float64(n.EchoConns))
	ch <- prometheus.MustNewConstMetric(c.rq, prometheus.CounterValue, float64(n.HTTPRequests))
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.CounterValue, float64(n.ConnsRefused), "refused")
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.CounterValue, float64(n.ConnsTimedOut), "timed_out")
}

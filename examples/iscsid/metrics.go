package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/scsi"
)

// otherInitiators is the initiator label of the initiators beyond the
// collector's limit.
const otherInitiators = "other"

// senseKeyLabels names the sense keys (SPC-4 table 48) for the error label.
var senseKeyLabels = [16]string{
	"no_sense", "recovered_error", "not_ready", "medium_error", "hardware_error", "illegal_request",
	"unit_attention", "data_protect", "blank_check", "vendor_specific", "copy_aborted", "aborted_command",
	"sense_key_0xc", "volume_overflow", "miscompare", "completed",
}

// collector is a prometheus.Collector that reads the SDK's counters at
// scrape time: the logical units' per-nexus counters (scsi), the live
// sessions and connections, and the server's own counters (iscsi). It
// keeps no counts of its own; what it remembers is which initiators have
// a label of their own, so that at most maxInitiators do and the rest
// are summed under "other".
type collector struct {
	srv           *iscsi.Server
	maxInitiators int

	mu    sync.Mutex
	named map[string]bool // initiators with a label of their own

	commands, readBytes, writeBytes, dataBytes *prometheus.Desc
	scsiErrors                                 *prometheus.Desc
	readLatency, writeLatency, inFlight        *prometheus.Desc
	sessions, queueDepth                       *prometheus.Desc
	tmf, pdus, netBytes, digestErrors, r2ts    *prometheus.Desc
	rejects                                    *prometheus.Desc
	logins, loginFailures, eventsDropped       *prometheus.Desc
}

// newCollector returns a collector of srv's counters that gives at most
// maxInitiators initiators a label of their own (0: no limit).
func newCollector(srv *iscsi.Server, maxInitiators int) *collector {
	lun := []string{"target", "lun", "initiator"}
	sess := []string{"target", "initiator"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("iscsikit_"+name, help, labels, nil)
	}
	return &collector{
		srv:           srv,
		maxInitiators: maxInitiators,
		named:         make(map[string]bool),
		commands:      d("scsi_commands_total", "SCSI commands completed by a logical unit, by kind (read, write, other).", append(lun, "op")...),
		readBytes:     d("scsi_read_bytes_total", "Bytes returned to initiators by reads.", lun...),
		writeBytes:    d("scsi_write_bytes_total", "Bytes received from initiators by writes.", lun...),
		dataBytes:     d("scsi_data_bytes_total", "Data bytes moved by every SCSI command, by direction: in (Data-Out) or out (Data-In).", append(lun, "direction")...),
		scsiErrors:    d("scsi_errors_total", "SCSI commands that did not end GOOD, by sense key of their CHECK CONDITION or by status.", append(lun, "error")...),
		readLatency:   d("scsi_read_latency_seconds", "Time logical units took to execute reads.", lun...),
		writeLatency:  d("scsi_write_latency_seconds", "Time logical units took to execute writes.", lun...),
		inFlight:      d("scsi_commands_in_flight", "SCSI commands executing in a logical unit.", "target", "lun"),
		sessions:      d("sessions", "Live iSCSI sessions (discovery sessions have target \"\").", "target"),
		queueDepth:    d("session_queue_depth", "Commands admitted by live sessions and not yet finished.", sess...),
		tmf:           d("task_management_total", "Task management functions received by live sessions.", append(sess, "function")...),
		pdus:          d("pdus_total", "PDUs read and written by live connections in full feature phase.", append(sess, "direction")...),
		netBytes:      d("network_bytes_total", "Bytes read and written by live connections in full feature phase (headers, data, digests).", append(sess, "direction")...),
		digestErrors:  d("digest_errors_total", "PDUs with a wrong header or data digest (the connection usually ends with it)."),
		r2ts:          d("r2t_total", "Ready To Transfer PDUs sent by live connections.", sess...),
		rejects:       d("rejects_total", "Reject PDUs sent by live connections.", sess...),
		logins:        d("logins_total", "Logins that reached full feature phase."),
		loginFailures: d("login_failures_total", "Logins refused or dropped."),
		eventsDropped: d("observer_events_dropped_total", "Events the server's observer missed because its queue was full."),
	}
}

// Describe sends the descriptions of every metric.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.commands, c.readBytes, c.writeBytes, c.dataBytes, c.scsiErrors, c.readLatency, c.writeLatency, c.inFlight,
		c.sessions, c.queueDepth, c.tmf, c.pdus, c.netBytes, c.digestErrors, c.r2ts, c.rejects,
		c.logins, c.loginFailures, c.eventsDropped,
	} {
		ch <- d
	}
}

// initiatorLabel returns the label of initiator name: its name while
// fewer than maxInitiators have one, "other" beyond.
func (c *collector) initiatorLabel(name string) string {
	if c.maxInitiators <= 0 {
		return name
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.named[name] {
		return name
	}
	if len(c.named) < c.maxInitiators {
		c.named[name] = true
		return name
	}
	return otherInitiators
}

// initiatorName is the initiator device name of an initiator port name
// ("<name>,i,0x<ISID>").
func initiatorName(port string) string {
	name, _, _ := strings.Cut(port, ",i,")
	return name
}

// lunKey identifies the series of one initiator on one LUN of a target.
type lunKey struct{ target, lun, initiator string }

// Collect reads the counters and sends them.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.collectUnits(ch)
	c.collectSessions(ch)
	st := c.srv.Stats()
	ch <- prometheus.MustNewConstMetric(c.logins, prometheus.CounterValue, float64(st.Logins))
	ch <- prometheus.MustNewConstMetric(c.loginFailures, prometheus.CounterValue, float64(st.LoginsFailed))
	ch <- prometheus.MustNewConstMetric(c.eventsDropped, prometheus.CounterValue, float64(st.EventsDropped))
	ch <- prometheus.MustNewConstMetric(c.digestErrors, prometheus.CounterValue, float64(st.DigestErrors))
}

// collectUnits sends the SCSI metrics of every LUN of every target,
// from the units' per-nexus counters (which outlive sessions, so these
// counters only grow).
func (c *collector) collectUnits(ch chan<- prometheus.Metric) {
	sums := make(map[lunKey]*scsi.IOStats)
	var order []lunKey
	for _, name := range c.srv.Targets() {
		t := c.srv.Target(name)
		if t == nil || t.Device == nil {
			continue
		}
		for _, lun := range t.Device.LUNs() {
			lu := t.Device.Unit(lun)
			if lu == nil {
				continue
			}
			lunLabel := strconv.Itoa(int(lun))
			st := lu.Stats()
			var inFlight int64
			for _, n := range st.Nexuses {
				if n.Nexus.TargetName != name {
					continue // the unit is shared with another target
				}
				inFlight += n.InFlight
				k := lunKey{name, lunLabel, c.initiatorLabel(initiatorName(n.Nexus.InitiatorPort))}
				s := sums[k]
				if s == nil {
					s = new(scsi.IOStats)
					sums[k] = s
					order = append(order, k)
				}
				addIOStats(s, &n.IOStats)
			}
			ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(inFlight), name, lunLabel)
		}
	}
	for _, k := range order {
		s := sums[k]
		l := []string{k.target, k.lun, k.initiator}
		counter := func(d *prometheus.Desc, v uint64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append(l, extra...)...)
		}
		counter(c.commands, s.Reads, "read")
		counter(c.commands, s.Writes, "write")
		counter(c.commands, s.Others, "other")
		counter(c.readBytes, s.ReadBytes)
		counter(c.writeBytes, s.WriteBytes)
		counter(c.dataBytes, s.BytesIn, "in")
		counter(c.dataBytes, s.BytesOut, "out")
		for key, n := range s.SenseKeys {
			if n > 0 {
				counter(c.scsiErrors, n, senseKeyLabels[key])
			}
		}
		for _, e := range []struct {
			name string
			n    uint64
		}{{"reservation_conflict", s.ReservationConflicts}, {"busy", s.Busy}, {"task_set_full", s.TaskSetFull}, {"task_aborted", s.TaskAborted}} {
			if e.n > 0 {
				counter(c.scsiErrors, e.n, e.name)
			}
		}
		ch <- histogram(c.readLatency, &s.ReadLatency, l)
		ch <- histogram(c.writeLatency, &s.WriteLatency, l)
	}
}

// histogram turns a latency snapshot into a Prometheus histogram.
func histogram(d *prometheus.Desc, l *scsi.Latency, labels []string) prometheus.Metric {
	buckets := make(map[float64]uint64, scsi.NumLatencyBuckets-1)
	var cum uint64
	for i := 0; i < scsi.NumLatencyBuckets-1; i++ {
		cum += l.Buckets[i]
		buckets[scsi.LatencyBound(i).Seconds()] = cum
	}
	return prometheus.MustNewConstHistogram(d, l.Count, l.Sum.Seconds(), buckets, labels...)
}

// addIOStats adds the counters of b to a.
func addIOStats(a, b *scsi.IOStats) {
	a.Reads += b.Reads
	a.Writes += b.Writes
	a.Others += b.Others
	a.BytesIn += b.BytesIn
	a.BytesOut += b.BytesOut
	a.ReadBytes += b.ReadBytes
	a.WriteBytes += b.WriteBytes
	for i := range a.SenseKeys {
		a.SenseKeys[i] += b.SenseKeys[i]
	}
	a.ReservationConflicts += b.ReservationConflicts
	a.Busy += b.Busy
	a.TaskSetFull += b.TaskSetFull
	a.TaskAborted += b.TaskAborted
	a.InFlight += b.InFlight
	addLatency(&a.ReadLatency, &b.ReadLatency)
	addLatency(&a.WriteLatency, &b.WriteLatency)
}

func addLatency(a, b *scsi.Latency) {
	a.Count += b.Count
	a.Sum += b.Sum
	for i := range a.Buckets {
		a.Buckets[i] += b.Buckets[i]
	}
}

// sessionSums are the counters of the live sessions of one initiator on
// one target.
type sessionSums struct {
	queueDepth                         int
	tmf                                map[string]uint64
	pdusIn, pdusOut, bytesIn, bytesOut uint64
	r2ts, rejects                      uint64
}

// collectSessions sends the session and connection metrics. Those
// counters live with their session, so a series drops when its last
// session ends (a counter reset to Prometheus).
func (c *collector) collectSessions(ch chan<- prometheus.Metric) {
	perTarget := make(map[string]int)
	for _, name := range c.srv.Targets() {
		perTarget[name] = 0
	}
	sums := make(map[[2]string]*sessionSums)
	var order [][2]string
	for _, s := range c.srv.Sessions() {
		perTarget[s.TargetName]++
		k := [2]string{s.TargetName, c.initiatorLabel(s.InitiatorName)}
		sum := sums[k]
		if sum == nil {
			sum = &sessionSums{tmf: make(map[string]uint64)}
			sums[k] = sum
			order = append(order, k)
		}
		sum.queueDepth += s.Stats.QueueDepth
		for f, n := range s.Stats.TaskManagement {
			sum.tmf[f] += n
		}
		for _, cs := range s.Stats.Connections {
			sum.pdusIn += cs.PDUsIn
			sum.pdusOut += cs.PDUsOut
			sum.bytesIn += cs.BytesIn
			sum.bytesOut += cs.BytesOut
			sum.r2ts += cs.R2Ts
			sum.rejects += cs.Rejects
		}
	}
	targets := make([]string, 0, len(perTarget))
	for t := range perTarget {
		targets = append(targets, t)
	}
	sort.Strings(targets)
	for _, t := range targets {
		ch <- prometheus.MustNewConstMetric(c.sessions, prometheus.GaugeValue, float64(perTarget[t]), t)
	}
	for _, k := range order {
		s := sums[k]
		l := k[:]
		counter := func(d *prometheus.Desc, v uint64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append(append([]string(nil), l...), extra...)...)
		}
		ch <- prometheus.MustNewConstMetric(c.queueDepth, prometheus.GaugeValue, float64(s.queueDepth), l...)
		for f, n := range s.tmf {
			counter(c.tmf, n, f)
		}
		counter(c.pdus, s.pdusIn, "in")
		counter(c.pdus, s.pdusOut, "out")
		counter(c.netBytes, s.bytesIn, "in")
		counter(c.netBytes, s.bytesOut, "out")
		counter(c.r2ts, s.r2ts)
		counter(c.rejects, s.rejects)
	}
}

// serveMetrics serves /metrics, the collector's metrics and the Go
// runtime's, on its own listener at addr, and returns the address it
// listens on and a function that stops it.
func serveMetrics(addr string, srv *iscsi.Server, maxInitiators int, log *slog.Logger) (string, func(), error) {
	reg := prometheus.NewRegistry()
	if err := reg.Register(newCollector(srv, maxInitiators)); err != nil {
		return "", nil, fmt.Errorf("--metrics: %w", err)
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("--metrics %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener failed", "addr", addr, "err", err)
		}
	}()
	log.Info("metrics enabled", "url", "http://"+ln.Addr().String()+"/metrics")
	return ln.Addr().String(), func() { hs.Close() }, nil
}

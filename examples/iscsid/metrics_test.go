package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/internal/syncbuf"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/scsi"
)

// scrape fetches and parses the metrics at url.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err := p.TextToMetricFamilies(bytes.NewReader(body))
	require.NoError(t, err, "the scrape parses as the text format:\n%s", body)
	return families
}

// labelsOf returns a metric's labels as a map.
func labelsOf(m *dto.Metric) map[string]string {
	out := make(map[string]string)
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// sum adds the values of the series of family name whose labels include
// want (counters, gauges, or histogram counts).
func sum(families map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := families[name]
	if f == nil {
		return 0
	}
	var total float64
	for _, m := range f.GetMetric() {
		l := labelsOf(m)
		ok := true
		for k, v := range want {
			if l[k] != v {
				ok = false
			}
		}
		if !ok {
			continue
		}
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		case m.Histogram != nil:
			total += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return total
}

// TestMetricsMatchQemuImgIO writes and reads with qemu-img against iscsid
// run with --metrics, scrapes /metrics and checks the counters against
// the I/O done.
func TestMetricsMatchQemuImgIO(t *testing.T) {
	needTool(t, "qemu-img")
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	maddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	runInProcess(t, config{stateDir: t.TempDir(), portal: addr, metrics: maddr, metricsMaxIni: 10}, nil, addr, maddr)
	url := "http://" + maddr + "/metrics"

	before := scrape(t, url)
	require.Equal(t, 0.0, sum(before, "iscsikit_scsi_commands_total", nil))
	require.Equal(t, 1.0, float64(len(before["iscsikit_sessions"].GetMetric())), "one target, no session yet")

	const size = 4 << 20
	data := make([]byte, size)
	_, err := rand.Read(data)
	require.NoError(t, err)
	qemuWrite(t, addr, data)
	require.True(t, bytes.Equal(data, qemuRead(t, addr, size)))

	// qemu-img's sessions have ended; the unit's counters remain.
	m := scrape(t, url)
	lun := map[string]string{"target": defaultTarget, "lun": "0"}
	written := sum(m, "iscsikit_scsi_write_bytes_total", lun)
	read := sum(m, "iscsikit_scsi_read_bytes_total", lun)
	require.InDelta(t, size, written, 512, "bytes written")
	require.InDelta(t, size, read, 512, "bytes read")
	// Other commands move data too (INQUIRY, READ CAPACITY...).
	require.Greater(t, sum(m, "iscsikit_scsi_data_bytes_total", map[string]string{"direction": "out"}), read)
	reads := sum(m, "iscsikit_scsi_commands_total", map[string]string{"target": defaultTarget, "lun": "0", "op": "read"})
	writes := sum(m, "iscsikit_scsi_commands_total", map[string]string{"target": defaultTarget, "lun": "0", "op": "write"})
	require.Positive(t, reads)
	require.Positive(t, writes)
	t.Logf("%d bytes written and read back: write_bytes %.0f in %.0f writes, read_bytes %.0f in %.0f reads", size, written, writes, read, reads)
	require.Equal(t, reads, sum(m, "iscsikit_scsi_read_latency_seconds", lun), "read histogram count")
	require.Equal(t, writes, sum(m, "iscsikit_scsi_write_latency_seconds", lun), "write histogram count")
	h := m["iscsikit_scsi_write_latency_seconds"].GetMetric()[0].GetHistogram()
	b := h.GetBucket()
	require.Len(t, b, scsi.NumLatencyBuckets, "the SDK's buckets and the parser's +Inf")
	require.Equal(t, h.GetSampleCount(), b[len(b)-1].GetCumulativeCount(), "+Inf holds every write")
	require.Equal(t, h.GetSampleCount(), b[len(b)-2].GetCumulativeCount(), "no write slower than the last bound")
	require.Positive(t, h.GetSampleSum())

	require.Equal(t, 2.0, sum(m, "iscsikit_logins_total", nil))
	require.Equal(t, 0.0, sum(m, "iscsikit_login_failures_total", nil))
	require.Equal(t, 0.0, sum(m, "iscsikit_sessions", nil))
	require.Contains(t, m, "go_goroutines")
}

// TestMetricsCollector checks the collector's live-session series and
// the initiator label limit with the Go test initiator.
func TestMetricsCollector(t *testing.T) {
	srv, err := iscsi.NewServer(iscsi.Options{})
	require.NoError(t, err)
	lu, err := scsi.NewLogicalUnit(backend.NewMemory(1<<20), scsi.UnitConfig{})
	require.NoError(t, err)
	defer lu.Close()
	dev := scsi.NewTarget()
	require.NoError(t, dev.Attach(3, lu))
	const target = "iqn.2026-11.io.iscsikit:metrics"
	require.NoError(t, srv.AddTarget(&iscsi.Target{Name: target, Device: dev}))
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	go srv.ListenAndServe(addr)
	defer srv.Close()
	waitListening(t, addr, nil)
	maddr, stop, err := serveMetrics("127.0.0.1:0", srv, 2, discard())
	require.NoError(t, err)
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var conns []*initiator.Conn
	for i := 0; i < 4; i++ {
		c, err := initiator.Dial(ctx, addr, initiator.Options{TargetName: target, InitiatorName: "iqn.2026-11.io.iscsikit:host" + strconv.Itoa(i)})
		require.NoError(t, err)
		defer c.Close()
		_ = c.TestUnitReady(ctx, scsi.EncodeLUN(3))
		_, err = c.ReadBlocks(ctx, scsi.EncodeLUN(3), 0, 2, 512)
		require.NoError(t, err)
		conns = append(conns, c)
	}
	_, err = conns[0].TaskManagement(ctx, 1, scsi.EncodeLUN(3), 0x4242)
	require.NoError(t, err)

	m := scrape(t, "http://"+maddr+"/metrics")
	// Two initiators have their own label, the other two are "other".
	inits := map[string]float64{}
	for _, s := range m["iscsikit_scsi_commands_total"].GetMetric() {
		l := labelsOf(s)
		require.Equal(t, target, l["target"])
		require.Equal(t, "3", l["lun"])
		if l["op"] == "read" {
			inits[l["initiator"]] += s.GetCounter().GetValue()
		}
	}
	require.Equal(t, map[string]float64{"iqn.2026-11.io.iscsikit:host0": 1, "iqn.2026-11.io.iscsikit:host1": 1, "other": 2}, inits)
	require.Equal(t, 4.0*1024, sum(m, "iscsikit_scsi_read_bytes_total", map[string]string{"target": target}))
	require.Equal(t, 4.0, sum(m, "iscsikit_scsi_errors_total", map[string]string{"error": "unit_attention"}))
	require.Equal(t, 4.0, sum(m, "iscsikit_sessions", map[string]string{"target": target}))
	require.Equal(t, 1.0, sum(m, "iscsikit_task_management_total", map[string]string{"function": "ABORT TASK", "initiator": "iqn.2026-11.io.iscsikit:host0"}))
	require.Equal(t, 9.0, sum(m, "iscsikit_pdus_total", map[string]string{"direction": "in"}), "a TEST UNIT READY and a READ per session, and the TMF")
	require.Equal(t, 0.0, sum(m, "iscsikit_scsi_commands_in_flight", nil))
	require.Equal(t, 0.0, sum(m, "iscsikit_session_queue_depth", nil))
	require.Equal(t, 4.0, sum(m, "iscsikit_logins_total", nil))
	// The dashboard queries only metrics this scrape has.
	requireDashboardMetrics(t, m)

	// A taken address is refused with the flag named.
	_, _, err = serveMetrics(maddr, srv, 2, discard())
	require.ErrorContains(t, err, "--metrics")
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestLogSessionsFlag checks that an established session is logged at
// INFO with --log-sessions and not at all (DEBUG) without it.
func TestLogSessionsFlag(t *testing.T) {
	for _, on := range []bool{false, true} {
		var logs syncbuf.Buffer
		addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
		d := runInProcess(t, config{stateDir: t.TempDir(), portal: addr, logSessions: on}, slog.New(slog.NewTextHandler(&logs, nil)), addr)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, err := initiator.Dial(ctx, addr, initiator.Options{TargetName: defaultTarget})
		require.NoError(t, err)
		require.NoError(t, c.Logout(ctx))
		c.Close()
		cancel()
		d.stop()
		require.Equal(t, on, strings.Contains(logs.String(), `level=INFO msg="session established"`), "--log-sessions=%v:\n%s", on, logs.String())
	}
}

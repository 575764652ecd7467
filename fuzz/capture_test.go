package fuzz

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
	"github.com/iscsikit/iscsikit/scsi"
)

// recordingProxy forwards TCP connections to a target and keeps the bytes
// each initiator sent.
type recordingProxy struct {
	l      net.Listener
	target string
	wg     sync.WaitGroup
	mu     sync.Mutex
	// streams holds, per connection, everything the initiator sent.
	streams [][]byte
}

func startProxy(t *testing.T, target string) *recordingProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &recordingProxy{l: l, target: target}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.relay(in) }()
		}
	}()
	return p
}

func (p *recordingProxy) relay(in net.Conn) {
	defer in.Close()
	out, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer out.Close()
	var sent bytes.Buffer
	done := make(chan struct{})
	go func() {
		io.Copy(in, out)
		in.Close()
		close(done)
	}()
	io.Copy(io.MultiWriter(out, &sent), in)
	out.Close()
	<-done
	p.mu.Lock()
	p.streams = append(p.streams, sent.Bytes())
	p.mu.Unlock()
}

func (p *recordingProxy) close() [][]byte {
	p.l.Close()
	p.wg.Wait()
	return p.streams
}

// seedWriter writes corpus files in the `go test fuzz v1` format, once
// per distinct content.
type seedWriter struct {
	t    *testing.T
	seen map[string]bool
	n    map[string]int
}

func (w *seedWriter) add(target, tool string, max int, values ...any) {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range values {
		switch v := v.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case bool:
			fmt.Fprintf(&b, "bool(%v)\n", v)
		case uint16:
			fmt.Fprintf(&b, "uint16(%d)\n", v)
		default:
			w.t.Fatalf("seed value of type %T", v)
		}
	}
	sum := sha256.Sum256(b.Bytes())
	key := target + string(sum[:])
	if w.seen[key] || w.n[target+tool] >= max {
		return
	}
	w.seen[key] = true
	w.n[target+tool]++
	dir := filepath.Join("testdata", "fuzz", target)
	require.NoError(w.t, os.MkdirAll(dir, 0o755))
	name := fmt.Sprintf("capture-%s-%x", tool, sum[:6])
	require.NoError(w.t, os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644))
}

// TestCaptureSeeds regenerates the seed corpora from real initiators:
// iscsi-ls, iscsi-inq and a short iscsi-test-cu run talk to an in-process
// target through a recording proxy, and the PDUs they sent become seeds of
// FuzzReadPDU (whole PDUs and stream prefixes), FuzzNegotiate (login and
// text key-value data) and FuzzExecute (CDBs with their data). It runs
// only with ISCSIKIT_CAPTURE_SEEDS=1, from the fuzz directory:
//
//	ISCSIKIT_CAPTURE_SEEDS=1 go test ./fuzz -run TestCaptureSeeds
func TestCaptureSeeds(t *testing.T) {
	if os.Getenv("ISCSIKIT_CAPTURE_SEEDS") == "" {
		t.Skip("set ISCSIKIT_CAPTURE_SEEDS=1 to regenerate the captured seed corpora")
	}
	const target = "iqn.2026-11.io.iscsikit:capture"
	srv, err := iscsi.NewServer(iscsi.Options{Negotiation: negotiate.Config{HeaderDigest: negotiate.DigestRefused, DataDigest: negotiate.DigestRefused}})
	require.NoError(t, err)
	lu, err := scsi.NewLogicalUnit(backend.NewMemory(64<<20), scsi.UnitConfig{ThinProvisioning: true, Serial: "capture", WriteCache: true})
	require.NoError(t, err)
	dev := scsi.NewTarget()
	require.NoError(t, dev.Attach(0, lu))
	require.NoError(t, srv.AddTarget(&iscsi.Target{Name: target, Device: dev}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(l)
	defer srv.Close()

	w := &seedWriter{t: t, seen: map[string]bool{}, n: map[string]int{}}
	runs := []struct {
		tool string
		args func(addr string) []string
	}{
		{"iscsi-ls", func(a string) []string { return []string{"iscsi-ls", "-s", "iscsi://" + a} }},
		{"iscsi-inq", func(a string) []string { return []string{"iscsi-inq", "iscsi://" + a + "/" + target + "/0"} }},
		{"iscsi-inq-vpd", func(a string) []string {
			return []string{"iscsi-inq", "-e", "1", "-c", "0x83", "iscsi://" + a + "/" + target + "/0"}
		}},
	}
	for _, suite := range []string{"ALL.Read10", "ALL.Write10", "ALL.CompareAndWrite", "ALL.ExtendedCopy", "ALL.ModeSense6", "ALL.Unmap", "ALL.WriteSame10", "ALL.PrinReadKeys", "ALL.ProutRegister", "ALL.ReportSupportedOpcodes", "ALL.GetLBAStatus", "ALL.iSCSIcmdsn", "ALL.iSCSITMF"} {
		suite := suite
		runs = append(runs, struct {
			tool string
			args func(addr string) []string
		}{"iscsi-test-cu", func(a string) []string {
			return []string{"iscsi-test-cu", "-d", "-s", "-t", suite, "iscsi://" + a + "/" + target + "/0"}
		}})
	}
	for _, r := range runs {
		args := r.args("")
		if _, err := exec.LookPath(args[0]); err != nil {
			t.Skipf("%s not installed", args[0])
		}
		proxy := startProxy(t, l.Addr().String())
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		args = r.args(proxy.l.Addr().String())
		out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
		cancel()
		t.Logf("%v: %v (%d bytes of output)", args, err, len(out))
		for _, stream := range proxy.close() {
			w.stream(r.tool, stream)
		}
	}
	t.Logf("seeds written: %v", w.n)
}

// stream turns one captured initiator stream into seeds.
func (w *seedWriter) stream(tool string, stream []byte) {
	if len(stream) == 0 {
		return
	}
	w.add("FuzzReadPDU", tool+"-stream", 8, stream[:min(len(stream), 4096)], false)
	r := pdu.NewReader(bytes.NewReader(stream), pdu.MaxDataSegmentLength)
	for {
		var p pdu.PDU
		err := r.ReadPDU(&p)
		if errors.Is(err, io.EOF) {
			return
		}
		require.NoError(w.t, err, "captured stream does not parse")
		var one bytes.Buffer
		require.NoError(w.t, pdu.NewWriter(&one).WritePDU(&p))
		w.add("FuzzReadPDU", tool, 40, one.Bytes(), false)
		switch p.Opcode() {
		case pdu.OpLoginReq, pdu.OpTextReq:
			if len(p.Data) > 0 {
				w.add("FuzzNegotiate", tool, 20, append([]byte(nil), p.Data...))
			}
		case pdu.OpSCSICommand:
			var m pdu.SCSICommand
			if m.Decode(&p) == nil {
				in := uint16(0)
				if m.Read {
					in = uint16(min(m.ExpectedDataTransferLength, 65535))
				}
				w.add("FuzzExecute", tool, 60, append([]byte(nil), m.CDB...), append([]byte(nil), m.Data...), in)
			}
		}
	}
}

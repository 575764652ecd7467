// Package isnsd runs open-isns's iSNS server (Debian packages
// open-isns-server and open-isns-utils) for tests, and reads back what
// it holds with isnsadm and isnsd --dump-db.
package isnsd

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Server is open-isns's isnsd started on 127.0.0.1 for a test, with an
// empty database, no authentication, the default discovery domain, and a
// registration period of its own.
type Server struct {
	t      *testing.T
	dir    string
	addr   string
	period int
	cmd    *exec.Cmd
}

// Start starts isnsd with a registration period of period seconds on a
// free port, and stops it when the test ends. It skips the test when
// isnsd or isnsadm is not installed, and fails it instead under
// ISCSIKIT_REQUIRE_INITIATORS=1.
func Start(t *testing.T, period int) *Server {
	t.Helper()
	for _, tool := range []string{"isnsd", "isnsadm"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("ISCSIKIT_REQUIRE_INITIATORS") == "1" {
				t.Fatalf("%s is required (Debian packages open-isns-server, open-isns-utils): %v", tool, err)
			}
			t.Skipf("%s not installed (Debian packages open-isns-server, open-isns-utils)", tool)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	l.Close()
	d := &Server{t: t, dir: t.TempDir(), addr: addr, period: period}
	d.start()
	t.Cleanup(d.stop)
	return d
}

// Addr is the address isnsd listens on, host:port.
func (d *Server) Addr() string { return d.addr }

// Period is the registration period isnsd gives.
func (d *Server) Period() time.Duration { return time.Duration(d.period) * time.Second }

// Restart kills isnsd and starts it again with an empty database.
func (d *Server) Restart() {
	d.t.Helper()
	d.stop()
	d.start()
}

// start runs isnsd with an empty database and waits until it answers.
func (d *Server) start() {
	d.t.Helper()
	db := filepath.Join(d.dir, "db")
	require.NoError(d.t, os.RemoveAll(db))
	require.NoError(d.t, os.MkdirAll(db, 0o700))
	conf := fmt.Sprintf(`SourceName = isns.server.test
BindAddress = %s
ControlSocket = %s
PIDFile = %s
Database = %s
Security = 0
RegistrationPeriod = %d
DefaultDiscoveryDomain = 1
SLPRegister = 0
`, d.addr, filepath.Join(d.dir, "control"), filepath.Join(d.dir, "isnsd.pid"), db, d.period)
	require.NoError(d.t, os.WriteFile(filepath.Join(d.dir, "isnsd.conf"), []byte(conf), 0o600))
	d.cmd = exec.Command("isnsd", "-f", "-4", "-c", filepath.Join(d.dir, "isnsd.conf"))
	log, err := os.Create(filepath.Join(d.dir, "isnsd.log"))
	require.NoError(d.t, err)
	d.cmd.Stdout, d.cmd.Stderr = log, log
	require.NoError(d.t, d.cmd.Start())
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", d.addr)
		if err == nil {
			c.Close()
			return
		}
		require.True(d.t, time.Now().Before(deadline), "isnsd does not answer on %s", d.addr)
		time.Sleep(50 * time.Millisecond)
	}
}

// stop kills isnsd.
func (d *Server) stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	d.cmd.Process.Kill()
	d.cmd.Wait()
	d.cmd = nil
}

// List runs isnsadm --local --list kind (entities, nodes, portals,
// portal-groups) and returns the objects it prints. isnsadm sees the
// default discovery domain only; Dump shows every object.
func (d *Server) List(kind string) []Object {
	d.t.Helper()
	conf := filepath.Join(d.dir, "isnsadm.conf")
	adm := fmt.Sprintf("SourceName = isns.admin.test\nServerAddress = %s\nControlSocket = %s\nSecurity = 0\n", d.addr, filepath.Join(d.dir, "control"))
	require.NoError(d.t, os.WriteFile(conf, []byte(adm), 0o600))
	cmd := exec.Command("isnsadm", "-c", conf, "--local", "--list", kind)
	out, err := cmd.CombinedOutput()
	require.NoError(d.t, err, "isnsadm: %s", out)
	return parseObjects(string(out))
}

// Names returns the iSCSI names of the storage nodes isnsadm lists.
func (d *Server) Names() []string {
	var out []string
	for _, o := range d.List("nodes") {
		out = append(out, strings.Trim(o["iSCSI name"], `"`))
	}
	return out
}

// Eventually waits for cond, polling, and fails the test after within.
func Eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Dump returns the objects of isnsd's database (isnsd --dump-db), each
// with its "type"; repeated attributes are joined with commas. The
// running isnsd rewrites its database files as registrations change, so
// a dump that meets a file being written ("Unable to load ...") is tried
// again.
func (d *Server) Dump() []Object {
	d.t.Helper()
	var out []byte
	var err error
	for range 20 {
		out, err = exec.Command("isnsd", "-c", filepath.Join(d.dir, "isnsd.conf"), "--dump-db").CombinedOutput()
		if err == nil {
			return parseObjects(string(out))
		}
		time.Sleep(100 * time.Millisecond)
	}
	require.NoError(d.t, err, "isnsd --dump-db: %s", out)
	return nil
}

// Object is one object isnsadm or isnsd printed: its attributes by label
// (index attributes and timestamps left out), such as "iSCSI name" with
// its value as printed (strings quoted).
type Object map[string]string

// parseObjects reads isnsadm's listing of objects.
func parseObjects(out string) []Object {
	var objs []Object
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "Object") || strings.HasPrefix(line, "object[") {
			o := Object{}
			if _, typ, ok := strings.Cut(line, "type=<"); ok {
				o["type"], _, _ = strings.Cut(typ, ">")
			}
			objs = append(objs, o)
			continue
		}
		_, attr, ok := strings.Cut(line, ": ")
		if !ok || len(objs) == 0 {
			continue
		}
		label, value, ok := strings.Cut(attr, " = ")
		if !ok || strings.Contains(label, "index") || label == "Timestamp" {
			continue
		}
		if prev, ok := objs[len(objs)-1][label]; ok {
			value = prev + "," + value
		}
		objs[len(objs)-1][label] = value
	}
	return objs
}

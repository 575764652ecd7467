package main

import (
	"encoding/binary"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The hostile clients below use nothing but net and encoding/binary: no
// PDU codec, no initiator library, as an attacker would.

// bhs builds a 48-byte basic header segment by hand.
func bhs(op, flags byte, ahsWords byte, dsl int, itt uint32, cmdSN uint32) []byte {
	h := make([]byte, 48)
	h[0], h[1] = op, flags
	h[4] = ahsWords
	h[5], h[6], h[7] = byte(dsl>>16), byte(dsl>>8), byte(dsl)
	binary.BigEndian.PutUint32(h[16:20], itt)
	binary.BigEndian.PutUint32(h[24:28], cmdSN)
	return h
}

// padded appends data and its padding to a header.
func padded(h, data []byte) []byte {
	out := append(append([]byte(nil), h...), data...)
	for len(out)%4 != 0 {
		out = append(out, 0)
	}
	return out
}

// loginBytes is a one-step login (operational stage straight to full
// feature phase) to the default target, as raw bytes.
func loginBytes(isid byte) []byte {
	keys := "InitiatorName=iqn.2026-11.io.example:hostile\x00SessionType=Normal\x00TargetName=" + defaultTarget +
		"\x00HeaderDigest=None\x00DataDigest=None\x00MaxRecvDataSegmentLength=8192\x00ImmediateData=Yes\x00InitialR2T=Yes\x00"
	h := bhs(0x43, 0x87, 0, len(keys), 1, 0) // immediate Login, T=1, CSG=1, NSG=3
	h[8], h[9], h[13] = 0x80, 0x99, isid     // ISID
	return padded(h, []byte(keys))
}

// hostileCase is one abuse of a connection.
type hostileCase struct {
	name string
	run  func(nc net.Conn, rng *mrand.Rand)
}

func hostileCases() []hostileCase {
	write := func(nc net.Conn, b []byte) { nc.SetWriteDeadline(time.Now().Add(2 * time.Second)); nc.Write(b) }
	drain := func(nc net.Conn, d time.Duration) {
		nc.SetReadDeadline(time.Now().Add(d))
		io.Copy(io.Discard, nc)
	}
	loggedIn := func(nc net.Conn, rng *mrand.Rand) {
		write(nc, loginBytes(byte(rng.IntN(256))))
		resp := make([]byte, 48)
		nc.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.ReadFull(nc, resp); err == nil {
			dsl := int(resp[5])<<16 | int(resp[6])<<8 | int(resp[7])
			io.CopyN(io.Discard, nc, int64(dsl+(4-dsl%4)%4))
		}
	}
	garbage := func(rng *mrand.Rand, n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	return []hostileCase{
		{"truncated header then close", func(nc net.Conn, rng *mrand.Rand) {
			write(nc, loginBytes(1)[:1+rng.IntN(47)])
		}},
		{"truncated header then silence", func(nc net.Conn, rng *mrand.Rand) {
			write(nc, loginBytes(2)[:20])
			drain(nc, 500*time.Millisecond)
		}},
		{"oversized login data segment", func(nc net.Conn, rng *mrand.Rand) {
			h := bhs(0x43, 0x87, 0, 0xffffff, 1, 0)
			write(nc, h)
			write(nc, garbage(rng, 64<<10))
			drain(nc, 500*time.Millisecond)
		}},
		{"garbage", func(nc net.Conn, rng *mrand.Rand) {
			write(nc, garbage(rng, 1+rng.IntN(4096)))
			drain(nc, 300*time.Millisecond)
		}},
		{"commands before login", func(nc net.Conn, rng *mrand.Rand) {
			cdb := bhs(0x01, 0xc0, 0, 0, 7, 0)
			binary.BigEndian.PutUint32(cdb[20:24], 36)
			cdb[32], cdb[36] = 0x12, 36
			write(nc, cdb)
			write(nc, padded(bhs(0x05, 0x80, 0, 512, 7, 0), make([]byte, 512)))
			drain(nc, 300*time.Millisecond)
		}},
		{"full feature phase before the login ends", func(nc net.Conn, rng *mrand.Rand) {
			h := bhs(0x43, 0x03, 0, 0, 1, 0) // CSG=0 NSG=3 without T: nonsense stages
			write(nc, h)
			write(nc, padded(bhs(0x04, 0x80, 0, 16, 2, 0), []byte("SendTargets=All\x00")))
			drain(nc, 300*time.Millisecond)
		}},
		{"lying AHS after login", func(nc net.Conn, rng *mrand.Rand) {
			loggedIn(nc, rng)
			h := bhs(0x01, 0x80, 2, 0, 3, 1)
			write(nc, append(h, 0, 200, 1, 0, 0, 0, 0, 0))
			drain(nc, 300*time.Millisecond)
		}},
		{"out of order after login", func(nc net.Conn, rng *mrand.Rand) {
			loggedIn(nc, rng)
			write(nc, padded(bhs(0x05, 0x80, 0, 1024, 0x4242, 0), make([]byte, 1024))) // Data-Out, unknown task
			write(nc, bhs(0x01, 0x80, 0, 0, 5, 0x7fffffff))                            // CmdSN far outside the window
			lo := bhs(0x43, 0x87, 0, 0, 9, 1)                                          // a login in full feature phase
			write(nc, lo)
			write(nc, padded(bhs(0x04, 0x40, 0, 8192, 10, 1), garbage(rng, 8192))) // text that never finishes
			drain(nc, 300*time.Millisecond)
		}},
		{"garbage after login", func(nc net.Conn, rng *mrand.Rand) {
			loggedIn(nc, rng)
			write(nc, garbage(rng, 48+rng.IntN(8192)))
			drain(nc, 300*time.Millisecond)
		}},
		{"write then vanish", func(nc net.Conn, rng *mrand.Rand) {
			loggedIn(nc, rng)
			cmd := bhs(0x01, 0xa0, 0, 0, 11, 1) // WRITE(10) of 64 blocks, no data ever sent
			binary.BigEndian.PutUint32(cmd[20:24], 64*512)
			cmd[32], cmd[40] = 0x2a, 64
			write(nc, cmd)
		}},
	}
}

// TestHostileClientsDoNotHurtTheDaemon runs many hostile connections at
// once against the iscsid binary; afterwards the same process still
// serves iscsi-ls and a data-verified qemu-img write and read.
func TestHostileClientsDoNotHurtTheDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	ls := needTool(t, "iscsi-ls")
	needTool(t, "qemu-img") // skip before starting anything
	bin := buildDaemon(t)
	state := t.TempDir()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	p := spawn(t, bin, state, addr)
	pid := p.cmd.Process.Pid

	cases := hostileCases()
	const clients = 24
	deadline := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[string]int{}
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(i), 7))
			for time.Now().Before(deadline) {
				hc := cases[rng.IntN(len(cases))]
				nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err != nil {
					continue
				}
				hc.run(nc, rng)
				nc.Close()
				mu.Lock()
				counts[hc.name]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("hostile connections: %v", counts)

	select {
	case err := <-p.done:
		p.done <- err
		log, _ := os.ReadFile(filepath.Join(state, "iscsid.log"))
		t.Fatalf("iscsid exited: %v\n%s", err, log)
	default:
	}
	require.Equal(t, pid, p.cmd.Process.Pid)

	out, err := exec.Command(ls, "-s", "iscsi://"+addr).CombinedOutput()
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "Target:"+defaultTarget)

	qemuWriteReadBack(t, addr, 16<<20)

	log, err := os.ReadFile(filepath.Join(state, "iscsid.log"))
	require.NoError(t, err)
	require.NotContains(t, string(log), "panic", "the daemon recovered a panic")
	// The hand-made logins worked, so the abuse after them reached the
	// full feature phase.
	require.Greater(t, strings.Count(string(log), "initiator=iqn.2026-11.io.example:hostile"), 10, "hostile logins reached the full feature phase")
	select {
	case err := <-p.done:
		p.done <- err
		t.Fatalf("iscsid exited: %v", err)
	default:
	}
}

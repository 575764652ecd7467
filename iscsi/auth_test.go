package iscsi_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/chap"
	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/internal/syncbuf"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
)

// Credentials of the CHAP tests.
const (
	aliceSecret  = "alice-secret-1"
	targetSecret = "target-secret1"
	discoSecret  = "disco-secret-1"
	carolName    = "iqn.2026-11.io.test:carol"
)

// chapServer serves testTarget with CHAP (alice; mutual with peer "tgt"),
// an extra user carol restricted to her own initiator name, and discovery
// with CHAP (user disco). It returns the server's log.
func chapServer(t *testing.T, method iscsi.AuthMethod, algs ...int) (*harness, *syncbuf.Buffer) {
	t.Helper()
	logs := &syncbuf.Buffer{}
	policy := func(info iscsi.LoginInfo) (iscsi.AuthPolicy, error) {
		if info.Discovery() {
			return iscsi.AuthPolicy{Method: iscsi.AuthCHAP, Credentials: []iscsi.CHAPCredential{{User: "disco", Secret: discoSecret}}}, nil
		}
		return iscsi.AuthPolicy{Method: method, Credentials: []iscsi.CHAPCredential{
			{User: "alice", Secret: aliceSecret, PeerUser: "tgt", PeerSecret: targetSecret},
			{User: "carol", Secret: "carol-secret-1", Initiator: carolName},
		}}, nil
	}
	var auth *iscsi.CHAPAuthenticator
	if len(algs) == 0 {
		auth = iscsi.NewCHAPAuthenticator(policy)
	} else {
		auth = iscsi.NewCHAPAuthenticator(policy, chapAlgs(algs)...)
	}
	h := startServer(t, iscsi.Options{
		Logger:        slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Authenticator: auth,
	})
	return h, logs
}

func TestCHAPLogin(t *testing.T) {
	tests := []struct {
		name   string
		method iscsi.AuthMethod
		opt    initiator.Options
		status uint16 // 0: logs in
		errMsg string // an initiator-side failure
	}{
		{name: "one-way", method: iscsi.AuthCHAP, opt: initiator.Options{CHAP: &initiator.CHAP{Username: "alice", Secret: aliceSecret}}},
		{name: "one-way SHA-256", method: iscsi.AuthCHAP, opt: initiator.Options{CHAP: &initiator.CHAP{Username: "alice", Secret: aliceSecret, Algorithms: []int{7, 5}}}},
		{name: "one-way SHA3-256", method: iscsi.AuthCHAP, opt: initiator.Options{CHAP: &initiator.CHAP{Username: "alice", Secret: aliceSecret, Algorithms: []int{8}}}},
		{name: "one-way SHA-1", method: iscsi.AuthCHAP, opt: initiator.Options{CHAP: &initiator.CHAP{Username: "alice", Secret: aliceSecret, Algorithms: []int{6}}}},
		{name: "initiator asks for mutual", method: iscsi.AuthCHAP, opt: initiator.Options{CHAP: &initiator.CHAP{Username: "alice", Secret: aliceSecret, TargetUsername: "tgt", TargetSecret: targetSecret}}},
		{name: "mutual", method: iscsi.AuthMutualCHAP, opt: initiator.Options{CHAP: &initiator.CHAP{Username: "alice", Secret: aliceSecret, TargetUsername: "tgt", TargetSecret: targetSecret, Algorithms: []int{7}}}},
		{name: "per-initiator credential", method: iscsi.AuthCHAP, opt: initiator.Options{InitiatorName: carolName, CHAP: &initiator.CHAP{Username: "carol", Secret: "carol-secret-1"}}},

		{name: "no credentials", method: iscsi.AuthCHAP, opt: initiator.Options{}, status: 0x0201},
		{name: "security stage skipped", method: iscsi.AuthCHAP, opt: initiator.Options{SkipSecurity: true}, status: 0x0201},
		{name: "wrong secret", method: iscsi.AuthCHAP, opt: initiator.Options{CHAP: &initiator.CHAP{Username: "alice", Secret: "wrong-secret-1"}}, status: 0x0201},
		{name: "unknown user", method: iscsi.AuthCHAP, opt: initiator.Options{CHAP: &initiator.CHAP{Username: "mallory", Secret: aliceSecret}}, status: 0x0201},
		{name: "credential of another initiator", method: iscsi.AuthCHAP, opt: initiator.Options{CHAP: &initiator.CHAP{Username: "carol", Secret: "carol-secret-1"}}, status: 0x0201},
		{name: "unsupported algorithm only", method: iscsi.AuthCHAP, opt: initiator.Options{CHAP: &initiator.CHAP{Username: "alice", Secret: aliceSecret, Algorithms: []int{4}}}, status: 0x0201},
		{name: "mutual required, one-way offered", method: iscsi.AuthMutualCHAP, opt: initiator.Options{CHAP: &initiator.CHAP{Username: "alice", Secret: aliceSecret}}, status: 0x0201},
		{name: "mutual, target answers with another secret", method: iscsi.AuthMutualCHAP, opt: initiator.Options{CHAP: &initiator.CHAP{Username: "alice", Secret: aliceSecret, TargetUsername: "tgt", TargetSecret: "not-the-secret"}}, errMsg: "target response does not match"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, logs := chapServer(t, tc.method)
			tc.opt.TargetName = testTarget
			c, err := initiator.Dial(ctxT(t), h.addr, tc.opt)
			switch {
			case tc.errMsg != "":
				require.ErrorContains(t, err, tc.errMsg)
			case tc.status != 0:
				var le *initiator.LoginError
				require.ErrorAs(t, err, &le)
				require.Equal(t, tc.status, le.Status(), le.Error())
				require.Eventually(t, func() bool { return strings.Contains(logs.String(), "login rejected") }, 5*time.Second, 10*time.Millisecond)
				require.Contains(t, logs.String(), "status=0x0201")
				require.Contains(t, logs.String(), "remote=127.0.0.1:")
			default:
				require.NoError(t, err)
				_ = c.TestUnitReady(ctxT(t), 0)
				require.NoError(t, c.TestUnitReady(ctxT(t), 0))
				require.NoError(t, c.Logout(ctxT(t)))
			}
			for _, secret := range []string{aliceSecret, targetSecret, "carol-secret-1", "wrong-secret-1", "not-the-secret"} {
				require.NotContains(t, logs.String(), secret, "a secret reached the log")
			}
		})
	}
}

// TestCHAPAlgorithmPreference: the target picks from the initiator's
// CHAP_A list in its own order of preference (strongest first by
// default), and its challenge is as long as that algorithm's digest.
func TestCHAPAlgorithmPreference(t *testing.T) {
	tests := []struct {
		prefer []int
		offer  string
		want   string
		length int
	}{
		{nil, "5,6,7,8", "8", 32},
		{nil, "5,6", "6", 20},
		{nil, "5", "5", 16},
		{[]int{5, 7}, "8,7,5", "5", 16},
		{[]int{7}, "5,7", "7", 32},
	}
	for _, tc := range tests {
		t.Run(tc.offer, func(t *testing.T) {
			h, _ := chapServer(t, iscsi.AuthCHAP, tc.prefer...)
			c, err := initiator.DialRaw(ctxT(t), h.addr, initiator.Options{TargetName: testTarget})
			require.NoError(t, err)
			defer c.Close()
			rawLogin(t, c, 0, false, negotiate.Pair{Key: "InitiatorName", Value: initiator.DefaultInitiatorName},
				negotiate.Pair{Key: "TargetName", Value: testTarget}, negotiate.Pair{Key: "AuthMethod", Value: "CHAP,None"})
			resp := rawLogin(t, c, 1, false, negotiate.Pair{Key: "CHAP_A", Value: tc.offer})
			require.Equal(t, tc.want, resp["CHAP_A"])
			b, err := chap.DecodeBinary(resp["CHAP_C"])
			require.NoError(t, err)
			require.Len(t, b, tc.length)
		})
	}
	// Nothing acceptable: authentication failure.
	h, _ := chapServer(t, iscsi.AuthCHAP, 8)
	_, err := initiator.Dial(ctxT(t), h.addr, initiator.Options{TargetName: testTarget,
		CHAP: &initiator.CHAP{Username: "alice", Secret: aliceSecret, Algorithms: []int{5}}})
	var le *initiator.LoginError
	require.ErrorAs(t, err, &le)
	require.EqualValues(t, 0x0201, le.Status())
}

func TestDiscoveryCHAP(t *testing.T) {
	h, _ := chapServer(t, iscsi.AuthNone)
	_, err := initiator.Dial(ctxT(t), h.addr, initiator.Options{})
	var le *initiator.LoginError
	require.ErrorAs(t, err, &le)
	require.EqualValues(t, 0x0201, le.Status())

	c, err := initiator.Dial(ctxT(t), h.addr, initiator.Options{CHAP: &initiator.CHAP{Username: "disco", Secret: discoSecret}})
	require.NoError(t, err)
	defer c.Close()
	targets, err := c.SendTargets(ctxT(t), "All")
	require.NoError(t, err)
	require.Contains(t, targets, testTarget)

	// The target itself is open (AuthNone) to normal logins.
	n, err := initiator.Dial(ctxT(t), h.addr, initiator.Options{TargetName: testTarget})
	require.NoError(t, err)
	n.Close()
}

// TestCHAPReflection plays the reflection attack: the initiator sends back
// the challenge the target just sent it as its own mutual challenge. The
// target must not compute the response for it.
func TestCHAPReflection(t *testing.T) {
	h, _ := chapServer(t, iscsi.AuthMutualCHAP)
	for _, reuse := range []bool{false, true} {
		c, err := initiator.DialRaw(ctxT(t), h.addr, initiator.Options{TargetName: testTarget})
		require.NoError(t, err)
		resp := rawLogin(t, c, 0, false, negotiate.Pair{Key: "InitiatorName", Value: initiator.DefaultInitiatorName},
			negotiate.Pair{Key: "TargetName", Value: testTarget}, negotiate.Pair{Key: "SessionType", Value: "Normal"},
			negotiate.Pair{Key: "AuthMethod", Value: "CHAP"})
		require.Equal(t, "CHAP", resp["AuthMethod"])
		resp = rawLogin(t, c, 1, false, negotiate.Pair{Key: "CHAP_A", Value: "5"})
		id, challenge := resp["CHAP_I"], resp["CHAP_C"]
		require.NotEmpty(t, challenge)
		mine := challenge
		if reuse {
			mine = "0x00112233445566778899aabbccddeeff" // sent twice: the second time is a reuse
		}
		r := md5Hex(t, id, aliceSecret, challenge)
		status, keys := rawLoginStatus(t, c, 2, true, negotiate.Pair{Key: "CHAP_N", Value: "alice"},
			negotiate.Pair{Key: "CHAP_R", Value: r}, negotiate.Pair{Key: "CHAP_I", Value: "1"},
			negotiate.Pair{Key: "CHAP_C", Value: mine})
		c.Close()
		if reuse {
			// The first use of a fresh challenge is answered...
			require.EqualValues(t, 0, status)
			require.NotEmpty(t, keys["CHAP_R"])
			// ...and the same challenge on a second login is refused.
			c2, err := initiator.DialRaw(ctxT(t), h.addr, initiator.Options{TargetName: testTarget})
			require.NoError(t, err)
			rawLogin(t, c2, 0, false, negotiate.Pair{Key: "InitiatorName", Value: initiator.DefaultInitiatorName},
				negotiate.Pair{Key: "TargetName", Value: testTarget}, negotiate.Pair{Key: "AuthMethod", Value: "CHAP"})
			resp = rawLogin(t, c2, 1, false, negotiate.Pair{Key: "CHAP_A", Value: "5"})
			r = md5Hex(t, resp["CHAP_I"], aliceSecret, resp["CHAP_C"])
			status, keys = rawLoginStatus(t, c2, 2, true, negotiate.Pair{Key: "CHAP_N", Value: "alice"},
				negotiate.Pair{Key: "CHAP_R", Value: r}, negotiate.Pair{Key: "CHAP_I", Value: "1"},
				negotiate.Pair{Key: "CHAP_C", Value: mine})
			c2.Close()
		}
		require.EqualValues(t, 0x0201, status, "reuse=%v", reuse)
		require.Empty(t, keys["CHAP_R"], "the target answered a reflected challenge")
	}
}

// TestInitiatorAccessControl: Target.Allow decides by name, address and
// portal group; a refused initiator gets 0x0202 and does not see the
// target in discovery.
func TestInitiatorAccessControl(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	const guarded = "iqn.2026-11.io.iscsikit:guarded"
	allowed := "iqn.2026-11.io.test:allowed"
	require.NoError(t, h.srv.AddTarget(&iscsi.Target{Name: guarded, Device: h.dev, Allow: func(info iscsi.LoginInfo) bool {
		return info.InitiatorName == allowed && strings.HasPrefix(info.RemoteAddr, "127.0.0.1:") && info.PortalGroupTag == 1 && info.TargetName == guarded
	}}))
	for _, tc := range []struct {
		name    string
		allowed bool
	}{{allowed, true}, {"iqn.2026-11.io.test:other", false}} {
		c, err := initiator.Dial(ctxT(t), h.addr, initiator.Options{InitiatorName: tc.name, TargetName: guarded})
		if tc.allowed {
			require.NoError(t, err)
			c.Close()
		} else {
			var le *initiator.LoginError
			require.ErrorAs(t, err, &le)
			require.EqualValues(t, 0x0202, le.Status())
		}
		d, err := initiator.Dial(ctxT(t), h.addr, initiator.Options{InitiatorName: tc.name})
		require.NoError(t, err)
		for _, what := range []string{"All", guarded} {
			targets, err := d.SendTargets(ctxT(t), what)
			require.NoError(t, err)
			_, seen := targets[guarded]
			require.Equal(t, tc.allowed, seen, "%s SendTargets=%s", tc.name, what)
		}
		d.Close()
	}
}

func TestLoginLimits(t *testing.T) {
	h := startServer(t, iscsi.Options{Limits: iscsi.Limits{MaxLoginKeys: 40, MaxSessionsPerTarget: 2}})
	var many []negotiate.Pair
	for i := range 50 {
		many = append(many, negotiate.Pair{Key: fmt.Sprintf("X-io.test.key%d", i), Value: "1"})
	}
	_, err := initiator.Dial(ctxT(t), h.addr, initiator.Options{TargetName: testTarget, Keys: many})
	var le *initiator.LoginError
	require.ErrorAs(t, err, &le)
	require.EqualValues(t, 0x0200, le.Status())

	for i := range 2 {
		c, err := initiator.Dial(ctxT(t), h.addr, initiator.Options{TargetName: testTarget, ISID: [6]byte{0x80, 0, 0, 0, 0, byte(i + 1)}})
		require.NoError(t, err)
		defer c.Close()
	}
	_, err = initiator.Dial(ctxT(t), h.addr, initiator.Options{TargetName: testTarget, ISID: [6]byte{0x80, 0, 0, 0, 0, 9}})
	require.ErrorAs(t, err, &le)
	require.EqualValues(t, 0x0302, le.Status())
	// Reinstating one of the two sessions (same initiator and ISID) is
	// not a third session.
	r, err := initiator.Dial(ctxT(t), h.addr, initiator.Options{TargetName: testTarget, ISID: [6]byte{0x80, 0, 0, 0, 0, 1}})
	require.NoError(t, err)
	defer r.Close()

	// A login PDU announcing a data segment beyond 8 KiB (the login
	// MaxRecvDataSegmentLength) is not read: the connection is dropped.
	nc, err := net.Dial("tcp", h.addr)
	require.NoError(t, err)
	defer nc.Close()
	var big pdu.PDU
	(&pdu.LoginRequest{CSG: pdu.StageSecurity, ISID: initiator.DefaultISID, Data: make([]byte, 8)}).Encode(&big)
	hdr := big.Header
	hdr[5], hdr[6], hdr[7] = 0x10, 0, 0 // DataSegmentLength 1 MiB
	_, err = nc.Write(hdr[:])
	require.NoError(t, err)
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = nc.Read(make([]byte, 48))
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "connection kept open waiting for 1 MiB of login data")
	require.Error(t, err)
	// Discovery is not a session of the target.
	d, err := initiator.Dial(ctxT(t), h.addr, initiator.Options{})
	require.NoError(t, err)
	d.Close()
}

// TestLoginTimeoutDropsSilentAndHalfSentLogins: a connection that sends
// nothing, or half a header, is closed once LoginTimeout passes.
func TestLoginTimeoutDropsSilentAndHalfSentLogins(t *testing.T) {
	logs := &syncbuf.Buffer{}
	h := startServer(t, iscsi.Options{LoginTimeout: 300 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	defer func() { require.Contains(t, logs.String(), "login timed out") }()
	for _, partial := range [][]byte{nil, {0x43, 0x87, 0, 0, 0, 0, 0, 0x20}} {
		nc, err := net.Dial("tcp", h.addr)
		require.NoError(t, err)
		defer nc.Close()
		if partial != nil {
			_, err = nc.Write(partial)
			require.NoError(t, err)
		}
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		start := time.Now()
		_, err = nc.Read(make([]byte, 1))
		require.Error(t, err, "the server answered instead of hanging up")
		require.Less(t, time.Since(start), 9*time.Second, "connection not dropped at the login timeout")
	}
}

// TestIdleConnectionFloodDoesNotBlockLogin holds 500 idle connections open
// against the portal, then logs in: with the default limits and with tight
// ones, the login goes through (well within 2 seconds even on a loaded
// machine, the bound checked here) because idle connections in login are
// displaced by newer ones.
func TestIdleConnectionFloodDoesNotBlockLogin(t *testing.T) {
	for _, lim := range []iscsi.Limits{{}, {MaxConnections: 50, MaxPendingLogins: 20, MaxPendingLoginsPerSource: 10}} {
		t.Run(fmt.Sprintf("%+v", lim), func(t *testing.T) {
			logs := &syncbuf.Buffer{}
			h := startServer(t, iscsi.Options{Limits: lim, Logger: slog.New(slog.NewTextHandler(logs, nil))})
			var flood []net.Conn
			defer func() {
				for _, c := range flood {
					c.Close()
				}
			}()
			for range 500 {
				c, err := net.Dial("tcp", h.addr)
				require.NoError(t, err)
				flood = append(flood, c)
			}
			// Half of them start a login header and stall.
			for _, c := range flood[:250] {
				_, err := c.Write([]byte{0x43, 0x87})
				require.NoError(t, err)
			}
			start := time.Now()
			c, err := initiator.Dial(ctxT(t), h.addr, initiator.Options{TargetName: testTarget})
			require.NoError(t, err)
			took := time.Since(start)
			_ = c.TestUnitReady(ctxT(t), 0)
			require.NoError(t, c.TestUnitReady(ctxT(t), 0))
			require.NoError(t, c.Logout(ctxT(t)))
			require.Less(t, took, 2*time.Second)
			require.Contains(t, logs.String(), "displaced by a newer one")
		})
	}
}

func chapAlgs(ns []int) []chap.Algorithm {
	out := make([]chap.Algorithm, len(ns))
	for i, n := range ns {
		out[i] = chap.Algorithm(n)
	}
	return out
}

// md5Hex is the CHAP MD5 response to a CHAP_I and CHAP_C as sent.
func md5Hex(t *testing.T, id, secret, challenge string) string {
	t.Helper()
	n, err := chap.ParseID(id)
	require.NoError(t, err)
	c, err := chap.DecodeBinary(challenge)
	require.NoError(t, err)
	r, err := chap.Response(chap.MD5, n, []byte(secret), c)
	require.NoError(t, err)
	return chap.EncodeHex(r)
}

// rawLogin sends one security-stage Login Request (transit to the
// operational stage when transit) and requires a successful answer.
func rawLogin(t *testing.T, c *initiator.Conn, itt uint32, transit bool, keys ...negotiate.Pair) map[string]string {
	t.Helper()
	status, resp := rawLoginStatus(t, c, itt, transit, keys...)
	require.EqualValues(t, 0, status)
	return resp
}

// rawLoginStatus sends one security-stage Login Request and returns the
// response's status and keys.
func rawLoginStatus(t *testing.T, c *initiator.Conn, itt uint32, transit bool, keys ...negotiate.Pair) (uint16, map[string]string) {
	t.Helper()
	req := pdu.LoginRequest{Transit: transit, CSG: pdu.StageSecurity, NSG: pdu.StageOperational, ISID: initiator.DefaultISID, ITT: itt,
		Data: negotiate.Append(nil, keys...)}
	if !transit {
		req.NSG = 0
	}
	var p pdu.PDU
	req.Encode(&p)
	require.NoError(t, c.SendPDU(&p))
	in, err := c.ReadPDU(ctxT(t))
	require.NoError(t, err)
	var resp pdu.LoginResponse
	require.NoError(t, resp.Decode(in))
	pairs, err := negotiate.Parse(resp.Data)
	require.NoError(t, err)
	out := map[string]string{}
	for _, kv := range pairs {
		out[kv.Key] = kv.Value
	}
	return uint16(resp.StatusClass)<<8 | uint16(resp.StatusDetail), out
}

// TestLeadingKeysRepeated: libiscsi repeats InitiatorName, TargetName and
// SessionType when it enters the operational stage; the same values are
// accepted, a changed one is an initiator error.
func TestLeadingKeysRepeated(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	for _, name := range []string{initiator.DefaultInitiatorName, "iqn.2026-11.io.test:someone-else"} {
		c, err := initiator.DialRaw(ctxT(t), h.addr, initiator.Options{TargetName: testTarget})
		require.NoError(t, err)
		rawLogin(t, c, 0, true, negotiate.Pair{Key: "InitiatorName", Value: initiator.DefaultInitiatorName},
			negotiate.Pair{Key: "TargetName", Value: testTarget}, negotiate.Pair{Key: "AuthMethod", Value: "None"})
		req := pdu.LoginRequest{CSG: pdu.StageOperational, ISID: initiator.DefaultISID, ITT: 1,
			Data: negotiate.Append(nil, negotiate.Pair{Key: "InitiatorName", Value: name}, negotiate.Pair{Key: "TargetName", Value: testTarget})}
		var p pdu.PDU
		req.Encode(&p)
		require.NoError(t, c.SendPDU(&p))
		in, err := c.ReadPDU(ctxT(t))
		require.NoError(t, err)
		var resp pdu.LoginResponse
		require.NoError(t, resp.Decode(in))
		status := uint16(resp.StatusClass)<<8 | uint16(resp.StatusDetail)
		if name == initiator.DefaultInitiatorName {
			require.EqualValues(t, 0, status)
		} else {
			require.EqualValues(t, 0x0200, status)
		}
		c.Close()
	}
}

// TestMaxConnectionsRefusesWhenAllLoggedIn: with every connection slot
// held by a logged-in session there is nothing to displace, so a new
// connection is closed at once (and logged); logged-in sessions carry on.
func TestMaxConnectionsRefusesWhenAllLoggedIn(t *testing.T) {
	logs := &syncbuf.Buffer{}
	h := startServer(t, iscsi.Options{Limits: iscsi.Limits{MaxConnections: 2}, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	var sessions []*initiator.Conn
	for i := range 2 {
		c, err := initiator.Dial(ctxT(t), h.addr, initiator.Options{TargetName: testTarget, ISID: [6]byte{0x80, 0, 0, 0, 1, byte(i)}})
		require.NoError(t, err)
		defer c.Close()
		sessions = append(sessions, c)
	}
	nc, err := net.Dial("tcp", h.addr)
	require.NoError(t, err)
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = nc.Read(make([]byte, 1))
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "connection beyond MaxConnections kept open")
	require.Contains(t, logs.String(), "too many connections")
	for _, c := range sessions {
		_, err := c.ReportLUNs(ctxT(t))
		require.NoError(t, err)
	}
}

// TestEnforceAccess: a session whose initiator the target no longer
// allows is ended by EnforceAccess; others stay.
func TestEnforceAccess(t *testing.T) {
	h := startServer(t, iscsi.Options{})
	const guarded = "iqn.2026-11.io.iscsikit:enforced"
	var mu sync.Mutex
	banned := ""
	require.NoError(t, h.srv.AddTarget(&iscsi.Target{Name: guarded, Device: h.dev, Allow: func(info iscsi.LoginInfo) bool {
		mu.Lock()
		defer mu.Unlock()
		return info.InitiatorName != banned
	}}))
	a, err := initiator.Dial(ctxT(t), h.addr, initiator.Options{TargetName: guarded, InitiatorName: "iqn.2026-11.io.test:a"})
	require.NoError(t, err)
	defer a.Close()
	b, err := initiator.Dial(ctxT(t), h.addr, initiator.Options{TargetName: guarded, InitiatorName: "iqn.2026-11.io.test:b"})
	require.NoError(t, err)
	defer b.Close()
	require.Zero(t, h.srv.EnforceAccess())
	mu.Lock()
	banned = "iqn.2026-11.io.test:a"
	mu.Unlock()
	require.Equal(t, 1, h.srv.EnforceAccess())
	select {
	case <-a.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("session of a banned initiator survived")
	}
	_, err = b.ReportLUNs(ctxT(t))
	require.NoError(t, err)
}

// TestCHAPBase64Response: CHAP_R (and a mutual CHAP_C) in base64 (0b) is
// accepted like hex; a truncated response is refused.
func TestCHAPBase64Response(t *testing.T) {
	h, _ := chapServer(t, iscsi.AuthCHAP)
	for _, truncate := range []bool{false, true} {
		c, err := initiator.DialRaw(ctxT(t), h.addr, initiator.Options{TargetName: testTarget})
		require.NoError(t, err)
		rawLogin(t, c, 0, false, negotiate.Pair{Key: "InitiatorName", Value: initiator.DefaultInitiatorName},
			negotiate.Pair{Key: "TargetName", Value: testTarget}, negotiate.Pair{Key: "AuthMethod", Value: "CHAP"})
		resp := rawLogin(t, c, 1, false, negotiate.Pair{Key: "CHAP_A", Value: "5"})
		r, err := chap.DecodeBinary(md5Hex(t, resp["CHAP_I"], aliceSecret, resp["CHAP_C"]))
		require.NoError(t, err)
		if truncate {
			r = r[:15]
		}
		status, keys := rawLoginStatus(t, c, 2, true, negotiate.Pair{Key: "CHAP_N", Value: "alice"},
			negotiate.Pair{Key: "CHAP_R", Value: "0b" + base64.StdEncoding.EncodeToString(r)},
			negotiate.Pair{Key: "CHAP_I", Value: "0x2a"},
			negotiate.Pair{Key: "CHAP_C", Value: "0b" + base64.StdEncoding.EncodeToString([]byte("sixteen byte chl"))})
		c.Close()
		if truncate {
			require.EqualValues(t, 0x0201, status)
			continue
		}
		require.EqualValues(t, 0, status)
		require.Equal(t, "tgt", keys["CHAP_N"])
		require.Equal(t, md5Hex(t, "42", targetSecret, chap.EncodeHex([]byte("sixteen byte chl"))), keys["CHAP_R"])
	}
}

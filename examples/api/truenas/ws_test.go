package truenas

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/mgmt"
)

const (
	testUser     = "admin"
	testPassword = "correct horse battery"
)

// wsEnv is a Server over a fresh Manager behind an httptest server.
type wsEnv struct {
	t    *testing.T
	srv  *Server
	http *httptest.Server
	dir  string
	keys string
}

func newWSEnv(t *testing.T) *wsEnv {
	t.Helper()
	dir := t.TempDir()
	m, err := mgmt.New(context.Background(), mgmt.Options{Store: &mgmt.MemoryStore{}, AllowedDirs: []string{dir}})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	keys := filepath.Join(dir, "api-keys.json")
	acc, err := OpenAccounts(keys, testUser, testPassword)
	require.NoError(t, err)
	s := New(m, Options{Accounts: acc})
	mux := http.NewServeMux()
	s.Register(mux)
	hs := httptest.NewServer(mux)
	t.Cleanup(func() { hs.Close(); s.Close() })
	return &wsEnv{t: t, srv: s, http: hs, dir: dir, keys: keys}
}

func (e *wsEnv) url(path string) string { return "ws" + strings.TrimPrefix(e.http.URL, "http") + path }

// wsClient speaks JSON-RPC over a WebSocket as truenas_api_client does:
// uuid-like string ids, core.set_options first, notifications kept.
type wsClient struct {
	t       *testing.T
	c       *websocket.Conn
	mu      sync.Mutex
	waiting map[string]chan map[string]any
	notes   chan map[string]any
	orphans chan map[string]any // responses nobody waits for
	closed  chan struct{}
	err     error // why the reader stopped, once closed is closed
}

func (e *wsEnv) dial(path string) *wsClient {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, e.url(path), nil)
	require.NoError(e.t, err)
	c.SetReadLimit(32 << 20)
	wc := &wsClient{t: e.t, c: c, waiting: map[string]chan map[string]any{}, notes: make(chan map[string]any, 1024),
		orphans: make(chan map[string]any, 1024), closed: make(chan struct{})}
	go wc.reader()
	e.t.Cleanup(func() { c.CloseNow(); <-wc.closed })
	return wc
}

func (c *wsClient) reader() {
	defer close(c.closed)
	for {
		_, data, err := c.c.Read(context.Background())
		if err != nil {
			c.err = err
			return
		}
		var m map[string]any
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		if _, ok := m["method"]; ok {
			c.notes <- m
			continue
		}
		id, _ := m["id"].(string)
		c.mu.Lock()
		ch := c.waiting[id]
		delete(c.waiting, id)
		c.mu.Unlock()
		if ch == nil {
			c.orphans <- m
			continue
		}
		ch <- m
	}
}

// send sends a call and returns the channel its response comes on.
func (c *wsClient) send(method string, params ...any) (string, chan map[string]any) {
	c.t.Helper()
	if params == nil {
		params = []any{}
	}
	id := rand.Text()
	ch := make(chan map[string]any, 1)
	c.mu.Lock()
	c.waiting[id] = ch
	c.mu.Unlock()
	b, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": method, "id": id, "params": params})
	require.NoError(c.t, err)
	require.NoError(c.t, c.c.Write(context.Background(), websocket.MessageText, b))
	return id, ch
}

func wait(t *testing.T, ch chan map[string]any) map[string]any {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(30 * time.Second):
		t.Fatal("no response")
		return nil
	}
}

// call sends a call and returns its response.
func (c *wsClient) call(method string, params ...any) map[string]any {
	c.t.Helper()
	_, ch := c.send(method, params...)
	return wait(c.t, ch)
}

// ok calls and requires a result, decoded into out when out is not nil.
func (c *wsClient) ok(out any, method string, params ...any) {
	c.t.Helper()
	r := c.call(method, params...)
	require.NotContains(c.t, r, "error", "%s: %v", method, r["error"])
	if out != nil {
		b, _ := json.Marshal(r["result"])
		require.NoError(c.t, json.Unmarshal(b, out))
	}
}

// errOf calls and requires an error, returning its code and data.
func (c *wsClient) errOf(method string, params ...any) (int, map[string]any, string) {
	c.t.Helper()
	r := c.call(method, params...)
	e, ok := r["error"].(map[string]any)
	require.True(c.t, ok, "%s should fail: %v", method, r)
	data, _ := e["data"].(map[string]any)
	msg, _ := e["message"].(string)
	return int(e["code"].(float64)), data, msg
}

// connect is what truenas_api_client does on open: core.set_options
// with legacy_jobs false.
func (c *wsClient) connect() {
	c.t.Helper()
	var opts map[string]any
	c.ok(&opts, "core.set_options", map[string]any{"legacy_jobs": false, "private_methods": false, "py_exceptions": false})
	require.Equal(c.t, false, opts["legacy_jobs"])
}

func (c *wsClient) loginPassword() {
	c.t.Helper()
	var r map[string]any
	c.ok(&r, "auth.login_ex", map[string]any{"mechanism": "PASSWORD_PLAIN", "username": testUser, "password": testPassword})
	require.Equal(c.t, "SUCCESS", r["response_type"])
}

func TestWebSocketLogins(t *testing.T) {
	e := newWSEnv(t)
	c := e.dial(Path)
	c.connect()

	// Before login: ping answers, everything else is ENOTAUTHENTICATED.
	var pong string
	c.ok(&pong, "core.ping")
	require.Equal(t, "pong", pong)
	code, data, _ := c.errOf("iscsi.portal.query")
	require.Equal(t, CodeCallError, code)
	require.EqualValues(t, errENOTAUTHENTICATED, data["error"])
	require.Equal(t, "ENOTAUTHENTICATED", data["errname"])
	require.Contains(t, data, "trace")
	code, data, _ = c.errOf("core.subscribe", "core.get_jobs")
	require.Equal(t, CodeCallError, code)
	require.EqualValues(t, errENOTAUTHENTICATED, data["error"])
	code, _, msg := c.errOf("no.such.method")
	require.Equal(t, -32601, code)
	require.Equal(t, "Method does not exist", msg)
	_, data, _ = c.errOf("auth.me")
	require.EqualValues(t, errENOTAUTHENTICATED, data["error"])

	// auth.login_ex PASSWORD_PLAIN, bad then good.
	var r map[string]any
	c.ok(&r, "auth.login_ex", map[string]any{"mechanism": "PASSWORD_PLAIN", "username": testUser, "password": "wrong"})
	require.Equal(t, "AUTH_ERR", r["response_type"])
	c.ok(&r, "auth.login_ex", map[string]any{"mechanism": "PASSWORD_PLAIN", "username": "root", "password": testPassword})
	require.Equal(t, "AUTH_ERR", r["response_type"])
	_, _, _ = c.errOf("iscsi.portal.query")
	c.loginPassword()
	var portals []any
	c.ok(&portals, "iscsi.portal.query")

	// An API key, made over the socket and stored hashed with mode 0600.
	var key map[string]any
	c.ok(&key, "api_key.create", map[string]any{"name": "ci", "username": testUser})
	raw := key["key"].(string)
	require.Regexp(t, `^\d+-[a-zA-Z0-9]+$`, raw)
	fi, err := os.Stat(e.keys)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	stored, err := os.ReadFile(e.keys)
	require.NoError(t, err)
	_, secret, _ := strings.Cut(raw, "-")
	require.NotContains(t, string(stored), secret)
	var keys []map[string]any
	c.ok(&keys, "api_key.query", [][]any{{"id", "=", key["id"]}})
	require.Len(t, keys, 1)
	require.Equal(t, "********", keys[0]["stored_key"])
	code, _, _ = c.errOf("api_key.create", map[string]any{"name": "x", "username": "nobody"})
	require.Equal(t, -32602, code)

	// API_KEY_PLAIN, auth.login, auth.login_with_api_key on new sessions.
	k := e.dial(Path)
	k.connect()
	k.ok(&r, "auth.login_ex", map[string]any{"mechanism": "API_KEY_PLAIN", "username": testUser, "api_key": raw + "x"})
	require.Equal(t, "AUTH_ERR", r["response_type"])
	k.ok(&r, "auth.login_ex", map[string]any{"mechanism": "API_KEY_PLAIN", "username": testUser, "api_key": raw})
	require.Equal(t, "SUCCESS", r["response_type"])
	k.ok(&portals, "iscsi.portal.query")

	l := e.dial(Path)
	var ok bool
	l.ok(&ok, "auth.login", testUser, "nope", nil)
	require.False(t, ok)
	l.ok(&ok, "auth.login", testUser, testPassword, nil)
	require.True(t, ok)
	l.ok(&portals, "iscsi.portal.query")

	a := e.dial(Path)
	a.ok(&ok, "auth.login_with_api_key", "99-abc")
	require.False(t, ok)
	a.ok(&ok, "auth.login_with_api_key", raw)
	require.True(t, ok)
	a.ok(&portals, "iscsi.portal.query")

	// SCRAM, as the client's default (no channel binding over ws://).
	s := e.dial(Path)
	s.connect()
	var mechs []string
	s.ok(&mechs, "auth.mechanism_choices")
	require.Contains(t, mechs, "SCRAM")
	wrong := raw[:len(raw)-1] + "Z"
	if wrong == raw { // a random key may end in Z already
		wrong = raw[:len(raw)-1] + "Y"
	}
	require.False(t, scramLogin(t, s, testUser, wrong), "a wrong key must fail")
	_, _, _ = s.errOf("iscsi.portal.query")
	require.True(t, scramLogin(t, s, testUser, raw))
	s.ok(&portals, "iscsi.portal.query")

	// A deleted key logs in no more.
	c.ok(&ok, "api_key.delete", key["id"])
	d := e.dial(Path)
	d.ok(&ok, "auth.login_with_api_key", raw)
	require.False(t, ok)
}

// scramLogin runs truenas_api_client's SCRAM-SHA-512 exchange for raw
// ("ID-KEY") and checks the server's signature.
func scramLogin(t *testing.T, c *wsClient, user, raw string) bool {
	t.Helper()
	return scramLoginCB(t, c, user, raw, "n", nil)
}

// scramLoginCB is scramLogin with a GS2 channel-binding flag and data.
func scramLoginCB(t *testing.T, c *wsClient, user, raw, flag string, cbData []byte) bool {
	t.Helper()
	idText, secret, _ := strings.Cut(raw, "-")
	nonce := make([]byte, 32)
	rand.Read(nonce)
	bare := "n=" + user + ":" + idText + ",r=" + base64.StdEncoding.EncodeToString(nonce)
	var first map[string]any
	c.ok(&first, "auth.login_ex", map[string]any{"mechanism": "SCRAM", "scram_type": "CLIENT_FIRST_MESSAGE", "rfc_str": flag + ",," + bare})
	if first["response_type"] == "AUTH_ERR" {
		return false
	}
	require.Equal(t, "SCRAM_RESPONSE", first["response_type"])
	require.Equal(t, "SERVER_FIRST_RESPONSE", first["scram_type"])
	serverFirst := first["rfc_str"].(string)
	attrs := map[string]string{}
	for _, a := range strings.Split(serverFirst, ",") {
		k, v, _ := strings.Cut(a, "=")
		attrs[k] = v
	}
	combined, err := base64.StdEncoding.DecodeString(attrs["r"])
	require.NoError(t, err)
	require.Len(t, combined, 64)
	require.Equal(t, nonce, combined[:32])
	salt, err := base64.StdEncoding.DecodeString(attrs["s"])
	require.NoError(t, err)
	iters, err := strconv.Atoi(attrs["i"])
	require.NoError(t, err)
	require.GreaterOrEqual(t, iters, 50000)
	salted, err := pbkdf2.Key(sha512.New, secret, salt, iters, 64)
	require.NoError(t, err)
	clientKey := hmacSHA512(salted, []byte("Client Key"))
	storedKey := sha512.Sum512(clientKey)
	withoutProof := "c=" + base64.StdEncoding.EncodeToString(append([]byte(flag+",,"), cbData...)) + ",r=" + attrs["r"]
	authMsg := []byte(bare + "," + serverFirst + "," + withoutProof)
	sig := hmacSHA512(storedKey[:], authMsg)
	proof := make([]byte, 64)
	for i := range proof {
		proof[i] = clientKey[i] ^ sig[i]
	}
	var final map[string]any
	c.ok(&final, "auth.login_ex", map[string]any{"mechanism": "SCRAM", "scram_type": "CLIENT_FINAL_MESSAGE",
		"rfc_str": withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)})
	if final["response_type"] == "AUTH_ERR" {
		return false
	}
	require.Equal(t, "SERVER_FINAL_RESPONSE", final["scram_type"])
	serverSig := hmacSHA512(hmacSHA512(salted, []byte("Server Key")), authMsg)
	require.Equal(t, "v="+base64.StdEncoding.EncodeToString(serverSig), final["rfc_str"])
	return true
}

// TestJobAwaitedThroughGetJobs follows Client.call(..., job=True) with
// new-style jobs: core.subscribe("core.get_jobs"), the call, the job id
// from the ADDED event naming the call's id, and the end from CHANGED.
func TestJobAwaitedThroughGetJobs(t *testing.T) {
	e := newWSEnv(t)
	c := e.dial(Path)
	c.connect()
	c.loginPassword()
	var sub string
	c.ok(&sub, "core.subscribe", "core.get_jobs")
	require.NotEmpty(t, sub)
	path := filepath.Join(e.dir, "lun0.img")
	require.NoError(t, os.WriteFile(path, make([]byte, 1<<20), 0o600))
	var ext map[string]any
	c.ok(&ext, "iscsi.extent.create", map[string]any{"name": "lun0", "type": "FILE", "path": path, "filesize": 1 << 20})

	id, ch := c.send("iscsi.extent.delete", ext["id"], map[string]any{"remove": true, "force": false})
	added := nextJobEvent(t, c, "added")
	fields := added["fields"].(map[string]any)
	require.Contains(t, fields["message_ids"], id)
	require.Equal(t, "iscsi.extent.delete", fields["method"])
	jobID := added["id"]
	changed := nextJobEvent(t, c, "changed")
	require.Equal(t, jobID, changed["id"])
	fields = changed["fields"].(map[string]any)
	require.Equal(t, "SUCCESS", fields["state"])
	require.Equal(t, true, fields["result"])
	resp := wait(t, ch)
	require.Equal(t, true, resp["result"], "new-style jobs answer the call with the job's result")
	_, err := os.Stat(path)
	require.True(t, os.IsNotExist(err), "remove deleted the file")

	// A failing job: FAILED with exc_info, and the call's error.
	id, ch = c.send("iscsi.extent.delete", 999)
	added = nextJobEvent(t, c, "added")
	require.Contains(t, added["fields"].(map[string]any)["message_ids"], id)
	changed = nextJobEvent(t, c, "changed")
	fields = changed["fields"].(map[string]any)
	require.Equal(t, "FAILED", fields["state"])
	require.NotEmpty(t, fields["error"])
	require.NotEmpty(t, fields["exception"])
	require.EqualValues(t, errENOENT, fields["exc_info"].(map[string]any)["errno"])
	resp = wait(t, ch)
	require.Contains(t, resp, "error")

	// core.get_jobs lists both.
	var jobs []map[string]any
	c.ok(&jobs, "core.get_jobs", [][]any{{"method", "=", "iscsi.extent.delete"}})
	require.Len(t, jobs, 2)

	// A legacy_jobs session gets the job id back at once.
	l := e.dial(Path)
	l.loginPassword()
	c.ok(&ext, "iscsi.extent.create", map[string]any{"name": "lun1", "type": "FILE", "path": path, "filesize": 1 << 20})
	var jid int
	l.ok(&jid, "iscsi.extent.delete", ext["id"], map[string]any{"remove": true})
	require.Positive(t, jid)
	require.Eventually(t, func() bool {
		var one map[string]any
		l.ok(&one, "core.get_jobs", [][]any{{"id", "=", jid}}, map[string]any{"get": true})
		return one["state"] == "SUCCESS"
	}, 30*time.Second, 20*time.Millisecond)
}

func nextJobEvent(t *testing.T, c *wsClient, msg string) map[string]any {
	t.Helper()
	for {
		select {
		case n := <-c.notes:
			require.Equal(t, "collection_update", n["method"])
			p := n["params"].(map[string]any)
			if p["collection"] == "core.get_jobs" && p["msg"] == msg {
				return p
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s job event", msg)
		}
	}
}

func TestManyCallsAndConnections(t *testing.T) {
	e := newWSEnv(t)
	c := e.dial(Path)
	c.loginPassword()
	// 1000 calls in flight on one connection, each answered once.
	chans := make([]chan map[string]any, 1000)
	for i := range chans {
		_, chans[i] = c.send("core.ping")
	}
	for _, ch := range chans {
		require.Equal(t, "pong", wait(t, ch)["result"])
	}
	// 50 connections at once, each logging in and querying.
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		cc := e.dial(Path)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, ch := cc.send("auth.login_ex", map[string]any{"mechanism": "PASSWORD_PLAIN", "username": testUser, "password": testPassword})
			r := <-ch
			if r["result"].(map[string]any)["response_type"] != "SUCCESS" {
				t.Error("login failed", r)
				return
			}
			for j := 0; j < 10; j++ {
				_, ch := cc.send("iscsi.global.config")
				if r := <-ch; r["error"] != nil {
					t.Error(r["error"])
				}
			}
		}()
	}
	wg.Wait()
}

func TestBadFrames(t *testing.T) {
	e := newWSEnv(t)
	bystander := e.dial(Path)
	bystander.loginPassword()
	c := e.dial(Path)
	ctx := context.Background()
	write := func(s string) {
		require.NoError(t, c.c.Write(ctx, websocket.MessageText, []byte(s)))
	}
	nextOrphan := func() map[string]any {
		select {
		case m := <-c.orphans:
			return m
		case <-time.After(30 * time.Second):
			t.Fatal("no answer")
			return nil
		}
	}
	errCode := func(m map[string]any) int { return int(m["error"].(map[string]any)["code"].(float64)) }
	for _, tc := range []struct {
		frame string
		code  int
	}{
		{"not json", -32700},
		{`[{"jsonrpc":"2.0","method":"core.ping","id":"1"}]`, -32700},
		{`{"jsonrpc":"1.0","method":"core.ping","id":"1"}`, -32600},
		{`{"jsonrpc":"2.0","id":"1"}`, -32600},
		{`{"jsonrpc":"2.0","method":"core.ping","params":{"a":1},"id":"1"}`, -32600},
		{`{"jsonrpc":"2.0","method":"core.ping","id":{"x":1}}`, -32600},
		{`{"jsonrpc":"2.0","method":"core.ping","id":"1","extra":true}`, -32600},
	} {
		write(tc.frame)
		m := nextOrphan()
		require.Equal(t, tc.code, errCode(m), tc.frame)
		require.Nil(t, m["id"])
	}
	// A call without an id is answered with a null id.
	write(`{"jsonrpc":"2.0","method":"core.ping"}`)
	m := nextOrphan()
	require.Equal(t, "pong", m["result"])
	require.Nil(t, m["id"])

	// A binary frame closes this connection with 1003, a 16 MiB frame
	// with 1009; the other connection goes on.
	b := e.dial(Path)
	require.NoError(t, b.c.Write(ctx, websocket.MessageBinary, []byte(`{"jsonrpc":"2.0","method":"core.ping","id":"1"}`)))
	<-b.closed
	require.Equal(t, websocket.StatusUnsupportedData, websocket.CloseStatus(b.err), "%v", b.err)
	big := e.dial(Path)
	big.loginPassword()
	huge := `{"jsonrpc":"2.0","method":"core.ping","id":"1","params":["` + strings.Repeat("x", 16<<20) + `"]}`
	big.c.Write(ctx, websocket.MessageText, []byte(huge)) // the server may cut the write short
	<-big.closed
	require.Equal(t, websocket.StatusMessageTooBig, websocket.CloseStatus(big.err), "%v", big.err)
	var pong string
	bystander.ok(&pong, "core.ping")
	require.Equal(t, "pong", pong)
	c.ok(&pong, "core.ping")
}

// legacyClient speaks the legacy protocol as LegacyClient does.
type legacyClient struct {
	t *testing.T
	c *websocket.Conn
}

func (e *wsEnv) dialLegacy() *legacyClient {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, e.url(LegacyPath), nil)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { c.CloseNow() })
	return &legacyClient{t: e.t, c: c}
}

func (l *legacyClient) send(v any) {
	l.t.Helper()
	b, err := json.Marshal(v)
	require.NoError(l.t, err)
	require.NoError(l.t, l.c.Write(context.Background(), websocket.MessageText, b))
}

func (l *legacyClient) recv() map[string]any {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, data, err := l.c.Read(ctx)
	require.NoError(l.t, err)
	var m map[string]any
	require.NoError(l.t, json.Unmarshal(data, &m))
	return m
}

// call sends a method message and returns its result message, keeping
// events that arrive before it.
func (l *legacyClient) call(events *[]map[string]any, method string, params ...any) map[string]any {
	l.t.Helper()
	if params == nil {
		params = []any{}
	}
	id := rand.Text()
	l.send(map[string]any{"msg": "method", "method": method, "id": id, "params": params})
	for {
		m := l.recv()
		if m["msg"] == "result" && m["id"] == id {
			return m
		}
		if events != nil {
			*events = append(*events, m)
		}
	}
}

func TestLegacyProtocol(t *testing.T) {
	e := newWSEnv(t)
	l := e.dialLegacy()
	// Nothing before connect; a wrong version fails.
	l.send(map[string]any{"msg": "ping", "id": "p0"})
	require.Equal(t, "failed", l.recv()["msg"])
	l.send(map[string]any{"msg": "connect", "version": "2", "support": []string{"2"}})
	require.Equal(t, "failed", l.recv()["msg"])
	l.send(map[string]any{"msg": "connect", "version": "1", "support": []string{"1"}, "features": []string{}})
	m := l.recv()
	require.Equal(t, "connected", m["msg"])
	require.NotEmpty(t, m["session"])
	l.send(map[string]any{"msg": "ping", "id": "p1"})
	require.Equal(t, map[string]any{"msg": "pong", "id": "p1"}, l.recv())

	// Refused before login, with the errno the client reads.
	r := l.call(nil, "iscsi.portal.query")
	require.EqualValues(t, errENOTAUTHENTICATED, r["error"].(map[string]any)["error"])
	l.send(map[string]any{"msg": "sub", "id": "s1", "name": "core.get_jobs"})
	m = l.recv()
	require.Equal(t, "nosub", m["msg"])
	require.Equal(t, "core.get_jobs", m["collection"])
	r = l.call(nil, "no.such")
	require.EqualValues(t, errENOMETHOD, r["error"].(map[string]any)["error"])

	// LegacyClient.login_with_password: auth.login with otp_token null.
	r = l.call(nil, "auth.login", testUser, "bad", nil)
	require.Equal(t, false, r["result"])
	r = l.call(nil, "auth.login", testUser, testPassword, nil)
	require.Equal(t, true, r["result"])

	// A validation error carries type VALIDATION, a trace and the fields.
	r = l.call(nil, "iscsi.portal.create", map[string]any{"listen": []any{map[string]any{"ip": "not-an-ip", "port": 3260}}})
	errObj := r["error"].(map[string]any)
	require.Equal(t, "VALIDATION", errObj["type"])
	require.NotNil(t, errObj["trace"])
	require.NotEmpty(t, errObj["extra"])

	// call(..., job=True): sub to core.get_jobs, the job id as result,
	// then added/changed events.
	l.send(map[string]any{"msg": "sub", "id": "s2", "name": "core.get_jobs"})
	require.Equal(t, map[string]any{"msg": "ready", "subs": []any{"s2"}}, l.recv())
	path := filepath.Join(e.dir, "legacy.img")
	require.NoError(t, os.WriteFile(path, make([]byte, 1<<20), 0o600))
	r = l.call(nil, "iscsi.extent.create", map[string]any{"name": "legacy", "type": "FILE", "path": path, "filesize": 1 << 20})
	extID := r["result"].(map[string]any)["id"]
	var events []map[string]any
	r = l.call(&events, "iscsi.extent.delete", extID, map[string]any{"remove": true})
	jobID := r["result"]
	require.NotNil(t, jobID)
	for !hasChanged(events, jobID) {
		events = append(events, l.recv())
	}
	for _, ev := range events {
		require.Equal(t, "core.get_jobs", ev["collection"])
	}
	require.Equal(t, "added", events[0]["msg"])

	// Unknown msg and a method without an id get errors; the
	// connection stays.
	l.send(map[string]any{"msg": "bogus", "id": "b1"})
	m = l.recv()
	require.Equal(t, "result", m["msg"])
	require.NotNil(t, m["error"])
	l.send(map[string]any{"msg": "method", "method": "core.ping"})
	m = l.recv()
	require.NotNil(t, m["error"])
	l.send(map[string]any{"msg": "unsub", "id": "s2"})
	l.send(map[string]any{"msg": "ping", "id": "p2"})
	require.Equal(t, "pong", l.recv()["msg"])
	require.NoError(t, l.c.Write(context.Background(), websocket.MessageText, []byte("{{{")))
	require.NotNil(t, l.recv()["error"])
	r = l.call(nil, "core.ping")
	require.Equal(t, "pong", r["result"])
}

func hasChanged(events []map[string]any, id any) bool {
	for _, ev := range events {
		if ev["msg"] == "changed" && ev["id"] == id && ev["fields"].(map[string]any)["state"] == "SUCCESS" {
			return true
		}
	}
	return false
}

func TestRESTv2(t *testing.T) {
	e := newWSEnv(t)
	do := func(method, path, body string, want int) any {
		t.Helper()
		req, err := http.NewRequest(method, e.http.URL+RESTPrefix+path, strings.NewReader(body))
		require.NoError(t, err)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var out any
		json.NewDecoder(resp.Body).Decode(&out)
		require.Equal(t, want, resp.StatusCode, "%s %s: %v", method, path, out)
		return out
	}
	p := do("POST", "iscsi/portal", `{"comment":"rest","listen":[{"ip":"127.0.0.1","port":3260}]}`, 200).(map[string]any)
	id := strconv.Itoa(int(p["id"].(float64)))
	got := do("GET", "iscsi/portal/id/"+id, "", 200).(map[string]any)
	require.Equal(t, "rest", got["comment"])
	require.Len(t, do("GET", "iscsi/portal", "", 200), 1)
	got = do("PUT", "iscsi/portal/id/"+id, `{"comment":"changed"}`, 200).(map[string]any)
	require.Equal(t, "changed", got["comment"])
	do("PUT", "iscsi/portal/id/"+id, `{"listen":[{"ip":"bad","port":1}]}`, 422)
	g := do("GET", "iscsi/global", "", 200).(map[string]any)
	require.Contains(t, g, "basename")
	do("PUT", "iscsi/global", `{"basename":"iqn.2005-10.org.freenas.ctl"}`, 200)
	do("DELETE", "iscsi/portal/id/"+id, "", 200)
	do("GET", "iscsi/portal/id/"+id, "", 404)
	do("GET", "iscsi/nothing", "", 404)
	do("PATCH", "iscsi/portal/id/1", "", 405)
	do("POST", "iscsi/initiator", `{not json`, 400)
	for _, name := range []string{"initiator", "auth", "target", "extent", "targetextent"} {
		require.Empty(t, do("GET", "iscsi/"+name, "", 200))
	}
}

// TestSCRAMChannelBinding logs in over wss:// with SCRAM-PLUS
// (tls-server-end-point), midclt's default over TLS.
func TestSCRAMChannelBinding(t *testing.T) {
	dir := t.TempDir()
	m, err := mgmt.New(context.Background(), mgmt.Options{Store: &mgmt.MemoryStore{}, AllowedDirs: []string{dir}})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	acc, err := OpenAccounts(filepath.Join(dir, "keys.json"), testUser, testPassword)
	require.NoError(t, err)
	_, raw, err := acc.CreateKey("tls", testUser, nil)
	require.NoError(t, err)
	mux := http.NewServeMux()
	hs := httptest.NewUnstartedServer(mux)
	hs.StartTLS()
	cert := hs.TLS.Certificates[0].Certificate[0]
	s := New(m, Options{Accounts: acc, TLSCert: cert})
	s.Register(mux)
	t.Cleanup(func() { hs.Close(); s.Close() })
	ctx := context.Background()
	conn, _, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(hs.URL, "https")+Path, &websocket.DialOptions{HTTPClient: hs.Client()})
	require.NoError(t, err)
	c := &wsClient{t: t, c: conn, waiting: map[string]chan map[string]any{}, notes: make(chan map[string]any, 16),
		orphans: make(chan map[string]any, 16), closed: make(chan struct{})}
	go c.reader()
	t.Cleanup(func() { conn.CloseNow(); <-c.closed })
	cbData := tlsServerEndPoint(cert)
	require.False(t, scramLoginCB(t, c, testUser, raw, "p=tls-server-end-point", append([]byte("x"), cbData...)), "wrong binding data")
	require.True(t, scramLoginCB(t, c, testUser, raw, "p=tls-server-end-point", cbData))
	var portals []any
	c.ok(&portals, "iscsi.portal.query")
}

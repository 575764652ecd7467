package truenas

import (
	"context"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"
)

// TestBrowserRequestsRefused: what a page on another site can make a
// browser send without asking first (a POST with a text/plain body, or
// any request carrying that site's Origin) changes nothing: a body that
// is not application/json gets 415, a foreign Origin 403, and a WebSocket
// upgrade from a foreign Origin is refused.
func TestBrowserRequestsRefused(t *testing.T) {
	e := newWSEnv(t)
	send := func(method, path, ctype, origin, body string) int {
		t.Helper()
		req, err := http.NewRequest(method, e.http.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	create := `{"comment":"csrf","listen":[{"ip":"127.0.0.1","port":3260}]}`
	call := `{"jsonrpc":"2.0","id":1,"method":"iscsi.portal.create","params":[` + create + `]}`
	require.Equal(t, http.StatusUnsupportedMediaType, send("POST", Path, "text/plain", "", call))
	require.Equal(t, http.StatusUnsupportedMediaType, send("POST", Path, "", "", call))
	require.Equal(t, http.StatusUnsupportedMediaType, send("POST", RESTPrefix+"iscsi/portal", "text/plain;charset=UTF-8", "", create))
	require.Equal(t, http.StatusUnsupportedMediaType, send("PUT", RESTPrefix+"iscsi/global", "application/x-www-form-urlencoded", "", `{"alua":true}`))
	require.Equal(t, http.StatusForbidden, send("POST", Path, "application/json", "http://evil.example", call))
	require.Equal(t, http.StatusForbidden, send("POST", RESTPrefix+"iscsi/portal", "application/json", "http://evil.example", create))
	require.Equal(t, http.StatusForbidden, send("GET", RESTPrefix+"iscsi/portal", "", "null", ""))
	require.Empty(t, e.srv.m.Config(false).Portals, "nothing was created")

	// The same origin, and clients that send no Origin, are served.
	require.Equal(t, http.StatusOK, send("POST", RESTPrefix+"iscsi/portal", "application/json; charset=utf-8", e.http.URL, create))
	require.Equal(t, http.StatusOK, send("POST", Path, "application/json", "", `{"jsonrpc":"2.0","id":1,"method":"iscsi.global.config"}`))

	// WebSocket: coder/websocket's Accept compares Origin with Host.
	ctx := context.Background()
	_, resp, err := websocket.Dial(ctx, e.url(Path), &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"http://evil.example"}}})
	require.Error(t, err)
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	c, _, err := websocket.Dial(ctx, e.url(Path), &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {e.http.URL}}})
	require.NoError(t, err)
	c.CloseNow()
}

// scramFirstOf sends a SCRAM client-first message for user:id and returns
// the answer's response type and its salt and iteration count.
func scramFirstOf(t *testing.T, c *wsClient, user string, id int) (string, string) {
	t.Helper()
	bare := "n=" + user + ":" + strconv.Itoa(id) + ",r=" + base64.StdEncoding.EncodeToString(make([]byte, 32))
	var first map[string]any
	c.ok(&first, "auth.login_ex", map[string]any{"mechanism": "SCRAM", "scram_type": "CLIENT_FIRST_MESSAGE", "rfc_str": "n,," + bare})
	rt, _ := first["response_type"].(string)
	s, _ := first["rfc_str"].(string)
	_, rest, _ := strings.Cut(s, ",s=") // drop the nonce, which differs
	return rt, rest
}

// TestSCRAMDoesNotTellKeysApart: a client-first message for a key id
// that does not exist is answered as one for a key that does (a salt,
// the same for every try, and the iteration count), and the exchange
// fails only at its end, as with a wrong key: key ids cannot be listed
// by trying them.
func TestSCRAMDoesNotTellKeysApart(t *testing.T) {
	e := newWSEnv(t)
	c := e.dial(Path)
	c.connect()
	c.loginPassword()
	var key map[string]any
	c.ok(&key, "api_key.create", map[string]any{"name": "ci", "username": testUser})
	id := int(key["id"].(float64))

	s := e.dial(Path)
	s.connect()
	rt, known := scramFirstOf(t, s, testUser, id)
	require.Equal(t, "SCRAM_RESPONSE", rt)
	for _, probe := range []struct {
		user string
		id   int
	}{{testUser, id + 7}, {"nobody", id}} {
		rt, unknown := scramFirstOf(t, s, probe.user, probe.id)
		require.Equal(t, "SCRAM_RESPONSE", rt, "%s:%d", probe.user, probe.id)
		_, again := scramFirstOf(t, s, probe.user, probe.id)
		require.Equal(t, unknown, again, "the same salt for every try")
		require.NotEqual(t, known, unknown)
		require.Equal(t, len(known), len(unknown), "salt and iterations of the same shape")
		require.False(t, scramLogin(t, s, probe.user, strconv.Itoa(probe.id)+"-"+strings.Repeat("x", 64)))
	}
}

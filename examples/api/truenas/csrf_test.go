package truenas

import (
	"context"
	"net/http"
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

package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/examples/api/truenas"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/mgmt"
)

// TestAPIRefusesOtherSites: every dialect on the API listener refuses a
// request whose Origin is another site (a page there making a browser,
// which caches the Basic credentials, call the API), and serves the
// same requests without one, as its real clients send them.
func TestAPIRefusesOtherSites(t *testing.T) {
	m, err := mgmt.New(context.Background(), mgmt.Options{})
	require.NoError(t, err)
	defer m.Close()
	srv, err := iscsi.NewServer(iscsi.Options{})
	require.NoError(t, err)
	defer srv.Close()
	tn := truenas.New(m, truenas.Options{})
	defer tn.Close()
	hs := httptest.NewServer(apiHandler(m, srv, tn, nil))
	defer hs.Close()
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/api/v1.0/services/iscsi/authorizedinitiator/", `{"iscsi_target_initiator_initiators": "ALL", "iscsi_target_initiator_auth_network": "ALL"}`},
		{"POST", "/targetrpc", `{"jsonrpc": "2.0", "id": 1, "method": "pool_list"}`},
		{"POST", "/api/v2.0/iscsi/initiator", `{"comment": "x"}`},
	} {
		send := func(origin string) int {
			req, err := http.NewRequest(c.method, hs.URL+c.path, strings.NewReader(c.body))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/json")
			if origin != "" {
				req.Header.Set("Origin", origin)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			return resp.StatusCode
		}
		require.Equal(t, http.StatusForbidden, send("http://evil.example"), c.path)
		require.NotEqual(t, http.StatusForbidden, send(""), c.path)
		require.NotEqual(t, http.StatusForbidden, send(hs.URL), c.path)
	}
}

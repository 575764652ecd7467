package rest

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCollapseSlashes(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1.0/services/iscsi/targetgroup/", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(r.URL.Path))
	})
	srv := httptest.NewServer(CollapseSlashes(mux))
	defer srv.Close()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		path   string
		status int
	}{
		{"/api/v1.0/services/iscsi/targetgroup/", 200},
		{"/api/v1.0/services/iscsi/targetgroup//", 200},
		{"//api///v1.0/services//iscsi/targetgroup//", 200},
		// Dot segments keep ServeMux's redirect: only slashes collapse.
		{"/api/v1.0/services/iscsi/x/../targetgroup/", http.StatusTemporaryRedirect},
	} {
		resp, err := client.Post(srv.URL+tc.path, "application/json", strings.NewReader("{}"))
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, tc.status, resp.StatusCode, tc.path)
	}
	// Without the wrapper ServeMux answers the double slash with a
	// redirect, which is what the Cinder driver met.
	bare := httptest.NewServer(mux)
	defer bare.Close()
	resp, err := client.Post(bare.URL+"/api/v1.0/services/iscsi/targetgroup//", "application/json", strings.NewReader("{}"))
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusTemporaryRedirect, resp.StatusCode)
}

package main

import (
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestServeProfiling(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	addr, stop, err := serveProfiling("127.0.0.1:0", log)
	require.NoError(t, err)
	defer stop()
	for _, tt := range []struct {
		path string
		want string
	}{
		{"/debug/pprof/", "goroutine"},
		{"/debug/pprof/goroutine?debug=1", "serveProfiling"},
	} {
		resp, err := http.Get("http://" + addr + tt.path)
		require.NoError(t, err, tt.path)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, tt.path)
		require.Contains(t, string(body), tt.want, tt.path)
	}

	// A taken or malformed address is refused with the flag named.
	_, _, err = serveProfiling(addr, log)
	require.ErrorContains(t, err, "--pprof")
	_, _, err = serveProfiling("not an address", log)
	require.ErrorContains(t, err, "--pprof")
}

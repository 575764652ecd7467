package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParams(t *testing.T) {
	got := params([]string{`{"name": "t0"}`, `1`, `target0`, `"quoted"`, `[["id", "=", 1]]`})
	var texts []string
	for _, p := range got {
		texts = append(texts, string(p))
	}
	require.Equal(t, []string{`{"name": "t0"}`, `1`, `"target0"`, `"quoted"`, `[["id", "=", 1]]`}, texts)
}

// fakeAPI answers every call with result or rpcErr, and records the last
// request.
func fakeAPI(t *testing.T, result string, rpcErr string) (url string, last *map[string]any) {
	var req map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.Equal(t, "/api/current", r.URL.Path)
		u, p, ok := r.BasicAuth()
		if !ok || u != "admin" || p != "pw" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		b, _ := io.ReadAll(r.Body)
		require.NoError(t, json.Unmarshal(b, &req))
		if rpcErr != "" {
			io.WriteString(w, `{"jsonrpc": "2.0", "id": 1, "error": `+rpcErr+`}`)
			return
		}
		io.WriteString(w, `{"jsonrpc": "2.0", "id": 1, "result": `+result+`}`)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &req
}

func TestRun(t *testing.T) {
	url, last := fakeAPI(t, `{"id": 1, "name": "target0"}`, "")
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"--url", url, "--user", "admin", "--password", "pw", "call", "iscsi.target.query", `[["id", "=", 1]]`, `{"get": true}`}, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	require.Equal(t, "{\n  \"id\": 1,\n  \"name\": \"target0\"\n}\n", out.String())
	require.Equal(t, "iscsi.target.query", (*last)["method"])
	require.Equal(t, "2.0", (*last)["jsonrpc"])
	require.Len(t, (*last)["params"], 2)

	out.Reset()
	code = run(context.Background(), []string{"--url", url, "call", "iscsi.global.config"}, &out, &errOut)
	require.Equal(t, 1, code)
	require.Contains(t, errOut.String(), "401 Unauthorized")

	url, _ = fakeAPI(t, "", `{"code": -32001, "message": "[EEXIST] iscsi_target_create.name: taken"}`)
	errOut.Reset()
	code = run(context.Background(), []string{"--url", url, "--user", "admin", "--password", "pw", "call", "iscsi.target.create", `{"name": "t"}`}, &out, &errOut)
	require.Equal(t, 1, code)
	require.Equal(t, 1, strings.Count(errOut.String(), "\n"), "one line: %q", errOut.String())
	require.Contains(t, errOut.String(), "iscsi.target.create: [EEXIST] iscsi_target_create.name: taken (code -32001)")

	errOut.Reset()
	require.Equal(t, 2, run(context.Background(), []string{"query"}, &out, &errOut))
	require.Contains(t, errOut.String(), "usage:")
	require.Equal(t, 1, run(context.Background(), []string{"--url", "http://127.0.0.1:1", "call", "x"}, &out, &errOut), "nothing listens there")
}

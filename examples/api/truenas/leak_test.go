package truenas

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/leakcheck"
)

// TestDisconnectMidCallLeavesNoGoroutine drops connections with calls
// and jobs in flight and requires every goroutine they started to end
// while the server keeps running; then the server closes clean too.
func TestDisconnectMidCallLeavesNoGoroutine(t *testing.T) {
	leakcheck.Check(t)
	e := newWSEnv(t)
	before := leakcheck.Take()
	for round := 0; round < 5; round++ {
		ctx := context.Background()
		c, _, err := websocket.Dial(ctx, e.url(Path), nil)
		require.NoError(t, err)
		send := func(v any) {
			b, _ := json.Marshal(v)
			require.NoError(t, c.Write(ctx, websocket.MessageText, b))
		}
		send(map[string]any{"jsonrpc": "2.0", "id": "o", "method": "core.set_options", "params": []any{map[string]any{"legacy_jobs": false}}})
		send(map[string]any{"jsonrpc": "2.0", "id": "l", "method": "auth.login_ex", "params": []any{map[string]any{"mechanism": "PASSWORD_PLAIN", "username": testUser, "password": testPassword}}})
		send(map[string]any{"jsonrpc": "2.0", "id": "s", "method": "core.subscribe", "params": []any{"core.get_jobs"}})
		path := filepath.Join(e.dir, "leak.img")
		require.NoError(t, os.WriteFile(path, make([]byte, 4096), 0o600))
		// Calls the client never reads the answers of, a job among them.
		for i := 0; i < 300; i++ {
			send(map[string]any{"jsonrpc": "2.0", "id": i, "method": "iscsi.global.config", "params": []any{}})
		}
		send(map[string]any{"jsonrpc": "2.0", "id": "j", "method": "iscsi.extent.delete", "params": []any{1, map[string]any{"remove": true}}})
		c.CloseNow()
	}
	if left := before.Wait(30 * time.Second); len(left) > 0 {
		t.Fatalf("%d goroutine(s) left by disconnected clients:\n%s", len(left), leakcheck.Format(left))
	}
	// The server still answers.
	c := e.dial(Path)
	var pong string
	c.ok(&pong, "core.ping")
	require.Equal(t, "pong", pong)
}

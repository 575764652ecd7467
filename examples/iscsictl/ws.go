package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/coder/websocket"
)

// wsCall makes the call over a WebSocket (--url ws://HOST or wss://HOST),
// as midclt -u ws://HOST/api/current does: core.set_options with
// legacy_jobs false (so a job's call answers with the job's result), an
// in-band login (auth.login_ex: PASSWORD_PLAIN with --user and
// --password, API_KEY_PLAIN with --user and --api-key), then the call.
func wsCall(ctx context.Context, c client, method string, args []string) (json.RawMessage, error) {
	conn, _, err := websocket.Dial(ctx, c.url+"/api/current", nil)
	if err != nil {
		return nil, err
	}
	defer conn.CloseNow()
	conn.SetReadLimit(64 << 20)
	s := &wsSession{conn: conn}
	if _, err := s.call(ctx, "core.set_options", []json.RawMessage{json.RawMessage(`{"legacy_jobs": false}`)}); err != nil {
		return nil, err
	}
	if c.user != "" {
		login := map[string]string{"mechanism": "PASSWORD_PLAIN", "username": c.user, "password": c.password}
		if c.apiKey != "" {
			login = map[string]string{"mechanism": "API_KEY_PLAIN", "username": c.user, "api_key": c.apiKey}
		}
		b, _ := json.Marshal(login)
		res, err := s.call(ctx, "auth.login_ex", []json.RawMessage{b})
		if err != nil {
			return nil, err
		}
		var r struct {
			ResponseType string `json:"response_type"`
		}
		if json.Unmarshal(res, &r) != nil || r.ResponseType != "SUCCESS" {
			return nil, fmt.Errorf("login refused (%s): check --user and --password or --api-key", r.ResponseType)
		}
	}
	res, err := s.call(ctx, method, params(args))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	conn.Close(websocket.StatusNormalClosure, "")
	return res, nil
}

// wsSession numbers the calls of one connection.
type wsSession struct {
	conn *websocket.Conn
	id   int
}

// call sends one request and returns its result, skipping notifications.
func (s *wsSession) call(ctx context.Context, method string, params []json.RawMessage) (json.RawMessage, error) {
	s.id++
	id := strconv.Itoa(s.id)
	b, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "method": method, "params": params})
	if err != nil {
		return nil, err
	}
	if err := s.conn.Write(ctx, websocket.MessageText, b); err != nil {
		return nil, err
	}
	for {
		_, data, err := s.conn.Read(ctx)
		if err != nil {
			return nil, err
		}
		var answer struct {
			ID     *string         `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *rpcError       `json:"error"`
		}
		if err := json.Unmarshal(data, &answer); err != nil {
			return nil, fmt.Errorf("the answer is not JSON-RPC: %w", err)
		}
		if answer.ID == nil || *answer.ID != id {
			if answer.ID == nil && answer.Error != nil {
				return nil, answer.Error
			}
			continue // a notification
		}
		if answer.Error != nil {
			return nil, answer.Error
		}
		if answer.Result == nil {
			return json.RawMessage("null"), nil
		}
		return answer.Result, nil
	}
}

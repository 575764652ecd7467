package truenas

import (
	"crypto/rand"
	"encoding/json"
	"net/http"

	"github.com/iscsikit/iscsikit/examples/api/jsonrpc"
)

// legacyMsg is one frame of the legacy protocol (/websocket), the union of
// the fields its messages use.
type legacyMsg struct {
	Msg      string          `json:"msg"`
	ID       json.RawMessage `json:"id"`
	Method   string          `json:"method"`
	Params   json.RawMessage `json:"params"`
	Name     string          `json:"name"`
	Version  string          `json:"version"`
	Support  []string        `json:"support"`
	Features []string        `json:"features"`
}

// legacyError is the legacy protocol's error object.
func legacyError(errno int, reason string, typ any, extra any) map[string]any {
	var trace any
	if typ != nil {
		// truenas_api_client raises ValidationErrors only when a trace
		// comes with the VALIDATION type.
		trace = map[string]any{"class": "ValidationErrors", "formatted": reason, "repr": reason}
	}
	return map[string]any{"error": errno, "errname": errnames[errno], "type": typ, "reason": reason, "trace": trace, "extra": extra}
}

// serveLegacy serves the legacy middleware protocol: connect/connected,
// method/result, ping/pong, sub/ready/nosub, unsub and collection events
// as added/changed/removed messages.
func (s *Server) serveLegacy(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "the legacy middleware protocol is a WebSocket: GET with Upgrade: websocket", http.StatusMethodNotAllowed)
		return
	}
	wc, ok := s.accept(w, r)
	if !ok {
		return
	}
	defer wc.finish()
	ss := s.newSession(peerAddr(r), func(collection, typ string, id any, fields any) {
		ev := map[string]any{"msg": lower(typ), "collection": collection, "id": id}
		if fields != nil {
			ev["fields"] = fields
		}
		wc.notify(ev)
	}, func() { wc.c.SetReadLimit(FrameLimit) })
	defer s.endSession(ss)
	connected := false
	for {
		data, ok := wc.read()
		if !ok {
			return
		}
		var m legacyMsg
		if err := json.Unmarshal(data, &m); err != nil {
			wc.send(map[string]any{"msg": "result", "id": nil, "error": legacyError(errEINVAL, "Invalid JSON: "+err.Error(), nil, nil)})
			continue
		}
		var id any
		if len(m.ID) > 0 {
			id = decodeID(m.ID)
		}
		switch {
		case m.Msg == "connect":
			if m.Version != "1" {
				wc.send(map[string]any{"msg": "failed", "version": "1"})
				continue
			}
			connected = true
			wc.send(map[string]any{"msg": "connected", "session": rand.Text()})
		case !connected:
			wc.send(map[string]any{"msg": "failed", "version": "1"})
		case m.Msg == "ping":
			pong := map[string]any{"msg": "pong"}
			if id != nil {
				pong["id"] = id
			}
			wc.send(pong)
		case m.Msg == "method":
			if id == nil || m.Method == "" {
				wc.send(map[string]any{"msg": "result", "id": id, "error": legacyError(errEINVAL, "Message is malformed: 'id' and 'method' are required", nil, nil)})
				continue
			}
			params := m.Params
			if p := string(params); p != "" && p != "null" && params[0] != '[' {
				wc.send(map[string]any{"msg": "result", "id": id, "error": legacyError(errEINVAL, "`params` must be a list.", nil, nil)})
				continue
			}
			if !wc.spawn(func() {
				res, err := s.invoke(wc.ctx, ss, id, m.Method, params)
				if wc.ctx.Err() != nil {
					return
				}
				if err != nil {
					wc.send(map[string]any{"msg": "result", "id": id, "error": legacyErrorOf(err)})
					return
				}
				wc.send(map[string]any{"msg": "result", "id": id, "result": res})
			}) {
				return
			}
		case m.Msg == "sub":
			name, _ := id.(string)
			if name == "" || m.Name == "" {
				wc.send(map[string]any{"msg": "nosub", "id": id, "collection": m.Name, "error": legacyError(errEINVAL, "sub needs a string id and a name", nil, nil)})
				continue
			}
			if err := ss.follow(name, m.Name); err != nil {
				errno, reason, extra := errorFields(shapeError("core.subscribe", err))
				wc.send(map[string]any{"msg": "nosub", "id": id, "collection": m.Name, "error": legacyError(errno, reason, nil, extra)})
				continue
			}
			wc.send(map[string]any{"msg": "ready", "subs": []any{id}})
		case m.Msg == "unsub":
			name, _ := id.(string)
			ss.unfollow(name)
		default:
			wc.send(map[string]any{"msg": "result", "id": id, "error": legacyError(errEINVAL, "unknown msg "+string(mustJSON(m.Msg))+": want connect, ping, method, sub or unsub", nil, nil)})
		}
	}
}

// legacyErrorOf converts a call's JSON-RPC error: a parameter error
// becomes a VALIDATION error with its [field, message, errno] triples.
func legacyErrorOf(e *jsonrpc.Error) map[string]any {
	errno, reason, extra := errorFields(e)
	if e.Code == jsonrpc.CodeInvalidParams {
		return legacyError(errno, reason, "VALIDATION", extra)
	}
	return legacyError(errno, reason, nil, extra)
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

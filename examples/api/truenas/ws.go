package truenas

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/iscsikit/iscsikit/examples/api/jsonrpc"
)

// Frame limits, the middleware's: a session that has not logged in may
// send 8 KiB frames, a logged-in one 64 KiB. A larger frame closes the
// connection with status 1009 (message too big).
const (
	FrameLimitBeforeLogin = 8 << 10
	FrameLimit            = 64 << 10
)

// Per connection: calls running at once (further frames wait to be read)
// and messages queued for the client before it is cut off as too slow.
const (
	maxCallsPerConn = 20
	outQueue        = 256
	writeTimeout    = 30 * time.Second
)

// wsConn is the transport half of a WebSocket session: one reader (the
// handler's goroutine), one writer, and the calls in between.
type wsConn struct {
	srv    *Server
	c      *websocket.Conn
	ctx    context.Context
	cancel context.CancelFunc
	out    chan []byte
	calls  sync.WaitGroup
	sem    chan struct{}
}

// accept upgrades r and starts the writer. The caller runs the reader
// and then calls finish.
func (s *Server) accept(w http.ResponseWriter, r *http.Request) (*wsConn, bool) {
	// The API listener's HTTP deadlines must not cut a long-lived socket.
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Time{})
	rc.SetWriteDeadline(time.Time{})
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		s.log.Debug("websocket upgrade refused", "err", err)
		return nil, false
	}
	c.SetReadLimit(FrameLimitBeforeLogin)
	s.conns.Add(1)
	ctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(s.ctx, cancel)
	wc := &wsConn{srv: s, c: c, ctx: ctx, cancel: func() { stop(); cancel() }, out: make(chan []byte, outQueue), sem: make(chan struct{}, maxCallsPerConn)}
	wc.calls.Add(1)
	go wc.writer()
	return wc, true
}

func (wc *wsConn) writer() {
	defer wc.calls.Done()
	for {
		select {
		case b := <-wc.out:
			ctx, cancel := context.WithTimeout(wc.ctx, writeTimeout)
			err := wc.c.Write(ctx, websocket.MessageText, b)
			cancel()
			if err != nil {
				wc.cancel()
				return
			}
		case <-wc.ctx.Done():
			return
		}
	}
}

// send queues v for the client, waiting while the queue is full.
func (wc *wsConn) send(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(map[string]any{"jsonrpc": "2.0", "id": nil, "error": jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "the result could not be encoded: " + err.Error()}})
	}
	select {
	case wc.out <- b:
	case <-wc.ctx.Done():
	}
}

// notify queues v without waiting: a client whose queue is full is too
// slow for events and loses its connection.
func (wc *wsConn) notify(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	select {
	case wc.out <- b:
	default:
		wc.cancel() // the reader's Read fails and the connection closes
	}
}

// read returns the next text frame. A binary frame closes the connection
// with 1003 (unsupported data), as the middleware does.
func (wc *wsConn) read() ([]byte, bool) {
	typ, data, err := wc.c.Read(wc.ctx)
	if err != nil {
		return nil, false
	}
	if typ != websocket.MessageText {
		wc.c.Close(websocket.StatusUnsupportedData, "Invalid websocket message type: binary")
		return nil, false
	}
	return data, true
}

// spawn runs fn as a call, at most maxCallsPerConn at once.
func (wc *wsConn) spawn(fn func()) bool {
	select {
	case wc.sem <- struct{}{}:
	case <-wc.ctx.Done():
		return false
	}
	wc.calls.Add(1)
	go func() {
		defer wc.calls.Done()
		defer func() { <-wc.sem }()
		fn()
	}()
	return true
}

// finish ends the connection: calls are cancelled and waited for.
func (wc *wsConn) finish() {
	wc.cancel()
	wc.calls.Wait()
	wc.c.CloseNow()
	wc.srv.conns.Done()
}

// serveRPC serves JSON-RPC 2.0 over a WebSocket (/api/current).
func (s *Server) serveRPC(w http.ResponseWriter, r *http.Request) {
	wc, ok := s.accept(w, r)
	if !ok {
		return
	}
	defer wc.finish()
	ss := s.newSession(peerAddr(r), func(collection, typ string, id any, fields any) {
		params := map[string]any{"msg": lower(typ), "collection": collection, "id": id}
		if fields != nil {
			params["fields"] = fields
		}
		wc.notify(map[string]any{"jsonrpc": "2.0", "method": "collection_update", "params": params})
	}, func() { wc.c.SetReadLimit(FrameLimit) })
	defer s.endSession(ss)
	for {
		data, ok := wc.read()
		if !ok {
			return
		}
		req, rerr := parseRequest(data)
		if rerr != nil {
			wc.send(rpcError(nil, rerr))
			continue
		}
		if !wc.spawn(func() {
			res, err := s.invoke(wc.ctx, ss, req.id, req.Method, req.Params)
			if wc.ctx.Err() != nil {
				return
			}
			if err != nil {
				wc.send(rpcError(req.id, err))
				return
			}
			wc.send(map[string]any{"jsonrpc": "2.0", "result": res, "id": req.id})
		}) {
			return
		}
	}
}

func lower(s string) string { return string(bytes.ToLower([]byte(s))) }

func rpcError(id any, e *jsonrpc.Error) map[string]any {
	return map[string]any{"jsonrpc": "2.0", "error": e, "id": id}
}

// rpcRequest is one request frame, checked as the middleware checks it:
// jsonrpc "2.0", a string method, array params, a null, number or string
// id, and nothing else.
type rpcRequest struct {
	JSONRPC string          `json:"jsonrpc"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
	ID      json.RawMessage `json:"id"`
	id      any
}

func parseRequest(data []byte) (*rpcRequest, *jsonrpc.Error) {
	var probe any
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeParseError, Message: "Invalid JSON: " + err.Error()}
	}
	if _, ok := probe.([]any); ok {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeParseError, Message: "Batch messages are not supported at this time"}
	}
	if _, ok := probe.(map[string]any); !ok {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeParseError, Message: "Invalid Message Format"}
	}
	var req rpcRequest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: "not a JSON-RPC 2.0 request: " + err.Error()}
	}
	if req.JSONRPC != "2.0" {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: `"jsonrpc" must be "2.0"`}
	}
	if req.Method == "" {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: `"method" is a required property`}
	}
	if p := bytes.TrimSpace(req.Params); len(p) > 0 && p[0] != '[' {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: `"params" must be an array`}
	}
	if len(req.ID) > 0 {
		switch req.ID[0] {
		case '"', 'n', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			req.id = decodeID(req.ID)
		default:
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: `"id" must be null, a number or a string`}
		}
	}
	return &req, nil
}

// decodeID decodes a request id, keeping a number's digits as sent.
func decodeID(raw json.RawMessage) any {
	var id any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	dec.Decode(&id)
	return id
}

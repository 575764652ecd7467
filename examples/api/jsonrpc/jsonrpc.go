// Package jsonrpc serves JSON-RPC 2.0 over HTTP POST: the transport shared
// by the TrueNAS-style (seed 000) and targetd (seed 003) front-ends.
//
// A Server maps method names to Methods. It answers single requests and
// batches, skips responses to notifications (requests without an id), and
// turns every malformed request into the error object JSON-RPC 2.0 defines
// for it (-32700 parse error, -32600 invalid request, -32601 method not
// found, -32602 invalid params). A Method returns an *Error to choose its
// own code; any other error is mapped by the Server's ErrorMapper.
package jsonrpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"

	"github.com/iscsikit/iscsikit/examples/api/merge"
)

// The error codes JSON-RPC 2.0 reserves.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603
)

// MaxBodyBytes bounds a request body; larger bodies are refused with a
// parse error before they are read whole.
const MaxBodyBytes = 1 << 20

// Error is a JSON-RPC error object.
type Error struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

func (e *Error) Error() string { return fmt.Sprintf("jsonrpc error %d: %s", e.Code, e.Message) }

// InvalidParams returns a -32602 error with a formatted message.
func InvalidParams(format string, args ...any) *Error {
	return &Error{Code: CodeInvalidParams, Message: fmt.Sprintf(format, args...)}
}

// Method handles one call. params is the raw "params" member (nil when the
// request has none).
type Method func(ctx context.Context, params json.RawMessage) (any, error)

// ErrorMapper turns an error a Method returned (other than *Error) into
// the error object sent back.
type ErrorMapper func(err error) *Error

// Server is an http.Handler answering JSON-RPC 2.0 requests.
type Server struct {
	methods map[string]Method
	mapErr  ErrorMapper
	log     *slog.Logger
}

// NewServer returns a Server for methods. mapErr maps errors that are not
// *Error (nil sends them as -32603 internal errors); log receives panics
// and internal errors (nil discards them).
func NewServer(methods map[string]Method, mapErr ErrorMapper, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Server{methods: methods, mapErr: mapErr, log: log}
}

// request is one JSON-RPC request object.
type request struct {
	JSONRPC string          `json:"jsonrpc"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params,omitempty"`
	ID      json.RawMessage `json:"id,omitempty"`
}

// response is one JSON-RPC response object; MarshalJSON shapes it.
type response struct {
	JSONRPC string
	Result  any
	Error   *Error
	ID      json.RawMessage
}

// MarshalJSON writes "result": null for a successful call that returned
// nil: a response carries exactly one of result and error.
func (r response) MarshalJSON() ([]byte, error) {
	type withResult struct {
		JSONRPC string          `json:"jsonrpc"`
		Result  any             `json:"result"`
		ID      json.RawMessage `json:"id"`
	}
	type withError struct {
		JSONRPC string          `json:"jsonrpc"`
		Error   *Error          `json:"error"`
		ID      json.RawMessage `json:"id"`
	}
	if r.Error != nil {
		return json.Marshal(withError{r.JSONRPC, r.Error, r.ID})
	}
	return json.Marshal(withResult{r.JSONRPC, r.Result, r.ID})
}

var null = json.RawMessage("null")

// ServeHTTP answers a POSTed request or batch.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "JSON-RPC 2.0 requests are POSTed", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		s.write(w, response{JSONRPC: "2.0", ID: null, Error: &Error{Code: CodeParseError, Message: "reading the request: " + err.Error()}})
		return
	}
	if len(body) > MaxBodyBytes {
		s.write(w, response{JSONRPC: "2.0", ID: null, Error: &Error{Code: CodeParseError, Message: fmt.Sprintf("request body is larger than %d bytes", MaxBodyBytes)}})
		return
	}
	trimmed := bytes.TrimSpace(body)
	if !json.Valid(trimmed) {
		s.write(w, response{JSONRPC: "2.0", ID: null, Error: &Error{Code: CodeParseError, Message: "request body is not valid JSON"}})
		return
	}
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var batch []json.RawMessage
		if err := json.Unmarshal(trimmed, &batch); err != nil || len(batch) == 0 {
			s.write(w, response{JSONRPC: "2.0", ID: null, Error: &Error{Code: CodeInvalidRequest, Message: "a batch must be a non-empty array of request objects"}})
			return
		}
		var out []response
		for _, raw := range batch {
			if resp, ok := s.call(r.Context(), raw); ok {
				out = append(out, resp)
			}
		}
		if len(out) == 0 {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		s.write(w, out)
		return
	}
	resp, ok := s.call(r.Context(), trimmed)
	if !ok {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.write(w, resp)
}

// call runs one request object; ok is false for a notification, which
// gets no response.
func (s *Server) call(ctx context.Context, raw json.RawMessage) (resp response, ok bool) {
	resp = response{JSONRPC: "2.0", ID: null}
	var req request
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		resp.Error = &Error{Code: CodeInvalidRequest, Message: "not a JSON-RPC 2.0 request object: " + err.Error()}
		return resp, true
	}
	if len(req.ID) > 0 {
		if !validID(req.ID) {
			resp.Error = &Error{Code: CodeInvalidRequest, Message: "id must be a string, a number or null"}
			return resp, true
		}
		resp.ID = req.ID
	}
	if req.JSONRPC != "2.0" {
		resp.Error = &Error{Code: CodeInvalidRequest, Message: `"jsonrpc" must be "2.0"`}
		return resp, true
	}
	if req.Method == "" {
		resp.Error = &Error{Code: CodeInvalidRequest, Message: `"method" is missing`}
		return resp, true
	}
	notification := len(req.ID) == 0
	m, found := s.methods[req.Method]
	if !found {
		resp.Error = &Error{Code: CodeMethodNotFound, Message: fmt.Sprintf("method %q not found", req.Method)}
		return resp, !notification
	}
	if p := bytes.TrimSpace(req.Params); len(p) > 0 && p[0] != '[' && p[0] != '{' && !bytes.Equal(p, null) {
		resp.Error = &Error{Code: CodeInvalidRequest, Message: `"params" must be an array or an object`}
		return resp, !notification
	}
	result, err := s.run(ctx, req.Method, m, req.Params)
	if err != nil {
		resp.Error = s.toError(req.Method, err)
	} else {
		resp.Result = result
	}
	return resp, !notification
}

// run calls m, turning a panic into an internal error so that one bad
// request cannot take the daemon down.
func (s *Server) run(ctx context.Context, name string, m Method, params json.RawMessage) (result any, err error) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("panic in JSON-RPC method", "method", name, "panic", v, "stack", string(debug.Stack()))
			result, err = nil, &Error{Code: CodeInternalError, Message: "internal error"}
		}
	}()
	return m(ctx, params)
}

func (s *Server) toError(method string, err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if s.mapErr != nil {
		if e := s.mapErr(err); e != nil {
			return e
		}
	}
	s.log.Error("JSON-RPC method failed", "method", method, "err", err)
	return &Error{Code: CodeInternalError, Message: err.Error()}
}

func validID(id json.RawMessage) bool {
	switch id[0] {
	case '"', 'n', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return true
	}
	return false
}

func (s *Server) write(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		s.log.Error("encoding a JSON-RPC response", "err", err)
		b, _ = json.Marshal(response{JSONRPC: "2.0", ID: null, Error: &Error{Code: CodeInternalError, Message: "the result could not be encoded"}})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(b, '\n'))
}

// Positional splits params into its elements: an array gives its items,
// null or absent gives none, and an object is refused (methods taking
// positional parameters). At most max elements are accepted.
func Positional(params json.RawMessage, max int) ([]json.RawMessage, error) {
	p := bytes.TrimSpace(params)
	if len(p) == 0 || bytes.Equal(p, null) {
		return nil, nil
	}
	if p[0] != '[' {
		return nil, InvalidParams("params must be an array of positional arguments")
	}
	var out []json.RawMessage
	if err := json.Unmarshal(p, &out); err != nil {
		return nil, InvalidParams("params: %v", err)
	}
	if len(out) > max {
		return nil, InvalidParams("at most %d parameters are accepted, got %d", max, len(out))
	}
	return out, nil
}

// Decode decodes raw into v, refusing unknown fields, and reports a
// failure as invalid params naming what was decoded and the field.
func Decode(raw json.RawMessage, what string, v any) error {
	if err := merge.Strict(raw, v); err != nil {
		return InvalidParams("%s: %v", what, err)
	}
	return nil
}

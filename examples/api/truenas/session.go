package truenas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/iscsikit/iscsikit/examples/api/jsonrpc"
	"github.com/iscsikit/iscsikit/examples/api/rest"
	"github.com/iscsikit/iscsikit/mgmt"
)

// Paths of the WebSocket endpoints and the REST twin.
const (
	// LegacyPath is the legacy middleware protocol's endpoint.
	LegacyPath = "/websocket"
	// RESTPrefix is the REST twin of the iscsi.* methods.
	RESTPrefix = "/api/v2.0/"
)

// TrueNAS errno values beyond the C ones (truenas_api_client's ErrnoMixin).
const (
	errENOMETHOD         = 201
	errENOTAUTHENTICATED = 207
	errEACCES            = 13
	errEAGAIN            = 11
)

func init() {
	errnames[errENOMETHOD] = "ENOMETHOD"
	errnames[errENOTAUTHENTICATED] = "ENOTAUTHENTICATED"
	errnames[errEACCES] = "EACCES"
	errnames[errEAGAIN] = "EAGAIN"
}

// Options configure a Server.
type Options struct {
	// Accounts says who may log in on the WebSocket endpoints; nil or
	// one without a user starts every session authenticated.
	Accounts *Accounts
	// Service is the iSCSI service service.query and service.control
	// drive; nil means the Manager's portals (mgmt.Manager.ServePortals).
	Service Service
	// FailedLoginDelay is how long a refused login waits before it
	// answers, to slow password guessing (iscsid: one second): after the
	// previous refusal of the same source (IPv4 address, IPv6 /64), so
	// that parallel connections do not guess faster.
	FailedLoginDelay time.Duration
	// TLSCert is the DER of the listener's certificate, for SCRAM
	// channel binding over wss:// (nil without TLS).
	TLSCert []byte
	// Logger receives internal errors (nil discards them).
	Logger *slog.Logger
}

// Server serves the TrueNAS middleware API over every transport a TrueNAS
// client uses: JSON-RPC 2.0 over HTTP POST and over a WebSocket at
// /api/current, the legacy message protocol at /websocket and the REST
// twin under /api/v2.0. All of them call the same methods.
type Server struct {
	m        *mgmt.Manager
	opt      Options
	log      *slog.Logger
	methods  map[string]jsonrpc.Method
	post     *jsonrpc.Server
	jobs     *jobs
	mu       sync.Mutex
	sessions map[*session]struct{}
	calls    sync.WaitGroup // jobs still running
	conns    sync.WaitGroup // WebSocket connections still open
	ctx      context.Context
	stop     context.CancelFunc // ends every WebSocket session
	throttle *loginThrottle     // spaces failed logins by source
}

// New returns a Server over m.
func New(m *mgmt.Manager, opt Options) *Server {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{m: m, opt: opt, log: opt.Logger, sessions: map[*session]struct{}{},
		throttle: newLoginThrottle(opt.FailedLoginDelay, maxThrottledSources)}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.jobs = newJobs(s)
	s.methods = Methods(m)
	for name, fn := range s.sessionMethods() {
		s.methods[name] = withErrors(name, fn)
	}
	for name, fn := range s.serviceMethods() {
		s.methods[name] = withErrors(name, fn)
	}
	// Calls the middleware runs as jobs.
	for _, name := range []string{"iscsi.extent.delete", "pool.dataset.create", "pool.dataset.delete", "service.control"} {
		if fn, ok := s.methods[name]; ok {
			s.methods[name] = s.jobs.method(name, fn)
		}
	}
	s.post = jsonrpc.NewServer(s.methods, nil, s.log)
	return s
}

// Close ends every WebSocket session and waits for running jobs; HTTP
// server shutdown does not reach hijacked connections.
func (s *Server) Close() {
	s.stop()
	s.conns.Wait()
	s.calls.Wait()
}

// Register mounts the Server's endpoints on mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc(Path, s.serveCurrent)
	mux.HandleFunc(LegacyPath, s.serveLegacy)
	mux.Handle(RESTPrefix+"iscsi/", s.restHandler())
}

// IsWebSocket reports whether r asks for one of the Server's WebSocket
// endpoints; those log in inside the connection, so HTTP authentication
// in front of the Server lets them through.
func IsWebSocket(r *http.Request) bool {
	return r.Method == http.MethodGet && (r.URL.Path == Path || r.URL.Path == LegacyPath) &&
		strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

func (s *Server) serveCurrent(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		s.serveRPC(w, r) // websocket.Accept refuses a foreign Origin
		return
	}
	if !notFromOtherSite(w, r) {
		return
	}
	s.post.ServeHTTP(w, r)
}

// notFromOtherSite refuses, and answers, what a page of another site can
// have a browser send with the user's credentials: a request whose
// Origin is not this host (403), and a POST or PUT whose body is not
// application/json (415; a browser sends text/plain and form bodies
// cross-site without asking the server first). Clients other than
// browsers send no Origin; the middleware's send JSON.
func notFromOtherSite(w http.ResponseWriter, r *http.Request) bool {
	if rest.ForeignOrigin(r) {
		restError(w, http.StatusForbidden, "requests from the pages of another site ("+r.Header.Get("Origin")+") are refused")
		return false
	}
	if r.Method == http.MethodPost || r.Method == http.MethodPut {
		mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "application/json" {
			restError(w, http.StatusUnsupportedMediaType, "the body must be sent as Content-Type: application/json")
			return false
		}
	}
	return true
}

// session is one WebSocket connection's state.
type session struct {
	srv *Server
	// event sends a collection event in the session's protocol; it does
	// not block (a client that does not read loses its connection).
	event func(collection, typ string, id any, fields any)

	mu         sync.Mutex
	authed     bool
	user       string
	legacyJobs bool
	scram      *scramExchange
	subs       map[string]string // subscription id → event name
	onAuth     func()            // called once logged in (raises the frame limit)
	peer       netip.Addr        // where the connection comes from
}

func (s *Server) newSession(peer netip.Addr, event func(collection, typ string, id any, fields any), onAuth func()) *session {
	ss := &session{srv: s, peer: peer, event: event, onAuth: onAuth, legacyJobs: true, subs: map[string]string{},
		authed: s.opt.Accounts.Open()}
	s.mu.Lock()
	s.sessions[ss] = struct{}{}
	s.mu.Unlock()
	if ss.authed && onAuth != nil {
		onAuth()
	}
	return ss
}

func (s *Server) endSession(ss *session) {
	s.mu.Lock()
	delete(s.sessions, ss)
	s.mu.Unlock()
}

func (ss *session) authenticated() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.authed
}

func (ss *session) login(user string) {
	ss.mu.Lock()
	was := ss.authed
	ss.authed, ss.user, ss.scram = true, user, nil
	ss.mu.Unlock()
	if !was && ss.onAuth != nil {
		ss.onAuth()
	}
}

// subscribed reports whether the session follows collection.
func (ss *session) subscribed(collection string) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, name := range ss.subs {
		if name == collection || name == "*" {
			return true
		}
	}
	return false
}

// broadcast sends a collection event to every session following it.
func (s *Server) broadcast(collection, typ string, id any, fields any) {
	s.mu.Lock()
	var to []*session
	for ss := range s.sessions {
		to = append(to, ss)
	}
	s.mu.Unlock()
	for _, ss := range to {
		if ss.subscribed(collection) {
			ss.event(collection, typ, id, fields)
		}
	}
}

// ctxKey carries a call's session and message id in its context.
type ctxKey struct{}

type callInfo struct {
	ss    *session
	msgID any
}

func withCall(ctx context.Context, ss *session, msgID any) context.Context {
	return context.WithValue(ctx, ctxKey{}, callInfo{ss, msgID})
}

func callOf(ctx context.Context) callInfo {
	ci, _ := ctx.Value(ctxKey{}).(callInfo)
	return ci
}

// Unauthenticated sessions may call only these (and auth.*).
var beforeLogin = map[string]bool{"core.ping": true, "core.set_options": true, "core.subscribe": true}

// errNotAuthenticated is the middleware's refusal of a call before login.
func errNotAuthenticated() *jsonrpc.Error {
	return callErr(errENOTAUTHENTICATED, "Not authenticated", nil)
}

// callErr is the middleware's CallError as a JSON-RPC error.
func callErr(errno int, reason string, extra any) *jsonrpc.Error {
	return &jsonrpc.Error{Code: CodeCallError, Message: "Method call error",
		Data: map[string]any{"error": errno, "errname": errnames[errno], "reason": reason, "trace": nil, "extra": extra}}
}

// invoke runs one call for a session: the gate before login, the method,
// a recovered panic, and errors shaped as truenas_api_client reads them.
func (s *Server) invoke(ctx context.Context, ss *session, msgID any, method string, params json.RawMessage) (result any, err *jsonrpc.Error) {
	fn, ok := s.methods[method]
	if !ok {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeMethodNotFound, Message: "Method does not exist"}
	}
	if !ss.authenticated() && !beforeLogin[method] && (!strings.HasPrefix(method, "auth.") || method == "auth.me") {
		return nil, errNotAuthenticated()
	}
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("panic in a middleware method", "method", method, "panic", v, "stack", string(debug.Stack()))
			result, err = nil, callErr(errEINVAL, "internal error", nil)
		}
	}()
	res, e := fn(withCall(ctx, ss, msgID), params)
	if e != nil {
		return nil, shapeError(method, e)
	}
	return res, nil
}

// shapeError gives every error the data truenas_api_client reads: a
// parameter error carries [field, message, errno] triples, a call error
// its errno, reason and a null trace.
func shapeError(method string, err error) *jsonrpc.Error {
	var e *jsonrpc.Error
	if !errors.As(err, &e) {
		return callErr(errEINVAL, err.Error(), nil)
	}
	out := *e
	data, _ := e.Data.(map[string]any)
	switch {
	case data != nil:
		d := make(map[string]any, len(data)+2)
		for k, v := range data {
			d[k] = v
		}
		if _, ok := d["trace"]; !ok {
			d["trace"] = nil
		}
		if _, ok := d["extra"]; !ok {
			d["extra"] = nil
		}
		out.Data = d
	case e.Code == jsonrpc.CodeInvalidParams:
		field := strings.ReplaceAll(method, ".", "_")
		out.Data = map[string]any{"error": errEINVAL, "errname": "EINVAL", "reason": e.Message, "trace": nil,
			"extra": [][]any{{field, e.Message, errEINVAL}}}
	case e.Code == CodeCallError:
		out.Data = map[string]any{"error": errEINVAL, "errname": "EINVAL", "reason": e.Message, "trace": nil, "extra": nil}
	}
	return &out
}

// errorFields reads an error's errno, reason and extra for the legacy
// protocol.
func errorFields(e *jsonrpc.Error) (errno int, reason string, extra any) {
	errno, reason = errEINVAL, e.Message
	if d, ok := e.Data.(map[string]any); ok {
		if n, ok := d["error"].(int); ok {
			errno = n
		}
		if r, ok := d["reason"].(string); ok {
			reason = r
		}
		extra = d["extra"]
	}
	if e.Code == jsonrpc.CodeMethodNotFound {
		errno = errENOMETHOD
	}
	return errno, reason, extra
}

func noSession() error {
	return callErr(errEINVAL, "this method needs a WebSocket session (ws://HOST/api/current)", nil)
}

// atMost checks a call's positional parameters and returns them.
func atMost(params json.RawMessage, n int) ([]json.RawMessage, error) {
	return jsonrpc.Positional(params, n)
}

func decodeArg(args []json.RawMessage, i int, what string, v any) error {
	if i >= len(args) {
		return jsonrpc.InvalidParams("%s is missing", what)
	}
	if err := json.Unmarshal(args[i], v); err != nil {
		return jsonrpc.InvalidParams("%s: %v", what, err)
	}
	return nil
}

func errorf(errno int, format string, args ...any) error {
	return callErr(errno, fmt.Sprintf(format, args...), nil)
}

// refused waits before a login failure of ss is answered: its turn
// among the failures of its source (loginThrottle), or until ctx ends.
func (s *Server) refused(ctx context.Context, ss *session) {
	s.throttle.wait(ctx, ss.peer)
}

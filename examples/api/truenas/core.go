package truenas

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/iscsikit/iscsikit/examples/api/jsonrpc"
)

// Authentication mechanisms of auth.login_ex served here.
const (
	mechPassword = "PASSWORD_PLAIN"
	mechAPIKey   = "API_KEY_PLAIN"
	mechSCRAM    = "SCRAM"
)

// sessionMethods are the core.*, auth.* and api_key.* methods.
func (s *Server) sessionMethods() map[string]jsonrpc.Method {
	return map[string]jsonrpc.Method{
		"core.ping":        func(context.Context, json.RawMessage) (any, error) { return "pong", nil },
		"core.set_options": s.setOptions,
		"core.subscribe":   s.subscribe,
		"core.unsubscribe": s.unsubscribe,
		"core.get_jobs":    s.jobs.query,

		"auth.login_ex":           s.loginEx,
		"auth.login":              s.loginPassword,
		"auth.login_with_api_key": s.loginWithAPIKey,
		"auth.mechanism_choices": func(context.Context, json.RawMessage) (any, error) {
			return []string{mechPassword, mechAPIKey, mechSCRAM}, nil
		},
		"auth.logout": s.logout,
		"auth.me":     s.me,

		"api_key.create": s.apiKeyCreate,
		"api_key.query":  s.apiKeyQuery,
		"api_key.delete": s.apiKeyDelete,
	}
}

func (s *Server) setOptions(ctx context.Context, params json.RawMessage) (any, error) {
	ss, args, err := sessionCall(ctx, params, 1)
	if err != nil {
		return nil, err
	}
	var opts struct {
		LegacyJobs     *bool `json:"legacy_jobs"`
		PrivateMethods *bool `json:"private_methods"`
		PyExceptions   *bool `json:"py_exceptions"`
	}
	if len(args) == 1 {
		if err := jsonrpc.Decode(args[0], "options", &opts); err != nil {
			return nil, err
		}
	}
	if opts.PyExceptions != nil && *opts.PyExceptions {
		return nil, jsonrpc.InvalidParams("py_exceptions: Python exceptions are not served by this server")
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if opts.LegacyJobs != nil {
		ss.legacyJobs = *opts.LegacyJobs
	}
	return map[string]any{"legacy_jobs": ss.legacyJobs, "private_methods": opts.PrivateMethods != nil && *opts.PrivateMethods, "py_exceptions": false}, nil
}

// events are the collections a session may subscribe to.
var events = map[string]bool{"core.get_jobs": true}

// subscribe follows an event and returns the subscription's id; jobs
// need a logged-in session.
func (s *Server) subscribe(ctx context.Context, params json.RawMessage) (any, error) {
	ss, args, err := sessionCall(ctx, params, 1)
	if err != nil {
		return nil, err
	}
	var name string
	if err := decodeArg(args, 0, "event", &name); err != nil {
		return nil, err
	}
	id := rand.Text()
	return id, ss.follow(id, name)
}

// follow adds subscription id to event name.
func (ss *session) follow(id, name string) error {
	if !events[name] {
		return errorf(errENOENT, "%s: no such event (this server has core.get_jobs)", name)
	}
	if !ss.authenticated() {
		return errNotAuthenticated()
	}
	ss.mu.Lock()
	ss.subs[id] = name
	ss.mu.Unlock()
	return nil
}

func (ss *session) unfollow(id string) {
	ss.mu.Lock()
	delete(ss.subs, id)
	ss.mu.Unlock()
}

func (s *Server) unsubscribe(ctx context.Context, params json.RawMessage) (any, error) {
	ss, args, err := sessionCall(ctx, params, 1)
	if err != nil {
		return nil, err
	}
	var id string
	if err := decodeArg(args, 0, "id", &id); err != nil {
		return nil, err
	}
	ss.unfollow(id)
	return nil, nil
}

// loginEx is auth.login_ex with PASSWORD_PLAIN, API_KEY_PLAIN or the two
// steps of SCRAM.
func (s *Server) loginEx(ctx context.Context, params json.RawMessage) (any, error) {
	ss, args, err := sessionCall(ctx, params, 1)
	if err != nil {
		return nil, err
	}
	var req struct {
		Mechanism    string `json:"mechanism"`
		Username     string `json:"username"`
		Password     string `json:"password"`
		APIKey       string `json:"api_key"`
		ScramType    string `json:"scram_type"`
		RFCStr       string `json:"rfc_str"`
		LoginOptions *struct {
			UserInfo       *bool `json:"user_info"`
			ReconnectToken bool  `json:"reconnect_token"`
		} `json:"login_options"`
	}
	if err := decodeArg(args, 0, "login data", &req); err != nil {
		return nil, err
	}
	userInfo := true
	if req.LoginOptions != nil && req.LoginOptions.UserInfo != nil {
		userInfo = *req.LoginOptions.UserInfo
	}
	acc := s.opt.Accounts
	var user string
	var ok bool
	switch req.Mechanism {
	case mechPassword:
		ok, user = acc.CheckPassword(req.Username, req.Password), req.Username
	case mechAPIKey:
		user, ok = acc.CheckKey(req.Username, req.APIKey)
	case mechSCRAM:
		return s.scramStep(ctx, ss, req.ScramType, req.RFCStr)
	case "OTP_TOKEN", "TOKEN_PLAIN":
		return nil, errorf(errENOTSUP, "%s: mechanism is not supported by this server (%s, %s and %s are)", req.Mechanism, mechPassword, mechAPIKey, mechSCRAM)
	default:
		return nil, jsonrpc.InvalidParams("mechanism: %q is not one of %s, %s, %s", req.Mechanism, mechPassword, mechAPIKey, mechSCRAM)
	}
	if !ok {
		s.refused(ctx, ss)
		return map[string]any{"response_type": "AUTH_ERR"}, nil
	}
	ss.login(user)
	resp := map[string]any{"response_type": "SUCCESS", "user_info": nil, "authenticator": "LEVEL_1", "reconnect_token": nil}
	if userInfo {
		resp["user_info"] = me(user)
	}
	return resp, nil
}

func (s *Server) scramStep(ctx context.Context, ss *session, step, msg string) (any, error) {
	authErr := map[string]any{"response_type": "AUTH_ERR"}
	switch step {
	case "CLIENT_FIRST_MESSAGE":
		x, err := scramFirst(s.opt.Accounts, msg)
		if err != nil {
			return nil, jsonrpc.InvalidParams("rfc_str: %v", err)
		}
		ss.mu.Lock()
		ss.scram = x
		ss.mu.Unlock()
		if x == nil {
			s.refused(ctx, ss)
			return authErr, nil
		}
		return map[string]any{"response_type": "SCRAM_RESPONSE", "scram_type": "SERVER_FIRST_RESPONSE", "rfc_str": x.serverFirst, "user_info": nil}, nil
	case "CLIENT_FINAL_MESSAGE":
		ss.mu.Lock()
		x := ss.scram
		ss.scram = nil
		ss.mu.Unlock()
		if x == nil {
			return nil, errorf(errEINVAL, "SCRAM: CLIENT_FINAL_MESSAGE without a CLIENT_FIRST_MESSAGE before it")
		}
		final, err := x.final(msg, s.opt.TLSCert)
		if err != nil {
			return nil, jsonrpc.InvalidParams("rfc_str: %v", err)
		}
		if final == "" {
			s.refused(ctx, ss)
			return authErr, nil
		}
		ss.login(x.key.Username)
		return map[string]any{"response_type": "SCRAM_RESPONSE", "scram_type": "SERVER_FINAL_RESPONSE", "rfc_str": final, "user_info": me(x.key.Username)}, nil
	}
	return nil, jsonrpc.InvalidParams("scram_type: %q is not CLIENT_FIRST_MESSAGE or CLIENT_FINAL_MESSAGE", step)
}

// loginPassword is auth.login(username, password[, otp_token]).
func (s *Server) loginPassword(ctx context.Context, params json.RawMessage) (any, error) {
	ss, args, err := sessionCall(ctx, params, 3)
	if err != nil {
		return nil, err
	}
	var user, password string
	if err := decodeArg(args, 0, "username", &user); err != nil {
		return nil, err
	}
	if err := decodeArg(args, 1, "password", &password); err != nil {
		return nil, err
	}
	if !s.opt.Accounts.CheckPassword(user, password) {
		s.refused(ctx, ss)
		return false, nil
	}
	ss.login(user)
	return true, nil
}

// loginWithAPIKey is auth.login_with_api_key(key).
func (s *Server) loginWithAPIKey(ctx context.Context, params json.RawMessage) (any, error) {
	ss, args, err := sessionCall(ctx, params, 1)
	if err != nil {
		return nil, err
	}
	var key string
	if err := decodeArg(args, 0, "api_key", &key); err != nil {
		return nil, err
	}
	user, ok := s.opt.Accounts.CheckKey("", key)
	if !ok {
		s.refused(ctx, ss)
		return false, nil
	}
	ss.login(user)
	return true, nil
}

func (s *Server) logout(ctx context.Context, _ json.RawMessage) (any, error) {
	ss, _, err := sessionCall(ctx, nil, 0)
	if err != nil {
		return nil, err
	}
	ss.mu.Lock()
	ss.authed, ss.user, ss.subs = s.opt.Accounts.Open(), "", map[string]string{}
	ss.mu.Unlock()
	return true, nil
}

func (s *Server) me(ctx context.Context, _ json.RawMessage) (any, error) {
	ss, _, err := sessionCall(ctx, nil, 0)
	if err != nil {
		return nil, err
	}
	ss.mu.Lock()
	user := ss.user
	ss.mu.Unlock()
	return me(user), nil
}

// me is auth.me's answer for user: an administrator with every role.
func me(user string) map[string]any {
	return map[string]any{"pw_name": user, "pw_uid": 0, "pw_gid": 0, "pw_gecos": user, "pw_dir": "/var/empty", "pw_shell": "/usr/sbin/nologin",
		"attributes": map[string]any{}, "two_factor_config": map[string]any{}, "privilege": map[string]any{"roles": []string{"FULL_ADMIN"}},
		"account_attributes": []string{"LOCAL"}}
}

// ejsonTime is a time as truenas_api_client's ejson decodes it.
type ejsonTime time.Time

// MarshalJSON writes {"$date": milliseconds since the epoch}.
func (t ejsonTime) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]int64{"$date": time.Time(t).UnixMilli()})
}

// apiKeyEntry is an API key as api_key.query shows it: the SCRAM secrets
// are redacted as the middleware redacts Secret fields.
func apiKeyEntry(k APIKey) map[string]any {
	var expires any
	if k.ExpiresAt != nil {
		expires = ejsonTime(*k.ExpiresAt)
	}
	return map[string]any{"id": k.ID, "name": k.Name, "username": k.Username, "user_identifier": 0,
		"iterations": k.Iterations, "salt": "********", "stored_key": "********", "server_key": "********",
		"created_at": ejsonTime(k.CreatedAt), "expires_at": expires, "local": true, "revoked": false, "revoked_reason": nil}
}

func (s *Server) apiKeyCreate(ctx context.Context, params json.RawMessage) (any, error) {
	var req struct {
		Name      string          `json:"name"`
		Username  string          `json:"username"`
		ExpiresAt json.RawMessage `json:"expires_at"`
	}
	if err := createArg(params, &req); err != nil {
		return nil, err
	}
	if req.Name == "" || len(req.Name) > 200 {
		return nil, jsonrpc.InvalidParams("name: 1 to 200 characters")
	}
	var expires *time.Time
	if len(req.ExpiresAt) > 0 && string(req.ExpiresAt) != "null" {
		var d struct {
			Date int64 `json:"$date"`
		}
		var t time.Time
		if json.Unmarshal(req.ExpiresAt, &d) == nil && d.Date != 0 {
			t = time.UnixMilli(d.Date).UTC()
		} else if err := json.Unmarshal(req.ExpiresAt, &t); err != nil {
			return nil, jsonrpc.InvalidParams("expires_at: want a time ({\"$date\": ms} or RFC 3339)")
		}
		expires = &t
	}
	k, raw, err := s.opt.Accounts.CreateKey(req.Name, req.Username, expires)
	if errors.Is(err, ErrNoAccount) {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: err.Error(),
			Data: map[string]any{"error": errEINVAL, "errname": "EINVAL", "reason": err.Error(), "extra": [][]any{{"api_key_create.username", err.Error(), errEINVAL}}}}
	}
	if err != nil {
		return nil, err
	}
	out := apiKeyEntry(k)
	out["key"] = raw
	return out, nil
}

func (s *Server) apiKeyQuery(_ context.Context, params json.RawMessage) (any, error) {
	keys := s.opt.Accounts.Keys()
	list := make([]map[string]any, 0, len(keys))
	for _, k := range keys {
		list = append(list, apiKeyEntry(k))
	}
	return query(params, list, "api_key")
}

func (s *Server) apiKeyDelete(ctx context.Context, params json.RawMessage) (any, error) {
	return deleteByID(ctx, params, func(_ context.Context, id int) error {
		found, err := s.opt.Accounts.DeleteKey(id)
		if err == nil && !found {
			err = &callError{errno: errENOENT, msg: "api_key " + strconv.Itoa(id) + " does not exist"}
		}
		return err
	})
}

// sessionCall returns the session of a call that needs one and its
// positional parameters (at most n).
func sessionCall(ctx context.Context, params json.RawMessage, n int) (*session, []json.RawMessage, error) {
	ss := callOf(ctx).ss
	if ss == nil {
		return nil, nil, noSession()
	}
	args, err := atMost(params, n)
	return ss, args, err
}

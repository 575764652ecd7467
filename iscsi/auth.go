package iscsi

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/iscsikit/iscsikit/chap"
	"github.com/iscsikit/iscsikit/iscsi/negotiate"
)

// ErrAuthFailed is returned by an AuthExchange to fail the login with
// "authentication failure" (status 0x0201).
var ErrAuthFailed = errors.New("iscsi: authentication failed")

// ErrNotAuthorized is returned by an Authenticator to fail the login with
// "authorization failure" (status 0x0202).
var ErrNotAuthorized = errors.New("iscsi: initiator not authorized")

// LoginInfo says who is logging in, from where, through which portal
// group and to which target. Access control and authentication decide on
// it.
type LoginInfo struct {
	// InitiatorName is the InitiatorName key of the first login request.
	InitiatorName string
	// RemoteAddr is the initiator's address as host:port.
	RemoteAddr string
	// PortalGroupTag is the tag of the portal the connection reached.
	PortalGroupTag uint16
	// TargetName is the target of a normal session, empty for discovery.
	TargetName string
}

// Discovery reports whether the login is for a discovery session.
func (l LoginInfo) Discovery() bool { return l.TargetName == "" }

// Authenticator runs the security stage of login (RFC 7143 §6.3.1, §12).
// It is the seam where CHAP and similar methods plug in.
type Authenticator interface {
	// Begin starts the security stage of one login. An error wrapping
	// ErrNotAuthorized fails the login with "authorization failure";
	// any other with "authentication failure".
	Begin(info LoginInfo) (AuthExchange, error)
}

// AuthExchange is one login's security-stage conversation.
type AuthExchange interface {
	// Methods lists the AuthMethod values the target accepts, in order of
	// preference ("None", "CHAP", ...).
	Methods() []string
	// Required reports whether the login must pass through the security
	// stage (a login that starts in the operational stage is then refused).
	Required() bool
	// Step is given the chosen method and the security keys of one login
	// request (AuthMethod itself excluded) and returns the keys to answer
	// with and whether authentication has completed successfully.
	Step(method string, keys []negotiate.Pair) (resp []negotiate.Pair, done bool, err error)
}

// noAuth accepts every initiator with AuthMethod=None.
type noAuth struct{}

func (noAuth) Begin(LoginInfo) (AuthExchange, error) { return noAuth{}, nil }
func (noAuth) Methods() []string                     { return []string{"None"} }
func (noAuth) Required() bool                        { return false }
func (noAuth) Step(string, []negotiate.Pair) ([]negotiate.Pair, bool, error) {
	return nil, true, nil
}

// AuthMethod is how a login must authenticate.
type AuthMethod int

// Authentication methods.
const (
	// AuthNone admits the login without authentication.
	AuthNone AuthMethod = iota
	// AuthCHAP requires the initiator to answer the target's CHAP
	// challenge; the initiator may also challenge the target, which then
	// answers when its credential has a peer secret.
	AuthCHAP
	// AuthMutualCHAP requires CHAP in both directions.
	AuthMutualCHAP
)

// String returns the method's configuration name.
func (m AuthMethod) String() string {
	switch m {
	case AuthNone:
		return "None"
	case AuthCHAP:
		return "CHAP"
	case AuthMutualCHAP:
		return "MutualCHAP"
	}
	return "AuthMethod(" + strconv.Itoa(int(m)) + ")"
}

// CHAPCredential is one CHAP user a target accepts.
type CHAPCredential struct {
	// User and Secret are what the initiator answers with (CHAP_N and
	// the secret behind CHAP_R).
	User, Secret string
	// PeerUser and PeerSecret are what the target answers with when the
	// initiator challenges it (mutual CHAP); empty means the target does
	// not answer challenges with this credential.
	PeerUser, PeerSecret string
	// Initiator, when set, restricts the credential to the initiator of
	// that iSCSI name (per-initiator credentials).
	Initiator string
}

// AuthPolicy is how one login must authenticate.
type AuthPolicy struct {
	Method AuthMethod
	// Credentials are the users accepted with CHAP and MutualCHAP.
	Credentials []CHAPCredential
}

// CHAPAuthenticator is an Authenticator that asks Policy how each login
// must authenticate and runs CHAP (RFC 7143 §12.1.3) where the policy
// says so. It refuses reflected and reused challenges across all the
// logins it serves. Create it with NewCHAPAuthenticator.
type CHAPAuthenticator struct {
	policy     func(LoginInfo) (AuthPolicy, error)
	algorithms []chap.Algorithm
	issued     *chap.Ledger // challenges we sent
	received   *chap.Ledger // challenges initiators sent
}

// ledgerCapacity bounds the challenges remembered for reflection and
// reuse checks.
const ledgerCapacity = 8192

// NewCHAPAuthenticator returns an authenticator that looks each login's
// policy up with policy (an error from it fails the login: wrapping
// ErrNotAuthorized with "authorization failure") and negotiates CHAP_A in
// the order of algorithms (chap.DefaultAlgorithms when empty).
func NewCHAPAuthenticator(policy func(LoginInfo) (AuthPolicy, error), algorithms ...chap.Algorithm) *CHAPAuthenticator {
	if len(algorithms) == 0 {
		algorithms = chap.DefaultAlgorithms()
	}
	return &CHAPAuthenticator{
		policy:     policy,
		algorithms: algorithms,
		issued:     chap.NewLedger(ledgerCapacity),
		received:   chap.NewLedger(ledgerCapacity),
	}
}

// Begin implements Authenticator.
func (a *CHAPAuthenticator) Begin(info LoginInfo) (AuthExchange, error) {
	p, err := a.policy(info)
	if err != nil {
		return nil, err
	}
	switch p.Method {
	case AuthNone:
		return noAuth{}, nil
	case AuthCHAP, AuthMutualCHAP:
	default:
		return nil, fmt.Errorf("%w: unknown method %v", ErrAuthFailed, p.Method)
	}
	var creds []CHAPCredential
	for _, c := range p.Credentials {
		if c.Initiator != "" && c.Initiator != info.InitiatorName {
			continue
		}
		creds = append(creds, c)
	}
	if len(creds) == 0 {
		return nil, fmt.Errorf("%w: no CHAP credential for initiator %s", ErrAuthFailed, info.InitiatorName)
	}
	return &chapExchange{auth: a, policy: p.Method, creds: creds}, nil
}

// chapExchange is the target's side of one CHAP conversation.
type chapExchange struct {
	auth   *CHAPAuthenticator
	policy AuthMethod
	creds  []CHAPCredential

	phase     int // 0: want CHAP_A; 1: want CHAP_N/CHAP_R; 2: done
	alg       chap.Algorithm
	id        byte
	challenge []byte
}

func (x *chapExchange) Methods() []string { return []string{"CHAP"} }
func (x *chapExchange) Required() bool    { return true }

// Step runs RFC 7143 §12.1.3: CHAP_A from the initiator gets CHAP_A,
// CHAP_I and CHAP_C; CHAP_N and CHAP_R (and, for mutual CHAP, CHAP_I and
// CHAP_C) get verified and, for mutual CHAP, answered.
func (x *chapExchange) Step(method string, keys []negotiate.Pair) ([]negotiate.Pair, bool, error) {
	if method != "CHAP" {
		return nil, false, fmt.Errorf("%w: AuthMethod %s", ErrAuthFailed, method)
	}
	got := map[string]string{}
	for _, kv := range keys {
		if _, dup := got[kv.Key]; dup {
			return nil, false, fmt.Errorf("%w: %s sent twice", ErrAuthFailed, kv.Key)
		}
		got[kv.Key] = kv.Value
	}
	switch x.phase {
	case 0:
		if len(keys) == 0 {
			return nil, false, nil // AuthMethod alone: wait for CHAP_A
		}
		offer, ok := got["CHAP_A"]
		if !ok || len(keys) != 1 {
			return nil, false, fmt.Errorf("%w: expected CHAP_A alone, got %s", ErrAuthFailed, keyNames(keys))
		}
		alg, err := chap.Negotiate(offer, x.auth.algorithms)
		if err != nil {
			return nil, false, fmt.Errorf("%w: %w", ErrAuthFailed, err)
		}
		id, c, err := chap.NewChallenge(alg)
		if err != nil {
			return nil, false, err
		}
		x.auth.issued.Record(c)
		x.alg, x.id, x.challenge, x.phase = alg, id, c, 1
		return []negotiate.Pair{
			{Key: "CHAP_A", Value: strconv.Itoa(int(alg))},
			{Key: "CHAP_I", Value: strconv.Itoa(int(id))},
			{Key: "CHAP_C", Value: chap.EncodeHex(c)},
		}, false, nil
	case 1:
		return x.verify(got)
	}
	return nil, false, fmt.Errorf("%w: keys after CHAP completed", ErrAuthFailed)
}

func (x *chapExchange) verify(got map[string]string) ([]negotiate.Pair, bool, error) {
	x.phase = 2 // one answer only, right or wrong
	user, okN := got["CHAP_N"]
	rv, okR := got["CHAP_R"]
	if !okN || !okR {
		return nil, false, fmt.Errorf("%w: CHAP_N and CHAP_R required", ErrAuthFailed)
	}
	for k := range got {
		if k != "CHAP_N" && k != "CHAP_R" && k != "CHAP_I" && k != "CHAP_C" {
			return nil, false, fmt.Errorf("%w: unexpected key %s", ErrAuthFailed, k)
		}
	}
	resp, err := chap.DecodeBinary(rv)
	if err != nil {
		return nil, false, fmt.Errorf("%w: CHAP_R: %w", ErrAuthFailed, err)
	}
	var match *CHAPCredential
	known := false
	for i := range x.creds {
		c := &x.creds[i]
		if c.User != user {
			continue
		}
		known = true
		if err := chap.CheckSecret([]byte(c.Secret)); err != nil {
			return nil, false, fmt.Errorf("%w: credential of user %q: %w", ErrAuthFailed, user, err)
		}
		if chap.Verify(x.alg, x.id, []byte(c.Secret), x.challenge, resp) {
			match = c
			break
		}
	}
	if match == nil {
		if !known {
			// Spend the same work as for a known user, so response times
			// do not tell which user names exist.
			chap.Verify(x.alg, x.id, x.challenge, x.challenge, resp)
		}
		return nil, false, fmt.Errorf("%w: CHAP_N %q with a wrong or unknown response (%v)", ErrAuthFailed, user, x.alg)
	}
	iv, okI := got["CHAP_I"]
	cv, okC := got["CHAP_C"]
	if okI != okC {
		return nil, false, fmt.Errorf("%w: CHAP_I and CHAP_C go together", ErrAuthFailed)
	}
	if !okC {
		if x.policy == AuthMutualCHAP {
			return nil, false, fmt.Errorf("%w: mutual CHAP required but the initiator sent no challenge", ErrAuthFailed)
		}
		return nil, true, nil
	}
	if match.PeerSecret == "" {
		return nil, false, fmt.Errorf("%w: initiator asked for mutual CHAP but user %q has no peer secret", ErrAuthFailed, user)
	}
	if err := chap.CheckSecret([]byte(match.PeerSecret)); err != nil {
		return nil, false, fmt.Errorf("%w: peer secret of user %q: %w", ErrAuthFailed, user, err)
	}
	id, err := chap.ParseID(iv)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %w", ErrAuthFailed, err)
	}
	c, err := chap.DecodeBinary(cv)
	if err != nil {
		return nil, false, fmt.Errorf("%w: CHAP_C: %w", ErrAuthFailed, err)
	}
	if err := chap.CheckMutual(x.challenge, c); err != nil {
		return nil, false, fmt.Errorf("%w: %w", ErrAuthFailed, err)
	}
	if x.auth.issued.Contains(c) {
		return nil, false, fmt.Errorf("%w: initiator challenge is one the target issued: %w", ErrAuthFailed, chap.ErrReflection)
	}
	if !x.auth.received.Record(c) {
		return nil, false, fmt.Errorf("%w: initiator challenge reused: %w", ErrAuthFailed, chap.ErrReflection)
	}
	r, err := chap.Response(x.alg, id, []byte(match.PeerSecret), c)
	if err != nil {
		return nil, false, err
	}
	return []negotiate.Pair{
		{Key: "CHAP_N", Value: match.PeerUser},
		{Key: "CHAP_R", Value: chap.EncodeHex(r)},
	}, true, nil
}

func keyNames(keys []negotiate.Pair) string {
	s := ""
	for i, kv := range keys {
		if i > 0 {
			s += ","
		}
		s += kv.Key
	}
	if s == "" {
		return "nothing"
	}
	return s
}

package iscsi

import (
	"errors"

	"github.com/iscsikit/iscsikit/iscsi/negotiate"
)

// ErrAuthFailed is returned by an AuthExchange to fail the login with
// "authentication failure" (status 0x0201).
var ErrAuthFailed = errors.New("iscsi: authentication failed")

// ErrNotAuthorized is returned by an Authenticator to fail the login with
// "authorization failure" (status 0x0202).
var ErrNotAuthorized = errors.New("iscsi: initiator not authorized")

// Authenticator runs the security stage of login (RFC 7143 §6.3.1, §12).
// It is the seam where CHAP and similar methods plug in.
type Authenticator interface {
	// Begin starts the security stage for an initiator logging in to a
	// target (targetName is empty for a discovery session) from remoteAddr.
	Begin(initiatorName, targetName, remoteAddr string) (AuthExchange, error)
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

func (noAuth) Begin(string, string, string) (AuthExchange, error) { return noAuth{}, nil }
func (noAuth) Methods() []string                                  { return []string{"None"} }
func (noAuth) Required() bool                                     { return false }
func (noAuth) Step(string, []negotiate.Pair) ([]negotiate.Pair, bool, error) {
	return nil, true, nil
}

package mgmt

import (
	"errors"
	"fmt"
)

// Kind classifies an Error so that a front-end can map it to its protocol:
// an HTTP status, a JSON-RPC error code.
type Kind int

// The kinds of Error.
const (
	// KindInvalid: a field's value breaks a rule (HTTP 422, JSON-RPC -32602).
	KindInvalid Kind = iota + 1
	// KindNotFound: the object, or one a field refers to, does not exist (404).
	KindNotFound
	// KindExists: the name or number is already taken (409).
	KindExists
	// KindInUse: the object cannot be deleted while others use it (409).
	KindInUse
	// KindUnsupported: a valid setting this SDK does not implement (501).
	KindUnsupported
)

// Sentinels matching every Error of a kind with errors.Is.
var (
	ErrInvalid     = errors.New("invalid")
	ErrNotFound    = errors.New("not found")
	ErrExists      = errors.New("already exists")
	ErrInUse       = errors.New("in use")
	ErrUnsupported = errors.New("not supported")
)

// Error is what every Manager operation returns for a request it refuses:
// which object, which field, and why, in words a person can act on.
// Validation of a whole configuration returns several, joined with
// errors.Join; errors.As finds the first.
type Error struct {
	Kind   Kind
	Object string // "portal", "initiator", "auth", "target", "extent", "targetextent", "global"
	ID     int    // 0 when the object has none yet (or for global)
	Name   string // the object's name, when it has one
	Field  string // JSON field name; empty when the object as a whole is at fault
	Msg    string
}

func (e *Error) Error() string {
	who := e.Object
	if e.ID != 0 {
		who += fmt.Sprintf(" %d", e.ID)
	}
	if e.Name != "" {
		who += fmt.Sprintf(" (%s)", e.Name)
	}
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %s", who, e.Field, e.Msg)
	}
	return fmt.Sprintf("%s: %s", who, e.Msg)
}

// Is matches the sentinel of e's kind.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrInvalid:
		return e.Kind == KindInvalid
	case ErrNotFound:
		return e.Kind == KindNotFound
	case ErrExists:
		return e.Kind == KindExists
	case ErrInUse:
		return e.Kind == KindInUse
	case ErrUnsupported:
		return e.Kind == KindUnsupported
	}
	return false
}

// String names the kind as its sentinel does: "invalid", "not found",
// "already exists", "in use" or "not supported".
func (k Kind) String() string {
	switch k {
	case KindInvalid:
		return ErrInvalid.Error()
	case KindNotFound:
		return ErrNotFound.Error()
	case KindExists:
		return ErrExists.Error()
	case KindInUse:
		return ErrInUse.Error()
	case KindUnsupported:
		return ErrUnsupported.Error()
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

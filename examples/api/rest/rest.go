// Package rest holds what the REST front-ends (seeds 001, 002 and 004)
// share: strict JSON request bodies, JSON answers, offset/limit paging and
// the mapping of mgmt's refusals onto HTTP status codes. Each front-end
// shapes its own error body; this package only decides the status and the
// message.
package rest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/iscsikit/iscsikit/examples/api/merge"
	"github.com/iscsikit/iscsikit/mgmt"
)

// MaxBodyBytes bounds a request body.
const MaxBodyBytes = 1 << 20

// Error is a refusal with its HTTP status and a message naming the field.
type Error struct {
	Status int
	Field  string // the request field at fault, when there is one
	Msg    string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Msg
	}
	return e.Msg
}

// BadRequest returns a 400 Error about field.
func BadRequest(field, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// NotFound returns a 404 Error.
func NotFound(format string, args ...any) *Error {
	return &Error{Status: http.StatusNotFound, Msg: fmt.Sprintf(format, args...)}
}

// Conflict returns a 409 Error about field.
func Conflict(field, format string, args ...any) *Error {
	return &Error{Status: http.StatusConflict, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// StatusOf maps err to an HTTP status and a message: *Error keeps its own,
// mgmt's kinds map to 400 (invalid), 404 (not found), 409 (exists, in use)
// and 501 (unsupported), and anything else is a 500 whose message is not
// shown to the client.
func StatusOf(err error) (status int, msg string) {
	var re *Error
	if errors.As(err, &re) {
		return re.Status, re.Error()
	}
	var me *mgmt.Error
	if errors.As(err, &me) {
		msg := err.Error()
		switch me.Kind {
		case mgmt.KindNotFound:
			if me.Field != "" {
				// A reference to an object that does not exist is the
				// request's fault, not a missing resource.
				return http.StatusBadRequest, msg
			}
			return http.StatusNotFound, msg
		case mgmt.KindExists, mgmt.KindInUse:
			return http.StatusConflict, msg
		case mgmt.KindUnsupported:
			return http.StatusNotImplemented, msg
		}
		return http.StatusBadRequest, msg
	}
	return http.StatusInternalServerError, "internal error"
}

// DecodeBody decodes the request's JSON body into v, refusing unknown
// fields, wrong types, trailing data and bodies over MaxBodyBytes; the
// error names the field.
func DecodeBody(r *http.Request, v any) error {
	body, err := ReadBody(r)
	if err != nil {
		return err
	}
	return DecodeJSON(body, v)
}

// ReadBody reads the request body, refusing one over MaxBodyBytes.
func ReadBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		return nil, BadRequest("", "reading the body: %v", err)
	}
	if len(body) > MaxBodyBytes {
		return nil, &Error{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("the body is larger than %d bytes", MaxBodyBytes)}
	}
	return body, nil
}

// ReadObject reads a body that must be one JSON object, for partial
// updates (merge.Patch) and create calls that decode it themselves.
func ReadObject(r *http.Request) ([]byte, error) {
	body, err := ReadBody(r)
	if err != nil {
		return nil, err
	}
	if t := bytes.TrimSpace(body); len(t) > 0 && t[0] != '{' {
		return nil, BadRequest("", "the body must be a JSON object")
	}
	var fields map[string]json.RawMessage
	if err := DecodeJSON(body, &fields); err != nil {
		return nil, err
	}
	return body, nil
}

// DecodeJSON decodes body into v strictly, as DecodeBody does.
func DecodeJSON(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return BadRequest("", "the body is empty; send a JSON object")
	}
	if err := merge.Strict(body, v); err != nil {
		return FromMerge(err)
	}
	return nil
}

// FromMerge turns a merge or decoding failure into a 400 naming the field.
func FromMerge(err error) error {
	var me *merge.Error
	if errors.As(err, &me) {
		return BadRequest(me.Field, "%s", me.Msg)
	}
	return err
}

// WriteJSON answers v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// Page is an offset/limit window over a listing.
type Page struct {
	Offset, Limit int
}

// ParsePage reads ?offset= and ?limit= (defaults 0 and defLimit); a
// non-numeric or negative value is a 400.
func ParsePage(r *http.Request, defLimit int) (Page, error) {
	p := Page{Limit: defLimit}
	q := r.URL.Query()
	for _, f := range []struct {
		name string
		dst  *int
	}{{"offset", &p.Offset}, {"limit", &p.Limit}} {
		s := q.Get(f.name)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return p, BadRequest(f.name, "want a whole number, got %q", s)
		}
		*f.dst = n
	}
	return p, nil
}

// Apply returns the window of list; a zero limit means no limit.
func Apply[T any](p Page, list []T) []T {
	list = list[min(p.Offset, len(list)):]
	if p.Limit > 0 && len(list) > p.Limit {
		list = list[:p.Limit]
	}
	return list
}

// ParseID reads a positive integer path segment.
func ParseID(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, NotFound("%q is not an object id", s)
	}
	return n, nil
}

// ForeignOrigin reports whether r carries an Origin naming a site other
// than the host it was sent to: a request a page of that site had a
// browser send, with whatever credentials the browser keeps for this
// host (HTTP Basic). Clients other than browsers send no Origin.
func ForeignOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return false
	}
	u, err := url.Parse(o)
	return err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host)
}

// SameOriginOnly answers 403 to a request with a foreign Origin
// (ForeignOrigin) and hands the others to next.
func SameOriginOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ForeignOrigin(r) {
			http.Error(w, "requests from the pages of another site are refused", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

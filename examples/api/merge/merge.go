// Package merge applies partial updates: a JSON object naming some fields
// of a resource changes those fields and leaves the others as they are.
// Every front-end's update call works this way, whatever its wire format.
package merge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Error is a patch that cannot be applied, naming the field at fault
// (empty when the patch as a whole is).
type Error struct {
	Field string
	Msg   string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Msg
	}
	return e.Msg
}

// Patch overlays the fields of the JSON object patch on cur. Fields in
// readOnly may appear only with their current value; unknown fields and
// wrong types are refused. On error cur is unchanged.
func Patch[T any](cur *T, patch []byte, readOnly ...string) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(patch, &fields); err != nil || fields == nil {
		return &Error{Msg: "the update must be a JSON object of the fields to change"}
	}
	b, err := json.Marshal(cur)
	if err != nil {
		return err
	}
	var merged map[string]json.RawMessage
	if err := json.Unmarshal(b, &merged); err != nil {
		return err
	}
	for _, f := range readOnly {
		if v, ok := fields[f]; ok && !sameJSON(v, merged[f]) {
			return &Error{Field: f, Msg: "cannot be changed"}
		}
	}
	for k, v := range fields {
		merged[k] = v
	}
	if b, err = json.Marshal(merged); err != nil {
		return err
	}
	var next T
	if err := Strict(b, &next); err != nil {
		return err
	}
	*cur = next
	return nil
}

// Strict decodes one JSON value into v, refusing unknown fields, wrong
// types and trailing data, with an *Error naming the field.
func Strict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Describe(err)
	}
	if dec.More() {
		return &Error{Msg: "trailing data after the JSON value"}
	}
	return nil
}

// Describe turns a JSON decoding error into an *Error naming the field.
func Describe(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return &Error{Field: te.Field, Msg: fmt.Sprintf("want %s, got %s", te.Type, te.Value)}
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return &Error{Msg: fmt.Sprintf("invalid JSON at byte %d: %v", se.Offset, err)}
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return &Error{Field: strings.Trim(f, `"`), Msg: "unknown field"}
	}
	var me *Error
	if errors.As(err, &me) {
		return me
	}
	return &Error{Msg: err.Error()}
}

func sameJSON(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

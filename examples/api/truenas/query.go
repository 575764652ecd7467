package truenas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/iscsikit/iscsikit/examples/api/jsonrpc"
	"github.com/iscsikit/iscsikit/examples/api/merge"
)

// queryOptions are the options of a *.query call (the second parameter).
type queryOptions struct {
	// Get returns the first match as an object instead of a list, and
	// fails with ENOENT when there is none.
	Get bool `json:"get"`
	// Count returns the number of matches instead of the matches.
	Count   bool     `json:"count"`
	Limit   int      `json:"limit"`
	Offset  int      `json:"offset"`
	OrderBy []string `json:"order_by"`
	Select  []string `json:"select"`
	// Extra is accepted for compatibility; no method here takes extras.
	Extra map[string]any `json:"extra"`
}

// filter is one compiled filter of a query: a leaf [field, op, value] or
// an ["OR", [filters...]] alternative.
type filter struct {
	field string
	op    string
	value any
	re    *regexp.Regexp
	or    [][]filter
}

// parseQuery reads a query call's positional parameters: an optional
// filter list and an optional options object.
func parseQuery(params json.RawMessage) ([]filter, queryOptions, error) {
	var opts queryOptions
	args, err := jsonrpc.Positional(params, 2)
	if err != nil {
		return nil, opts, err
	}
	var filters []filter
	if len(args) > 0 && !bytes.Equal(bytes.TrimSpace(args[0]), []byte("null")) {
		var raw []json.RawMessage
		if err := json.Unmarshal(args[0], &raw); err != nil {
			return nil, opts, jsonrpc.InvalidParams("filters: want a list of [field, operator, value] lists: %s", merge.Describe(err))
		}
		if filters, err = compileFilters(raw); err != nil {
			return nil, opts, err
		}
	}
	if len(args) > 1 {
		if err := jsonrpc.Decode(args[1], "options", &opts); err != nil {
			return nil, opts, err
		}
		if opts.Limit < 0 || opts.Offset < 0 {
			return nil, opts, jsonrpc.InvalidParams("options: limit and offset must not be negative")
		}
	}
	return filters, opts, nil
}

func compileFilters(raw []json.RawMessage) ([]filter, error) {
	out := make([]filter, 0, len(raw))
	for i, r := range raw {
		var parts []json.RawMessage
		if err := json.Unmarshal(r, &parts); err != nil {
			return nil, jsonrpc.InvalidParams("filters[%d]: want [field, operator, value]", i)
		}
		var head string
		if len(parts) > 0 {
			json.Unmarshal(parts[0], &head)
		}
		if head == "OR" && len(parts) == 2 {
			var alts []json.RawMessage
			if err := json.Unmarshal(parts[1], &alts); err != nil {
				return nil, jsonrpc.InvalidParams("filters[%d]: OR takes a list of filters", i)
			}
			f := filter{op: "OR"}
			for j, alt := range alts {
				var sub []json.RawMessage
				if err := json.Unmarshal(alt, &sub); err != nil {
					return nil, jsonrpc.InvalidParams("filters[%d][%d]: want a filter or a list of filters", i, j)
				}
				// An alternative is a single filter or a list of filters
				// that must all hold.
				if len(sub) > 0 && bytes.HasPrefix(bytes.TrimSpace(sub[0]), []byte("[")) {
					branch, err := compileFilters(sub)
					if err != nil {
						return nil, err
					}
					f.or = append(f.or, branch)
				} else {
					branch, err := compileFilters([]json.RawMessage{alt})
					if err != nil {
						return nil, err
					}
					f.or = append(f.or, branch)
				}
			}
			out = append(out, f)
			continue
		}
		if len(parts) != 3 || head == "" {
			return nil, jsonrpc.InvalidParams("filters[%d]: want [field, operator, value]", i)
		}
		f := filter{field: head}
		if err := json.Unmarshal(parts[1], &f.op); err != nil {
			return nil, jsonrpc.InvalidParams("filters[%d]: the operator must be a string", i)
		}
		if err := json.Unmarshal(parts[2], &f.value); err != nil {
			return nil, jsonrpc.InvalidParams("filters[%d]: value: %v", i, err)
		}
		switch f.op {
		case "=", "!=", ">", ">=", "<", "<=":
		case "in", "nin":
			if _, ok := f.value.([]any); !ok {
				return nil, jsonrpc.InvalidParams("filters[%d]: %q takes a list", i, f.op)
			}
		case "rin", "rnin", "^", "!^", "$", "!$":
		case "~":
			s, ok := f.value.(string)
			if !ok {
				return nil, jsonrpc.InvalidParams("filters[%d]: \"~\" takes a regular expression string", i)
			}
			re, err := regexp.Compile(s)
			if err != nil {
				return nil, jsonrpc.InvalidParams("filters[%d]: %v", i, err)
			}
			f.re = re
		default:
			return nil, jsonrpc.InvalidParams("filters[%d]: unknown operator %q", i, f.op)
		}
		out = append(out, f)
	}
	return out, nil
}

// lookup returns the value at a dotted field path of an object.
func lookup(obj map[string]any, path string) (any, bool) {
	var cur any = obj
	for _, part := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func (f *filter) match(obj map[string]any) bool {
	if f.op == "OR" {
		for _, branch := range f.or {
			if matchAll(branch, obj) {
				return true
			}
		}
		return false
	}
	v, _ := lookup(obj, f.field)
	switch f.op {
	case "=":
		return equal(v, f.value)
	case "!=":
		return !equal(v, f.value)
	case ">", ">=", "<", "<=":
		c, ok := compare(v, f.value)
		if !ok {
			return false
		}
		switch f.op {
		case ">":
			return c > 0
		case ">=":
			return c >= 0
		case "<":
			return c < 0
		}
		return c <= 0
	case "in", "nin":
		found := false
		for _, x := range f.value.([]any) {
			if equal(v, x) {
				found = true
				break
			}
		}
		return found == (f.op == "in")
	case "rin", "rnin":
		found := false
		switch c := v.(type) {
		case []any:
			for _, x := range c {
				if equal(x, f.value) {
					found = true
				}
			}
		case string:
			s, ok := f.value.(string)
			found = ok && strings.Contains(c, s)
		}
		return found == (f.op == "rin")
	case "^", "!^", "$", "!$":
		s, ok1 := v.(string)
		p, ok2 := f.value.(string)
		if !ok1 || !ok2 {
			return f.op[0] == '!'
		}
		var hit bool
		if strings.HasSuffix(f.op, "^") {
			hit = strings.HasPrefix(s, p)
		} else {
			hit = strings.HasSuffix(s, p)
		}
		return hit != (f.op[0] == '!')
	case "~":
		s, ok := v.(string)
		return ok && f.re.MatchString(s)
	}
	return false
}

func matchAll(filters []filter, obj map[string]any) bool {
	for i := range filters {
		if !filters[i].match(obj) {
			return false
		}
	}
	return true
}

// equal compares two decoded JSON values.
func equal(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// compare orders two numbers or two strings.
func compare(a, b any) (int, bool) {
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		if !ok {
			return 0, false
		}
		switch {
		case x < y:
			return -1, true
		case x > y:
			return 1, true
		}
		return 0, true
	case string:
		y, ok := b.(string)
		if !ok {
			return 0, false
		}
		return strings.Compare(x, y), true
	}
	return 0, false
}

// runQuery applies filters and options to items (objects as decoded JSON)
// and returns what the call answers: the list, one object, or a count.
func runQuery(items []map[string]any, filters []filter, opts queryOptions, what string) (any, error) {
	out := make([]map[string]any, 0, len(items))
	for _, it := range items {
		if matchAll(filters, it) {
			out = append(out, it)
		}
	}
	for i := len(opts.OrderBy) - 1; i >= 0; i-- {
		key, desc := opts.OrderBy[i], false
		if strings.HasPrefix(key, "-") {
			key, desc = key[1:], true
		}
		sort.SliceStable(out, func(a, b int) bool {
			va, _ := lookup(out[a], key)
			vb, _ := lookup(out[b], key)
			c, _ := compare(va, vb)
			if desc {
				return c > 0
			}
			return c < 0
		})
	}
	if opts.Count {
		return len(out), nil
	}
	out = out[min(opts.Offset, len(out)):]
	if opts.Limit > 0 && len(out) > opts.Limit {
		out = out[:opts.Limit]
	}
	if len(opts.Select) > 0 {
		for i, it := range out {
			sel := make(map[string]any, len(opts.Select))
			for _, f := range opts.Select {
				if v, ok := lookup(it, f); ok {
					sel[f] = v
				}
			}
			out[i] = sel
		}
	}
	if opts.Get {
		if len(out) == 0 {
			return nil, &callError{errno: errENOENT, msg: fmt.Sprintf("%s not found", what)}
		}
		return out[0], nil
	}
	return out, nil
}

// objects turns a typed list into decoded JSON objects for querying.
func objects[T any](list []T) ([]map[string]any, error) {
	b, err := json.Marshal(list)
	if err != nil {
		return nil, err
	}
	var out []map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return out, nil
}

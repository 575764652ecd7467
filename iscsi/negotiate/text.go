// Package negotiate implements the text-key layer of iSCSI login and text
// negotiation (RFC 7143 §6 and §13): parsing and encoding key=value lists,
// and a target-side Negotiator that answers an initiator's offers with the
// rule of every operational key (list, AND, OR, minimum, maximum,
// declarative) and yields the session parameters in force.
//
// The package knows nothing about PDUs or connections; the login state
// machine in package iscsi feeds it the keys of each request and sends its
// answers back.
package negotiate

import (
	"errors"
	"fmt"
)

// Pair is one key=value entry of a text data segment.
type Pair struct {
	Key   string
	Value string
}

// Limits on the text of a single pair (RFC 7143 §6.1).
const (
	// MaxKeyLength is the longest key name allowed.
	MaxKeyLength = 63
	// MaxValueLength is the longest value of a standard key.
	MaxValueLength = 255
	// MaxLargeValueLength is the longest value of keys that carry large
	// binary values (CHAP challenges and responses).
	MaxLargeValueLength = 8192
)

// ErrSyntax is wrapped by every error Parse returns.
var ErrSyntax = errors.New("negotiate: malformed text")

// Parse splits a text data segment into its pairs, in order. Repeated keys
// are returned as sent (SendTargets answers repeat TargetName and
// TargetAddress); the Negotiator rejects repeats where the protocol forbids
// them. A final pair without its NUL terminator and trailing NUL padding are
// accepted; an empty pair inside the text, a pair without '=', a bad key name
// or an overlong key or value is an error wrapping ErrSyntax.
func Parse(data []byte) ([]Pair, error) {
	var pairs []Pair
	for off := 0; off < len(data); {
		end := off
		for end < len(data) && data[end] != 0 {
			end++
		}
		item := data[off:end]
		if len(item) == 0 {
			// Only NUL padding may follow.
			for _, b := range data[end:] {
				if b != 0 {
					return nil, fmt.Errorf("%w: empty pair at offset %d", ErrSyntax, off)
				}
			}
			break
		}
		kv, err := parsePair(item)
		if err != nil {
			return nil, fmt.Errorf("%w at offset %d", err, off)
		}
		pairs = append(pairs, kv)
		off = end + 1
	}
	return pairs, nil
}

func parsePair(item []byte) (Pair, error) {
	eq := -1
	for i, b := range item {
		if b == '=' {
			eq = i
			break
		}
	}
	if eq < 0 {
		return Pair{}, fmt.Errorf("%w: %q has no '='", ErrSyntax, truncate(item))
	}
	key, value := item[:eq], item[eq+1:]
	if err := checkKey(key); err != nil {
		return Pair{}, err
	}
	limit := MaxValueLength
	if largeValueKey(string(key)) {
		limit = MaxLargeValueLength
	}
	if len(value) > limit {
		return Pair{}, fmt.Errorf("%w: value of %s is %d bytes, longer than %d", ErrSyntax, key, len(value), limit)
	}
	return Pair{Key: string(key), Value: string(value)}, nil
}

// checkKey enforces the key-name grammar: 1 to 63 characters from
// a-z A-Z 0-9 . - + @ _ (RFC 7143 §6.1).
func checkKey(key []byte) error {
	if len(key) == 0 {
		return fmt.Errorf("%w: empty key", ErrSyntax)
	}
	if len(key) > MaxKeyLength {
		return fmt.Errorf("%w: key %q is longer than %d characters", ErrSyntax, truncate(key), MaxKeyLength)
	}
	for _, b := range key {
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		case b == '.', b == '-', b == '+', b == '@', b == '_':
		default:
			return fmt.Errorf("%w: key %q has invalid character %q", ErrSyntax, truncate(key), b)
		}
	}
	return nil
}

func largeValueKey(key string) bool {
	return key == "CHAP_C" || key == "CHAP_R"
}

func truncate(b []byte) string {
	if len(b) > 32 {
		return string(b[:32]) + "..."
	}
	return string(b)
}

// Append appends the pairs to dst in wire form (key=value followed by NUL)
// and returns the extended slice.
func Append(dst []byte, pairs ...Pair) []byte {
	for _, kv := range pairs {
		dst = append(dst, kv.Key...)
		dst = append(dst, '=')
		dst = append(dst, kv.Value...)
		dst = append(dst, 0)
	}
	return dst
}

// IsSecurityKey reports whether key belongs to the security negotiation
// stage: AuthMethod and the keys of the authentication methods.
func IsSecurityKey(key string) bool {
	if key == "AuthMethod" {
		return true
	}
	for _, prefix := range []string{"CHAP_", "SRP_", "KRB_", "SPKM_"} {
		if len(key) > len(prefix) && key[:len(prefix)] == prefix {
			return true
		}
	}
	return false
}

// Package chap implements the Challenge-Handshake Authentication Protocol
// as iSCSI uses it (RFC 1994, RFC 7143 §12.1.3): the algorithms MD5 (5),
// SHA-1 (6), SHA-256 (7) and SHA3-256 (8), negotiation of CHAP_A in the
// responder's order of preference, random challenges, responses and their
// constant-time verification, the binary value encodings of CHAP_C and
// CHAP_R (0x hex, 0b base64), and the checks that keep an authenticator
// from being used as an oracle against itself (reflected or reused
// challenges, short secrets).
//
// The package is pure computation over bytes: it performs no I/O apart
// from reading crypto/rand, and it knows nothing of iSCSI PDUs or keys.
package chap

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// Algorithm is a CHAP digest algorithm, numbered as in CHAP_A (the IANA
// PPP authentication algorithm registry).
type Algorithm uint8

// The algorithms RFC 7143 §12.1.3 names.
const (
	MD5      Algorithm = 5
	SHA1     Algorithm = 6
	SHA256   Algorithm = 7
	SHA3_256 Algorithm = 8
)

// Errors callers branch on. Every error this package returns wraps one of
// them.
var (
	// ErrAlgorithm is an algorithm this package does not implement.
	ErrAlgorithm = errors.New("chap: unsupported algorithm")
	// ErrNoAlgorithm means no offered algorithm is acceptable.
	ErrNoAlgorithm = errors.New("chap: no acceptable algorithm offered")
	// ErrEncoding is a malformed CHAP_I, CHAP_A, CHAP_C or CHAP_R value.
	ErrEncoding = errors.New("chap: malformed value")
	// ErrChallenge is a challenge outside the accepted lengths.
	ErrChallenge = errors.New("chap: unacceptable challenge")
	// ErrReflection is a challenge the verifier itself issued, sent back
	// to it (RFC 7143 §9.2.1), or one already used.
	ErrReflection = errors.New("chap: reflected or reused challenge")
	// ErrSecret is a secret outside the accepted lengths.
	ErrSecret = errors.New("chap: unacceptable secret")
)

// Secret lengths in bytes. RFC 7143 §9.2.1 asks for secrets of at least
// 96 bits when CHAP runs without IPsec and requires support for 128-bit
// secrets; products may narrow the range further (mgmt accepts 12 to 16
// characters, as TrueNAS does).
const (
	MinSecretLen = 12
	MaxSecretLen = 255
)

// Challenge lengths in bytes accepted from a peer. The upper bound is
// RFC 7143's limit on CHAP_C (1024 bytes).
const (
	MinChallengeLen = 1
	MaxChallengeLen = 1024
)

// DefaultAlgorithms returns the algorithms in this package's order of
// preference, strongest first.
func DefaultAlgorithms() []Algorithm { return []Algorithm{SHA3_256, SHA256, SHA1, MD5} }

// Valid reports whether a is implemented.
func (a Algorithm) Valid() bool { return a >= MD5 && a <= SHA3_256 }

// Size returns the digest length of a in bytes, 0 when a is not valid.
func (a Algorithm) Size() int {
	switch a {
	case MD5:
		return md5.Size
	case SHA1:
		return sha1.Size
	case SHA256:
		return sha256.Size
	case SHA3_256:
		return 32
	}
	return 0
}

// String returns the algorithm's name.
func (a Algorithm) String() string {
	switch a {
	case MD5:
		return "MD5"
	case SHA1:
		return "SHA-1"
	case SHA256:
		return "SHA-256"
	case SHA3_256:
		return "SHA3-256"
	}
	return "CHAP_A=" + strconv.Itoa(int(a))
}

func (a Algorithm) newHash() (hash.Hash, error) {
	switch a {
	case MD5:
		return md5.New(), nil
	case SHA1:
		return sha1.New(), nil
	case SHA256:
		return sha256.New(), nil
	case SHA3_256:
		return sha3.New256(), nil
	}
	return nil, fmt.Errorf("%w: %d", ErrAlgorithm, uint8(a))
}

// Response returns the CHAP response of RFC 1994 §4.1: the digest of the
// identifier, the secret and the challenge, concatenated in that order.
func Response(a Algorithm, id byte, secret, challenge []byte) ([]byte, error) {
	h, err := a.newHash()
	if err != nil {
		return nil, err
	}
	h.Write([]byte{id})
	h.Write(secret)
	h.Write(challenge)
	return h.Sum(nil), nil
}

// Verify reports whether response answers challenge under id and secret.
// The comparison takes the same time wherever the response differs; a
// response of the wrong length (truncated, padded) does not verify.
func Verify(a Algorithm, id byte, secret, challenge, response []byte) bool {
	want, err := Response(a, id, secret, challenge)
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(want, response) == 1
}

// NewChallenge returns a random identifier and a random challenge as long
// as a's digest, both from crypto/rand.
func NewChallenge(a Algorithm) (id byte, challenge []byte, err error) {
	n := a.Size()
	if n == 0 {
		return 0, nil, fmt.Errorf("%w: %d", ErrAlgorithm, uint8(a))
	}
	buf := make([]byte, 1+n)
	if _, err := rand.Read(buf); err != nil {
		return 0, nil, fmt.Errorf("chap: random challenge: %w", err)
	}
	return buf[0], buf[1:], nil
}

// Negotiate picks the algorithm of a CHAP_A offer (a comma-separated list
// of numbers, the initiator's) that comes first in prefer, the
// responder's order of preference. Numbers not implemented are skipped;
// a value that is not a list of numbers is ErrEncoding, and an offer with
// nothing acceptable ErrNoAlgorithm.
func Negotiate(offer string, prefer []Algorithm) (Algorithm, error) {
	offered := map[Algorithm]bool{}
	for _, s := range strings.Split(offer, ",") {
		n, err := parseDecimal(s, 32)
		if err != nil {
			return 0, fmt.Errorf("%w: CHAP_A %q", ErrEncoding, offer)
		}
		if n <= 255 && Algorithm(n).Valid() {
			offered[Algorithm(n)] = true
		}
	}
	for _, a := range prefer {
		if a.Valid() && offered[a] {
			return a, nil
		}
	}
	return 0, fmt.Errorf("%w: CHAP_A=%s", ErrNoAlgorithm, offer)
}

// ParseID parses a CHAP_I value: a number from 0 to 255, decimal or in
// 0x hexadecimal (RFC 7143 numerical values).
func ParseID(v string) (byte, error) {
	var n uint64
	var err error
	if len(v) > 2 && (v[:2] == "0x" || v[:2] == "0X") {
		n, err = strconv.ParseUint(v[2:], 16, 8)
	} else {
		n, err = parseDecimal(v, 8)
	}
	if err != nil {
		return 0, fmt.Errorf("%w: CHAP_I %q is not a number from 0 to 255", ErrEncoding, v)
	}
	return byte(n), nil
}

// parseDecimal parses an RFC 7143 decimal-constant: digits without
// leading zeros (a lone 0 is allowed), no sign.
func parseDecimal(s string, bits int) (uint64, error) {
	if len(s) > 1 && s[0] == '0' || s == "" || s[0] < '0' || s[0] > '9' {
		return 0, ErrEncoding
	}
	return strconv.ParseUint(s, 10, bits)
}

// DecodeBinary decodes an RFC 7143 binary value: 0x (or 0X) followed by
// hex digits, an odd count read with an implied leading zero, or 0b (or
// 0B) followed by canonical, padded base64. Empty values and line breaks
// are refused.
func DecodeBinary(v string) ([]byte, error) {
	if len(v) < 3 {
		return nil, fmt.Errorf("%w: %q is not a 0x or 0b binary value", ErrEncoding, v)
	}
	prefix, body := v[:2], v[2:]
	switch prefix {
	case "0x", "0X":
		if len(body)%2 == 1 {
			body = "0" + body
		}
		b, err := hex.DecodeString(body)
		if err != nil {
			return nil, fmt.Errorf("%w: hex value: %v", ErrEncoding, err)
		}
		return b, nil
	case "0b", "0B":
		if strings.ContainsAny(body, "\r\n") {
			return nil, fmt.Errorf("%w: base64 value with a line break", ErrEncoding)
		}
		b, err := base64.StdEncoding.Strict().DecodeString(body)
		if err != nil {
			return nil, fmt.Errorf("%w: base64 value: %v", ErrEncoding, err)
		}
		if len(b) == 0 {
			return nil, fmt.Errorf("%w: empty base64 value", ErrEncoding)
		}
		return b, nil
	}
	return nil, fmt.Errorf("%w: %q is not a 0x or 0b binary value", ErrEncoding, truncate(v))
}

// EncodeHex returns b as an RFC 7143 hex constant (0x followed by two
// lower-case digits per byte).
func EncodeHex(b []byte) string { return "0x" + hex.EncodeToString(b) }

// CheckChallenge checks the length of a challenge received from a peer.
func CheckChallenge(c []byte) error {
	if len(c) < MinChallengeLen || len(c) > MaxChallengeLen {
		return fmt.Errorf("%w: %d bytes, want %d to %d", ErrChallenge, len(c), MinChallengeLen, MaxChallengeLen)
	}
	return nil
}

// CheckSecret checks a secret's length against MinSecretLen and
// MaxSecretLen. The error never contains the secret.
func CheckSecret(secret []byte) error {
	if n := len(secret); n < MinSecretLen || n > MaxSecretLen {
		return fmt.Errorf("%w: %d bytes, want %d to %d", ErrSecret, n, MinSecretLen, MaxSecretLen)
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 16 {
		return s[:16] + "..."
	}
	return s
}

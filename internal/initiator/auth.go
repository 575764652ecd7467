package initiator

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/iscsikit/iscsikit/iscsi/negotiate"
)

// CHAP algorithm identifiers (CHAP_A values, IANA PPP authentication
// algorithms).
const (
	CHAPMD5     = 5
	CHAPSHA1    = 6
	CHAPSHA256  = 7
	CHAPSHA3256 = 8
)

// CHAP configures CHAP authentication (RFC 7143 §12.1.3) in the security
// stage.
type CHAP struct {
	// Username and Secret answer the target's challenge.
	Username, Secret string
	// Algorithms are offered as CHAP_A in preference order ({CHAPMD5} when
	// empty).
	Algorithms []int
	// TargetSecret, when set, makes the authentication mutual: the
	// initiator challenges the target and checks that it answers with
	// TargetUsername (when set) and TargetSecret.
	TargetUsername, TargetSecret string
	// ChallengeLength is the length of the initiator's challenge in
	// mutual CHAP (16 when zero).
	ChallengeLength int
}

// chapHash computes the CHAP response for an algorithm.
func chapHash(alg int, id byte, secret string, challenge []byte) ([]byte, error) {
	msg := make([]byte, 0, 1+len(secret)+len(challenge))
	msg = append(msg, id)
	msg = append(msg, secret...)
	msg = append(msg, challenge...)
	switch alg {
	case CHAPMD5:
		s := md5.Sum(msg)
		return s[:], nil
	case CHAPSHA1:
		s := sha1.Sum(msg)
		return s[:], nil
	case CHAPSHA256:
		s := sha256.Sum256(msg)
		return s[:], nil
	case CHAPSHA3256:
		s := sha3.Sum256(msg)
		return s[:], nil
	}
	return nil, fmt.Errorf("initiator: unsupported CHAP algorithm %d", alg)
}

// decodeBinary decodes an RFC 7143 binary value (0x hex or 0b base64).
func decodeBinary(v string) ([]byte, error) {
	switch {
	case len(v) > 2 && (v[:2] == "0x" || v[:2] == "0X"):
		return hex.DecodeString(v[2:])
	case len(v) > 2 && (v[:2] == "0b" || v[:2] == "0B"):
		return base64.StdEncoding.DecodeString(v[2:])
	}
	return nil, fmt.Errorf("not a binary value: %q", v)
}

// authState drives the security stage.
type authState struct {
	chap  *CHAP
	phase int // 0 AuthMethod sent, 1 CHAP_A sent, 2 CHAP_R sent, 3 verified
	ready bool
	alg   int
	myID  byte
	myC   []byte
}

// first returns the security keys of the first request.
func (a *authState) first() []negotiate.Pair {
	if a.chap == nil {
		a.ready = true
		return []negotiate.Pair{{Key: "AuthMethod", Value: "None"}}
	}
	return []negotiate.Pair{{Key: "AuthMethod", Value: "CHAP"}}
}

// done reports whether the security stage may end.
func (a *authState) done() bool { return a.chap == nil || a.phase >= 3 }

// step consumes the keys of a security-stage response and returns the
// keys of the next request.
func (a *authState) step(pairs []negotiate.Pair, transit bool) ([]negotiate.Pair, error) {
	get := func(k string) (string, bool) {
		for _, kv := range pairs {
			if kv.Key == k {
				return kv.Value, true
			}
		}
		return "", false
	}
	if m, ok := get("AuthMethod"); ok {
		want := "None"
		if a.chap != nil {
			want = "CHAP"
		}
		if m != want {
			return nil, protoErr("target answered AuthMethod=%s, proposed %s", m, want)
		}
	}
	if a.chap == nil {
		return nil, nil
	}
	switch a.phase {
	case 0:
		if _, ok := get("AuthMethod"); !ok {
			return nil, nil // keep asking
		}
		algs := a.chap.Algorithms
		if len(algs) == 0 {
			algs = []int{CHAPMD5}
		}
		s := make([]string, len(algs))
		for i, x := range algs {
			s[i] = strconv.Itoa(x)
		}
		a.phase = 1
		return []negotiate.Pair{{Key: "CHAP_A", Value: strings.Join(s, ",")}}, nil
	case 1:
		av, ok1 := get("CHAP_A")
		iv, ok2 := get("CHAP_I")
		cv, ok3 := get("CHAP_C")
		if !ok1 || !ok2 || !ok3 {
			return nil, protoErr("CHAP: target sent no CHAP_A/CHAP_I/CHAP_C")
		}
		alg, err := strconv.Atoi(av)
		if err != nil {
			return nil, protoErr("CHAP_A=%q", av)
		}
		id, err := strconv.ParseUint(iv, 0, 8)
		if err != nil {
			return nil, protoErr("CHAP_I=%q", iv)
		}
		challenge, err := decodeBinary(cv)
		if err != nil {
			return nil, protoErr("CHAP_C: %v", err)
		}
		r, err := chapHash(alg, byte(id), a.chap.Secret, challenge)
		if err != nil {
			return nil, err
		}
		a.alg = alg
		out := []negotiate.Pair{
			{Key: "CHAP_N", Value: a.chap.Username},
			{Key: "CHAP_R", Value: "0x" + hex.EncodeToString(r)},
		}
		if a.chap.TargetSecret != "" {
			n := a.chap.ChallengeLength
			if n <= 0 {
				n = 16
			}
			buf := make([]byte, n+1)
			if _, err := rand.Read(buf); err != nil {
				return nil, err
			}
			a.myID, a.myC = buf[0], buf[1:]
			out = append(out,
				negotiate.Pair{Key: "CHAP_I", Value: strconv.Itoa(int(a.myID))},
				negotiate.Pair{Key: "CHAP_C", Value: "0x" + hex.EncodeToString(a.myC)})
		}
		a.phase = 2
		a.ready = true
		return out, nil
	case 2:
		if a.chap.TargetSecret == "" {
			a.phase = 3
			return nil, nil
		}
		nv, ok1 := get("CHAP_N")
		rv, ok2 := get("CHAP_R")
		if !ok1 || !ok2 {
			if transit {
				return nil, protoErr("mutual CHAP: target did not answer the challenge")
			}
			return nil, nil
		}
		if a.chap.TargetUsername != "" && nv != a.chap.TargetUsername {
			return nil, fmt.Errorf("initiator: mutual CHAP: target name %q, want %q", nv, a.chap.TargetUsername)
		}
		got, err := decodeBinary(rv)
		if err != nil {
			return nil, protoErr("CHAP_R: %v", err)
		}
		want, err := chapHash(a.alg, a.myID, a.chap.TargetSecret, a.myC)
		if err != nil {
			return nil, err
		}
		if subtle.ConstantTimeCompare(got, want) != 1 {
			return nil, fmt.Errorf("initiator: mutual CHAP: target response does not match")
		}
		a.phase = 3
	}
	return nil, nil
}

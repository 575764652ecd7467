package initiator

import (
	"crypto/rand"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/iscsikit/iscsikit/chap"
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

// authState drives the security stage.
type authState struct {
	chap  *CHAP
	phase int // 0 AuthMethod sent, 1 CHAP_A sent, 2 CHAP_R sent, 3 verified
	ready bool
	alg   chap.Algorithm
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
		algs := a.chap.Algorithms
		if len(algs) == 0 {
			algs = []int{CHAPMD5}
		}
		alg, err := strconv.Atoi(av)
		if err != nil || !slices.Contains(algs, alg) {
			return nil, protoErr("target chose CHAP_A=%q, not one offered", av)
		}
		id, err := chap.ParseID(iv)
		if err != nil {
			return nil, protoErr("%v", err)
		}
		challenge, err := chap.DecodeBinary(cv)
		if err != nil {
			return nil, protoErr("CHAP_C: %v", err)
		}
		r, err := chap.Response(chap.Algorithm(alg), id, []byte(a.chap.Secret), challenge)
		if err != nil {
			return nil, err
		}
		a.alg = chap.Algorithm(alg)
		out := []negotiate.Pair{
			{Key: "CHAP_N", Value: a.chap.Username},
			{Key: "CHAP_R", Value: chap.EncodeHex(r)},
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
				negotiate.Pair{Key: "CHAP_C", Value: chap.EncodeHex(a.myC)})
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
		got, err := chap.DecodeBinary(rv)
		if err != nil {
			return nil, protoErr("CHAP_R: %v", err)
		}
		if !chap.Verify(a.alg, a.myID, []byte(a.chap.TargetSecret), a.myC, got) {
			return nil, fmt.Errorf("initiator: mutual CHAP: target response does not match")
		}
		a.phase = 3
	}
	return nil, nil
}

package chap

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha3"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestResponseVectors maps published digest test vectors onto CHAP's
// id || secret || challenge concatenation: RFC 1321 (MD5), RFC 3174
// (SHA-1), FIPS 180-2 (SHA-256) and FIPS 202 (SHA3-256) all digest "abc",
// RFC 1321 also "message digest". RFC 1994 itself publishes no vectors.
func TestResponseVectors(t *testing.T) {
	tests := []struct {
		alg                  Algorithm
		id                   byte
		secret, challenge, w string
	}{
		{MD5, 'a', "b", "c", "900150983cd24fb0d6963f7d28e17f72"},
		{MD5, 'm', "essage dig", "est", "f96b697d7cb7938d525a2f31aaf161d0"},
		{SHA1, 'a', "b", "c", "a9993e364706816aba3e25717850c26c9cd0d89d"},
		{SHA256, 'a', "b", "c", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{SHA3_256, 'a', "b", "c", "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532"},
	}
	for _, tc := range tests {
		t.Run(tc.alg.String()+"/"+tc.secret, func(t *testing.T) {
			r, err := Response(tc.alg, tc.id, []byte(tc.secret), []byte(tc.challenge))
			require.NoError(t, err)
			require.Equal(t, tc.w, hex.EncodeToString(r))
			require.Len(t, r, tc.alg.Size())
			require.True(t, Verify(tc.alg, tc.id, []byte(tc.secret), []byte(tc.challenge), r))
		})
	}
}

// TestCrossCheck compares every algorithm's response with the standard
// library digest of the concatenated message, for random challenges, and
// checks that the algorithms disagree with each other.
func TestCrossCheck(t *testing.T) {
	secret := []byte("twelve-chars")
	sums := map[Algorithm]func([]byte) []byte{
		MD5:      func(b []byte) []byte { s := md5.Sum(b); return s[:] },
		SHA1:     func(b []byte) []byte { s := sha1.Sum(b); return s[:] },
		SHA256:   func(b []byte) []byte { s := sha256.Sum256(b); return s[:] },
		SHA3_256: func(b []byte) []byte { s := sha3.Sum256(b); return s[:] },
	}
	for _, alg := range DefaultAlgorithms() {
		t.Run(alg.String(), func(t *testing.T) {
			id, c, err := NewChallenge(alg)
			require.NoError(t, err)
			require.Len(t, c, alg.Size())
			msg := append(append([]byte{id}, secret...), c...)
			r, err := Response(alg, id, secret, c)
			require.NoError(t, err)
			require.Equal(t, sums[alg](msg), r)
			for _, other := range DefaultAlgorithms() {
				if other != alg {
					require.False(t, Verify(other, id, secret, c, r), "%v response verified as %v", alg, other)
				}
			}
		})
	}
}

// TestVerifyRejects covers wrong, truncated, extended and empty responses,
// a wrong identifier, secret or challenge, and unknown algorithms.
func TestVerifyRejects(t *testing.T) {
	secret, c := []byte("right-secret-1"), []byte("0123456789abcdef")
	for _, alg := range DefaultAlgorithms() {
		r, err := Response(alg, 9, secret, c)
		require.NoError(t, err)
		flipped := bytes.Clone(r)
		flipped[len(flipped)-1] ^= 1
		tests := []struct {
			name      string
			id        byte
			secret, c []byte
			resp      []byte
		}{
			{"wrong secret", 9, []byte("wrong-secret-1"), c, r},
			{"wrong id", 10, secret, c, r},
			{"wrong challenge", 9, secret, []byte("0123456789abcdeF"), r},
			{"flipped bit", 9, secret, c, flipped},
			{"truncated", 9, secret, c, r[:len(r)-1]},
			{"half", 9, secret, c, r[:len(r)/2]},
			{"extended", 9, secret, c, append(bytes.Clone(r), 0)},
			{"empty", 9, secret, c, nil},
		}
		for _, tc := range tests {
			t.Run(alg.String()+"/"+tc.name, func(t *testing.T) {
				require.False(t, Verify(alg, tc.id, tc.secret, tc.c, tc.resp))
			})
		}
	}
	for _, bad := range []Algorithm{0, 4, 9, 255} {
		_, err := Response(bad, 1, secret, c)
		require.ErrorIs(t, err, ErrAlgorithm)
		require.False(t, Verify(bad, 1, secret, c, nil))
		_, _, err = NewChallenge(bad)
		require.ErrorIs(t, err, ErrAlgorithm)
		require.False(t, bad.Valid())
		require.Zero(t, bad.Size())
	}
}

func TestNewChallengeIsRandom(t *testing.T) {
	seen := map[string]bool{}
	for range 64 {
		_, c, err := NewChallenge(MD5)
		require.NoError(t, err)
		require.False(t, seen[string(c)], "challenge repeated")
		seen[string(c)] = true
	}
}

func TestNegotiate(t *testing.T) {
	tests := []struct {
		offer  string
		prefer []Algorithm
		want   Algorithm
		err    error
	}{
		{"5", DefaultAlgorithms(), MD5, nil},
		{"5,6,7,8", DefaultAlgorithms(), SHA3_256, nil},
		{"7,5", DefaultAlgorithms(), SHA256, nil},
		{"5,7", []Algorithm{MD5, SHA256}, MD5, nil},
		{"128,6", DefaultAlgorithms(), SHA1, nil},
		{"7", []Algorithm{MD5}, 0, ErrNoAlgorithm},
		{"1,2,3", DefaultAlgorithms(), 0, ErrNoAlgorithm},
		{"300", DefaultAlgorithms(), 0, ErrNoAlgorithm},
		{"", DefaultAlgorithms(), 0, ErrEncoding},
		{"5,,6", DefaultAlgorithms(), 0, ErrEncoding},
		{"md5", DefaultAlgorithms(), 0, ErrEncoding},
		{"-5", DefaultAlgorithms(), 0, ErrEncoding},
		{"+5", DefaultAlgorithms(), 0, ErrEncoding},
		{"05", DefaultAlgorithms(), 0, ErrEncoding},
		{"0007", DefaultAlgorithms(), 0, ErrEncoding},
	}
	for _, tc := range tests {
		t.Run(tc.offer, func(t *testing.T) {
			got, err := Negotiate(tc.offer, tc.prefer)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestDecodeBinary(t *testing.T) {
	raw := []byte{0x00, 0x01, 0xfe, 0xff, 0x7f}
	tests := []struct {
		in   string
		want []byte
		err  bool
	}{
		{in: "0x0001feff7f", want: raw},
		{in: "0X0001FEFF7F", want: raw},
		{in: "0xabc", want: []byte{0x0a, 0xbc}},
		{in: "0b" + base64.StdEncoding.EncodeToString(raw), want: raw},
		{in: "0B" + base64.StdEncoding.EncodeToString(raw), want: raw},
		{in: "0x", err: true},
		{in: "0b", err: true},
		{in: "0xzz", err: true},
		{in: "0b!!!!", err: true},
		{in: "0bAA", err: true}, // missing padding
		{in: "0B\n", err: true}, // line breaks are not base64
		{in: "0bAA\r\nAA==", err: true},
		{in: "abcdef", err: true},
		{in: "12345", err: true},
		{in: "", err: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := DecodeBinary(tc.in)
			if tc.err {
				require.ErrorIs(t, err, ErrEncoding)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	b, err := DecodeBinary(EncodeHex(raw))
	require.NoError(t, err)
	require.Equal(t, raw, b)
}

func TestParseID(t *testing.T) {
	for in, want := range map[string]byte{"0": 0, "255": 255, "17": 17, "0x11": 17, "0XfF": 255} {
		got, err := ParseID(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got, in)
	}
	for _, in := range []string{"", "256", "-1", "+1", "01", "0x100", "abc", "1.5", "0x"} {
		_, err := ParseID(in)
		require.ErrorIs(t, err, ErrEncoding, in)
	}
}

func TestCheckSecretAndChallenge(t *testing.T) {
	require.ErrorIs(t, CheckSecret([]byte("elevenchars")), ErrSecret)
	require.NoError(t, CheckSecret([]byte("twelve-chars")))
	require.NoError(t, CheckSecret(bytes.Repeat([]byte("x"), MaxSecretLen)))
	require.ErrorIs(t, CheckSecret(bytes.Repeat([]byte("x"), MaxSecretLen+1)), ErrSecret)
	err := CheckSecret([]byte("short-pw"))
	require.NotContains(t, err.Error(), "short-pw")

	require.ErrorIs(t, CheckChallenge(nil), ErrChallenge)
	require.ErrorIs(t, CheckChallenge(make([]byte, MaxChallengeLen+1)), ErrChallenge)
	require.NoError(t, CheckChallenge(make([]byte, 16)))
}

// TestReflection: a peer's mutual challenge equal to ours is refused, and
// the ledger catches a challenge coming back on another exchange or being
// reused, while forgetting the oldest entries beyond its capacity.
func TestReflection(t *testing.T) {
	_, ours, err := NewChallenge(SHA256)
	require.NoError(t, err)
	require.ErrorIs(t, CheckMutual(ours, bytes.Clone(ours)), ErrReflection)
	require.ErrorIs(t, CheckMutual(ours, nil), ErrChallenge)
	_, theirs, err := NewChallenge(SHA256)
	require.NoError(t, err)
	require.NoError(t, CheckMutual(ours, theirs))

	l := NewLedger(3)
	require.True(t, l.Record(ours))
	require.True(t, l.Contains(ours))
	require.False(t, l.Record(bytes.Clone(ours)), "reused challenge accepted")
	require.False(t, l.Contains(theirs))
	for i := range 3 {
		require.True(t, l.Record([]byte{byte(i)}))
	}
	require.False(t, l.Contains(ours), "oldest entry kept beyond capacity")
	require.True(t, l.Contains([]byte{0}))
	require.True(t, l.Record(ours))
}

func TestErrorsWrap(t *testing.T) {
	_, err := Negotiate("x", nil)
	require.True(t, errors.Is(err, ErrEncoding))
}

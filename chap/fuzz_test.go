package chap

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
)

// FuzzDecodeBinary: CHAP_C and CHAP_R come from the network. Decoding
// never panics, and whatever decodes re-encodes to an equivalent value.
func FuzzDecodeBinary(f *testing.F) {
	for _, s := range []string{"0x00ff", "0XABC", "0bAAEC", "0b", "0x", "", "0b====", "0x" + strings.Repeat("a", 2049)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := DecodeBinary(s)
		if err != nil {
			return
		}
		again, err := DecodeBinary(EncodeHex(b))
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("%q decoded to %x, which does not round-trip", s, b)
		}
		if s[1] == 'b' || s[1] == 'B' {
			if base64.StdEncoding.EncodeToString(b) != s[2:] {
				t.Fatalf("%q accepted as non-canonical base64", s)
			}
		}
	})
}

// FuzzNegotiate: CHAP_A offers come from the network; the result is
// always one of the preferred, implemented algorithms.
func FuzzNegotiate(f *testing.F) {
	for _, s := range []string{"5", "5,6,7,8", "7,5", "", ",", "999999999999", "5,,", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, offer string) {
		a, err := Negotiate(offer, DefaultAlgorithms())
		if err != nil {
			return
		}
		if !a.Valid() || !strings.Contains(","+offer+",", ","+itoa(int(a))+",") {
			t.Fatalf("offer %q gave %v", offer, a)
		}
	})
}

func itoa(n int) string { return string(rune('0' + n)) }

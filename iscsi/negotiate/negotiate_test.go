package negotiate

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Pair
		err  string
	}{
		{"empty", "", nil, ""},
		{"one", "A=b\x00", []Pair{{"A", "b"}}, ""},
		{"unterminated last", "A=b\x00C=d", []Pair{{"A", "b"}, {"C", "d"}}, ""},
		{"padding", "A=b\x00\x00\x00", []Pair{{"A", "b"}}, ""},
		{"empty value", "InitiatorAlias=\x00", []Pair{{"InitiatorAlias", ""}}, ""},
		{"value with =", "X-a=b=c\x00", []Pair{{"X-a", "b=c"}}, ""},
		{"repeated keys kept", "TargetName=a\x00TargetName=b\x00", []Pair{{"TargetName", "a"}, {"TargetName", "b"}}, ""},
		{"all key characters", "aZ09.-+@_=1\x00", []Pair{{"aZ09.-+@_", "1"}}, ""},
		{"no equals", "Abc\x00", nil, "has no '='"},
		{"empty key", "=v\x00", nil, "empty key"},
		{"bad key char", "A b=c\x00", nil, "invalid character"},
		{"empty pair inside", "A=b\x00\x00C=d\x00", nil, "empty pair"},
		{"key too long", strings.Repeat("k", 64) + "=v\x00", nil, "longer than 63"},
		{"value too long", "A=" + strings.Repeat("v", 256) + "\x00", nil, "longer than 255"},
		{"large value allowed for CHAP_C", "CHAP_C=0x" + strings.Repeat("a", 2048) + "\x00",
			[]Pair{{"CHAP_C", "0x" + strings.Repeat("a", 2048)}}, ""},
		{"large value limit", "CHAP_R=" + strings.Repeat("a", 8193) + "\x00", nil, "longer than 8192"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.in))
			if tt.err != "" {
				require.ErrorIs(t, err, ErrSyntax)
				require.Contains(t, err.Error(), tt.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestAppendParseRoundTrip(t *testing.T) {
	pairs := []Pair{{"HeaderDigest", "CRC32C,None"}, {"MaxBurstLength", "262144"}, {"InitiatorAlias", ""}}
	b := Append(nil, pairs...)
	require.Equal(t, "HeaderDigest=CRC32C,None\x00MaxBurstLength=262144\x00InitiatorAlias=\x00", string(b))
	got, err := Parse(b)
	require.NoError(t, err)
	require.Equal(t, pairs, got)
}

func TestIsSecurityKey(t *testing.T) {
	for _, k := range []string{"AuthMethod", "CHAP_A", "CHAP_N", "SRP_U", "KRB_AP_REQ", "SPKM_REQ"} {
		require.True(t, IsSecurityKey(k), k)
	}
	for _, k := range []string{"HeaderDigest", "CHAP_", "CHAP", "X-CHAP_A"} {
		require.False(t, IsSecurityKey(k), k)
	}
}

// answer negotiates a single key with the default config in a normal session.
func answer(t *testing.T, cfg Config, key, value string) (string, Params) {
	t.Helper()
	n := New(cfg, true)
	resp, err := n.Negotiate([]Pair{{key, value}}, "Normal")
	require.NoError(t, err)
	for _, kv := range resp {
		if kv.Key == key {
			return kv.Value, n.Params()
		}
	}
	return "", n.Params()
}

func TestNegotiationRules(t *testing.T) {
	small := Config{MaxBurstLength: 65536, FirstBurstLength: 8192, MaxOutstandingR2T: 2, DefaultTime2Wait: 5, DefaultTime2Retain: 10}
	tests := []struct {
		name  string
		cfg   Config
		key   string
		value string
		want  string
		check func(t *testing.T, p Params)
	}{
		// List: the first offered value we support.
		{"digest first choice", Config{}, "HeaderDigest", "CRC32C,None", "CRC32C", func(t *testing.T, p Params) { require.True(t, p.HeaderDigest) }},
		{"digest none preferred", Config{}, "DataDigest", "None,CRC32C", "None", func(t *testing.T, p Params) { require.False(t, p.DataDigest) }},
		{"digest required", Config{HeaderDigest: DigestRequired}, "HeaderDigest", "None,CRC32C", "CRC32C", nil},
		{"digest required refused", Config{HeaderDigest: DigestRequired}, "HeaderDigest", "None", "Reject", nil},
		{"digest refused", Config{DataDigest: DigestRefused}, "DataDigest", "CRC32C,None", "None", nil},
		{"digest unknown", Config{}, "HeaderDigest", "MD5", "Reject", nil},
		{"task reporting", Config{}, "TaskReporting", "FastAbort,RFC3720", "RFC3720", func(t *testing.T, p Params) { require.Equal(t, "RFC3720", p.TaskReporting) }},
		// AND.
		{"immediate yes", Config{}, "ImmediateData", "Yes", "Yes", func(t *testing.T, p Params) { require.True(t, p.ImmediateData) }},
		{"immediate no", Config{}, "ImmediateData", "No", "No", func(t *testing.T, p Params) { require.False(t, p.ImmediateData) }},
		{"immediate disabled", Config{DisableImmediateData: true}, "ImmediateData", "Yes", "No", func(t *testing.T, p Params) { require.False(t, p.ImmediateData) }},
		{"markers stay off", Config{}, "OFMarker", "Yes", "No", nil},
		{"bool garbage", Config{}, "ImmediateData", "yes", "Reject", nil},
		// OR.
		{"initial r2t no", Config{}, "InitialR2T", "No", "No", func(t *testing.T, p Params) { require.False(t, p.InitialR2T) }},
		{"initial r2t yes", Config{}, "InitialR2T", "Yes", "Yes", func(t *testing.T, p Params) { require.True(t, p.InitialR2T) }},
		{"initial r2t required", Config{RequireInitialR2T: true}, "InitialR2T", "No", "Yes", func(t *testing.T, p Params) { require.True(t, p.InitialR2T) }},
		{"data pdu in order", Config{}, "DataPDUInOrder", "No", "Yes", nil},
		// Minimum.
		{"max burst theirs smaller", Config{}, "MaxBurstLength", "262144", "262144", func(t *testing.T, p Params) { require.EqualValues(t, 262144, p.MaxBurstLength) }},
		{"max burst ours smaller", small, "MaxBurstLength", "262144", "65536", func(t *testing.T, p Params) { require.EqualValues(t, 65536, p.MaxBurstLength) }},
		{"first burst", small, "FirstBurstLength", "65536", "8192", func(t *testing.T, p Params) { require.EqualValues(t, 8192, p.FirstBurstLength) }},
		{"max burst hex", Config{}, "MaxBurstLength", "0x10000", "65536", nil},
		{"max burst too small", Config{}, "MaxBurstLength", "511", "Reject", nil},
		{"max burst too big", Config{}, "MaxBurstLength", "16777216", "Reject", nil},
		{"max burst not a number", Config{}, "MaxBurstLength", "lots", "Reject", nil},
		{"r2t", small, "MaxOutstandingR2T", "16", "2", func(t *testing.T, p Params) { require.EqualValues(t, 2, p.MaxOutstandingR2T) }},
		{"r2t zero", Config{}, "MaxOutstandingR2T", "0", "Reject", nil},
		{"max connections", Config{}, "MaxConnections", "8", "1", nil},
		{"error recovery", Config{}, "ErrorRecoveryLevel", "2", "0", nil},
		{"error recovery range", Config{}, "ErrorRecoveryLevel", "3", "Reject", nil},
		{"time2retain", small, "DefaultTime2Retain", "20", "10", nil},
		{"protocol level", Config{}, "iSCSIProtocolLevel", "2", "1", nil},
		// Maximum.
		{"time2wait theirs larger", small, "DefaultTime2Wait", "10", "10", func(t *testing.T, p Params) { require.EqualValues(t, 10, p.DefaultTime2Wait) }},
		{"time2wait ours larger", small, "DefaultTime2Wait", "2", "5", nil},
		{"time2wait range", Config{}, "DefaultTime2Wait", "3601", "Reject", nil},
		// Declarative: no answer to the value, but our own declaration.
		{"mrdsl", Config{MaxRecvDataSegmentLength: 65536}, "MaxRecvDataSegmentLength", "8192", "65536", func(t *testing.T, p Params) {
			require.EqualValues(t, 8192, p.InitiatorMaxRecvDataSegmentLength)
			require.EqualValues(t, 65536, p.TargetMaxRecvDataSegmentLength)
		}},
		// Special answers.
		{"unknown", Config{}, "X-com.example.Frob", "1", "NotUnderstood", nil},
		{"target-only key", Config{}, "TargetAlias", "x", "Reject", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.NoError(t, tt.cfg.Validate())
			got, p := answer(t, tt.cfg, tt.key, tt.value)
			require.Equal(t, tt.want, got)
			if tt.check != nil {
				tt.check(t, p)
			}
		})
	}
}

func TestMaxRecvDataSegmentLengthOutOfRange(t *testing.T) {
	n := New(Config{}, true)
	resp, err := n.Negotiate([]Pair{{"MaxRecvDataSegmentLength", "100"}}, "Normal")
	require.NoError(t, err)
	require.Contains(t, resp, Pair{"MaxRecvDataSegmentLength", "Reject"})
	require.EqualValues(t, 8192, n.Params().InitiatorMaxRecvDataSegmentLength, "the default stays in force")
}

func TestDiscoveryIrrelevant(t *testing.T) {
	n := New(Config{}, true)
	resp, err := n.Negotiate([]Pair{{"MaxBurstLength", "65536"}, {"HeaderDigest", "None"}, {"ErrorRecoveryLevel", "0"}}, "Discovery")
	require.NoError(t, err)
	require.Equal(t, []Pair{{"MaxBurstLength", "Irrelevant"}, {"HeaderDigest", "None"}, {"ErrorRecoveryLevel", "0"}}, resp)
	require.EqualValues(t, 262144, n.Params().MaxBurstLength)
}

func TestKeyTwiceIsAnError(t *testing.T) {
	n := New(Config{}, true)
	_, err := n.Negotiate([]Pair{{"MaxBurstLength", "65536"}}, "Normal")
	require.NoError(t, err)
	_, err = n.Negotiate([]Pair{{"MaxBurstLength", "65536"}}, "Normal")
	require.ErrorIs(t, err, ErrNegotiation)
}

func TestLeadingOnlyOnSecondaryConnection(t *testing.T) {
	n := New(Config{}, false)
	_, err := n.Negotiate([]Pair{{"HeaderDigest", "None"}}, "Normal")
	require.NoError(t, err)
	_, err = n.Negotiate([]Pair{{"InitialR2T", "No"}}, "Normal")
	require.ErrorIs(t, err, ErrNegotiation)
}

func TestFirstBurstClampedToMaxBurst(t *testing.T) {
	n := New(Config{}, true)
	_, err := n.Negotiate([]Pair{{"MaxBurstLength", "8192"}, {"FirstBurstLength", "65536"}}, "Normal")
	require.NoError(t, err)
	p := n.Params()
	require.EqualValues(t, 8192, p.MaxBurstLength)
	require.EqualValues(t, 8192, p.FirstBurstLength)
}

func TestFinalDeclaresOnce(t *testing.T) {
	n := New(Config{}, true)
	require.Equal(t, []Pair{{"MaxRecvDataSegmentLength", "262144"}}, n.Final())
	require.Nil(t, n.Final())

	n = New(Config{}, true)
	_, err := n.Negotiate([]Pair{{"MaxRecvDataSegmentLength", "65536"}}, "Normal")
	require.NoError(t, err)
	require.Nil(t, n.Final(), "already declared in the answer")
}

func TestDefaults(t *testing.T) {
	p := New(Config{}, true).Params()
	d := DefaultParams()
	d.TargetMaxRecvDataSegmentLength = 262144
	require.Equal(t, d, p)
}

func TestConfigValidate(t *testing.T) {
	bad := []Config{
		{MaxRecvDataSegmentLength: 100},
		{MaxBurstLength: 1 << 24},
		{FirstBurstLength: 65536, MaxBurstLength: 8192},
		{FirstBurstLength: 2 << 20},
		{MaxOutstandingR2T: 70000},
		{DefaultTime2Wait: 4000},
		{HeaderDigest: 7},
	}
	for _, c := range bad {
		err := c.Validate()
		require.Error(t, err, "%+v", c)
		require.True(t, errors.Is(err, ErrConfig))
	}
	require.NoError(t, Config{}.Validate())
}

func TestCompleteRequiresDigests(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  []Pair
		ok   bool
	}{
		{"never offered", nil, false},
		{"offered None only", []Pair{{"HeaderDigest", "None"}, {"DataDigest", "CRC32C"}}, false},
		{"agreed", []Pair{{"HeaderDigest", "None,CRC32C"}, {"DataDigest", "CRC32C"}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := New(Config{HeaderDigest: DigestRequired, DataDigest: DigestRequired}, true)
			_, err := n.Negotiate(tc.req, "Normal")
			require.NoError(t, err)
			if tc.ok {
				require.NoError(t, n.Complete())
			} else {
				require.ErrorIs(t, n.Complete(), ErrNegotiation)
			}
		})
	}
	require.NoError(t, New(Config{}, true).Complete(), "optional digests need nothing")
}

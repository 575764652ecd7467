package fuzz

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	gofuzz "github.com/google/gofuzz"
	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/mgmt"
)

// fuzzExtentDir is where FILE extents of fuzzed configurations may lie.
const fuzzExtentDir = "/srv/iscsikit"

// checkValidation requires every problem Validate reports to be a
// *mgmt.Error of a known kind that names its object.
func checkValidation(t *testing.T, err error) {
	t.Helper()
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	require.NotEmpty(t, errs)
	for _, e := range errs {
		var me *mgmt.Error
		require.ErrorAs(t, e, &me, "validation error %v is not a *mgmt.Error", e)
		require.NotEmpty(t, me.Object, "error %v names no object", me)
		require.NotEmpty(t, me.Msg, "error %v says nothing", me)
		require.True(t, errors.Is(e, mgmt.ErrInvalid) || errors.Is(e, mgmt.ErrNotFound) || errors.Is(e, mgmt.ErrExists) ||
			errors.Is(e, mgmt.ErrInUse) || errors.Is(e, mgmt.ErrUnsupported), "error %v matches no sentinel", e)
	}
}

// roundTrip requires a valid configuration to survive encoding and
// decoding unchanged, and to stay valid.
func roundTrip(t *testing.T, cfg *mgmt.Config) {
	t.Helper()
	b, err := json.Marshal(cfg)
	require.NoError(t, err)
	again, err := mgmt.DecodeConfig(b)
	require.NoError(t, err, "a valid configuration does not decode again: %s", b)
	require.Equal(t, cfg, again)
	require.NoError(t, mgmt.Validate(again, []string{fuzzExtentDir}))
}

// FuzzConfigFile feeds arbitrary bytes to the config.json decoder and the
// validator: decoding errors are the decoder's own ("mgmt: ..."),
// validation errors are *mgmt.Error values, and what passes both round
// trips through JSON.
func FuzzConfigFile(f *testing.F) {
	f.Add([]byte(`{"version":1}`))
	// The README's example, with its paths under the allowed directory.
	f.Add([]byte(`{"version": 1, "global": {"basename": "iqn.2026-11.io.example"},
  "portals": [{"id": 1, "tag": 1, "listen": [{"ip": "0.0.0.0", "port": 3260}]}, {"id": 2, "tag": 2, "listen": [{"ip": "127.0.0.1", "port": 3261}]}],
  "initiators": [{"id": 1, "comment": "hosts", "initiators": [], "auth_network": ["192.168.1.0/24"]}],
  "targets": [{"id": 1, "name": "alpha", "groups": [{"portal": 1, "initiator": 1}]}, {"id": 2, "name": "beta", "alias": "Beta", "groups": [{"portal": 1}, {"portal": 2}]}],
  "extents": [{"id": 1, "name": "a0", "type": "FILE", "path": "/srv/iscsikit/a0.img", "filesize": 1073741824},
    {"id": 2, "name": "a1", "type": "FILE", "path": "/srv/iscsikit/a1.img", "filesize": 1073741824, "blocksize": 4096, "ro": true},
    {"id": 3, "name": "b0", "type": "DISK", "disk": "/dev/sdb", "thin": false}],
  "targetextents": [{"id": 1, "target": 1, "extent": 1, "lunid": 0}, {"id": 2, "target": 1, "extent": 2, "lunid": 1}, {"id": 3, "target": 2, "extent": 3, "lunid": 0}]}`))
	f.Add([]byte(`{"version":1,"bogus":true}`))
	f.Add([]byte("{\"version\":1}\n{}"))
	f.Add([]byte(`{"version":99}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := mgmt.DecodeConfig(data)
		if err != nil {
			var me *mgmt.Error
			if !errors.As(err, &me) {
				require.True(t, strings.HasPrefix(err.Error(), "mgmt: "), "decode error %q", err)
			}
			return
		}
		if err := mgmt.Validate(cfg, []string{fuzzExtentDir}); err != nil {
			checkValidation(t, err)
			return
		}
		roundTrip(t, cfg)
	})
}

// FuzzConfigModel builds configurations with gofuzz, so that mutations
// explore field values past the JSON syntax: validation either accepts
// a configuration (which then round trips) or explains itself with
// *mgmt.Error values.
func FuzzConfigModel(f *testing.F) {
	f.Add([]byte("config"))
	f.Add([]byte{1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Fuzz(func(t *testing.T, data []byte) {
		var cfg mgmt.Config
		gofuzz.NewFromGoFuzz(data).NilChance(0.3).NumElements(0, 3).Fuzz(&cfg)
		cfg.Version = mgmt.ConfigVersion
		b, err := json.Marshal(&cfg)
		require.NoError(t, err)
		decoded, err := mgmt.DecodeConfig(b)
		require.NoError(t, err, "the encoding of a model does not decode: %s", b)
		if err := mgmt.Validate(decoded, []string{fuzzExtentDir}); err != nil {
			checkValidation(t, err)
			return
		}
		roundTrip(t, decoded)
	})
}

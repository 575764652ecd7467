package storlever

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/examples/api/seedreq"
	"github.com/iscsikit/iscsikit/mgmt"
)

// TestSeed004Replay runs every curl example of seed 004 as written (its
// host swapped for the test server's), creating before reading where the
// document lists the read first. The examples that cannot work literally
// (6-character CHAP passwords below the 12-character minimum, the
// author's /root/test.img) get their clear errors; a setup step not in
// the seed then makes what they would have made.
func TestSeed004Replay(t *testing.T) {
	dir := t.TempDir()
	cfg := mgmt.EmptyConfig()
	cfg.Portals = []mgmt.Portal{{ID: 1, Tag: 1, DiscoveryAuthMethod: mgmt.AuthNone, Listen: []mgmt.Listen{{IP: "127.0.0.1", Port: 3260}}}}
	m, err := mgmt.New(context.Background(), mgmt.Options{Store: &mgmt.MemoryStore{}, Initial: cfg, AllowedDirs: []string{dir}})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	srv := httptest.NewServer(Handler(m, nil))
	t.Cleanup(srv.Close)
	c := &client{t: t, base: srv.URL}
	img := filepath.Join(dir, "test.img")
	require.NoError(t, os.WriteFile(img, make([]byte, 1<<20), 0o600))

	const tgt = "/storlever/api/v1/san/tgt/target_list/iqn.2014-09.com.example:test"
	steps := []struct {
		curl   string
		status int
		// body is a part of the answer: the refusal's message, or a
		// value shown.
		body     string
		location string
		setup    func()
	}{
		{curl: `curl -v -X GET http://192.168.1.15:6543/storlever/api/v1/san/tgt/conf`, status: 200, body: `"incomingdiscoveryuser": ""`},
		{curl: `curl -v -X PUT -H "Content-Type: application/json; charset=UTF-8" -d '{"incomingdiscoveryuser":"test:123456"}' http://192.168.1.15:6543/storlever/api/v1/san/tgt/conf`,
			status: 400, body: "secret: must be 12 to 16 characters, not 6"},
		{curl: `curl -v -X POST -H "Content-Type: application/json; charset=UTF-8" -d '{"iqn":"iqn.2014-09.com.example:test"}' http://192.168.1.15:6543/storlever/api/v1/san/tgt/target_list`,
			status: 201, location: tgt},
		{curl: `curl -v -X GET http://192.168.1.15:6543/storlever/api/v1/san/tgt/target_list`, status: 200, body: `"iqn.2014-09.com.example:test"`},
		{curl: `curl -v -X GET http://192.168.1.15:6543/storlever/api/v1/san/tgt/target_list/iqn.2014-09.com.example:test`, status: 200, body: `"iqn": "iqn.2014-09.com.example:test"`},
		{curl: `curl -v -X PUT -H "Content-Type: application/json; charset=UTF-8" -d '{"state": "ready", "initiator_addr_list":["192.168.1.10"]}' http://192.168.1.15:6543/storlever/api/v1/san/tgt/target_list/iqn.2014-09.com.example:test`, status: 200},
		{curl: `curl -v -X GET http://192.168.1.15:6543/storlever/api/v1/san/tgt/target_list/iqn.2014-09.com.example:test/incominguser_list`, status: 200, body: `[]`},
		{curl: `curl -v -X POST -H "Content-Type: application/json; charset=UTF-8" -d '{"username":"test", "password":"123456"}' http://192.168.1.15:6543/storlever/api/v1/san/tgt/target_list/iqn.2014-09.com.example:test/incominguser_list`,
			status: 400, body: "secret: must be 12 to 16 characters, not 6"},
		{setup: func() {
			c.want(201, "POST", "target_list/"+iqn+"/incominguser_list", `{"username":"test", "password":"123456789012"}`)
		}},
		{curl: `curl -v -X PUT -H "Content-Type: application/json; charset=UTF-8" -d '{"password": "123456"}' http://192.168.1.15:6543/storlever/api/v1/san/tgt/target_list/iqn.2014-09.com.example:test/incominguser_list/test`,
			status: 400, body: "secret: must be 12 to 16 characters, not 6"},
		{curl: `curl -v -X GET http://192.168.1.15:6543/storlever/api/v1/san/tgt/target_list/iqn.2014-09.com.example:test/outgoinguser_list`, status: 200, body: `[]`},
		{curl: `curl -v -X POST -H "Content-Type: application/json; charset=UTF-8" -d '{"username":"test", "password":"123456"}' http://192.168.1.15:6543/storlever/api/v1/san/tgt/target_list/iqn.2014-09.com.example:test/outgoinguser_list`,
			status: 400, body: "peersecret: must be 12 to 16 characters, not 6"},
		{setup: func() {
			c.want(201, "POST", "target_list/"+iqn+"/outgoinguser_list", `{"username":"test", "password":"abcdefabcdef"}`)
		}},
		{curl: `curl -v -X PUT -H "Content-Type: application/json; charset=UTF-8" -d '{"password": "123456"}' http://192.168.1.15:6543/storlever/api/v1/san/tgt/target_list/iqn.2014-09.com.example:test/outgoinguser_list/test`,
			status: 400, body: "peersecret: must be 12 to 16 characters, not 6"},
		{curl: `curl -v -X POST -H "Content-Type: application/json; charset=UTF-8" -d '{"lun":1, "path":"/root/test.img"}' http://192.168.1.15:6543/storlever/api/v1/san/tgt/target_list/iqn.2014-09.com.example:test/lun_list`,
			status: 400, body: "/root/test.img"},
		{setup: func() { c.want(201, "POST", "target_list/"+iqn+"/lun_list", `{"lun":1, "path":"`+img+`"}`) }},
		{curl: `curl -v -X GET http://192.168.1.15:6543/storlever/api/v1/san/tgt/target_list/iqn.2014-09.com.example:test/lun_list`, status: 200, body: `"lun": 1`},
		{curl: `curl -v -X GET http://192.168.1.15:6543/storlever/api/v1/san/tgt/target_list/iqn.2014-09.com.example:test/lun_list/1`, status: 200, body: `"path": "` + img + `"`},
		{curl: `curl -v -X PUT -H "Content-Type: application/json; charset=UTF-8" -d '{"readonly": true, "online":true}' http://192.168.1.15:6543/storlever/api/v1/san/tgt/target_list/iqn.2014-09.com.example:test/lun_list/1`, status: 200},
		{curl: `curl -v -X DELETE http://192.168.1.15:6543/storlever/api/v1/san/tgt/target_list/iqn.2014-09.com.example:test/lun_list/1`, status: 200},
		{curl: `curl -v -X DELETE http://192.168.1.15:6543/storlever/api/v1/san/tgt/target_list/iqn.2014-09.com.example:test/outgoinguser_list/test`, status: 200},
		{curl: `curl -v -X DELETE http://192.168.1.15:6543/storlever/api/v1/san/tgt/target_list/iqn.2014-09.com.example:test/incominguser_list/test`, status: 200},
		{curl: `curl -v -X DELETE http://192.168.1.15:6543/storlever/api/v1/san/tgt/target_list/iqn.2014-09.com.example:test`, status: 200},
	}
	replayed := 0
	for _, s := range steps {
		if s.setup != nil {
			s.setup()
			continue
		}
		r, err := seedreq.ParseCurl(s.curl)
		require.NoError(t, err)
		resp, body, err := r.Send(http.DefaultClient, srv.URL)
		require.NoError(t, err)
		require.Equal(t, s.status, resp.StatusCode, "%s %s: %s", r.Method, r.Path, body)
		require.Contains(t, string(body), s.body, "%s %s", r.Method, r.Path)
		if s.location != "" {
			require.Equal(t, s.location, resp.Header.Get("Location"))
		}
		replayed++
	}
	require.Equal(t, 20, replayed, "every curl example of seed 004")
	require.Empty(t, m.Config(true).Targets)
	require.Empty(t, m.Config(true).Auths)
}

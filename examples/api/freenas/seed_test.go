package freenas

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/examples/api/seedreq"
	"github.com/iscsikit/iscsikit/mgmt"
)

// seedStep is one example request of seed 001, as written there, and
// what it gets here. A step with setup instead of a request is not in the
// seed: it makes what a refused literal request would have made, so the
// requests after it can work.
type seedStep struct {
	request string
	status  int
	// want is a JSON object whose fields the answer must have with these
	// values (the seed's example response, less what differs here).
	want string
	// refusal is the field an error answer names and a part of its
	// message, for the requests that cannot work literally.
	refusal [2]string
	setup   func(t *testing.T, c *client, dir string)
}

// TestSeed001Replay sends every example request of seed 001 in the
// document's order, as written, to the FreeNAS v1.0 API of a manager
// confined to a temporary directory (as iscsid confines extents to its
// state directory).
func TestSeed001Replay(t *testing.T) {
	dir := t.TempDir()
	cfg := mgmt.EmptyConfig()
	// Seed 001's target names portal group 1, which it has no resource
	// to make.
	cfg.Portals = []mgmt.Portal{{ID: 1, Tag: 1, DiscoveryAuthMethod: mgmt.AuthNone, Listen: []mgmt.Listen{{IP: "127.0.0.1", Port: 3260}}}}
	m, err := mgmt.New(context.Background(), mgmt.Options{Store: &mgmt.MemoryStore{}, Initial: cfg, AllowedDirs: []string{dir}})
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	srv := httptest.NewServer(Handler(m, SessionLimits{FirstBurst: 65536, MaxBurst: 262144, MaxRecvData: 262144, MaxOutstandingR2T: 16,
		DefaultTime2Wait: 2, DefaultTime2Keep: 60, NopInInterval: 20, IOTimeout: 30, QueueDepth: 32}, nil))
	t.Cleanup(srv.Close)
	c := &client{t: t, url: srv.URL + Prefix}

	steps := []seedStep{
		{request: `
GET /api/v1.0/services/iscsi/globalconfiguration/ HTTP/1.1
Content-Type: application/json
`, status: 200, want: `{"iscsi_maxconnect": 1, "iscsi_iotimeout": 30, "iscsi_firstburst": 65536, "iscsi_discoveryauthmethod": "None",
			"iscsi_defaultt2w": 2, "iscsi_maxrecdata": 262144, "iscsi_defaultt2r": 60, "iscsi_nopinint": 20, "iscsi_discoveryauthgroup": null,
			"iscsi_maxburst": 262144, "iscsi_toggleluc": false, "iscsi_luc_authgroup": null, "iscsi_maxoutstandingr2t": 16, "id": 1}`},
		{request: `
PUT /api/v1.0/services/iscsi/globalconfiguration/ HTTP/1.1
Content-Type: application/json

  {
          "iscsi_maxconnect": 16
  }
`, status: 202, want: `{"iscsi_maxconnect": 16, "iscsi_maxconnect_in_effect": 16, "id": 1}`},
		{request: `
GET /api/v1.0/services/iscsi/extent/ HTTP/1.1
Content-Type: application/json
`, status: 200},
		// /mnt/tank is the author's pool.
		{request: `
POST /api/v1.0/services/iscsi/extent/ HTTP/1.1
Content-Type: application/json

  {
          "iscsi_target_extent_type": "File",
          "iscsi_target_extent_name": "extent",
          "iscsi_target_extent_filesize": "10MB",
          "iscsi_target_extent_path": "/mnt/tank/iscsi"
  }
`, status: 400, refusal: [2]string{"iscsi_target_extent_path", "/mnt/tank/iscsi is outside the allowed directories"}},
		{setup: func(t *testing.T, c *client, dir string) {
			e := c.want(201, "POST", "extent/", `{"iscsi_target_extent_type": "File", "iscsi_target_extent_name": "extent", "iscsi_target_extent_filesize": "10MB", "iscsi_target_extent_path": "`+filepath.Join(dir, "iscsi")+`"}`)
			require.Equal(t, float64(1), e["id"])
		}},
		{request: `
PUT /api/v1.0/services/iscsi/extent/1/ HTTP/1.1
Content-Type: application/json

  {
          "iscsi_target_extent_filesize": "20MB"
  }
`, status: 202, want: `{"iscsi_target_extent_comment": "", "iscsi_target_extent_type": "File", "iscsi_target_extent_name": "extent",
			"iscsi_target_extent_filesize": "20MB", "id": 1}`},
		{request: `
DELETE /api/v1.0/services/iscsi/extent/1/ HTTP/1.1
Content-Type: application/json
`, status: 204},
		{request: `
GET /api/v1.0/services/iscsi/authorizedinitiator/ HTTP/1.1
Content-Type: application/json
`, status: 200},
		// The seed's body has a comma before its closing brace.
		{request: `
POST /api/v1.0/services/iscsi/authorizedinitiator/ HTTP/1.1
Content-Type: application/json

  {
          "iscsi_target_initiator_initiators": "ALL",
          "iscsi_target_initiator_auth_network": "ALL",
  }
`, status: 400, refusal: [2]string{"__all__", "invalid character '}' looking for beginning of object key string"}},
		{setup: func(t *testing.T, c *client, _ string) {
			c.want(201, "POST", "authorizedinitiator/", `{"iscsi_target_initiator_initiators": "ALL", "iscsi_target_initiator_auth_network": "ALL"}`)
		}},
		{request: `
PUT /api/v1.0/services/iscsi/authorizedinitiator/1/ HTTP/1.1
Content-Type: application/json

  {
          "iscsi_target_initiator_auth_network": "192.168.3.0/24"
  }
`, status: 202, want: `{"iscsi_target_initiator_initiators": "ALL", "iscsi_target_initiator_comment": "",
			"iscsi_target_initiator_auth_network": "192.168.3.0/24", "id": 1, "iscsi_target_initiator_tag": 1}`},
		{request: `
DELETE /api/v1.0/services/iscsi/authorizedinitiator/1/ HTTP/1.1
Content-Type: application/json
`, status: 204},
		{request: `
GET /api/v1.0/services/iscsi/authcredential/ HTTP/1.1
Content-Type: application/json
`, status: 200},
		// "secret" has 6 characters; CHAP secrets have 12 to 16.
		{request: `
POST /api/v1.0/services/iscsi/authcredential/ HTTP/1.1
Content-Type: application/json

  {
          "iscsi_target_auth_secret": "secret",
          "iscsi_target_auth_peeruser": "peeruser",
          "iscsi_target_auth_peersecret": "peersecret",
          "iscsi_target_auth_user": "user",
          "iscsi_target_auth_tag": 1
  }
`, status: 400, refusal: [2]string{"iscsi_target_auth_secret", "must be 12 to 16 characters, not 6"}},
		{setup: func(t *testing.T, c *client, _ string) {
			c.want(201, "POST", "authcredential/", `{"iscsi_target_auth_secret": "secret123456", "iscsi_target_auth_peeruser": "peeruser",
				"iscsi_target_auth_peersecret": "peersecret12", "iscsi_target_auth_user": "user", "iscsi_target_auth_tag": 1}`)
		}},
		// Secrets are accepted and never shown (the seed shows them).
		{request: `
PUT /api/v1.0/services/iscsi/authcredential/1/ HTTP/1.1
Content-Type: application/json

  {
          "iscsi_target_auth_peeruser": "myuser"
  }
`, status: 202, want: `{"iscsi_target_auth_peeruser": "myuser", "iscsi_target_auth_user": "user", "iscsi_target_auth_tag": 1, "id": 1}`},
		{request: `
DELETE /api/v1.0/services/iscsi/authcredential/1/ HTTP/1.1
Content-Type: application/json
`, status: 204},
		{request: `
GET /api/v1.0/services/iscsi/target/ HTTP/1.1
Content-Type: application/json
`, status: 200},
		// Initiator group 1 was deleted above, in the seed's order. Ids
		// are never given again (as FreeNAS's database, whose primary
		// keys are AUTOINCREMENT), so the group made here is 2, and the
		// seed's target names it so.
		{setup: func(t *testing.T, c *client, _ string) {
			c.want(201, "POST", "authorizedinitiator/", `{"iscsi_target_initiator_initiators": "ALL", "iscsi_target_initiator_auth_network": "ALL"}`)
		}},
		// The serial and "Auto" auth type of the seed's answer differ:
		// serials are the LUNs' (none yet), and Auto is None here.
		{request: `
POST /api/v1.0/services/iscsi/target/ HTTP/1.1
Content-Type: application/json

  {
          "iscsi_target_name": "target",
          "iscsi_target_portalgroup": 1,
          "iscsi_target_initiatorgroup": 2
  }
`, status: 201, want: `{"iscsi_target_logical_blocksize": 512, "iscsi_target_portalgroup": 1, "iscsi_target_initialdigest": "Auto",
			"iscsi_target_queue_depth": 32, "iscsi_target_name": "target", "iscsi_target_initiatorgroup": 2, "iscsi_target_alias": null,
			"iscsi_target_type": "Disk", "iscsi_target_authgroup": null, "iscsi_target_authtype": "None", "iscsi_target_flags": "rw", "id": 1}`},
		{request: `
PUT /api/v1.0/services/iscsi/target/1/ HTTP/1.1
Content-Type: application/json

  {
          "iscsi_target_queue_depth": 64
  }
`, status: 202, want: `{"iscsi_target_queue_depth": 64, "iscsi_target_name": "target", "id": 1}`},
		{request: `
DELETE /api/v1.0/services/iscsi/target/1/ HTTP/1.1
Content-Type: application/json
`, status: 204},
	}
	replayed := 0
	for _, s := range steps {
		if s.setup != nil {
			s.setup(t, c, dir)
			continue
		}
		r, err := seedreq.ParseHTTP(s.request)
		require.NoError(t, err)
		resp, body, err := r.Send(http.DefaultClient, srv.URL)
		require.NoError(t, err)
		require.Equal(t, s.status, resp.StatusCode, "%s %s: %s", r.Method, r.Path, body)
		replayed++
		if s.status == 204 {
			require.Empty(t, body)
			continue
		}
		var got any
		require.NoError(t, json.Unmarshal(body, &got), string(body))
		if s.refusal[0] != "" {
			errorOn(t, got.(map[string]any), s.refusal[0], s.refusal[1])
			continue
		}
		if r.Method == "GET" && strings.HasSuffix(r.Path, "/") && !strings.Contains(r.Path, "globalconfiguration") {
			_, isList := got.([]any)
			require.True(t, isList, "%s lists: %s", r.Path, body)
			continue
		}
		if s.want != "" {
			var want map[string]any
			require.NoError(t, json.Unmarshal([]byte(s.want), &want))
			obj := got.(map[string]any)
			for k, v := range want {
				require.Contains(t, obj, k, "%s %s", r.Method, r.Path)
				require.Equal(t, v, obj[k], "%s %s: %s", r.Method, r.Path, k)
			}
		}
	}
	require.Equal(t, 18, replayed, "every request of seed 001: the document has 18 request lines")
}

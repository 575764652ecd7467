package nasshares

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// seed002Share is seed 002's iSCSI Target Object as written there: a
// list holding one share with id 1 and empty target, size and volume.
const seed002Share = `[
      {
        "id": 1,
        "target": "",
        "size": "",
        "volume": "",
        "header-digest": true,
        "data-digest": false,
        "one-way-chap": {
            "enabled": true,
            "username": "",
            "password": ""
        },
        "mutual-chap": {
            "enabled": false,
            "username": "",
            "password": ""
        }
      }
    ]`

// seed002Service is seed 002's iSCSI Service Object as written there.
const seed002Service = `[
      {
        
        "id": 1,
        "enabled": true,
        "port": "",
        "isns": true,
        "isns-address": ""
        
      }
    ]`

// TestSeed002Replay sends seed 002's four share requests (GET, and POST,
// DELETE and PUT each with the share object as the document writes it)
// and the service object to the service resource. The written objects
// are templates, a list with empty values, so each gets its clear error;
// the same calls with a filled-in object then work.
func TestSeed002Replay(t *testing.T) {
	c, _, _ := newClient(t)
	for _, s := range []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"GET", SharesPath, "", 200, "[]"},
		{"POST", SharesPath, seed002Share, 400, "one share object"},
		{"DELETE", SharesPath, seed002Share, 400, "one share object"},
		{"PUT", SharesPath, seed002Share, 400, "one share object"},
		{"PUT", ServicePath, seed002Service, 400, "one service object"},
	} {
		got, body := c.do(s.method, s.path, s.body)
		require.Equal(t, s.status, got, "%s %s: %s", s.method, s.path, body)
		require.Contains(t, body, s.want, "%s %s", s.method, s.path)
	}

	// The object itself, out of its list: its empty target, size and
	// volume, and its enabled one-way CHAP without user, are named.
	one := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(seed002Share), "["), "]")
	got, body := c.do("POST", SharesPath, one)
	require.Equal(t, 400, got, body)
	require.Contains(t, body, "id: assigned by the NAS; leave it out")
	withoutID := strings.Replace(one, `"id": 1,`, "", 1)
	got, body = c.do("POST", SharesPath, withoutID)
	require.Equal(t, 400, got, body)
	require.Contains(t, body, "volume: the volume to allocate the share from is required")

	// Filled in, the same calls work.
	filled := strings.NewReplacer(`"target": ""`, `"target": "share1"`, `"size": ""`, `"size": "16MB"`, `"volume": ""`, `"volume": "Volume_1"`,
		`"enabled": true,
            "username": "",
            "password": ""`, `"enabled": true,
            "username": "nasuser",
            "password": "nassecret123"`).Replace(withoutID)
	c.want(201, "POST", SharesPath, filled, nil)
	c.want(200, "PUT", SharesPath, strings.Replace(strings.Replace(filled, `"size": "16MB"`, `"size": "32MB"`, 1), "{", `{"id": 1,`, 1), nil)
	c.want(200, "DELETE", SharesPath, `{"id": 1}`, nil)
	c.want(200, "GET", ServicePath, "", nil)
}

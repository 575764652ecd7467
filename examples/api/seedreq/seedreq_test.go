package seedreq

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseHTTP(t *testing.T) {
	r, err := ParseHTTP(`
PUT /api/v1.0/services/iscsi/extent/1/ HTTP/1.1
Content-Type: application/json

  {
          "iscsi_target_extent_filesize": "20MB",
  }`)
	require.NoError(t, err)
	require.Equal(t, "PUT", r.Method)
	require.Equal(t, "/api/v1.0/services/iscsi/extent/1/", r.Path)
	require.Equal(t, "application/json", r.Header.Get("Content-Type"))
	require.Equal(t, "{\n          \"iscsi_target_extent_filesize\": \"20MB\",\n  }", r.Body, "the body as written")
	_, err = ParseHTTP("GET /x")
	require.Error(t, err)
}

func TestParseCurl(t *testing.T) {
	r, err := ParseCurl(`curl -v -X PUT -H "Content-Type: application/json; charset=UTF-8" -d '{"state": "ready", "initiator_addr_list":["192.168.1.10"]}' http://192.168.1.15:6543/storlever/api/v1/san/tgt/target_list/iqn.2014-09.com.example:test`)
	require.NoError(t, err)
	require.Equal(t, "PUT", r.Method)
	require.Equal(t, "/storlever/api/v1/san/tgt/target_list/iqn.2014-09.com.example:test", r.Path)
	require.Equal(t, "application/json; charset=UTF-8", r.Header.Get("Content-Type"))
	require.Equal(t, `{"state": "ready", "initiator_addr_list":["192.168.1.10"]}`, r.Body)
	r, err = ParseCurl(`curl -v -X GET http://192.168.1.15:6543/storlever/api/v1/san/tgt/conf`)
	require.NoError(t, err)
	require.Equal(t, "GET", r.Method)
	require.Empty(t, r.Body)
	for _, bad := range []string{`wget http://x/`, `curl -d '{"a"`, `curl -X`, `curl -v -X GET`} {
		_, err := ParseCurl(bad)
		require.Error(t, err, bad)
	}
}

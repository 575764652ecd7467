package mgmt

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/scsi"
)

// TestSessionsHaveTrueNASFields checks the session list against the
// fields and types of TrueNAS's ISCSIGlobalSessionsItem.
func TestSessionsHaveTrueNASFields(t *testing.T) {
	srv, addr, port := liveServer(t)
	m, _ := newManager(t, srv)
	p, err := m.CreatePortal(ctx, Portal{DiscoveryAuthMethod: AuthNone, Listen: []Listen{{IP: "127.0.0.1", Port: port}}})
	require.NoError(t, err)
	tg := NewTarget()
	tg.Name, tg.Alias, tg.Groups = "watched", "the watched one", []TargetGroup{{Portal: p.ID, AuthMethod: AuthNone}}
	_, err = m.CreateTarget(ctx, tg)
	require.NoError(t, err)

	c, err := initiator.Dial(ctx, addr, initiator.Options{TargetName: DefaultBasename + ":watched", HeaderDigest: true, SkipSecurity: true,
		Keys: []negotiate.Pair{{Key: "InitiatorAlias", Value: "host1"}}})
	require.NoError(t, err)
	defer c.Close()
	c2, err := initiator.Dial(ctx, addr, initiator.Options{TargetName: DefaultBasename + ":watched", ISID: [6]byte{0x80, 0, 0, 0, 0, 2}})
	require.NoError(t, err)
	defer c2.Close()

	b, err := json.Marshal(m.Sessions())
	require.NoError(t, err)
	var list []map[string]any
	require.NoError(t, json.Unmarshal(b, &list))
	require.Len(t, list, 2)
	s, s2 := list[0], list[1]
	require.Equal(t, initiator.DefaultInitiatorName, s["initiator"])
	require.Equal(t, "127.0.0.1", s["initiator_addr"])
	require.Equal(t, "host1", s["initiator_alias"])
	require.Nil(t, s2["initiator_alias"], "no alias is null")
	require.Contains(t, s2, "initiator_alias")
	require.Equal(t, DefaultBasename+":watched", s["target"])
	require.Equal(t, "the watched one", s["target_alias"])
	require.Equal(t, "CRC32C", s["header_digest"])
	require.Equal(t, "None", s["data_digest"])
	require.Equal(t, "None", s2["header_digest"])
	params := c.Params()
	require.Equal(t, params["MaxBurstLength"], jsonInt(s["max_burst_length"]))
	require.Equal(t, params["FirstBurstLength"], jsonInt(s["first_burst_length"]))
	// The target's MaxRecvDataSegmentLength is what it declared; the
	// initiator's is what it sent.
	require.Equal(t, "262144", jsonInt(s["max_receive_data_segment_length"]))
	require.Equal(t, s["max_receive_data_segment_length"], s["max_data_segment_length"])
	require.Equal(t, "262144", jsonInt(s["max_xmit_data_segment_length"]))
	require.Equal(t, true, s["immediate_data"])
	require.Equal(t, false, s["iser"])
	require.Equal(t, false, s["offload"])
}

// jsonInt renders a JSON number as decimal text.
func jsonInt(v any) string {
	f, ok := v.(float64)
	if !ok {
		return fmt.Sprintf("not a number: %v", v)
	}
	return strconv.FormatInt(int64(f), 10)
}

// TestUnitEventsReachTheObserver checks that mgmt hooks the units it
// opens to the server's observer, named by their extent.
func TestUnitEventsReachTheObserver(t *testing.T) {
	var mu sync.Mutex
	var got []iscsi.Event
	srv, err := iscsi.NewServer(iscsi.Options{Observer: iscsi.ObserverFunc(func(e iscsi.Event) {
		mu.Lock()
		got = append(got, e)
		mu.Unlock()
	})})
	require.NoError(t, err)
	t.Cleanup(func() { srv.Close() })
	m, _ := newManager(t, srv)
	tg := NewTarget()
	tg.Name = "t"
	tg, err = m.CreateTarget(ctx, tg)
	require.NoError(t, err)
	e := NewExtent()
	e.Name, e.Path, e.Filesize = "observed", "/srv/observed.img", 1<<20
	e, err = m.CreateExtent(ctx, e)
	require.NoError(t, err)
	_, err = m.CreateTargetExtent(ctx, TargetExtent{Target: tg.ID, Extent: e.ID, LunID: 0})
	require.NoError(t, err)
	// Taking the extent offline closes its unit and opens an offline one.
	_, err = m.UpdateExtent(ctx, e.ID, func(x *Extent) error { x.Online = false; return nil })
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, ev := range got {
			if ev.Kind == iscsi.EventUnit && ev.UnitName == "observed" && ev.Unit.Kind == scsi.UnitOffline && ev.Unit.Reason == "configured offline" {
				return true
			}
		}
		return false
	}, 20*time.Second, 5*time.Millisecond)
}

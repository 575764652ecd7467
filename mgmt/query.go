package mgmt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// Query narrows a listing: objects whose JSON fields equal every filter,
// then Offset and Limit (seed 001's paging). The zero Query lists all.
type Query struct {
	// Filters maps a JSON field name ("name", "tag", "type") to the value
	// it must equal.
	Filters map[string]any
	// Offset skips that many matches; Limit (if positive) caps the result.
	Offset, Limit int
	// Secrets includes CHAP secrets in Auths listings.
	Secrets bool
}

// query applies q to list.
func query[T any](list []T, q Query) ([]T, error) {
	want := map[string][]byte{}
	for field, v := range q.Filters {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, &Error{Kind: KindInvalid, Object: "query", Field: field, Msg: err.Error()}
		}
		want[field] = b
	}
	var out []T
	for _, v := range list {
		ok, err := matches(v, want)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, v)
		}
	}
	if q.Offset > 0 {
		out = out[min(q.Offset, len(out)):]
	}
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	if out == nil {
		out = []T{}
	}
	return out, nil
}

func matches(v any, want map[string][]byte) (bool, error) {
	if len(want) == 0 {
		return true, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return false, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return false, err
	}
	for f, w := range want {
		got, ok := fields[f]
		if !ok {
			return false, &Error{Kind: KindInvalid, Object: "query", Field: f, Msg: "no such field"}
		}
		if !bytes.Equal(compact(got), compact(w)) {
			return false, nil
		}
	}
	return true, nil
}

func compact(b []byte) []byte {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return b
	}
	return buf.Bytes()
}

// Session is a live iSCSI session, with the fields TrueNAS's
// iscsi.global.sessions reports (ISCSIGlobalSessionsItem in its
// middleware) and a few of our own (isid, tsih, connections, discovery,
// initial_r2t, error_recovery_level).
type Session struct {
	Initiator string `json:"initiator"`
	// InitiatorAddr is the initiator's IP address (no port), "" when the
	// session has no live connection.
	InitiatorAddr string `json:"initiator_addr"`
	// InitiatorAlias is the InitiatorAlias announced at login, or nil.
	InitiatorAlias *string `json:"initiator_alias"`
	Target         string  `json:"target"`
	TargetAlias    string  `json:"target_alias"`
	ISID           string  `json:"isid"`
	TSIH           int     `json:"tsih"`
	Connections    int     `json:"connections"`
	Discovery      bool    `json:"discovery"`
	// HeaderDigest and DataDigest are "CRC32C" or "None".
	HeaderDigest string `json:"header_digest"`
	DataDigest   string `json:"data_digest"`
	// MaxReceiveDataSegmentLength is the largest data segment the target
	// receives (its MaxRecvDataSegmentLength), as is
	// MaxDataSegmentLength (TrueNAS reports the same value in both);
	// MaxXmitDataSegmentLength the largest it sends (the initiator's).
	MaxDataSegmentLength        int  `json:"max_data_segment_length"`
	MaxReceiveDataSegmentLength int  `json:"max_receive_data_segment_length"`
	MaxXmitDataSegmentLength    int  `json:"max_xmit_data_segment_length"`
	MaxBurstLength              int  `json:"max_burst_length"`
	FirstBurstLength            int  `json:"first_burst_length"`
	ImmediateData               bool `json:"immediate_data"`
	// ISER and Offload are always false: sessions run over TCP, without
	// offload.
	ISER               bool `json:"iser"`
	Offload            bool `json:"offload"`
	InitialR2T         bool `json:"initial_r2t"`
	ErrorRecoveryLevel int  `json:"error_recovery_level"`
}

// Sessions lists the server's live sessions (empty without a server).
func (m *Manager) Sessions() []Session {
	out := []Session{}
	if m.opt.Server == nil {
		return out
	}
	digest := func(on bool) string {
		if on {
			return "CRC32C"
		}
		return "None"
	}
	for _, s := range m.opt.Server.Sessions() {
		p := s.Params
		addr := s.InitiatorAddr
		if host, _, err := net.SplitHostPort(addr); err == nil {
			addr = host
		}
		var alias *string
		if s.InitiatorAlias != "" {
			alias = &s.InitiatorAlias
		}
		out = append(out, Session{
			Initiator: s.InitiatorName, InitiatorAddr: addr, InitiatorAlias: alias, Target: s.TargetName, TargetAlias: s.TargetAlias,
			ISID: fmt.Sprintf("%012x", s.ISID[:]), TSIH: int(s.TSIH), Connections: s.Connections, Discovery: s.Discovery,
			HeaderDigest: digest(p.HeaderDigest), DataDigest: digest(p.DataDigest),
			MaxDataSegmentLength: int(p.TargetMaxRecvDataSegmentLength), MaxReceiveDataSegmentLength: int(p.TargetMaxRecvDataSegmentLength),
			MaxXmitDataSegmentLength: int(p.InitiatorMaxRecvDataSegmentLength), MaxBurstLength: int(p.MaxBurstLength),
			FirstBurstLength: int(p.FirstBurstLength), ImmediateData: p.ImmediateData, InitialR2T: p.InitialR2T,
			ErrorRecoveryLevel: int(p.ErrorRecoveryLevel),
		})
	}
	return out
}

// ListenIPChoices lists the addresses a portal may listen on: the
// wildcards and every address of the host's interfaces.
func (m *Manager) ListenIPChoices() ([]string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("mgmt: %w", err)
	}
	out := []string{"0.0.0.0", "::"}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.IsGlobalUnicast() || ok && n.IP.IsLoopback() {
			out = append(out, n.IP.String())
		}
	}
	return out, nil
}

// DiskChoices lists block devices that a DISK extent could use: whole
// disks and partitions of the host not already used by an extent, as
// device paths.
func (m *Manager) DiskChoices() ([]string, error) {
	used := map[string]bool{}
	for _, e := range m.Config(false).Extents {
		used[e.devicePath()] = true
	}
	var out []string
	entries, err := os.ReadDir("/sys/class/block")
	if err != nil {
		return nil, fmt.Errorf("mgmt: %w", err)
	}
	for _, de := range entries {
		name := de.Name()
		if strings.HasPrefix(name, "loop") || strings.HasPrefix(name, "ram") || strings.HasPrefix(name, "sr") {
			continue
		}
		p := filepath.Join("/dev", name)
		if used[p] {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return slices.Compact(out), nil
}

package negotiate

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Special answer values (RFC 7143 §6.2).
const (
	Reject        = "Reject"
	Irrelevant    = "Irrelevant"
	NotUnderstood = "NotUnderstood"
)

// ErrNegotiation is wrapped by errors that must fail the login with an
// initiator error: a key offered twice, a leading-only key on another
// connection.
var ErrNegotiation = errors.New("negotiate: protocol violation")

// rule is how the two sides' values of a key combine.
type rule uint8

const (
	ruleList    rule = iota // the first of the offerer's values the responder supports
	ruleAnd                 // Yes only if both say Yes
	ruleOr                  // Yes if either says Yes
	ruleMin                 // the smaller number
	ruleMax                 // the larger number
	ruleDeclare             // each side states its own value
)

// keyDef describes one operational key of RFC 7143 §13.
type keyDef struct {
	rule rule
	// lo and hi bound numerical values.
	lo, hi uint64
	// leadingOnly keys are negotiated on the leading connection only.
	leadingOnly bool
	// normalOnly keys are Irrelevant in discovery sessions.
	normalOnly bool
	// loginOnly keys cannot be renegotiated in full feature phase; every
	// operational key here is login-only.
	// apply stores the negotiated value in p.
	apply func(p *Params, v string)
	// ours returns the target's value given the config.
	ours func(c *Config) string
}

func yesNo(b bool) string {
	if b {
		return "Yes"
	}
	return "No"
}

func num(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

func setU32(dst func(p *Params) *uint32) func(p *Params, v string) {
	return func(p *Params, v string) {
		n, _ := parseNumber(v)
		*dst(p) = uint32(n)
	}
}

func setBool(dst func(p *Params) *bool) func(p *Params, v string) {
	return func(p *Params, v string) { *dst(p) = v == "Yes" }
}

func digestOffer(policy DigestPolicy) string {
	switch policy {
	case DigestRequired:
		return "CRC32C"
	case DigestRefused:
		return "None"
	}
	return "CRC32C,None"
}

// keys is the table of operational keys the target negotiates. The
// declarations InitiatorName, TargetName, InitiatorAlias and SessionType
// belong to the login state machine and are not here.
var keys = map[string]keyDef{
	"HeaderDigest": {rule: ruleList,
		apply: setBool(func(p *Params) *bool { return &p.HeaderDigest }),
		ours:  func(c *Config) string { return digestOffer(c.HeaderDigest) }},
	"DataDigest": {rule: ruleList,
		apply: setBool(func(p *Params) *bool { return &p.DataDigest }),
		ours:  func(c *Config) string { return digestOffer(c.DataDigest) }},
	"MaxConnections": {rule: ruleMin, lo: 1, hi: 65535, leadingOnly: true, normalOnly: true,
		apply: setU32(func(p *Params) *uint32 { return &p.MaxConnections }),
		ours:  func(c *Config) string { return num(c.MaxConnections) }},
	"InitialR2T": {rule: ruleOr, leadingOnly: true, normalOnly: true,
		apply: setBool(func(p *Params) *bool { return &p.InitialR2T }),
		ours:  func(c *Config) string { return yesNo(c.RequireInitialR2T) }},
	"ImmediateData": {rule: ruleAnd, leadingOnly: true, normalOnly: true,
		apply: setBool(func(p *Params) *bool { return &p.ImmediateData }),
		ours:  func(c *Config) string { return yesNo(!c.DisableImmediateData) }},
	"MaxRecvDataSegmentLength": {rule: ruleDeclare, lo: minDataSegment, hi: maxDataSegment,
		apply: setU32(func(p *Params) *uint32 { return &p.InitiatorMaxRecvDataSegmentLength })},
	"MaxBurstLength": {rule: ruleMin, lo: minDataSegment, hi: maxDataSegment, leadingOnly: true, normalOnly: true,
		apply: setU32(func(p *Params) *uint32 { return &p.MaxBurstLength }),
		ours:  func(c *Config) string { return num(c.MaxBurstLength) }},
	"FirstBurstLength": {rule: ruleMin, lo: minDataSegment, hi: maxDataSegment, leadingOnly: true, normalOnly: true,
		apply: setU32(func(p *Params) *uint32 { return &p.FirstBurstLength }),
		ours:  func(c *Config) string { return num(c.FirstBurstLength) }},
	"DefaultTime2Wait": {rule: ruleMax, lo: 0, hi: maxTime2, leadingOnly: true,
		apply: setU32(func(p *Params) *uint32 { return &p.DefaultTime2Wait }),
		ours:  func(c *Config) string { return num(c.DefaultTime2Wait) }},
	"DefaultTime2Retain": {rule: ruleMin, lo: 0, hi: maxTime2, leadingOnly: true,
		apply: setU32(func(p *Params) *uint32 { return &p.DefaultTime2Retain }),
		ours:  func(c *Config) string { return num(c.DefaultTime2Retain) }},
	"MaxOutstandingR2T": {rule: ruleMin, lo: 1, hi: 65535, leadingOnly: true, normalOnly: true,
		apply: setU32(func(p *Params) *uint32 { return &p.MaxOutstandingR2T }),
		ours:  func(c *Config) string { return num(c.MaxOutstandingR2T) }},
	// The data path places every Data-Out by its buffer offset, but the
	// target always sends in order; OR makes the answer Yes either way.
	"DataPDUInOrder": {rule: ruleOr, leadingOnly: true, normalOnly: true,
		apply: setBool(func(p *Params) *bool { return &p.DataPDUInOrder }),
		ours:  func(*Config) string { return "Yes" }},
	"DataSequenceInOrder": {rule: ruleOr, leadingOnly: true, normalOnly: true,
		apply: setBool(func(p *Params) *bool { return &p.DataSequenceInOrder }),
		ours:  func(*Config) string { return "Yes" }},
	"ErrorRecoveryLevel": {rule: ruleMin, lo: 0, hi: 2, leadingOnly: true,
		apply: setU32(func(p *Params) *uint32 { return &p.ErrorRecoveryLevel }),
		ours:  func(c *Config) string { return num(c.ErrorRecoveryLevel) }},
	// Markers were dropped by RFC 7143; answering No keeps them off.
	"IFMarker": {rule: ruleAnd, ours: func(*Config) string { return "No" }},
	"OFMarker": {rule: ruleAnd, ours: func(*Config) string { return "No" }},
	"TaskReporting": {rule: ruleList, leadingOnly: true, normalOnly: true,
		apply: func(p *Params, v string) { p.TaskReporting = v },
		ours:  func(*Config) string { return "RFC3720" }},
	"iSCSIProtocolLevel": {rule: ruleMin, lo: 0, hi: 31, leadingOnly: true,
		apply: setU32(func(p *Params) *uint32 { return &p.ProtocolLevel }),
		ours:  func(*Config) string { return "1" }},
}

// targetOnly keys are declared by the target; an initiator sending them
// gets Reject.
var targetOnly = map[string]bool{
	"TargetAlias": true, "TargetAddress": true, "TargetPortalGroupTag": true,
}

// Negotiator answers an initiator's operational keys during one login on
// the target side. It is not safe for concurrent use; a login is a
// sequence of requests.
type Negotiator struct {
	cfg      Config
	leading  bool
	params   Params
	seen     map[string]bool
	declared bool // MaxRecvDataSegmentLength declared to the initiator
}

// New returns a Negotiator for a login on a leading (first) or secondary
// connection of a session. cfg must have passed Validate.
func New(cfg Config, leading bool) *Negotiator {
	c := cfg.withDefaults()
	p := DefaultParams()
	p.TargetMaxRecvDataSegmentLength = c.MaxRecvDataSegmentLength
	return &Negotiator{cfg: c, leading: leading, params: p, seen: make(map[string]bool)}
}

// Negotiate answers the operational keys of one login request in a
// session of the given type ("Normal" or "Discovery") and returns the
// pairs to send back, in request order. Values the target cannot accept
// are answered Reject, keys it does not know NotUnderstood, keys without
// meaning here Irrelevant (RFC 7143 §6.2). A key sent twice in one login or
// a leading-only key on a secondary connection returns an error wrapping
// ErrNegotiation: the login must fail with an initiator error.
func (n *Negotiator) Negotiate(req []Pair, sessionType string) ([]Pair, error) {
	var resp []Pair
	for _, kv := range req {
		if n.seen[kv.Key] {
			return nil, fmt.Errorf("%w: key %s negotiated twice", ErrNegotiation, kv.Key)
		}
		n.seen[kv.Key] = true
		answer, reply, err := n.one(kv, sessionType)
		if err != nil {
			return nil, err
		}
		if reply {
			resp = append(resp, Pair{Key: kv.Key, Value: answer})
		}
		if kv.Key == "MaxRecvDataSegmentLength" && !n.declared {
			n.declared = true
			resp = append(resp, Pair{Key: kv.Key, Value: num(n.cfg.MaxRecvDataSegmentLength)})
		}
	}
	// FirstBurstLength may not exceed MaxBurstLength (§13.14).
	if n.params.FirstBurstLength > n.params.MaxBurstLength {
		n.params.FirstBurstLength = n.params.MaxBurstLength
	}
	return resp, nil
}

// one answers a single key. reply is false for declarations that need no
// answer.
func (n *Negotiator) one(kv Pair, sessionType string) (answer string, reply bool, err error) {
	if targetOnly[kv.Key] {
		return Reject, true, nil
	}
	def, ok := keys[kv.Key]
	if !ok {
		return NotUnderstood, true, nil
	}
	if def.leadingOnly && !n.leading {
		return "", false, fmt.Errorf("%w: leading-only key %s on a secondary connection", ErrNegotiation, kv.Key)
	}
	if def.normalOnly && sessionType == "Discovery" {
		return Irrelevant, true, nil
	}
	switch def.rule {
	case ruleDeclare:
		v, err := parseNumber(kv.Value)
		if err != nil || v < def.lo || v > def.hi {
			return Reject, true, nil
		}
		def.apply(&n.params, kv.Value)
		return "", false, nil
	case ruleList:
		choice, ok := pickFromList(kv.Value, def.ours(&n.cfg))
		if !ok {
			return Reject, true, nil
		}
		switch choice {
		case "CRC32C":
			def.apply(&n.params, "Yes")
		case "None":
			def.apply(&n.params, "No")
		default:
			def.apply(&n.params, choice)
		}
		return choice, true, nil
	case ruleAnd, ruleOr:
		if kv.Value != "Yes" && kv.Value != "No" {
			return Reject, true, nil
		}
		ours := def.ours(&n.cfg) == "Yes"
		theirs := kv.Value == "Yes"
		result := ours && theirs
		if def.rule == ruleOr {
			result = ours || theirs
		}
		if def.apply != nil {
			def.apply(&n.params, yesNo(result))
		}
		return yesNo(result), true, nil
	default: // ruleMin, ruleMax
		v, err := parseNumber(kv.Value)
		if err != nil || v < def.lo || v > def.hi {
			return Reject, true, nil
		}
		ours, _ := parseNumber(def.ours(&n.cfg))
		result := min(v, ours)
		if def.rule == ruleMax {
			result = max(v, ours)
		}
		s := strconv.FormatUint(result, 10)
		def.apply(&n.params, s)
		return s, true, nil
	}
}

// Final returns the declarations the target must still make before the
// login completes (its MaxRecvDataSegmentLength, when the initiator never
// declared its own).
func (n *Negotiator) Final() []Pair {
	if n.declared {
		return nil
	}
	n.declared = true
	return []Pair{{Key: "MaxRecvDataSegmentLength", Value: num(n.cfg.MaxRecvDataSegmentLength)}}
}

// Complete reports whether the negotiated parameters meet the target's
// requirements at the end of the login: a digest the configuration
// requires must be in effect, whether the initiator never offered it or
// offered only values the target answered with Reject. The error wraps
// ErrNegotiation: the login must fail with an initiator error.
func (n *Negotiator) Complete() error {
	if n.cfg.HeaderDigest == DigestRequired && !n.params.HeaderDigest {
		return fmt.Errorf("%w: the target requires HeaderDigest=CRC32C", ErrNegotiation)
	}
	if n.cfg.DataDigest == DigestRequired && !n.params.DataDigest {
		return fmt.Errorf("%w: the target requires DataDigest=CRC32C", ErrNegotiation)
	}
	return nil
}

// Params returns the parameters negotiated so far, defaults elsewhere.
func (n *Negotiator) Params() Params { return n.params }

// pickFromList returns the first of the offered values that appears in
// ours (both comma-separated lists).
func pickFromList(offered, ours string) (string, bool) {
	for o := range strings.SplitSeq(offered, ",") {
		for s := range strings.SplitSeq(ours, ",") {
			if o == s {
				return o, true
			}
		}
	}
	return "", false
}

// parseNumber parses a numerical value: decimal, or hexadecimal with a 0x
// prefix (RFC 7143 §6.1 numerical-value).
func parseNumber(s string) (uint64, error) {
	if len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") {
		return strconv.ParseUint(s[2:], 16, 64)
	}
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, fmt.Errorf("%w: bad number %q", ErrSyntax, s)
	}
	return strconv.ParseUint(s, 10, 64)
}

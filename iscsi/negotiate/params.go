package negotiate

import (
	"errors"
	"fmt"
)

// Params are the operational parameters in force on a connection and its
// session after login (RFC 7143 §13). Fields the initiator did not
// negotiate keep their RFC defaults.
type Params struct {
	// HeaderDigest and DataDigest report CRC32C digests on the connection.
	HeaderDigest, DataDigest bool
	// MaxConnections is the number of connections the session may have.
	MaxConnections uint32
	// InitialR2T reports that the initiator must wait for an R2T before
	// sending data beyond immediate data.
	InitialR2T bool
	// ImmediateData reports that data may accompany a SCSI Command PDU.
	ImmediateData bool
	// FirstBurstLength is the most unsolicited data per command.
	FirstBurstLength uint32
	// MaxBurstLength is the most data per R2T sequence or Data-In sequence.
	MaxBurstLength uint32
	// MaxOutstandingR2T is the most R2Ts outstanding per task.
	MaxOutstandingR2T uint32
	// InitiatorMaxRecvDataSegmentLength is the largest data segment the
	// target may send (the initiator's declaration).
	InitiatorMaxRecvDataSegmentLength uint32
	// TargetMaxRecvDataSegmentLength is the largest data segment the
	// initiator may send (the target's declaration).
	TargetMaxRecvDataSegmentLength uint32
	// DefaultTime2Wait and DefaultTime2Retain are the logout and
	// reconnect timers, in seconds.
	DefaultTime2Wait, DefaultTime2Retain uint32
	// DataPDUInOrder and DataSequenceInOrder report in-order data.
	DataPDUInOrder, DataSequenceInOrder bool
	// ErrorRecoveryLevel is the negotiated error recovery level.
	ErrorRecoveryLevel uint32
	// TaskReporting is RFC3720, ResponseFence or FastAbort.
	TaskReporting string
	// ProtocolLevel is the negotiated iSCSIProtocolLevel (RFC 7144).
	ProtocolLevel uint32
}

// DefaultParams returns the RFC 7143 defaults, in force before and
// without negotiation.
func DefaultParams() Params {
	return Params{
		MaxConnections:                    1,
		InitialR2T:                        true,
		ImmediateData:                     true,
		FirstBurstLength:                  65536,
		MaxBurstLength:                    262144,
		MaxOutstandingR2T:                 1,
		InitiatorMaxRecvDataSegmentLength: 8192,
		TargetMaxRecvDataSegmentLength:    8192,
		DefaultTime2Wait:                  2,
		DefaultTime2Retain:                20,
		DataPDUInOrder:                    true,
		DataSequenceInOrder:               true,
		TaskReporting:                     "RFC3720",
	}
}

// DigestPolicy says which digests the target accepts.
type DigestPolicy uint8

// Digest policies. The zero value accepts whatever the initiator prefers.
const (
	// DigestOptional answers with the initiator's first choice.
	DigestOptional DigestPolicy = iota
	// DigestRequired accepts only CRC32C.
	DigestRequired
	// DigestRefused accepts only None.
	DigestRefused
)

// Config is the target's side of negotiation. The zero value is valid and
// yields the defaults documented on each field.
type Config struct {
	// MaxRecvDataSegmentLength is the largest data segment the target
	// accepts (declared to the initiator). 0 means 262144.
	MaxRecvDataSegmentLength uint32
	// MaxBurstLength is the largest burst the target accepts (minimum
	// rule). 0 means 1048576.
	MaxBurstLength uint32
	// FirstBurstLength is the most unsolicited data the target accepts
	// (minimum rule). 0 means 262144.
	FirstBurstLength uint32
	// MaxOutstandingR2T is the most R2Ts per task the target will issue
	// (minimum rule). 0 means 8.
	MaxOutstandingR2T uint32
	// DefaultTime2Wait (maximum rule) and DefaultTime2Retain (minimum
	// rule) in seconds. Zero values answer 2 and 0: with error recovery
	// level 0 the target keeps no state for a reconnecting initiator.
	DefaultTime2Wait, DefaultTime2Retain uint32
	// MaxConnections is the most connections a session may have
	// (minimum rule, RFC 7143 §13.2). 0 means 1.
	MaxConnections uint32
	// ErrorRecoveryLevel is the highest error recovery level the target
	// accepts (minimum rule, RFC 7143 §13.20); 0 to 2. The server refuses
	// a level it does not implement.
	ErrorRecoveryLevel uint32
	// RequireInitialR2T refuses unsolicited data beyond immediate data.
	RequireInitialR2T bool
	// DisableImmediateData refuses data in SCSI Command PDUs.
	DisableImmediateData bool
	// HeaderDigest and DataDigest choose which digests are acceptable.
	HeaderDigest, DataDigest DigestPolicy
}

// Limits of numerical keys (RFC 7143 §13).
const (
	minDataSegment = 512
	maxDataSegment = 1<<24 - 1
	maxTime2       = 3600
)

// ErrConfig is wrapped by every error Config.Validate returns.
var ErrConfig = errors.New("negotiate: invalid configuration")

// Validate checks the configuration's values against the ranges RFC 7143
// allows for each key.
func (c Config) Validate() error {
	checkLen := func(name string, v uint32) error {
		if v != 0 && (v < minDataSegment || v > maxDataSegment) {
			return fmt.Errorf("%w: %s %d outside %d..%d", ErrConfig, name, v, minDataSegment, maxDataSegment)
		}
		return nil
	}
	for _, f := range []struct {
		name string
		v    uint32
	}{
		{"MaxRecvDataSegmentLength", c.MaxRecvDataSegmentLength},
		{"MaxBurstLength", c.MaxBurstLength},
		{"FirstBurstLength", c.FirstBurstLength},
	} {
		if err := checkLen(f.name, f.v); err != nil {
			return err
		}
	}
	d := c.withDefaults()
	if d.FirstBurstLength > d.MaxBurstLength {
		return fmt.Errorf("%w: FirstBurstLength %d exceeds MaxBurstLength %d", ErrConfig, d.FirstBurstLength, d.MaxBurstLength)
	}
	if c.MaxOutstandingR2T > 65535 {
		return fmt.Errorf("%w: MaxOutstandingR2T %d outside 1..65535", ErrConfig, c.MaxOutstandingR2T)
	}
	if c.MaxConnections > 65535 {
		return fmt.Errorf("%w: MaxConnections %d outside 1..65535", ErrConfig, c.MaxConnections)
	}
	if c.ErrorRecoveryLevel > 2 {
		return fmt.Errorf("%w: ErrorRecoveryLevel %d outside 0..2", ErrConfig, c.ErrorRecoveryLevel)
	}
	if c.DefaultTime2Wait > maxTime2 || c.DefaultTime2Retain > maxTime2 {
		return fmt.Errorf("%w: DefaultTime2Wait and DefaultTime2Retain must be at most %d", ErrConfig, maxTime2)
	}
	if c.HeaderDigest > DigestRefused || c.DataDigest > DigestRefused {
		return fmt.Errorf("%w: unknown digest policy", ErrConfig)
	}
	return nil
}

// withDefaults fills zero fields with their documented defaults.
func (c Config) withDefaults() Config {
	if c.MaxRecvDataSegmentLength == 0 {
		c.MaxRecvDataSegmentLength = 262144
	}
	if c.MaxBurstLength == 0 {
		c.MaxBurstLength = 1 << 20
	}
	if c.FirstBurstLength == 0 {
		c.FirstBurstLength = min(262144, c.MaxBurstLength)
	}
	if c.MaxOutstandingR2T == 0 {
		c.MaxOutstandingR2T = 8
	}
	if c.DefaultTime2Wait == 0 {
		c.DefaultTime2Wait = 2
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = 1
	}
	return c
}

// Effective returns the configuration in force: c with every zero field
// replaced by its documented default.
func (c Config) Effective() Config { return c.withDefaults() }

package scsi

import (
	"encoding/binary"
	"fmt"
)

// SenseKey is the sense key of SPC-4 §4.5.6.
type SenseKey byte

// Sense keys (SPC-4 table 48).
const (
	SenseNoSense        SenseKey = 0x0
	SenseRecoveredError SenseKey = 0x1
	SenseNotReady       SenseKey = 0x2
	SenseMediumError    SenseKey = 0x3
	SenseHardwareError  SenseKey = 0x4
	SenseIllegalRequest SenseKey = 0x5
	SenseUnitAttention  SenseKey = 0x6
	SenseDataProtect    SenseKey = 0x7
	SenseAbortedCommand SenseKey = 0xB
	SenseMiscompare     SenseKey = 0xE
)

// Sense is the content of sense data before it is encoded: a sense key, an
// additional sense code and qualifier, and the optional information and
// sense-key-specific fields.
type Sense struct {
	Key  SenseKey
	ASC  byte
	ASCQ byte
	// Info, when InfoValid, is the INFORMATION field (for example the LBA of
	// a medium error or the offset of a miscompare).
	Info      uint64
	InfoValid bool
	// Field, when FieldValid, points at the byte (and, with BitValid, the
	// bit) of the CDB (CDBField true) or parameter list that is in error.
	FieldValid bool
	CDBField   bool
	BitValid   bool
	Bit        uint8
	Field      uint16
}

// Error makes a Sense usable as the error a command handler returns.
func (s *Sense) Error() string {
	return fmt.Sprintf("scsi: sense key 0x%x asc/ascq 0x%02x/0x%02x", byte(s.Key), s.ASC, s.ASCQ)
}

// Fixed encodes s as fixed format sense data (response code 0x70, 18 bytes).
func (s *Sense) Fixed() []byte {
	b := make([]byte, 18)
	b[0] = 0x70
	b[2] = byte(s.Key) & 0x0f
	if s.InfoValid && s.Info <= 0xffffffff {
		// An INFORMATION value too wide for the fixed format's four
		// bytes is not reported (VALID stays 0; SPC-4 §4.5.3).
		b[0] |= 0x80
		binary.BigEndian.PutUint32(b[3:7], uint32(s.Info))
	}
	b[7] = 10
	b[12] = s.ASC
	b[13] = s.ASCQ
	if s.FieldValid {
		s.putSKS(b[15:18])
	}
	return b
}

// Descriptor encodes s as descriptor format sense data (response code 0x72)
// with an information descriptor and a sense-key-specific descriptor where
// they apply.
func (s *Sense) Descriptor() []byte {
	b := make([]byte, 8, 8+12+8)
	b[0] = 0x72
	b[1] = byte(s.Key) & 0x0f
	b[2] = s.ASC
	b[3] = s.ASCQ
	if s.InfoValid {
		d := make([]byte, 12)
		d[0] = 0x00
		d[1] = 0x0a
		d[2] = 0x80
		binary.BigEndian.PutUint64(d[4:12], s.Info)
		b = append(b, d...)
	}
	if s.FieldValid {
		d := make([]byte, 8)
		d[0] = 0x02
		d[1] = 0x06
		s.putSKS(d[4:7])
		b = append(b, d...)
	}
	b[7] = byte(len(b) - 8)
	return b
}

// putSKS writes the field pointer sense-key-specific bytes.
func (s *Sense) putSKS(b []byte) {
	b[0] = 0x80
	if s.CDBField {
		b[0] |= 0x40
	}
	if s.BitValid {
		b[0] |= 0x08 | (s.Bit & 0x07)
	}
	binary.BigEndian.PutUint16(b[1:3], s.Field)
}

// Encode returns s in descriptor format when descriptor is true, fixed
// format otherwise.
func (s *Sense) Encode(descriptor bool) []byte {
	if descriptor {
		return s.Descriptor()
	}
	return s.Fixed()
}

// IllegalRequestSense returns fixed format sense data with the ILLEGAL
// REQUEST key and the given additional sense code, for transports that must
// fail a command before it reaches a logical unit.
func IllegalRequestSense(asc, ascq byte) []byte {
	return (&Sense{Key: SenseIllegalRequest, ASC: asc, ASCQ: ascq}).Fixed()
}

// newSense returns a Sense with key and ASC/ASCQ only.
func newSense(key SenseKey, asc, ascq byte) *Sense {
	return &Sense{Key: key, ASC: asc, ASCQ: ascq}
}

// invalidField returns ILLEGAL REQUEST, INVALID FIELD IN CDB pointing at
// byte (and bit, when bit >= 0) of the CDB.
func invalidField(byteIndex int, bit int) *Sense {
	s := &Sense{Key: SenseIllegalRequest, ASC: 0x24, FieldValid: true, CDBField: true, Field: uint16(byteIndex)}
	if bit >= 0 {
		s.BitValid = true
		s.Bit = uint8(bit)
	}
	return s
}

// invalidParam returns ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST
// pointing at byte of the parameter data.
func invalidParam(byteIndex int) *Sense {
	return &Sense{Key: SenseIllegalRequest, ASC: 0x26, FieldValid: true, Field: uint16(byteIndex)}
}

// Frequently used sense conditions (SPC-4 Annex D).
var (
	errInvalidOpcode   = newSense(SenseIllegalRequest, 0x20, 0x00)
	errLBAOutOfRange   = newSense(SenseIllegalRequest, 0x21, 0x00)
	errParamLength     = newSense(SenseIllegalRequest, 0x1a, 0x00)
	errLUNNotSupported = newSense(SenseIllegalRequest, 0x25, 0x00)
	errSavingNotSupp   = newSense(SenseIllegalRequest, 0x39, 0x00)
	errWriteProtected  = newSense(SenseDataProtect, 0x27, 0x00)
	errMediumError     = newSense(SenseMediumError, 0x11, 0x00)
	errWriteError      = newSense(SenseMediumError, 0x0c, 0x00)
	errHardware        = newSense(SenseHardwareError, 0x44, 0x00)
	// errNoSpace: SPACE ALLOCATION FAILED WRITE PROTECT (backend.ErrNoSpace).
	errNoSpace = newSense(SenseDataProtect, 0x27, 0x07)
	// errNotReady: LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE
	// (backend.ErrNotReady).
	errNotReady = newSense(SenseNotReady, 0x04, 0x00)
	// errTransient: ABORTED COMMAND, which initiators retry
	// (backend.ErrTransient).
	errTransient       = newSense(SenseAbortedCommand, 0x00, 0x00)
	errTooMuchData     = newSense(SenseIllegalRequest, 0x0e, 0x03)
	errNotReadyStopped = newSense(SenseNotReady, 0x04, 0x02)
	// errNotReadyOffline: LOGICAL UNIT NOT READY, OFFLINE.
	errNotReadyOffline = newSense(SenseNotReady, 0x04, 0x12)
	// errSanitizing: LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS.
	errSanitizing = newSense(SenseNotReady, 0x04, 0x1b)
	// errSanitizeFailed: MEDIUM FORMAT CORRUPTED, SANITIZE COMMAND FAILED.
	errSanitizeFailed   = newSense(SenseMediumError, 0x31, 0x03)
	errMediumNotPresent = newSense(SenseNotReady, 0x3a, 0x02) // tray open
	// errRemovalPrevented: MEDIUM REMOVAL PREVENTED.
	errRemovalPrevented = newSense(SenseIllegalRequest, 0x53, 0x02)
	// errSoftwareWriteProtected: WRITE PROTECTED, LOGICAL UNIT SOFTWARE
	// WRITE PROTECTED (the SWP bit of the control mode page).
	errSoftwareWriteProtected = newSense(SenseDataProtect, 0x27, 0x02)
	// errInvalidRelease: INVALID RELEASE OF PERSISTENT RESERVATION.
	errInvalidRelease = newSense(SenseIllegalRequest, 0x26, 0x04)
)

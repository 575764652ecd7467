// Package isns speaks the Internet Storage Name Service protocol (iSNSP,
// RFC 4171) as a client: the message codec (a 12-byte header and
// tag-length-value attributes) and a Client that keeps a target's
// network entity, portals, storage nodes, portal groups and discovery
// domain membership registered with one or more iSNS servers.
//
// It is not on any data path: nothing here runs per SCSI command, and a
// server that is slow, down or refusing never holds up the caller.
package isns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// DefaultPort is the iSNS server's TCP port.
const DefaultPort = 3205

// version is the iSNSP version of RFC 4171.
const version = 1

// headerLen is the length of the iSNSP header.
const headerLen = 12

// maxPayload is the most payload one PDU carries (its length field is 16
// bits).
const maxPayload = 0xffff

// maxMessage bounds a message reassembled from several PDUs.
const maxMessage = 1 << 20

// Function is an iSNSP function ID (RFC 4171 §5.1.3). A response's ID is
// its request's with the high bit set.
type Function uint16

// Function IDs.
const (
	DevAttrReg Function = 0x0001
	DevAttrQry Function = 0x0002
	DevGetNext Function = 0x0003
	DevDereg   Function = 0x0004
	SCNReg     Function = 0x0005
	SCNDereg   Function = 0x0006
	SCNEvent   Function = 0x0007
	SCN        Function = 0x0008
	DDReg      Function = 0x0009
	DDDereg    Function = 0x000a
	DDSReg     Function = 0x000b
	DDSDereg   Function = 0x000c
	ESI        Function = 0x000d
	Heartbeat  Function = 0x000e
)

// responseBit marks a response's function ID.
const responseBit Function = 0x8000

// Response returns the function ID of f's response.
func (f Function) Response() Function { return f | responseBit }

// IsResponse reports whether f is a response's function ID.
func (f Function) IsResponse() bool { return f&responseBit != 0 }

// Header flags (RFC 4171 §5.1.4).
const (
	FlagClient  uint16 = 0x8000 // sender is the iSNS client
	FlagServer  uint16 = 0x4000 // sender is the iSNS server
	FlagAuth    uint16 = 0x2000 // an authentication block follows
	FlagReplace uint16 = 0x1000 // DevAttrReg replaces the key object
	FlagLast    uint16 = 0x0800 // last PDU of the message
	FlagFirst   uint16 = 0x0400 // first PDU of the message
)

// Tag is an attribute tag (RFC 4171 §6.1).
type Tag uint32

// Attribute tags this package uses.
const (
	TagDelimiter          Tag = 0
	TagEntityID           Tag = 1
	TagEntityProtocol     Tag = 2
	TagTimestamp          Tag = 4
	TagRegistrationPeriod Tag = 6
	TagEntityIndex        Tag = 7
	TagPortalIPAddress    Tag = 16
	TagPortalPort         Tag = 17
	TagPortalSymbolicName Tag = 18
	TagESIInterval        Tag = 19
	TagESIPort            Tag = 20
	TagPortalIndex        Tag = 22
	TagSCNPort            Tag = 23
	TagISCSIName          Tag = 32
	TagISCSINodeType      Tag = 33
	TagISCSIAlias         Tag = 34
	TagISCSISCNBitmap     Tag = 35
	TagISCSINodeIndex     Tag = 36
	TagPGISCSIName        Tag = 48
	TagPGPortalIPAddress  Tag = 49
	TagPGPortalPort       Tag = 50
	TagPGTag              Tag = 51
	TagPGIndex            Tag = 52
	TagDDID               Tag = 2065
	TagDDSymbolicName     Tag = 2066
	TagDDMemberISCSIIndex Tag = 2067
	TagDDMemberISCSIName  Tag = 2068
)

// Entity protocols (TagEntityProtocol).
const EntityProtocolISCSI = 2

// iSCSI node types (TagISCSINodeType): a bitmap.
const (
	NodeTarget    = 1 << 0
	NodeInitiator = 1 << 1
	NodeControl   = 1 << 2
)

// Status is a response's status code (RFC 4171 §5.4).
type Status uint32

// Status codes.
const (
	StatusSuccess                Status = 0
	StatusUnknownError           Status = 1
	StatusMessageFormatError     Status = 2
	StatusInvalidRegistration    Status = 3
	StatusInvalidQuery           Status = 5
	StatusSourceUnknown          Status = 6
	StatusSourceAbsent           Status = 7
	StatusSourceUnauthorized     Status = 8
	StatusNoSuchEntry            Status = 9
	StatusVersionNotSupported    Status = 10
	StatusInternalError          Status = 11
	StatusBusy                   Status = 12
	StatusOptionNotUnderstood    Status = 13
	StatusInvalidUpdate          Status = 14
	StatusMessageNotSupported    Status = 15
	StatusESINotAvailable        Status = 21
	StatusInvalidDeregistration  Status = 22
	StatusRegistrationNotSupport Status = 23
)

var statusNames = map[Status]string{
	StatusSuccess: "successful", StatusUnknownError: "unknown error", StatusMessageFormatError: "message format error",
	StatusInvalidRegistration: "invalid registration", StatusInvalidQuery: "invalid query",
	StatusSourceUnknown: "source unknown", StatusSourceAbsent: "source absent", StatusSourceUnauthorized: "source unauthorized",
	StatusNoSuchEntry: "no such entry", StatusVersionNotSupported: "version not supported", StatusInternalError: "internal error",
	StatusBusy: "busy", StatusOptionNotUnderstood: "option not understood", StatusInvalidUpdate: "invalid update",
	StatusMessageNotSupported: "message not supported", StatusESINotAvailable: "ESI not available",
	StatusInvalidDeregistration: "invalid deregistration", StatusRegistrationNotSupport: "registration feature not supported",
}

// String names the status as RFC 4171 does.
func (s Status) String() string {
	if n, ok := statusNames[s]; ok {
		return n
	}
	return fmt.Sprintf("status %d", uint32(s))
}

// ErrFormat is wrapped by every error about bytes that are not a
// well-formed iSNSP message.
var ErrFormat = errors.New("isns: malformed message")

func formatError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrFormat}, args...)...)
}

// Attr is one attribute: a tag and its value, which is empty for a
// delimiter and for the attributes a query asks for.
type Attr struct {
	Tag   Tag
	Value []byte
}

// Delimiter separates a message's key attributes from its operating
// attributes.
func Delimiter() Attr { return Attr{Tag: TagDelimiter} }

// Empty is tag with no value: what a query asks the server to return.
func Empty(tag Tag) Attr { return Attr{Tag: tag} }

// String is a string attribute: UTF-8, NUL-terminated and padded with
// NULs to a multiple of four bytes.
func String(tag Tag, s string) Attr {
	b := make([]byte, (len(s)+4)&^3)
	copy(b, s)
	return Attr{Tag: tag, Value: b}
}

// Uint32 is a 32-bit attribute.
func Uint32(tag Tag, v uint32) Attr {
	return Attr{Tag: tag, Value: binary.BigEndian.AppendUint32(nil, v)}
}

// Addr is an IP address attribute: 16 bytes, IPv4 as IPv4-mapped IPv6.
func Addr(tag Tag, a netip.Addr) Attr {
	b := a.As16() // IPv4 comes out IPv4-mapped
	return Attr{Tag: tag, Value: b[:]}
}

// Port is a TCP port attribute (the UDP bit clear).
func Port(tag Tag, port uint16) Attr { return Uint32(tag, uint32(port)) }

// AsString returns a string attribute's value without its NUL padding.
func (a Attr) AsString() (string, error) {
	v := a.Value
	n := len(v)
	for n > 0 && v[n-1] == 0 {
		n--
	}
	if n == len(v) && len(v) > 0 {
		return "", formatError("attribute %d: string not NUL-terminated", a.Tag)
	}
	return string(v[:n]), nil
}

// AsUint32 returns a 32-bit attribute's value.
func (a Attr) AsUint32() (uint32, error) {
	if len(a.Value) != 4 {
		return 0, formatError("attribute %d: %d bytes, not a 32-bit value", a.Tag, len(a.Value))
	}
	return binary.BigEndian.Uint32(a.Value), nil
}

// AsAddr returns an IP address attribute's value (IPv4-mapped addresses
// as IPv4).
func (a Attr) AsAddr() (netip.Addr, error) {
	if len(a.Value) != 16 {
		return netip.Addr{}, formatError("attribute %d: %d bytes, not an IP address", a.Tag, len(a.Value))
	}
	return netip.AddrFrom16([16]byte(a.Value)).Unmap(), nil
}

// Message is one iSNSP message: a request (Attrs are the source, the key
// attributes, a delimiter and the operating attributes) or a response
// (Status, then the attributes).
type Message struct {
	Function Function
	// Flags are the header flags; the encoder sets FlagFirst and
	// FlagLast itself.
	Flags uint16
	// XID is the transaction ID that pairs a response with its request.
	XID uint16
	// Status is a response's status code; requests have none.
	Status Status
	Attrs  []Attr
}

// Get returns the first attribute with tag.
func (m *Message) Get(tag Tag) (Attr, bool) {
	for _, a := range m.Attrs {
		if a.Tag == tag {
			return a, true
		}
	}
	return Attr{}, false
}

// All returns every attribute with tag, in order.
func (m *Message) All(tag Tag) []Attr {
	var out []Attr
	for _, a := range m.Attrs {
		if a.Tag == tag {
			out = append(out, a)
		}
	}
	return out
}

// payloadLen is the length of m's payload.
func (m *Message) payloadLen() int {
	n := 0
	if m.Function.IsResponse() {
		n = 4
	}
	for _, a := range m.Attrs {
		n += 8 + len(a.Value)
	}
	return n
}

// Append appends m, encoded as one PDU, to dst. It fails for an
// attribute whose value is not a multiple of four bytes, and for a
// message too long for one PDU (this client never sends one).
func (m *Message) Append(dst []byte) ([]byte, error) {
	n := m.payloadLen()
	if n > maxPayload {
		return dst, fmt.Errorf("isns: message of %d bytes is too long for one PDU", n)
	}
	var h [headerLen]byte
	binary.BigEndian.PutUint16(h[0:], version)
	binary.BigEndian.PutUint16(h[2:], uint16(m.Function))
	binary.BigEndian.PutUint16(h[4:], uint16(n))
	binary.BigEndian.PutUint16(h[6:], m.Flags|FlagFirst|FlagLast)
	binary.BigEndian.PutUint16(h[8:], m.XID)
	dst = append(dst, h[:]...)
	if m.Function.IsResponse() {
		dst = binary.BigEndian.AppendUint32(dst, uint32(m.Status))
	}
	for _, a := range m.Attrs {
		if len(a.Value)%4 != 0 {
			return dst, fmt.Errorf("isns: attribute %d has %d bytes, not a multiple of 4", a.Tag, len(a.Value))
		}
		dst = binary.BigEndian.AppendUint32(dst, uint32(a.Tag))
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(a.Value)))
		dst = append(dst, a.Value...)
	}
	return dst, nil
}

// header is a decoded PDU header.
type header struct {
	function Function
	length   int
	flags    uint16
	xid      uint16
	seq      uint16
}

func parseHeader(b []byte) (header, error) {
	if v := binary.BigEndian.Uint16(b[0:]); v != version {
		return header{}, formatError("version %d", v)
	}
	return header{
		function: Function(binary.BigEndian.Uint16(b[2:])),
		length:   int(binary.BigEndian.Uint16(b[4:])),
		flags:    binary.BigEndian.Uint16(b[6:]),
		xid:      binary.BigEndian.Uint16(b[8:]),
		seq:      binary.BigEndian.Uint16(b[10:]),
	}, nil
}

// Decode decodes a message from one PDU, which must be exactly b.
func Decode(b []byte) (*Message, error) {
	if len(b) < headerLen {
		return nil, formatError("%d bytes, shorter than the header", len(b))
	}
	h, err := parseHeader(b)
	if err != nil {
		return nil, err
	}
	if h.length != len(b)-headerLen {
		return nil, formatError("PDU length %d, but %d bytes follow the header", h.length, len(b)-headerLen)
	}
	if h.flags&FlagAuth != 0 {
		return nil, formatError("authentication blocks are not supported")
	}
	return decodePayload(h, b[headerLen:])
}

// decodePayload decodes a message's whole payload.
func decodePayload(h header, p []byte) (*Message, error) {
	m := &Message{Function: h.function, Flags: h.flags &^ (FlagFirst | FlagLast), XID: h.xid}
	if h.function.IsResponse() {
		if len(p) < 4 {
			return nil, formatError("response without a status code")
		}
		m.Status = Status(binary.BigEndian.Uint32(p))
		p = p[4:]
	}
	for len(p) > 0 {
		if len(p) < 8 {
			return nil, formatError("%d bytes left, shorter than an attribute header", len(p))
		}
		tag := Tag(binary.BigEndian.Uint32(p))
		n := binary.BigEndian.Uint32(p[4:])
		if uint64(n) > uint64(len(p)-8) {
			return nil, formatError("attribute %d of %d bytes overruns the message", tag, n)
		}
		if n%4 != 0 {
			return nil, formatError("attribute %d has %d bytes, not a multiple of 4", tag, n)
		}
		m.Attrs = append(m.Attrs, Attr{Tag: tag, Value: p[8 : 8+n : 8+n]})
		p = p[8+n:]
	}
	return m, nil
}

// ReadMessage reads one message from r, joining the PDUs of a message
// sent in several (by sequence ID, up to the one flagged last).
func ReadMessage(r io.Reader) (*Message, error) {
	var hb [headerLen]byte
	var payload []byte
	var first header
	for seq := 0; ; seq++ {
		if _, err := io.ReadFull(r, hb[:]); err != nil {
			if seq > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		h, err := parseHeader(hb[:])
		if err != nil {
			return nil, err
		}
		if h.flags&FlagAuth != 0 {
			return nil, formatError("authentication blocks are not supported")
		}
		if seq == 0 {
			first = h
		} else if h.function != first.function || h.xid != first.xid {
			return nil, formatError("PDU of function %#x, transaction %d inside a message of function %#x, transaction %d", h.function, h.xid, first.function, first.xid)
		}
		if int(h.seq) != seq {
			return nil, formatError("PDU sequence %d where %d was due", h.seq, seq)
		}
		if len(payload)+h.length > maxMessage {
			return nil, formatError("message longer than %d bytes", maxMessage)
		}
		payload = append(payload, make([]byte, h.length)...)
		if _, err := io.ReadFull(r, payload[len(payload)-h.length:]); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if h.flags&FlagLast != 0 {
			return decodePayload(first, payload)
		}
	}
}

// StatusError is a response that reports a failure.
type StatusError struct {
	Function Function
	Status   Status
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("isns: %s answered: %v", e.Function&^responseBit, e.Status)
}

// String names the function as RFC 4171 does.
func (f Function) String() string {
	names := map[Function]string{
		DevAttrReg: "DevAttrReg", DevAttrQry: "DevAttrQry", DevGetNext: "DevGetNext", DevDereg: "DevDereg",
		SCNReg: "SCNReg", SCNDereg: "SCNDereg", SCNEvent: "SCNEvent", SCN: "SCN", DDReg: "DDReg", DDDereg: "DDDereg",
		DDSReg: "DDSReg", DDSDereg: "DDSDereg", ESI: "ESI", Heartbeat: "Heartbeat",
	}
	if n, ok := names[f&^responseBit]; ok {
		if f.IsResponse() {
			return n + "Rsp"
		}
		return n
	}
	return fmt.Sprintf("function %#04x", uint16(f))
}

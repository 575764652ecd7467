package pdu

import (
	"reflect"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSequenceNumbersThroughTheCodec sets StatSN, ExpCmdSN and MaxCmdSN
// on the encoded form of every target message and checks that decoding
// reads them back in the message's own fields: the setters a connection
// uses agree with each message's layout.
func TestSequenceNumbersThroughTheCodec(t *testing.T) {
	msgs := []Message{
		&SCSIResponse{}, &DataIn{HasStatus: true, Final: true}, &R2T{TTT: 1, DesiredDataTransferLength: 512},
		&LoginResponse{}, &TextResponse{Final: true, TTT: ReservedTag}, &LogoutResponse{},
		&NOPIn{ITT: 1, TTT: ReservedTag}, &TaskMgmtResponse{}, &AsyncMessage{}, &Reject{Header: make([]byte, BHSLen)},
	}
	for _, m := range msgs {
		name := reflect.TypeOf(m).Elem().Name()
		var p PDU
		m.Encode(&p)
		require.Equal(t, m.Opcode(), p.Opcode(), name)
		p.SetStatSN(0x01020304)
		p.SetCommandWindow(0x11121314, 0x21222324)
		require.Equal(t, uint32(0x01020304), p.StatSN(), name)
		exp, max := p.CommandWindow()
		require.Equal(t, [2]uint32{0x11121314, 0x21222324}, [2]uint32{exp, max}, name)

		got := reflect.New(reflect.TypeOf(m).Elem()).Interface().(Message)
		require.NoError(t, got.Decode(&p), name)
		v := reflect.ValueOf(got).Elem()
		require.Equal(t, uint64(0x01020304), v.FieldByName("StatSN").Uint(), name)
		require.Equal(t, uint64(0x11121314), v.FieldByName("ExpCmdSN").Uint(), name)
		require.Equal(t, uint64(0x21222324), v.FieldByName("MaxCmdSN").Uint(), name)
	}
}

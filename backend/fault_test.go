package backend

import (
	"bytes"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestFaulty(t *testing.T) {
	pattern := bytes.Repeat([]byte{0xaa}, 4096)
	tests := []struct {
		name    string
		fault   Fault
		op      func(d *Faulty) (int, error)
		wantN   int
		wantErr error
		wantOff int64
		check   func(t *testing.T, mem *Memory)
	}{
		{
			name:  "no fault outside the range",
			fault: Fault{Op: FaultRead | FaultWrite, Off: 8192, Len: 512, Fail: true},
			op:    func(d *Faulty) (int, error) { return d.WriteAt(pattern, 0) },
			wantN: 4096,
		},
		{
			name:    "read fails at the first bad byte",
			fault:   Fault{Op: FaultRead, Off: 1024, Len: 512, Fail: true},
			op:      func(d *Faulty) (int, error) { return d.ReadAt(make([]byte, 4096), 0) },
			wantN:   1024,
			wantErr: syscall.EIO,
			wantOff: 1024,
		},
		{
			name:    "write fails and writes only what comes before",
			fault:   Fault{Op: FaultWrite, Off: 2048, Len: 512, Fail: true},
			op:      func(d *Faulty) (int, error) { return d.WriteAt(pattern, 0) },
			wantN:   2048,
			wantErr: ErrInjected,
			wantOff: 2048,
			check: func(t *testing.T, mem *Memory) {
				b := make([]byte, 4096)
				_, err := mem.ReadAt(b, 0)
				require.NoError(t, err)
				require.Equal(t, pattern[:2048], b[:2048])
				require.Equal(t, make([]byte, 2048), b[2048:])
			},
		},
		{
			name:    "torn write",
			fault:   Fault{Op: FaultWrite, Fail: true, Torn: true, TearAt: 700},
			op:      func(d *Faulty) (int, error) { return d.WriteAt(pattern, 0) },
			wantN:   700,
			wantErr: ErrInjected,
			wantOff: 700,
			check: func(t *testing.T, mem *Memory) {
				b := make([]byte, 4096)
				_, err := mem.ReadAt(b, 0)
				require.NoError(t, err)
				require.Equal(t, pattern[:700], b[:700])
				require.Equal(t, make([]byte, 4096-700), b[700:])
			},
		},
		{
			name:    "own error",
			fault:   Fault{Op: FaultSync, Fail: true, Err: ErrClosed},
			op:      func(d *Faulty) (int, error) { return 0, d.Sync() },
			wantErr: ErrClosed,
		},
		{
			name:  "delay only",
			fault: Fault{Op: FaultRead, Delay: 10 * time.Millisecond},
			op:    func(d *Faulty) (int, error) { return d.ReadAt(make([]byte, 512), 0) },
			wantN: 512,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := NewMemory(1 << 20)
			d := NewFaulty(mem)
			d.Add(tt.fault)
			n, err := tt.op(d)
			require.Equal(t, tt.wantN, n)
			if tt.wantErr == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.wantErr)
			var ie *InjectedError
			if errors.As(err, &ie) {
				require.Equal(t, tt.wantOff, ie.Off)
			}
			if tt.check != nil {
				tt.check(t, mem)
			}
		})
	}
}

func TestFaultyCountHoldAndClear(t *testing.T) {
	d := NewFaulty(NewMemory(1 << 20))
	d.Add(Fault{Op: FaultWrite, Fail: true, Count: 1})
	_, err := d.WriteAt(make([]byte, 512), 0)
	require.ErrorIs(t, err, syscall.EIO)
	_, err = d.WriteAt(make([]byte, 512), 0)
	require.NoError(t, err, "a fault with Count 1 fires once")
	require.Equal(t, 1, d.Hits())

	hold := make(chan struct{})
	d.Add(Fault{Op: FaultRead, Hold: hold})
	done := make(chan error, 1)
	go func() { _, err := d.ReadAt(make([]byte, 512), 0); done <- err }()
	select {
	case <-done:
		t.Fatal("a held read returned")
	case <-time.After(20 * time.Millisecond):
	}
	close(hold)
	require.NoError(t, <-done)

	d.Clear()
	d.Add(Fault{Op: FaultWrite, Off: 0, Len: 512, Fail: true})
	require.ErrorIs(t, d.Unmap(0, 4096), ErrInjected)
	d.Clear()
	require.NoError(t, d.Unmap(0, 4096))
	_, _, err = d.Allocation(0)
	require.NoError(t, err)
	_, _, err = NewFaulty(NewNull(1 << 20)).Allocation(0)
	require.ErrorIs(t, err, ErrUnsupported)
}

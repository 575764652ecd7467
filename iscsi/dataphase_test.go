package iscsi_test

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/iscsi/pdu"
	"github.com/iscsikit/iscsikit/scsi"
)

// TestDataOutDigestErrorAtERL0DropsConnection corrupts the data digest of
// a solicited Data-Out. At ErrorRecoveryLevel 0 the data cannot be asked
// for again, so the target drops the connection (as LIO does) instead of
// leaving the write waiting for data that never comes.
func TestDataOutDigestErrorAtERL0DropsConnection(t *testing.T) {
	h := startServer(t, iscsi.Options{NopInterval: -1})
	c := h.login(t, initiator.Options{HeaderDigest: true, DataDigest: true})
	cdb := make([]byte, 10)
	cdb[0] = 0x2a
	binary.BigEndian.PutUint16(cdb[7:], 8)
	itt := c.NextITT()
	var p pdu.PDU
	(&pdu.SCSICommand{Final: true, Write: true, Attr: 1, ITT: itt, CmdSN: c.NextCmdSN(), ExpStatSN: c.ExpStatSN(),
		ExpectedDataTransferLength: 8 * blockSize, CDB: cdb}).Encode(&p)
	require.NoError(t, c.SendPDU(&p))
	got, err := c.ReadPDU(ctxT(t))
	require.NoError(t, err)
	var r2t pdu.R2T
	require.NoError(t, r2t.Decode(got))
	(&pdu.DataOut{Final: true, ITT: itt, TTT: r2t.TTT, ExpStatSN: c.ExpStatSN(), Data: make([]byte, 8*blockSize)}).Encode(&p)
	b := c.Encode(&p)
	b[len(b)-1] ^= 0xff
	require.NoError(t, c.WriteRaw(b))
	select {
	case <-c.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("the connection stayed up after a data digest error at ErrorRecoveryLevel 0")
	}
	// The session's task ended with it: a new session works.
	c2 := h.login(t, initiator.Options{ISID: [6]byte{0x80, 0, 0, 0, 0, 9}})
	require.NoError(t, c2.TestUnitReady(ctxT(t), 0))
}

// TestEarlyStatusWaitsForUnsolicitedData runs writes that end early with
// TASK SET FULL (the session's buffer budget) while their unsolicited
// Data-Out is on its way, under the parameters the Linux initiator showed
// the bug with. The status must wait for the Data-Out with the F bit and
// the data be dropped quietly (RFC 7143 §11.4): no Reject, ever.
func TestEarlyStatusWaitsForUnsolicitedData(t *testing.T) {
	h := startServer(t, iscsi.Options{NopInterval: -1, QueueDepth: 4, Negotiation: negotiate.Config{
		MaxRecvDataSegmentLength: 4096, MaxBurstLength: 16384, FirstBurstLength: 8192}})
	c := h.login(t, initiator.Options{Keys: []negotiate.Pair{
		{Key: "ImmediateData", Value: "No"}, {Key: "InitialR2T", Value: "No"},
		{Key: "FirstBurstLength", Value: "8192"}, {Key: "MaxBurstLength", Value: "16384"},
		{Key: "MaxRecvDataSegmentLength", Value: "4096"}}})
	st := c.Settings()
	require.False(t, st.ImmediateData)
	require.False(t, st.InitialR2T)
	require.Equal(t, 8192, st.FirstBurstLength)

	const workers, rounds, size = 4, 25, 64 << 10
	var wg sync.WaitGroup
	var mu sync.Mutex
	var full int
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lba := uint64(w * size / blockSize)
			for r := range rounds {
				data := make([]byte, size)
				for i := range data {
					data[i] = byte(w*7 + r + i)
				}
				for {
					err := c.WriteBlocks(ctxT(t), 0, lba, data, blockSize, false)
					var se *initiator.StatusError
					if errors.As(err, &se) && se.Status == byte(scsi.StatusTaskSetFull) {
						mu.Lock()
						full++
						mu.Unlock()
						continue
					}
					if err != nil {
						errs <- err
						return
					}
					break
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	t.Logf("%d writes met TASK SET FULL", full)
	require.NotZero(t, full, "no write met TASK SET FULL: the test did not exercise an early status")
	require.Zero(t, c.Rejects())
	require.Empty(t, c.Violations())
}

// TestEveryEarlyStatusWaitsForItsData sends writes that fail whatever
// their data (a transfer beyond MaxIOSize, a write past the end of the
// LUN) with their first burst unsolicited and the rest to be solicited:
// each gets its CHECK CONDITION, no Reject is sent for the data that was
// on its way, and the session goes on.
func TestEveryEarlyStatusWaitsForItsData(t *testing.T) {
	const maxIO = 64 << 10
	h := startServer(t, iscsi.Options{NopInterval: -1, MaxIOSize: maxIO, Negotiation: negotiate.Config{
		MaxRecvDataSegmentLength: 4096, MaxBurstLength: 16384, FirstBurstLength: 8192}})
	c := h.login(t, initiator.Options{Keys: []negotiate.Pair{
		{Key: "ImmediateData", Value: "No"}, {Key: "InitialR2T", Value: "No"},
		{Key: "FirstBurstLength", Value: "8192"}, {Key: "MaxBurstLength", Value: "16384"},
		{Key: "MaxRecvDataSegmentLength", Value: "4096"}}})
	write10 := func(lba uint32, blocks uint16) []byte {
		cdb := make([]byte, 10)
		cdb[0] = 0x2a
		binary.BigEndian.PutUint32(cdb[2:], lba)
		binary.BigEndian.PutUint16(cdb[7:], blocks)
		return cdb
	}
	tests := []struct {
		name     string
		cdb      []byte
		size     int
		key, asc byte
	}{
		{"beyond MaxIOSize", write10(0, 2*maxIO/blockSize), 2 * maxIO, 0x05, 0x24},
		{"past the end of the LUN", write10(lunBlocks-8, 32), 32 * blockSize, 0x05, 0x21},
	}
	for _, tt := range tests {
		for range 20 {
			resp, err := c.Do(ctxT(t), &initiator.Request{CDB: tt.cdb, DataOut: make([]byte, tt.size), Attr: initiator.AttrSimple})
			require.NoError(t, err, tt.name)
			require.Equal(t, byte(scsi.StatusCheckCondition), resp.Status, tt.name)
			key, asc, _ := resp.SenseKey()
			require.Equal(t, [2]byte{tt.key, tt.asc}, [2]byte{key, asc}, tt.name)
		}
	}
	require.NoError(t, c.TestUnitReady(ctxT(t), 0))
	require.Zero(t, c.Rejects())
	require.Empty(t, c.Violations())
}

// TestCommandLimitIsTheUnitsMaxTransferLength: with no MaxIOSize the
// most data a command may carry is what its unit advertises: a unit with
// a 128 KiB MaxTransferLength refuses a 256 KiB write with INVALID FIELD
// IN CDB (and takes none of its data), while a unit with 48 MiB, above
// the package default of 32 MiB, takes a 40 MiB write whole.
func TestCommandLimitIsTheUnitsMaxTransferLength(t *testing.T) {
	srv, err := iscsi.NewServer(iscsi.Options{NopInterval: -1})
	require.NoError(t, err)
	dev := scsi.NewTarget()
	// LUN 1 has 4 KiB blocks, so 40 MiB fits WRITE(10)'s 16-bit length.
	for lun, u := range []scsi.UnitConfig{{BlockSize: blockSize, MaxTransferLength: 128 << 10}, {BlockSize: 4096, MaxTransferLength: 48 << 20}} {
		lu, err := scsi.NewLogicalUnit(backend.NewMemory(64<<20), u)
		require.NoError(t, err)
		require.NoError(t, dev.Attach(uint16(lun), lu))
		t.Cleanup(func() { lu.Close() })
	}
	require.NoError(t, srv.AddTarget(&iscsi.Target{Name: testTarget, Device: dev}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	h := &harness{srv: srv, addr: l.Addr().String(), dev: dev}
	c := h.login(t, initiator.Options{})
	lun1 := scsi.EncodeLUN(1)
	_ = c.TestUnitReady(ctxT(t), lun1)

	small := make([]byte, 256<<10)
	err = c.WriteBlocks(ctxT(t), 0, 0, small, blockSize, false)
	var se *initiator.StatusError
	require.ErrorAs(t, err, &se)
	key, asc, _ := initiator.ParseSense(se.Sense)
	require.Equal(t, [2]byte{0x05, 0x24}, [2]byte{key, asc})

	big := make([]byte, 40<<20)
	for i := range big {
		big[i] = byte(i / 4096)
	}
	require.NoError(t, c.WriteBlocks(ctxT(t), lun1, 0, big, 4096, false))
	back, err := c.ReadBlocks(ctxT(t), lun1, 0, uint32(len(big)/4096), 4096)
	require.NoError(t, err)
	require.Equal(t, big, back)
	require.Zero(t, c.Rejects())
}

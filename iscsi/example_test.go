package iscsi_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/internal/initiator"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/scsi"
)

// serveMemoryLUN is what every example below starts from: a 64 MiB memory
// device as LUN 0 of target iqn, served on an ephemeral loopback port.
func serveMemoryLUN(opt iscsi.Options, iqn string) (*iscsi.Server, string, error) {
	lu, err := scsi.NewLogicalUnit(backend.NewMemory(64<<20), scsi.UnitConfig{BlockSize: 512})
	if err != nil {
		return nil, "", err
	}
	luns := scsi.NewTarget()
	if err := luns.Attach(0, lu); err != nil {
		return nil, "", err
	}
	srv, err := iscsi.NewServer(opt)
	if err != nil {
		return nil, "", err
	}
	if err := srv.AddTarget(&iscsi.Target{Name: iqn, Device: luns}); err != nil {
		return nil, "", err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	go srv.Serve(l)
	return srv, l.Addr().String(), nil
}

// Serve a memory-backed logical unit. An initiator (here the SDK's own test
// initiator; open-iscsi, ESXi or QEMU in production) logs in, writes a
// block and reads it back.
func Example() {
	ctx := context.Background()
	const iqn = "iqn.2026-11.com.example:memory"

	luns := scsi.NewTarget()
	lu, err := scsi.NewLogicalUnit(backend.NewMemory(64<<20), scsi.UnitConfig{BlockSize: 512})
	if err != nil {
		panic(err)
	}
	if err := luns.Attach(0, lu); err != nil {
		panic(err)
	}
	srv, err := iscsi.NewServer(iscsi.Options{})
	if err != nil {
		panic(err)
	}
	if err := srv.AddTarget(&iscsi.Target{Name: iqn, Device: luns}); err != nil {
		panic(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0") // a product listens on :3260
	if err != nil {
		panic(err)
	}
	go srv.Serve(l)
	defer srv.Close()

	c, err := initiator.Dial(ctx, l.Addr().String(), initiator.Options{TargetName: iqn})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	// The first command of a new nexus meets the power-on unit attention
	// (29/00), as with any SCSI device; initiators clear it with TEST UNIT
	// READY before real I/O.
	_ = c.TestUnitReady(ctx, 0)
	blocks, blockSize, err := c.ReadCapacity16(ctx, 0)
	if err != nil {
		panic(err)
	}
	fmt.Printf("LUN 0: %d blocks of %d bytes\n", blocks, blockSize)

	block := make([]byte, 512)
	copy(block, "hello, iSCSI")
	if err := c.WriteBlocks(ctx, 0, 7, block, 512, true); err != nil {
		panic(err)
	}
	back, err := c.ReadBlocks(ctx, 0, 7, 1, 512)
	if err != nil {
		panic(err)
	}
	fmt.Printf("block 7: %s\n", back[:12])
	// Output:
	// LUN 0: 131072 blocks of 512 bytes
	// block 7: hello, iSCSI
}

// Require CHAP for every normal session: the policy function decides per
// login (by initiator name, address, portal group or target) how it must
// authenticate and which credentials it may use.
func ExampleNewCHAPAuthenticator() {
	ctx := context.Background()
	const iqn = "iqn.2026-11.com.example:secured"

	auth := iscsi.NewCHAPAuthenticator(func(info iscsi.LoginInfo) (iscsi.AuthPolicy, error) {
		if info.Discovery() {
			return iscsi.AuthPolicy{Method: iscsi.AuthNone}, nil
		}
		return iscsi.AuthPolicy{
			Method:      iscsi.AuthCHAP,
			Credentials: []iscsi.CHAPCredential{{User: "alice", Secret: "a-secret-of-16ch"}},
		}, nil
	})
	srv, addr, err := serveMemoryLUN(iscsi.Options{Authenticator: auth}, iqn)
	if err != nil {
		panic(err)
	}
	defer srv.Close()

	for _, secret := range []string{"a-secret-of-16ch", "a-wrong-secret!!"} {
		c, err := initiator.Dial(ctx, addr, initiator.Options{
			TargetName: iqn,
			CHAP:       &initiator.CHAP{Username: "alice", Secret: secret},
		})
		var loginErr *initiator.LoginError
		switch {
		case err == nil:
			fmt.Println("logged in")
			c.Close()
		case errors.As(err, &loginErr):
			fmt.Printf("refused: status class %d detail %d\n", loginErr.Class, loginErr.Detail)
		default:
			panic(err)
		}
	}
	// Output:
	// logged in
	// refused: status class 2 detail 1
}

// Shut a server down gracefully: it stops accepting connections, logs every
// session out (or ends it when the context expires first) and returns once
// nothing of it runs any more.
func ExampleServer_Shutdown() {
	ctx := context.Background()
	const iqn = "iqn.2026-11.com.example:shutdown"
	srv, addr, err := serveMemoryLUN(iscsi.Options{}, iqn)
	if err != nil {
		panic(err)
	}
	c, err := initiator.Dial(ctx, addr, initiator.Options{TargetName: iqn})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	fmt.Println("sessions before:", len(srv.Sessions()))

	shutdownCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	fmt.Println("shutdown:", srv.Shutdown(shutdownCtx))
	fmt.Println("sessions after:", len(srv.Sessions()))
	<-c.Done()
	fmt.Println("initiator's connection ended")
	_, err = net.Dial("tcp", addr)
	fmt.Println("new connections refused:", err != nil)
	// Output:
	// sessions before: 1
	// shutdown: <nil>
	// sessions after: 0
	// initiator's connection ended
	// new connections refused: true
}

// Command embed is the smallest complete program built on iscsikit: one
// logical unit (a sparse file, or memory) served as LUN 0 of one target,
// shut down gracefully on SIGINT or SIGTERM. A product embeds the SDK the
// same way and adds its own configuration, storage and management on top
// (examples/iscsid is the full-featured daemon).
//
//	go run ./examples/embed -listen 127.0.0.1:3260 -file /tmp/lun0.img -size 1GiB
//	iscsi-ls -s iscsi://127.0.0.1:3260
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/scsi"
)

// config is the program's command line.
type config struct {
	listen string // portal address
	iqn    string // target name
	file   string // backing file; empty serves memory
	size   int64  // capacity in bytes
}

func main() {
	var c config
	flag.StringVar(&c.listen, "listen", "0.0.0.0:3260", "portal address (host:port)")
	flag.StringVar(&c.iqn, "iqn", "iqn.2026-11.io.iscsikit:embed", "target name")
	flag.StringVar(&c.file, "file", "", "backing file, created sparse when missing (default: memory)")
	flag.Int64Var(&c.size, "size", 64<<20, "capacity in bytes")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c, log, func(addr net.Addr) { log.Info("serving", "portal", addr.String(), "target", c.iqn) }); err != nil {
		log.Error("embed", "err", err)
		os.Exit(1)
	}
}

// run serves c until ctx ends, then shuts down gracefully. ready is called
// with the portal's address once it accepts connections.
func run(ctx context.Context, c config, log *slog.Logger, ready func(net.Addr)) error {
	dev, err := openDevice(c)
	if err != nil {
		return err
	}
	lu, err := scsi.NewLogicalUnit(dev, scsi.UnitConfig{BlockSize: 512, WriteCache: true})
	if err != nil {
		dev.Close()
		return err
	}
	defer lu.Close() // closes dev; after the server has stopped
	luns := scsi.NewTarget()
	if err := luns.Attach(0, lu); err != nil {
		return err
	}

	srv, err := iscsi.NewServer(iscsi.Options{Logger: log})
	if err != nil {
		return err
	}
	if err := srv.AddTarget(&iscsi.Target{Name: c.iqn, Device: luns}); err != nil {
		return err
	}
	l, err := net.Listen("tcp", c.listen)
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	ready(l.Addr())

	select {
	case err := <-served:
		return fmt.Errorf("portal %s: %w", c.listen, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-served; err != nil && !errors.Is(err, iscsi.ErrServerClosed) {
		return err
	}
	return nil
}

// openDevice opens c's backing storage.
func openDevice(c config) (backend.Device, error) {
	if c.size <= 0 || c.size%512 != 0 {
		return nil, fmt.Errorf("-size %d: want a positive multiple of 512", c.size)
	}
	if c.file == "" {
		return backend.NewMemory(c.size), nil
	}
	return backend.OpenFile(c.file, backend.FileOptions{Size: c.size, Create: true})
}

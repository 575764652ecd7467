// Command iscsid is the iscsikit example daemon: an iSCSI target that serves
// file-backed logical units.
//
// Started with an empty state directory it creates DIR/default.img, a 1 GiB
// sparse file, and serves it as LUN 0 of target
// iqn.2026-11.io.iscsikit:default on the portal address:
//
//	go run ./examples/iscsid --state ./iscsid-state --portal 0.0.0.0:3260
//	iscsi-ls -s iscsi://127.0.0.1:3260
//
// SIGINT and SIGTERM shut the daemon down gracefully: sessions are asked
// to log out and given a few seconds to do so.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/iscsikit/iscsikit/backend"
	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/scsi"
)

// Defaults of an empty state directory.
const (
	defaultTarget = "iqn.2026-11.io.iscsikit:default"
	defaultImage  = "default.img"
	defaultSize   = 1 << 30
)

func main() {
	state := flag.String("state", "./iscsid-state", "state directory (backing files and configuration)")
	portal := flag.String("portal", "0.0.0.0:3260", "portal address to listen on (host:port)")
	verbose := flag.Bool("v", false, "log debug messages")
	flag.Parse()

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	l, err := net.Listen("tcp", *portal)
	if err != nil {
		log.Error("cannot listen on portal", "portal", *portal, "err", err)
		os.Exit(1)
	}
	if err := run(ctx, *state, l, log); err != nil {
		log.Error("iscsid failed", "err", err)
		os.Exit(1)
	}
}

// run serves the state directory's targets on l until ctx is cancelled,
// then shuts down gracefully.
func run(ctx context.Context, stateDir string, l net.Listener, log *slog.Logger) error {
	defer l.Close()
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	srv, err := iscsi.NewServer(iscsi.Options{Logger: log})
	if err != nil {
		return err
	}
	lu, err := openDefaultUnit(filepath.Join(stateDir, defaultImage))
	if err != nil {
		return err
	}
	defer lu.Close()
	dev := scsi.NewTarget()
	if err := dev.Attach(0, lu); err != nil {
		return err
	}
	if err := srv.AddTarget(&iscsi.Target{Name: defaultTarget, Device: dev}); err != nil {
		return err
	}

	log.Info("iscsid serving", "portal", l.Addr().String(), "target", defaultTarget, "state", stateDir)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		log.Info("shutting down")
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// openDefaultUnit opens (creating sparse if missing) the default image and
// wraps it in a logical unit whose identity is stable across restarts.
func openDefaultUnit(path string) (*scsi.LogicalUnit, error) {
	f, err := backend.OpenFile(path, backend.FileOptions{Size: defaultSize, Create: true})
	if err != nil {
		return nil, err
	}
	h := fnv.New64a()
	h.Write([]byte(defaultTarget + "/0"))
	id := h.Sum64()
	lu, err := scsi.NewLogicalUnit(f, scsi.UnitConfig{
		BlockSize:  512,
		Serial:     fmt.Sprintf("%016x", id),
		DeviceID:   id,
		WriteCache: true,
		// The image is a sparse file: UNMAP and WRITE SAME punch holes.
		ThinProvisioning: true,
	})
	if err != nil {
		f.Close()
		return nil, err
	}
	return lu, nil
}

// Command iscsid is the iscsikit example daemon: an iSCSI target whose
// portals, targets and logical units come from DIR/config.json, managed
// by package mgmt.
//
// Started with an empty state directory it writes a configuration that
// serves DIR/default.img, a 1 GiB sparse file, as LUN 0 of target
// iqn.2026-11.io.iscsikit:default on the --portal address:
//
//	go run ./examples/iscsid --state ./iscsid-state --portal 0.0.0.0:3260
//	iscsi-ls -s iscsi://127.0.0.1:3260
//
// Later starts read DIR/config.json (--portal then has no effect) and
// refuse a broken file with a message naming the object and field. SIGHUP
// re-reads the file and applies the difference live; a broken file is
// refused and the running configuration stays. SIGINT and SIGTERM shut
// the daemon down gracefully: sessions are asked to log out and given a
// few seconds to do so.
//
// --api ADDR serves the management APIs of the five seeds on one HTTP
// listener (TrueNAS-style JSON-RPC at /api/current, FreeNAS v1.0 REST,
// the NAS shares API, targetd's JSON-RPC at /targetrpc and StorLever's
// REST API), behind HTTP Basic auth (--api-user, --api-password; required
// beyond loopback) and optionally TLS (--tls-cert, --tls-key). The TrueNAS
// WebSocket endpoints (ws://ADDR/api/current, ws://ADDR/websocket) log in
// inside the connection instead, with that account or its API keys (kept
// in DIR/api-keys.json). Everything they change goes through package
// mgmt: validated, saved in config.json and applied live. --pool NAME=DIR
// declares directory pools for volumes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/iscsikit/iscsikit/iscsi"
	"github.com/iscsikit/iscsikit/iscsi/negotiate"
	"github.com/iscsikit/iscsikit/mgmt"
)

// Defaults of an empty state directory.
const (
	defaultTarget = "iqn.2026-11.io.iscsikit:default"
	defaultImage  = "default.img"
	defaultSize   = 1 << 30
)

// config is what the command line says.
type config struct {
	stateDir string
	portal   string   // listen address written into a new configuration
	dirs     []string // directories FILE extents may live in
	api      apiConfig
	pools    poolFlags // --pool NAME=DIR: directory pools for volumes (seed 003)
	// loginTimeout and limits protect the portals from hostile clients;
	// zero values take package iscsi's defaults.
	loginTimeout time.Duration
	limits       iscsi.Limits
	pprof        string // address of the net/http/pprof listener, "" for none
	// erl and time2Retain are the highest ErrorRecoveryLevel and the
	// DefaultTime2Retain the target offers (connection recovery).
	erl, time2Retain uint
}

func main() {
	var c config
	var dirs string
	flag.StringVar(&c.stateDir, "state", "./iscsid-state", "state directory (config.json and backing files)")
	flag.StringVar(&c.portal, "portal", "0.0.0.0:3260", "portal address of a new configuration (host:port)")
	flag.StringVar(&dirs, "extent-dirs", "", "comma-separated directories FILE extents may use (default: the state directory)")
	flag.StringVar(&c.api.addr, "api", "", "management API address (host:port), off when empty: TrueNAS-style JSON-RPC at /api/current")
	flag.StringVar(&c.api.user, "api-user", "", "HTTP Basic user of the management API (required beyond loopback)")
	flag.StringVar(&c.api.password, "api-password", "", "HTTP Basic password of the management API")
	flag.StringVar(&c.api.tlsCert, "tls-cert", "", "serve the management API over TLS with this certificate (PEM)")
	flag.StringVar(&c.api.tlsKey, "tls-key", "", "private key (PEM) of --tls-cert")
	flag.Var(&c.pools, "pool", "a directory pool for volumes, NAME=DIR (repeatable; targetd's pool_list)")
	flag.DurationVar(&c.loginTimeout, "login-timeout", 15*time.Second, "drop a connection that has not finished logging in after this long")
	flag.IntVar(&c.limits.MaxConnections, "max-connections", 4096, "TCP connections open at once (-1: no limit)")
	flag.IntVar(&c.limits.MaxPendingLogins, "max-pending-logins", 256, "connections in login at once; beyond, the longest-idle one is dropped (-1: no limit)")
	flag.IntVar(&c.limits.MaxPendingLoginsPerSource, "max-pending-logins-per-source", 64, "connections in login at once from one IP address (-1: no limit)")
	flag.IntVar(&c.limits.MaxSessionsPerTarget, "max-sessions-per-target", 1024, "sessions of one target (-1: no limit)")
	flag.UintVar(&c.erl, "error-recovery-level", 0, "highest ErrorRecoveryLevel offered to initiators that ask (0-2; 1: digest recovery and SNACK, 2: also connection recovery)")
	flag.UintVar(&c.time2Retain, "time2retain", 0, "DefaultTime2Retain offered, in seconds: how long a failed connection's tasks wait for TASK REASSIGN at level 2 (0-3600)")
	flag.StringVar(&c.pprof, "pprof", "", "serve net/http/pprof on this address (host:port; keep it on loopback, e.g. 127.0.0.1:6060); off when empty")
	verbose := flag.Bool("v", false, "log debug messages")
	flag.Parse()
	if dirs != "" {
		c.dirs = strings.Split(dirs, ",")
	}

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	if err := run(ctx, c, hup, log); err != nil {
		log.Error("iscsid failed", "err", err)
		os.Exit(1)
	}
}

// run serves the state directory's configuration until ctx is cancelled,
// re-reading it on every value from hup, then shuts down gracefully.
func run(ctx context.Context, c config, hup <-chan os.Signal, log *slog.Logger) error {
	if err := c.api.check(); err != nil {
		return err
	}
	state, err := filepath.Abs(c.stateDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	dirs := c.dirs
	if len(dirs) == 0 {
		dirs = []string{state}
	}
	for _, p := range c.pools {
		dirs = append(dirs, p.Path)
	}
	if c.pprof != "" {
		_, stopProfiling, err := serveProfiling(c.pprof, log)
		if err != nil {
			return err
		}
		defer stopProfiling()
	}
	initial, err := defaultConfig(state, c.portal)
	if err != nil {
		return err
	}
	srv, err := iscsi.NewServer(iscsi.Options{Logger: log, LoginTimeout: c.loginTimeout, Limits: c.limits,
		Negotiation: negotiate.Config{ErrorRecoveryLevel: uint32(min(c.erl, 1<<31)), DefaultTime2Retain: uint32(min(c.time2Retain, 1<<31))}})
	if err != nil {
		return err
	}
	store := mgmt.FileStore{Dir: state}
	m, err := mgmt.New(ctx, mgmt.Options{Store: store, Server: srv, Initial: initial, Openers: extentOpeners(), AllowedDirs: dirs, ReservationDir: filepath.Join(state, "reservations"), KeyDir: filepath.Join(state, "keys"), Logger: log})
	if err != nil {
		return fmt.Errorf("%s refused:\n%w", store.Path(), err)
	}
	defer func() {
		if err := m.Close(); err != nil {
			log.Error("closing the configuration's units", "err", err)
		}
	}()
	if err := ensurePools(ctx, m, c.pools); err != nil {
		return err
	}
	if c.api.addr != "" {
		c.api.keysFile = filepath.Join(state, "api-keys.json")
		_, stopAPI, err := startAPI(c.api, m, srv, log)
		if err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			stopAPI(sctx)
		}()
	}
	cfg := m.Config(false)
	log.Info("iscsid serving", "config", store.Path(), "portals", len(cfg.Portals), "targets", len(cfg.Targets), "extents", len(cfg.Extents))

	for {
		select {
		case <-hup:
			if err := m.Reload(ctx); err != nil {
				log.Error("configuration refused; the running one stays", "config", store.Path(), "err", err)
				continue
			}
			cfg := m.Config(false)
			log.Info("configuration reloaded", "portals", len(cfg.Portals), "targets", len(cfg.Targets), "extents", len(cfg.Extents))
		case <-ctx.Done():
			log.Info("shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				return err
			}
			return nil
		}
	}
}

// defaultConfig is the configuration of an empty state directory: portal
// 1 on addr, initiator group 1 admitting every initiator, target
// "default" on both, and LUN 0 on a 1 GiB sparse file. Portal 1 and
// initiator group 1 are what seed 001's examples name.
func defaultConfig(state, addr string) (*mgmt.Config, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--portal %q: want ip:port (0.0.0.0:3260): %w", addr, err)
	}
	cfg := mgmt.EmptyConfig()
	p := mgmt.NewPortal()
	p.ID, p.Tag, p.Comment = 1, 1, "default portal"
	p.Listen = []mgmt.Listen{{IP: ap.Addr().String(), Port: int(ap.Port())}}
	t := mgmt.NewTarget()
	t.ID, t.Name, t.Alias = 1, defaultTarget, "default"
	all := 1
	t.Groups = []mgmt.TargetGroup{{Portal: 1, Initiator: &all, AuthMethod: mgmt.AuthNone}}
	e := mgmt.NewExtent()
	e.ID, e.Name, e.Type = 1, "default", mgmt.ExtentFile
	e.Path, e.Filesize = filepath.Join(state, defaultImage), defaultSize
	cfg.Portals = []mgmt.Portal{p}
	cfg.Initiators = []mgmt.Initiator{{ID: 1, Comment: "all initiators", Initiators: []string{}, AuthNetwork: []string{}}}
	cfg.Targets = []mgmt.Target{t}
	cfg.Extents = []mgmt.Extent{e}
	cfg.TargetExtents = []mgmt.TargetExtent{{ID: 1, Target: 1, Extent: 1, LunID: 0}}
	return cfg, nil
}

// openerBuilds are the extent types of backends compiled in only under a
// build tag: a file built with that tag adds its type's Opener in an init
// function (as an RBD backend under the tag rbd would), and iscsid hands
// them to mgmt next to FILE and DISK.
var openerBuilds = map[string]func() mgmt.Opener{}

// extentOpeners makes the openers of the extent types compiled in.
func extentOpeners() map[string]mgmt.Opener {
	out := map[string]mgmt.Opener{}
	for typ, mk := range openerBuilds {
		out[typ] = mk()
	}
	return out
}

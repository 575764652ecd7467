package scsi

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/iscsikit/iscsikit/backend"
)

// A logical unit's life: it serves commands from NewLogicalUnit until
// Close. Reopen swaps its device and configuration in between, and both
// first drain the commands in flight: new commands wait at the unit's
// gate (they are held, not failed) until the swap is done, so that a live
// edit of a unit never fails I/O. Close ends the wait of held commands;
// Target.Execute then looks the LUN up again, so a command held at a
// unit that was replaced in its Target runs on the replacement.

// DrainTimeout is how long Close waits for the commands in flight to end
// before it closes the device under them; those still running end with
// BUSY, a status initiators retry, and a device implementing
// backend.ContextDevice has their calls cancelled.
const DrainTimeout = 30 * time.Second

// ErrBusy matches the error of a Reopen whose context ended before the
// commands in flight did; the unit is as it was.
var ErrBusy = errors.New("scsi: commands in flight did not end in time")

// ErrUnitClosed is returned by Reopen and Close of a closed unit.
var ErrUnitClosed = errors.New("scsi: logical unit closed")

// gateHeld is the bit of gate.state set while the gate holds new
// commands; the bits below it count the commands in flight.
const gateHeld = 1 << 62

// gate counts a unit's commands in flight and holds new ones while the
// unit is drained. Entering and leaving are one atomic add each.
type gate struct {
	state atomic.Int64
	// drained receives (without blocking) when the last command leaves
	// while the gate holds.
	drained chan struct{}
	// forced is set once Close gave up waiting: commands that end later
	// report BUSY, whatever the closed device made of them.
	forced atomic.Bool

	mu sync.Mutex
	// resume is closed when a hold ends; nil while the gate is open.
	resume chan struct{}
	closed bool
}

func newGate() gate { return gate{drained: make(chan struct{}, 1)} }

// enter admits a command, waiting while the gate holds. It fails with
// ErrUnitClosed once the unit is closed, and with ctx's error if the
// command is aborted while it waits.
func (g *gate) enter(ctx context.Context) error {
	for {
		if g.state.Add(1)&gateHeld == 0 {
			return nil
		}
		g.leave()
		g.mu.Lock()
		closed, resume := g.closed, g.resume
		g.mu.Unlock()
		switch {
		case closed:
			return ErrUnitClosed
		case resume == nil:
			continue // the hold ended meanwhile
		}
		select {
		case <-resume:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// leave ends a command.
func (g *gate) leave() {
	if v := g.state.Add(-1); v == gateHeld {
		select {
		case g.drained <- struct{}{}:
		default:
		}
	}
}

// hold stops new commands and waits until none is in flight, or until
// ctx ends (then it returns ctx's error with the gate still holding).
func (g *gate) hold(ctx context.Context) error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return ErrUnitClosed
	}
	if g.resume == nil {
		g.resume = make(chan struct{})
	}
	g.mu.Unlock()
	g.state.Or(gateHeld)
	for g.state.Load() != gateHeld {
		select {
		case <-g.drained:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// release lets commands in again after hold.
func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.state.And(^int64(gateHeld))
	if g.resume != nil {
		close(g.resume)
		g.resume = nil
	}
}

// close ends a hold for good: waiting commands give up with
// ErrUnitClosed, and so does every later one.
func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	g.state.Or(gateHeld)
	if g.resume != nil {
		close(g.resume)
		g.resume = nil
	}
}

// Close drains the unit and closes it: new commands wait, the commands
// in flight end (after DrainTimeout the device is closed under those
// still running, which then report BUSY), background work stops (a
// SANITIZE with IMMED is cut short, to be resumed by the next unit on
// the device if UnitConfig.SanitizeState keeps it), and the device is
// closed. Commands waiting at the unit are then routed again by their
// Target: to the unit attached at their LUN in its place, if any. A
// second Close returns ErrUnitClosed.
func (lu *LogicalUnit) Close() error {
	lu.lifeMu.Lock()
	defer lu.lifeMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), DrainTimeout)
	defer cancel()
	if err := lu.gate.hold(ctx); errors.Is(err, ErrUnitClosed) {
		return err
	} else if err != nil {
		lu.gate.forced.Store(true)
		if lu.cfg.Logger != nil {
			lu.cfg.Logger.Warn("closing a logical unit under commands that did not end in time; they end BUSY", "in_flight", lu.gate.state.Load()&^gateHeld)
		}
	}
	lu.endLife()
	lu.background.Wait()
	lu.stopSharedPR()
	lu.gate.close()
	lu.offline("closed")
	return lu.dev.Close()
}

// Reopen gives the unit a new device and configuration while it stays
// attached, as a live edit of its storage or settings needs: the
// commands in flight end first and new ones wait (neither fails), then
// the device is swapped and the old one closed. What the unit holds for
// its nexuses stays: reservations, registrations, pending unit
// attentions and medium removal preventions. What changed is announced
// to every live nexus: CAPACITY DATA HAS CHANGED for a new size or block
// size, MODE PARAMETERS CHANGED for a new write cache or write
// protection, INQUIRY DATA HAS CHANGED for a new identity or feature. A
// cfg with an empty Serial or a nil NAA keeps the unit's.
//
// The unit takes dev only on success; on any error it is as it was and
// the caller still owns dev. cfg is checked against dev first
// (*ConfigError); if ctx ends before the commands in flight do, Reopen
// returns an error matching ErrBusy. Background work (a SANITIZE with
// IMMED) is cut short and resumed on the new device, as a restart would.
// The caller may pass a device over the same storage: both are open
// from PrepareReopen until Commit, which syncs and closes the old one
// before any command reaches the new one. Reopen is PrepareReopen and
// Commit.
func (lu *LogicalUnit) Reopen(ctx context.Context, dev backend.Device, cfg UnitConfig) error {
	r, err := lu.PrepareReopen(ctx, dev, cfg)
	if err != nil {
		return err
	}
	return r.Commit()
}

// Reopening is a Reopen half done: the new configuration is checked and
// the unit drained, its new commands waiting. Commit or Abort it soon:
// until then the unit serves nothing. A caller that must change several
// things at once, all or none (mgmt applying a configuration), prepares
// every reopen, does what else may fail, and then commits them all.
type Reopening struct {
	lu  *LogicalUnit
	dev backend.Device
	cfg UnitConfig
	geo geometry
}

// PrepareReopen checks cfg against dev and drains the unit (see Reopen).
// On error the unit is as it was and serving. Until the Reopening is
// committed or aborted, another PrepareReopen or a Close of the unit
// waits.
func (lu *LogicalUnit) PrepareReopen(ctx context.Context, dev backend.Device, cfg UnitConfig) (_ *Reopening, err error) {
	if dev == nil {
		return nil, configErr("device", "nil device")
	}
	lu.lifeMu.Lock()
	defer func() {
		if err != nil {
			lu.lifeMu.Unlock()
		}
	}()
	lu.mu.Lock()
	if cfg.Serial == "" {
		cfg.Serial = lu.cfg.Serial
	}
	if cfg.NAA == nil {
		cfg.NAA = lu.cfg.NAA
	}
	lu.mu.Unlock()
	geo, err := newGeometry(dev, &cfg)
	if err != nil {
		return nil, err
	}
	if err := lu.gate.hold(ctx); err != nil {
		if !errors.Is(err, ErrUnitClosed) {
			lu.gate.release()
			err = fmt.Errorf("%w: %w", ErrBusy, err)
		}
		return nil, err
	}
	return &Reopening{lu: lu, dev: dev, cfg: cfg, geo: geo}, nil
}

// Abort gives up the reopen: the unit serves on as it was, and the
// caller keeps the new device.
func (r *Reopening) Abort() {
	r.lu.gate.release()
	r.lu.lifeMu.Unlock()
}

// Commit swaps the device and configuration, syncs and closes the old
// device (a failure of either is logged: the swap is done), and then
// lets the held commands in. It fails only if the reopened unit cannot
// resume a sanitize its earlier device left unfinished (it then serves,
// reporting the sanitize failed).
func (r *Reopening) Commit() error {
	lu, cfg := r.lu, r.cfg
	lu.mu.Lock()
	wasSanitizing := lu.sanitizing
	lu.mu.Unlock()
	lu.endLife()
	lu.background.Wait()
	lu.switchSharedPR(cfg.SharedReservations)
	lu.mu.Lock()
	old, oldCfg, oldGeo := lu.dev, lu.cfg, lu.geometry
	lu.dev, lu.cfg, lu.geometry, lu.ctxDev = r.dev, cfg, r.geo, contextDevice(r.dev)
	lu.mu.Unlock()
	// The old device is flushed and closed while the gate still holds
	// new commands, and before a sanitize resumes on the new one: over
	// the same storage, the new device then reads what the old one had
	// cached, and nothing the old one flushes late lands over newer data.
	if err := old.Sync(); err != nil && cfg.Logger != nil {
		cfg.Logger.Error("flushing the device a reopened unit replaced", "err", err)
	}
	if err := old.Close(); err != nil && cfg.Logger != nil {
		cfg.Logger.Error("closing the device a reopened unit replaced", "err", err)
	}
	lu.mu.Lock()
	lu.announceLocked(oldCfg, oldGeo)
	if cfg.Reservations != nil {
		// The state goes to the new store as it is (the store may be a
		// new one, of a renamed unit).
		lu.pr.persisted = true
		if err := lu.savePRLocked(); err != nil && cfg.Logger != nil {
			cfg.Logger.Error("saving persistent reservations to the reopened unit's store", "err", err)
		}
	}
	lu.life, lu.endLife = context.WithCancel(context.Background())
	if wasSanitizing {
		// Cut short above, which does not make it failed: its record
		// (if kept) has it resumed below.
		lu.sanitizing, lu.sanitizeFailed = false, false
	}
	err := lu.resumeSanitize()
	lu.mu.Unlock()
	lu.gate.release()
	lu.lifeMu.Unlock()
	if cfg.Offline && !oldCfg.Offline {
		lu.offline("configured offline")
	}
	return err
}

// announceLocked raises the unit attentions of a reopen from oldCfg and
// oldGeo to the unit's current configuration, and brings the mode pages
// the configuration sets up to date. Called with lu.mu held.
func (lu *LogicalUnit) announceLocked(oldCfg UnitConfig, oldGeo geometry) {
	c := lu.cfg
	if lu.geometry != oldGeo {
		lu.addUALocked(uaCapacity, "")
	}
	if c.WriteCache != oldCfg.WriteCache {
		lu.mode.wce, lu.saved.wce = c.WriteCache, c.WriteCache
	}
	if c.WriteCache != oldCfg.WriteCache || c.ReadOnly != oldCfg.ReadOnly {
		lu.addUALocked(uaModeChanged, "")
	}
	if c.Vendor != oldCfg.Vendor || c.Product != oldCfg.Product || c.Revision != oldCfg.Revision ||
		c.Serial != oldCfg.Serial || string(c.NAA) != string(oldCfg.NAA) || c.Removable != oldCfg.Removable ||
		c.ThinProvisioning != oldCfg.ThinProvisioning || c.RotationRate != oldCfg.RotationRate ||
		c.ThirdPartyCopy != oldCfg.ThirdPartyCopy || c.CryptoErase != oldCfg.CryptoErase ||
		c.MaxTransferLength != oldCfg.MaxTransferLength {
		lu.addUALocked(uaInquiryChanged, "")
	}
}

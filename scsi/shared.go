package scsi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
)

// SharedStateStore keeps one logical unit's persistent reservations where
// every unit serving the same medium reads and writes them: the gateways
// that export one RBD image each run a unit over it, and all of them see
// the same registrations and reservation. The unit encodes the state
// itself; the store keeps bytes under a version, changes them only by
// compare-and-swap, and tells every watcher when they change.
//
// Implementations must be safe for concurrent use. Package backend/rbd
// implements it on a RADOS object (ReservationStore, build tag ceph).
type SharedStateStore interface {
	// Load returns the stored bytes and their version: nil and 0 when
	// nothing is stored yet. A version is never reused and grows with
	// every change.
	Load(ctx context.Context) (data []byte, version uint64, err error)
	// CompareAndSwap stores data if the stored version is still version
	// (0: nothing stored yet) and returns the new version; if another
	// writer changed it first it stores nothing and returns swapped
	// false. A successful swap tells the watchers before it returns
	// and, as far as the store can, waits for them to have run their
	// change callback (or timed out), so a change is in force on the
	// other units when the command that made it completes.
	CompareAndSwap(ctx context.Context, version uint64, data []byte) (newVersion uint64, swapped bool, err error)
	// Watch calls changed whenever the stored data may have changed:
	// after every swap, and after the store lost and re-established its
	// watch (when changes may have been missed). Calls do not overlap;
	// the store waits for changed to return before it acknowledges the
	// change to the writer. Stop ends the calls.
	Watch(changed func()) (stop func(), err error)
}

// Shared reservation timing.
const (
	// sharedPRTimeout bounds each access of a shared store: a command
	// that cannot reach it in time ends NOT READY.
	sharedPRTimeout = 10 * time.Second
	// sharedPRPoll is how often a unit reloads a shared store's state
	// without a notification, the bound on how long a lost notification
	// can leave its copy stale.
	sharedPRPoll = 10 * time.Second
	// sharedPRAttempts bounds the compare-and-swap retries of one
	// PERSISTENT RESERVE OUT; past it the command ends ABORTED COMMAND,
	// which initiators retry.
	sharedPRAttempts = 32
	// sharedPREvents is how many commits' unit attentions the state
	// keeps for units that have not caught up yet.
	sharedPREvents = 32
)

// What a commit owes a nexus (prEvent.What).
const (
	eventRegsPreempted = "registrations-preempted"
	eventResvPreempted = "reservations-preempted"
	eventResvReleased  = "reservation-released"
	eventAbort         = "aborted"
	// eventLUReset is a LOGICAL UNIT RESET taken by the nexus the event
	// names: every other unit tells its live nexuses 29/03.
	eventLUReset = "lu-reset"
)

// eventOf names the unit attention s for the shared state.
func eventOf(s *Sense) string {
	switch s {
	case uaRegsPreempted:
		return eventRegsPreempted
	case uaResvPreempted:
		return eventResvPreempted
	}
	return eventResvReleased
}

// prEvent is a unit attention (or the abort of its tasks) one commit of a
// shared state owes a nexus; the unit that serves the nexus delivers it
// when it adopts the commit.
type prEvent struct {
	Seq   uint64 `json:"seq"`
	Nexus string `json:"nexus"`
	What  string `json:"what"`
}

// prTx collects what a PERSISTENT RESERVE OUT running on a trial state
// owes, for its commit.
type prTx struct{ events []prEvent }

func (t *prTx) owe(key, what string) {
	t.events = append(t.events, prEvent{Nexus: key, What: what})
}

// sharedPR is a unit's side of its shared reservation store.
type sharedPR struct {
	store SharedStateStore
	// op serializes the unit's PERSISTENT RESERVE OUT transactions.
	op sync.Mutex
	// version and seq are those of the state lu.pr copies, loaded
	// whether anything was adopted yet; tx is set while a service
	// action runs on a trial state. All guarded by lu.mu.
	version uint64
	seq     uint64
	loaded  bool
	tx      *prTx
	// kick wakes the refresher; done ends it; stop ends the watch.
	kick chan struct{}
	done chan struct{}
	stop func()
	wg   sync.WaitGroup
}

// errSharedStore is the sense of a command that could not read or commit
// the shared reservation state: LOGICAL UNIT NOT READY, CAUSE NOT
// REPORTABLE, which initiators retry.
var errSharedStore = errNotReady

// startSharedPR loads the shared state and starts following it. A store
// that cannot be read fails the unit's creation.
func (lu *LogicalUnit) startSharedPR() error {
	if lu.cfg.SharedReservations == nil {
		return nil
	}
	sh := &sharedPR{store: lu.cfg.SharedReservations, kick: make(chan struct{}, 1), done: make(chan struct{})}
	lu.prShared = sh
	ctx, cancel := context.WithTimeout(context.Background(), sharedPRTimeout)
	defer cancel()
	if err := lu.syncSharedPR(ctx); err != nil {
		lu.prShared = nil
		return fmt.Errorf("scsi: shared persistent reservations: %w", err)
	}
	if err := lu.watchSharedPR(sh); err != nil {
		lu.prShared = nil
		return err
	}
	sh.wg.Add(1)
	go lu.pollSharedPR(sh)
	return nil
}

// switchSharedPR follows the shared store of a reopened unit's new
// configuration, if it is another one than the unit followed. A new
// store that cannot be read or watched now is retried by the poller;
// until then PERSISTENT RESERVE commands read it themselves (and end NOT
// READY while it fails).
func (lu *LogicalUnit) switchSharedPR(store SharedStateStore) {
	if old := lu.prShared; old != nil {
		if old.store == store {
			return
		}
		lu.stopSharedPR()
		lu.prShared = nil
	}
	if store == nil {
		return
	}
	sh := &sharedPR{store: store, kick: make(chan struct{}, 1), done: make(chan struct{})}
	lu.prShared = sh
	ctx, cancel := context.WithTimeout(context.Background(), sharedPRTimeout)
	defer cancel()
	if err := lu.syncSharedPR(ctx); err != nil {
		lu.logSharedPR("loading the reopened unit's shared persistent reservations", err)
	}
	if err := lu.watchSharedPR(sh); err != nil {
		lu.logSharedPR("watching the reopened unit's shared persistent reservations", err)
	}
	sh.wg.Add(1)
	go lu.pollSharedPR(sh)
}

// watchSharedPR starts the store's change notifications.
func (lu *LogicalUnit) watchSharedPR(sh *sharedPR) error {
	stop, err := sh.store.Watch(lu.sharedPRChanged)
	if err != nil {
		return fmt.Errorf("scsi: shared persistent reservations: watch: %w", err)
	}
	lu.mu.Lock()
	sh.stop = stop
	lu.mu.Unlock()
	return nil
}

// stopSharedPR ends the watch and the refresher (Close, Reopen).
func (lu *LogicalUnit) stopSharedPR() {
	sh := lu.prShared
	if sh == nil {
		return
	}
	close(sh.done)
	sh.wg.Wait()
	lu.mu.Lock()
	stop := sh.stop
	sh.stop = nil
	lu.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// sharedPRChanged is the store's change callback: it reloads the state
// before it returns, so the writer's swap waits for this unit to adopt it.
func (lu *LogicalUnit) sharedPRChanged() {
	if lu.prShared == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedPRTimeout)
	defer cancel()
	if err := lu.syncSharedPR(ctx); err != nil {
		lu.logSharedPR("reloading shared persistent reservations after a change", err)
		select { // the poller tries again
		case lu.prShared.kick <- struct{}{}:
		default:
		}
	}
}

// pollSharedPR reloads the shared state every sharedPRPoll, and soon
// after a failed reload, until the unit closes.
func (lu *LogicalUnit) pollSharedPR(sh *sharedPR) {
	defer sh.wg.Done()
	t := time.NewTicker(sharedPRPoll)
	defer t.Stop()
	for {
		select {
		case <-sh.done:
			return
		case <-sh.kick:
			select {
			case <-sh.done:
				return
			case <-time.After(time.Second):
			}
		case <-t.C:
		}
		lu.mu.Lock()
		watching := sh.stop != nil
		lu.mu.Unlock()
		if !watching {
			if err := lu.watchSharedPR(sh); err != nil {
				lu.logSharedPR("watching shared persistent reservations", err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), sharedPRTimeout)
		if err := lu.syncSharedPR(ctx); err != nil {
			lu.logSharedPR("reloading shared persistent reservations", err)
		}
		cancel()
	}
}

func (lu *LogicalUnit) logSharedPR(msg string, err error) {
	if l := lu.cfg.Logger; l != nil {
		l.Warn(msg, "err", err)
	}
}

// load reads and decodes the shared state.
func (sh *sharedPR) load(ctx context.Context) (*persistedPR, uint64, error) {
	b, ver, err := sh.store.Load(ctx)
	if err != nil {
		return nil, 0, err
	}
	in := &persistedPR{Holder: -1}
	if len(b) > 0 {
		if err := json.Unmarshal(b, in); err != nil {
			return nil, 0, fmt.Errorf("%w: %w", errCorruptSharedPR, err)
		}
	}
	return in, ver, nil
}

// errCorruptSharedPR is a shared state that does not decode.
var errCorruptSharedPR = errors.New("scsi: shared persistent reservations: corrupt state")

// syncSharedPR brings the unit's copy up to the shared state's current
// version, delivering what the commits it had not seen owe its nexuses.
func (lu *LogicalUnit) syncSharedPR(ctx context.Context) error {
	sh := lu.prShared
	in, ver, err := sh.load(ctx)
	if err != nil {
		lu.logSharedPR("loading shared persistent reservations", err)
		return sharedSense(err)
	}
	lu.mu.Lock()
	defer lu.mu.Unlock()
	if err := lu.adoptSharedPRLocked(in, ver); err != nil {
		lu.logSharedPR("adopting shared persistent reservations", err)
		return errHardware
	}
	return nil
}

// sharedSense is the sense of a failed store access.
func sharedSense(err error) error {
	if errors.Is(err, errCorruptSharedPR) {
		return errHardware
	}
	return errSharedStore
}

// adoptSharedPRLocked makes the state in (of version ver) the unit's copy
// unless the copy is as new already. The unit attentions and aborts the
// commits since the copy owe the unit's nexuses are delivered; if the
// state no longer lists them all (the unit missed more than
// sharedPREvents commits), each nexus of the unit that lost its
// registration is told REGISTRATIONS PREEMPTED and each registrant that
// lost a registrants-type reservation RESERVATIONS RELEASED instead.
func (lu *LogicalUnit) adoptSharedPRLocked(in *persistedPR, ver uint64) error {
	sh := lu.prShared
	// Versions grow, so an older one is a load that lost a race with a
	// newer commit; version 0 is a store that holds nothing (any more: a
	// removed RADOS object), which is adopted as the empty state.
	if sh.loaded && ver <= sh.version && (ver != 0 || sh.version == 0) {
		return nil
	}
	next, err := decodePR(in)
	if err != nil {
		return err
	}
	next.aptpl = in.APTPL
	if sh.loaded && in.Seq > sh.seq {
		// The events of every commit from covered on are listed.
		covered := uint64(1)
		if in.Seq > sharedPREvents {
			covered = in.Seq - sharedPREvents + 1
		}
		if sh.seq+1 < covered {
			lu.sharedPRDiffLocked(&next)
		}
		for _, e := range in.Events {
			if e.Seq <= sh.seq {
				continue
			}
			switch e.What {
			case eventAbort:
				lu.abortReg(e.Nexus)
			case eventRegsPreempted:
				lu.queueUAReg(e.Nexus, uaRegsPreempted)
			case eventResvPreempted:
				lu.queueUAReg(e.Nexus, uaResvPreempted)
			case eventResvReleased:
				lu.queueUAReg(e.Nexus, uaResvRelease)
			case eventLUReset:
				if lu.nexuses[e.Nexus] == nil { // the resetting unit told its own
					for k, ns := range lu.nexuses {
						if ns.live {
							lu.queueUA(k, uaLUReset)
						}
					}
				}
			}
		}
	}
	lu.pr = next
	sh.version, sh.seq, sh.loaded = ver, in.Seq, true
	return nil
}

// sharedPRDiffLocked tells the unit's nexuses what changed between its
// copy and next when the commits in between are no longer listed.
func (lu *LogicalUnit) sharedPRDiffLocked(next *prState) {
	old := &lu.pr
	for k := range old.regs {
		if next.regs[k] == nil {
			lu.queueUAReg(k, uaRegsPreempted)
		} else if old.resType >= prWriteExclusiveRegsOnly && next.resType == 0 {
			lu.queueUAReg(k, uaResvRelease)
		}
	}
}

// clone returns a copy of p that shares nothing with it.
func (p *prState) clone() prState {
	c := *p
	c.regs = make(map[string]*prRegistration, len(p.regs))
	for k, g := range p.regs {
		cg := *g
		c.regs[k] = &cg
	}
	return c
}

// sharedPROut runs a PERSISTENT RESERVE OUT service action (run, which
// works on lu.pr with lu.mu held) against the shared state: it loads the
// current state, runs the action on a trial copy and commits the result
// with a compare-and-swap, from the start again when another unit
// committed first. The unit's copy changes only once the commit is in.
func (lu *LogicalUnit) sharedPROut(ctx context.Context, run func() error) error {
	sh := lu.prShared
	sh.op.Lock()
	defer sh.op.Unlock()
	ctx, cancel := context.WithTimeout(ctx, sharedPRTimeout)
	defer cancel()
	for range sharedPRAttempts {
		in, ver, err := sh.load(ctx)
		if err != nil {
			lu.logSharedPR("loading shared persistent reservations", err)
			return sharedSense(err)
		}
		lu.mu.Lock()
		if err := lu.adoptSharedPRLocked(in, ver); err != nil {
			lu.mu.Unlock()
			lu.logSharedPR("adopting shared persistent reservations", err)
			return errHardware
		}
		if sh.version != ver { // a newer state came in meanwhile
			lu.mu.Unlock()
			continue
		}
		committed := lu.pr
		lu.pr = committed.clone()
		tx := &prTx{}
		sh.tx = tx
		err = run()
		sh.tx = nil
		trial := lu.pr
		lu.pr = committed
		seq := sh.seq
		lu.mu.Unlock()
		if err != nil {
			return err
		}
		out, before := encodePR(&trial), encodePR(&committed)
		a, _ := json.Marshal(out)
		b, _ := json.Marshal(before)
		if len(tx.events) == 0 && bytes.Equal(a, b) {
			return nil // nothing changed
		}
		out.Seq = seq + 1
		for _, e := range in.Events {
			if e.Seq+sharedPREvents > out.Seq {
				out.Events = append(out.Events, e)
			}
		}
		for _, e := range tx.events {
			e.Seq = out.Seq
			out.Events = append(out.Events, e)
		}
		data, err := json.Marshal(out)
		if err != nil {
			return err
		}
		nv, swapped, err := sh.store.CompareAndSwap(ctx, ver, data)
		if err != nil {
			lu.logSharedPR("committing shared persistent reservations", err)
			return errSharedStore
		}
		if !swapped {
			continue
		}
		lu.mu.Lock()
		err = lu.adoptSharedPRLocked(&out, nv)
		lu.mu.Unlock()
		return err
	}
	return errTransient
}

// releaseSharedSPC2 commits the release of the SPC-2 reservation that a
// reset (holder "": whoever holds it) or the loss of the nexus holder
// ends (SPC-2 §5.5.1), on a unit with a shared store; the unit's copy
// changes with the commit. A store that cannot be reached leaves the
// reservation held, which is logged.
func (lu *LogicalUnit) releaseSharedSPC2(holder string) {
	if lu.prShared == nil {
		return
	}
	ends := func() bool { return lu.pr.spc2 != "" && (holder == "" || lu.pr.spc2 == holder) }
	lu.mu.Lock()
	held := ends()
	lu.mu.Unlock()
	if !held {
		return
	}
	err := lu.sharedPROut(context.Background(), func() error {
		if ends() {
			lu.pr.spc2 = ""
		}
		return nil
	})
	if err != nil {
		lu.logSharedPR("committing the release of an SPC-2 reservation", err)
	}
}

// commitSharedReset commits a LOGICAL UNIT RESET that the nexus issuer
// took through this unit to its shared store: the SPC-2 reservation is
// released and every other unit serving the medium tells its live
// nexuses LOGICAL UNIT RESET OCCURRED when it adopts the commit. A store
// that cannot be reached leaves the other units uninformed (logged).
func (lu *LogicalUnit) commitSharedReset(issuer string) {
	if lu.prShared == nil {
		return
	}
	err := lu.sharedPROut(context.Background(), func() error {
		lu.pr.spc2 = ""
		lu.prShared.tx.owe(issuer, eventLUReset)
		return nil
	})
	if err != nil {
		lu.logSharedPR("committing a logical unit reset", err)
	}
}

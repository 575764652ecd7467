package scsi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/iscsikit/iscsikit/backend"
)

// SANITIZE service actions (SBC-4 §5.30). CRYPTOGRAPHIC ERASE is offered
// on units whose device encrypts (UnitConfig.CryptoErase).
const (
	sanitizeOverwrite   = 0x01
	sanitizeBlockErase  = 0x02
	sanitizeCryptoErase = 0x03
	sanitizeExitFailure = 0x1f
)

// opSanitize is the operation code of SANITIZE.
const opSanitize = 0x48

// sanitizeSyncBytes is how much of an OVERWRITE is written between two
// syncs of the device.
const sanitizeSyncBytes = 32 << 20

// sanitize runs SANITIZE. OVERWRITE writes the initialization pattern
// over every block once (the OVERWRITE COUNT passes of a disk drive would
// all land in the same place of a file or a page cache, so one pass leaves
// the same medium) at no more than UnitConfig.SanitizeRate, BLOCK ERASE
// deallocates every block of a thin unit, CRYPTOGRAPHIC ERASE replaces
// the device's data key, and EXIT FAILURE MODE leaves the state a failed sanitize left the unit
// in. While it runs every command but INQUIRY, REPORT LUNS and REQUEST
// SENSE fails with SANITIZE IN PROGRESS; with IMMED the command completes
// as soon as it has started.
func (r *request) sanitize() error {
	sa := r.cdb[1] & 0x1f
	immed := r.cdb[1]&0x80 != 0
	ause := r.cdb[1]&0x20 != 0
	plen := int(be16(r.cdb[7:9]))
	lu := r.lu
	var rec sanitizeRecord
	switch sa {
	case sanitizeExitFailure:
		if plen != 0 {
			return invalidField(7, -1)
		}
		lu.mu.Lock()
		defer lu.mu.Unlock()
		if lu.sanitizing {
			// A SANITIZE of another nexus started after this command
			// was admitted.
			return errSanitizing
		}
		if lu.sanitizeFailed && !lu.sanitizeAUSE {
			// Only a SANITIZE that allowed it (AUSE) may be left this way.
			return invalidField(1, 4)
		}
		if err := lu.saveSanitizeLocked(nil); err != nil {
			return ioError(err, true)
		}
		lu.sanitizeFailed = false
		return nil
	case sanitizeBlockErase, sanitizeCryptoErase:
		if plen != 0 {
			return invalidField(7, -1)
		}
		rec = sanitizeRecord{ServiceAction: sa, AUSE: ause}
	default: // OVERWRITE
		bs := int(lu.blockSize)
		if plen <= 4 || plen > bs+4 {
			return invalidField(7, -1)
		}
		data, err := r.dataOut(int64(plen))
		if err != nil {
			return err
		}
		count, invert, test := data[0]&0x1f, data[0]&0x80 != 0, data[0]>>5&0x03
		patLen := int(be16(data[2:4]))
		switch {
		case count == 0, test != 0:
			return invalidField(7, -1)
		case patLen == 0 || patLen > bs || patLen+4 != plen:
			return invalidField(7, -1)
		}
		block := make([]byte, bs)
		for i := 0; i < bs; i += patLen {
			copy(block[i:], data[4:4+patLen])
		}
		if invert && count%2 == 0 {
			// The pattern is inverted between passes; an even count
			// leaves the inverted one.
			for i := range block {
				block[i] = ^block[i]
			}
		}
		rec = sanitizeRecord{ServiceAction: sa, AUSE: ause, Pattern: block}
	}
	job, err := lu.sanitizeJob(rec)
	if err != nil {
		return err
	}
	lu.mu.Lock()
	if lu.sanitizing {
		// Another SANITIZE was admitted at the same moment and started
		// first.
		lu.mu.Unlock()
		return errSanitizing
	}
	// The record goes to stable storage before the first block changes:
	// from here until the sanitize completes, a crash or a restart leaves
	// it to be resumed.
	if err := lu.saveSanitizeLocked(&rec); err != nil {
		lu.mu.Unlock()
		return ioError(err, true)
	}
	lu.sanitizing, lu.sanitizeAUSE = true, ause
	lu.mu.Unlock()
	done := lu.runSanitize(rec, job)
	if immed {
		return nil
	}
	select {
	case err := <-done:
		return err
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
}

// sanitizeJob returns the work of the sanitize rec describes, or an
// error when the unit cannot do it (its device no longer offers it).
func (lu *LogicalUnit) sanitizeJob(rec sanitizeRecord) (func(ctx context.Context) error, error) {
	size := int64(lu.nblocks) << lu.blockShift
	switch rec.ServiceAction {
	case sanitizeBlockErase:
		u, ok := lu.dev.(backend.Unmapper)
		if !ok || !lu.cfg.ThinProvisioning {
			return nil, errors.New("scsi: BLOCK ERASE needs a thin-provisioned unit")
		}
		return func(context.Context) error {
			lu.writeGate.RLock()
			defer lu.writeGate.RUnlock()
			return ioError(u.Unmap(0, size), true)
		}, nil
	case sanitizeCryptoErase:
		c, ok := lu.dev.(backend.CryptoEraser)
		if !ok || !lu.cfg.CryptoErase {
			return nil, errors.New("scsi: CRYPTOGRAPHIC ERASE needs a unit whose device encrypts")
		}
		return func(context.Context) error {
			lu.writeGate.Lock()
			defer lu.writeGate.Unlock()
			return ioError(c.CryptoErase(), true)
		}, nil
	case sanitizeOverwrite:
		if len(rec.Pattern) != int(lu.blockSize) {
			return nil, fmt.Errorf("scsi: OVERWRITE pattern of %d bytes for %d-byte blocks", len(rec.Pattern), lu.blockSize)
		}
		return func(ctx context.Context) error {
			// The overwrite goes to the medium as it proceeds rather
			// than filling the page cache with the whole device first:
			// dirty memory stays bounded, and what the sanitize has
			// reported done is on stable storage.
			return lu.fillSynced(ctx, 0, size, rec.Pattern, sanitizeSyncBytes, lu.cfg.SanitizeRate)
		}, nil
	}
	return nil, fmt.Errorf("scsi: sanitize service action 0x%02x", rec.ServiceAction)
}

// runSanitize runs job in the background for the unit, which the caller
// has marked sanitizing with rec stored, and returns where its result
// goes. The operation belongs to the unit, not to the command: it runs to
// its end through aborts and resets (SBC-4 §4.11.3). The unit's Close
// cuts it short and leaves rec stored, so that the next unit on the
// device resumes it; an operation that fails is stored failed.
func (lu *LogicalUnit) runSanitize(rec sanitizeRecord, job func(ctx context.Context) error) <-chan error {
	done := make(chan error, 1)
	lu.background.Add(1)
	go func() {
		defer lu.background.Done()
		err := job(lu.life)
		if err == nil {
			err = lu.syncIf(true)
		}
		lu.mu.Lock()
		switch {
		case err == nil:
			// Done: the record goes. If it cannot, the next unit would
			// resume this sanitize, so it is not reported done.
			if serr := lu.saveSanitizeLocked(nil); serr != nil {
				err = fmt.Errorf("clearing the sanitize record: %w", serr)
			}
		case lu.life.Err() != nil:
			// Cut short by Close: the record stays as it is, to be
			// resumed.
		default:
			rec.Failed = true
			if serr := lu.saveSanitizeLocked(&rec); serr != nil && lu.cfg.Logger != nil {
				lu.cfg.Logger.Error("recording the failed sanitize", "err", serr)
			}
		}
		lu.sanitizing, lu.sanitizeFailed = false, err != nil
		lu.mu.Unlock()
		if err != nil && lu.cfg.Logger != nil {
			lu.cfg.Logger.Error("sanitize failed", "err", err)
		}
		done <- err
	}()
	return done
}

// sanitizeRecord is what UnitConfig.SanitizeState keeps from the start
// of a SANITIZE until it completes: the operation (with the block an
// OVERWRITE writes), whether it allowed EXIT FAILURE MODE, and whether it
// failed.
type sanitizeRecord struct {
	ServiceAction byte   `json:"service_action"`
	AUSE          bool   `json:"ause"`
	Pattern       []byte `json:"pattern,omitempty"`
	Failed        bool   `json:"failed,omitempty"`
}

// saveSanitizeLocked stores rec, or removes the record when rec is nil.
func (lu *LogicalUnit) saveSanitizeLocked(rec *sanitizeRecord) error {
	st := lu.cfg.SanitizeState
	if st == nil {
		return nil
	}
	if rec == nil {
		return st.Save(nil)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return st.Save(b)
}

// resumeSanitize picks up a sanitize that an earlier unit on the device
// left unfinished, once the unit is otherwise ready: it runs again from
// the start (SBC-4 and NVMe both have a sanitize continue across a power
// cycle). One that failed, or that this unit cannot do, leaves the unit
// failed, as after a failed SANITIZE.
func (lu *LogicalUnit) resumeSanitize() error {
	st := lu.cfg.SanitizeState
	if st == nil {
		return nil
	}
	b, err := st.Load()
	if err != nil || len(b) == 0 {
		return err
	}
	var rec sanitizeRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return fmt.Errorf("scsi: sanitize record: %w", err)
	}
	job, err := lu.sanitizeJob(rec)
	if rec.Failed || err != nil {
		lu.sanitizeFailed, lu.sanitizeAUSE = true, rec.AUSE
		if lu.cfg.Logger != nil {
			lu.cfg.Logger.Warn("a SANITIZE failed before the unit was last closed; media access fails until one completes", "service_action", rec.ServiceAction, "ause", rec.AUSE, "err", err)
		}
		return nil
	}
	if lu.cfg.Logger != nil {
		lu.cfg.Logger.Info("resuming a SANITIZE the unit did not finish before it was last closed", "service_action", rec.ServiceAction)
	}
	lu.sanitizing, lu.sanitizeAUSE = true, rec.AUSE
	lu.runSanitize(rec, job)
	return nil
}

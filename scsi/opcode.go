package scsi

import "encoding/binary"

// opFlags says how the dispatcher treats a command before its handler runs.
type opFlags uint32

const (
	// flagNoUA commands neither report nor clear a pending unit attention
	// (INQUIRY, REPORT LUNS, REQUEST SENSE: SPC-4 §5.14).
	flagNoUA opFlags = 1 << iota
	// flagConflicts commands fail with RESERVATION CONFLICT while another
	// nexus holds an SPC-2 reservation.
	flagConflicts
	// flagMedium commands need the medium: they fail with NOT READY while
	// the unit is stopped.
	flagMedium
	// flagWrite commands modify the medium: they fail with DATA PROTECT on
	// a read-only unit.
	flagWrite
	// flagThin commands exist only on thin-provisioned units.
	flagThin
	// flagPRAllowed commands (with flagConflicts for SPC-2) never conflict
	// with a persistent reservation (SPC-4 table 64: READ CAPACITY, TEST
	// UNIT READY, the PERSISTENT RESERVE commands, which check for
	// themselves).
	flagPRAllowed
	// flagPRWrite commands conflict with Write Exclusive reservations held
	// by another nexus, like writes: they change the medium or the state
	// of the unit. Commands with neither PR flag are reads.
	flagPRWrite
	// flagSPC2Reservation commands (RESERVE, RELEASE) exist only on units
	// without UnitConfig.NoReservations; with
	// UnitConfig.SharedReservations their reservation is shared too.
	flagSPC2Reservation
	// flagPersistentReservation commands exist only on units without
	// UnitConfig.NoReservations.
	flagPersistentReservation
	// flagRemovable commands exist only on units with removable media.
	flagRemovable
	// flagCopy commands exist only on units offering third-party copy.
	flagCopy
	// flagCrypto commands exist only on units offering cryptographic
	// erase.
	flagCrypto
	// flagALUA commands exist only on units with target port groups.
	flagALUA
	// flagExplicitALUA commands exist only on units with target port
	// groups, none of them remote (PortGroup.Remote).
	flagExplicitALUA
	// flagInStandby, flagInUnavailable and flagInTransition commands are
	// served through a port whose target port group is in the standby,
	// unavailable or transitioning access state (SPC-4 §5.15.2.4); the
	// rest fail with LOGICAL UNIT NOT ACCESSIBLE.
	flagInStandby
	flagInUnavailable
	flagInTransition
	// flagCompare commands exist only on units whose device can compare
	// and write at least one block atomically.
	flagCompare
	// flagAtomic commands exist only on units whose device can write at
	// least one block atomically for all its clients (maxAtomicBlocks).
	flagAtomic
)

// flagAnyAccess commands are served in every access state.
const flagAnyAccess = flagInStandby | flagInUnavailable | flagInTransition

// opcode is one entry of the command table: dispatch, CDB validation and
// REPORT SUPPORTED OPERATION CODES all come from it.
type opcode struct {
	name string
	// usage is the CDB usage data of SPC-4 §6.35.3: byte 0 is the
	// operation code, and every other byte has a bit set for each CDB bit
	// the device server evaluates. Its length is the CDB length. A bit
	// set in a CDB that is clear here fails with INVALID FIELD IN CDB.
	usage   []byte
	hasSA   bool
	flags   opFlags
	handler func(*request) error
}

func (o *opcode) code() byte { return o.usage[0] }

// serviceAction returns the service action, for opcodes that have one.
func (o *opcode) serviceAction() uint16 { return uint16(o.usage[1] & 0x1f) }

func (o *opcode) cdbLen() int { return len(o.usage) }

// controlNACA is the NACA bit of the CONTROL byte. ACA is not supported
// (NormACA is 0 in INQUIRY), so a command with NACA set is rejected; the
// bit is still listed in the usage data because it is evaluated.
const controlNACA = 0x04

// checkCDB fails a CDB that sets a reserved or unsupported bit, pointing
// at the first offending byte and bit.
func (o *opcode) checkCDB(cdb []byte) *Sense {
	last := len(o.usage) - 1
	for i := 1; i <= last; i++ {
		mask := o.usage[i]
		if i == last {
			mask &^= controlNACA
		}
		if extra := cdb[i] &^ mask; extra != 0 {
			bit := 7
			for extra&(1<<uint(bit)) == 0 {
				bit--
			}
			return invalidField(i, bit)
		}
	}
	return nil
}

// cdb builds usage data from its bytes, with the NACA bit in the CONTROL
// byte.
func cdb(b ...byte) []byte {
	b[len(b)-1] |= controlNACA
	return b
}

// opcodes is the command table, mostly but not strictly in operation
// code order: dispatch goes through opcodeIndex, and REPORT SUPPORTED
// OPERATION CODES lists the entries in table order. Service-action
// commands appear once per service action. It is filled in by init (the
// handlers refer back to it) and never changes afterwards.
var opcodes []*opcode

// opcodeIndex maps an operation code to its table entries (several for
// service-action commands).
var opcodeIndex [256][]*opcode

func init() {
	opcodes = commandTable()
	for _, o := range opcodes {
		opcodeIndex[o.code()] = append(opcodeIndex[o.code()], o)
	}
}

func commandTable() []*opcode {
	return []*opcode{
		{name: "TEST UNIT READY", usage: cdb(0x00, 0, 0, 0, 0, 0), flags: flagConflicts | flagMedium | flagPRAllowed, handler: (*request).testUnitReady},
		{name: "REQUEST SENSE", usage: cdb(0x03, 0x01, 0, 0, 0xff, 0), flags: flagNoUA | flagAnyAccess, handler: (*request).requestSense},
		{name: "READ(6)", usage: cdb(0x08, 0x1f, 0xff, 0xff, 0xff, 0), flags: flagConflicts | flagMedium, handler: (*request).read},
		{name: "WRITE(6)", usage: cdb(0x0a, 0x1f, 0xff, 0xff, 0xff, 0), flags: flagConflicts | flagMedium | flagWrite, handler: (*request).write},
		{name: "INQUIRY", usage: cdb(0x12, 0x01, 0xff, 0xff, 0xff, 0), flags: flagNoUA | flagAnyAccess, handler: (*request).inquiry},
		{name: "MODE SELECT(6)", usage: cdb(0x15, 0x11, 0, 0, 0xff, 0), flags: flagInStandby | flagConflicts | flagPRWrite, handler: (*request).modeSelect},
		{name: "RESERVE(6)", usage: cdb(0x16, 0, 0, 0, 0, 0), flags: flagConflicts | flagSPC2Reservation, handler: (*request).reserve},
		{name: "RELEASE(6)", usage: cdb(0x17, 0, 0, 0, 0, 0), flags: flagSPC2Reservation, handler: (*request).release},
		{name: "MODE SENSE(6)", usage: cdb(0x1a, 0x08, 0xff, 0xff, 0xff, 0), flags: flagInStandby | flagConflicts, handler: (*request).modeSense},
		{name: "START STOP UNIT", usage: cdb(0x1b, 0x01, 0, 0x0f, 0xf7, 0), flags: flagConflicts | flagPRWrite, handler: (*request).startStopUnit},
		{name: "PREVENT ALLOW MEDIUM REMOVAL", usage: cdb(0x1e, 0, 0, 0, 0x03, 0), flags: flagConflicts | flagPRWrite | flagRemovable, handler: (*request).preventAllow},
		{name: "READ CAPACITY(10)", usage: cdb(0x25, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0), flags: flagConflicts | flagMedium | flagPRAllowed, handler: (*request).readCapacity10},
		{name: "READ(10)", usage: cdb(0x28, 0xfe, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0), flags: flagConflicts | flagMedium, handler: (*request).read},
		{name: "WRITE(10)", usage: cdb(0x2a, 0xfa, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0), flags: flagConflicts | flagMedium | flagWrite, handler: (*request).write},
		{name: "WRITE AND VERIFY(10)", usage: cdb(0x2e, 0xf6, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0), flags: flagConflicts | flagMedium | flagWrite, handler: (*request).writeAndVerify},
		{name: "VERIFY(10)", usage: cdb(0x2f, 0xf6, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0), flags: flagConflicts | flagMedium, handler: (*request).verify},
		{name: "PRE-FETCH(10)", usage: cdb(0x34, 0x02, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0), flags: flagConflicts | flagMedium, handler: (*request).preFetch},
		{name: "READ DEFECT DATA(10)", usage: cdb(0x37, 0, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0), flags: flagConflicts | flagMedium, handler: (*request).readDefectData},
		{name: "SYNCHRONIZE CACHE(10)", usage: cdb(0x35, 0x06, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0), flags: flagConflicts | flagMedium | flagPRWrite, handler: (*request).synchronizeCache},
		{name: "WRITE SAME(10)", usage: cdb(0x41, 0xf8, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0), flags: flagConflicts | flagMedium | flagWrite, handler: (*request).writeSame},
		{name: "UNMAP", usage: cdb(0x42, 0x01, 0, 0, 0, 0, 0x3f, 0xff, 0xff, 0), flags: flagConflicts | flagMedium | flagWrite | flagThin, handler: (*request).unmap},
		{name: "SANITIZE", usage: cdb(0x48, 0xa0|sanitizeOverwrite, 0, 0, 0, 0, 0, 0xff, 0xff, 0), hasSA: true, flags: flagConflicts | flagMedium | flagWrite, handler: (*request).sanitize},
		{name: "SANITIZE", usage: cdb(0x48, 0xa0|sanitizeBlockErase, 0, 0, 0, 0, 0, 0xff, 0xff, 0), hasSA: true, flags: flagConflicts | flagMedium | flagWrite | flagThin, handler: (*request).sanitize},
		{name: "SANITIZE", usage: cdb(0x48, 0xa0|sanitizeCryptoErase, 0, 0, 0, 0, 0, 0xff, 0xff, 0), hasSA: true, flags: flagConflicts | flagMedium | flagWrite | flagCrypto, handler: (*request).sanitize},
		{name: "SANITIZE", usage: cdb(0x48, 0x80|sanitizeExitFailure, 0, 0, 0, 0, 0, 0xff, 0xff, 0), hasSA: true, flags: flagConflicts | flagWrite, handler: (*request).sanitize},
		{name: "MODE SELECT(10)", usage: cdb(0x55, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0), flags: flagInStandby | flagConflicts | flagPRWrite, handler: (*request).modeSelect},
		{name: "RESERVE(10)", usage: cdb(0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0), flags: flagConflicts | flagSPC2Reservation, handler: (*request).reserve},
		{name: "RELEASE(10)", usage: cdb(0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0), flags: flagSPC2Reservation, handler: (*request).release},
		{name: "MODE SENSE(10)", usage: cdb(0x5a, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0), flags: flagInStandby | flagConflicts, handler: (*request).modeSense},
		{name: "PERSISTENT RESERVE IN", usage: cdb(0x5e, 0x00, 0, 0, 0, 0, 0, 0xff, 0xff, 0), hasSA: true, flags: flagInStandby | flagConflicts | flagPRAllowed | flagPersistentReservation, handler: (*request).persistentReserveIn},
		{name: "PERSISTENT RESERVE IN", usage: cdb(0x5e, 0x01, 0, 0, 0, 0, 0, 0xff, 0xff, 0), hasSA: true, flags: flagInStandby | flagConflicts | flagPRAllowed | flagPersistentReservation, handler: (*request).persistentReserveIn},
		{name: "PERSISTENT RESERVE IN", usage: cdb(0x5e, 0x02, 0, 0, 0, 0, 0, 0xff, 0xff, 0), hasSA: true, flags: flagInStandby | flagConflicts | flagPRAllowed | flagPersistentReservation, handler: (*request).persistentReserveIn},
		{name: "PERSISTENT RESERVE IN", usage: cdb(0x5e, 0x03, 0, 0, 0, 0, 0, 0xff, 0xff, 0), hasSA: true, flags: flagInStandby | flagConflicts | flagPRAllowed | flagPersistentReservation, handler: (*request).persistentReserveIn},
		{name: "PERSISTENT RESERVE OUT", usage: cdb(0x5f, 0x00, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0), hasSA: true, flags: flagInStandby | flagConflicts | flagPRAllowed | flagPersistentReservation, handler: (*request).persistentReserveOut},
		{name: "PERSISTENT RESERVE OUT", usage: cdb(0x5f, 0x01, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0), hasSA: true, flags: flagInStandby | flagConflicts | flagPRAllowed | flagPersistentReservation, handler: (*request).persistentReserveOut},
		{name: "PERSISTENT RESERVE OUT", usage: cdb(0x5f, 0x02, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0), hasSA: true, flags: flagInStandby | flagConflicts | flagPRAllowed | flagPersistentReservation, handler: (*request).persistentReserveOut},
		{name: "PERSISTENT RESERVE OUT", usage: cdb(0x5f, 0x03, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0), hasSA: true, flags: flagInStandby | flagConflicts | flagPRAllowed | flagPersistentReservation, handler: (*request).persistentReserveOut},
		{name: "PERSISTENT RESERVE OUT", usage: cdb(0x5f, 0x04, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0), hasSA: true, flags: flagInStandby | flagConflicts | flagPRAllowed | flagPersistentReservation, handler: (*request).persistentReserveOut},
		{name: "PERSISTENT RESERVE OUT", usage: cdb(0x5f, 0x05, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0), hasSA: true, flags: flagInStandby | flagConflicts | flagPRAllowed | flagPersistentReservation, handler: (*request).persistentReserveOut},
		{name: "PERSISTENT RESERVE OUT", usage: cdb(0x5f, 0x06, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0), hasSA: true, flags: flagInStandby | flagConflicts | flagPRAllowed | flagPersistentReservation, handler: (*request).persistentReserveOut},
		{name: "PERSISTENT RESERVE OUT", usage: cdb(0x5f, 0x07, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0), hasSA: true, flags: flagInStandby | flagConflicts | flagPRAllowed | flagPersistentReservation, handler: (*request).persistentReserveOut},
		{name: "EXTENDED COPY(LID1)", usage: cdb(0x83, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0), hasSA: true, flags: flagConflicts | flagMedium | flagPRWrite | flagCopy, handler: (*request).extendedCopy},
		{name: "RECEIVE COPY RESULTS(COPY STATUS)", usage: cdb(0x84, 0x00, 0xff, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0), hasSA: true, flags: flagConflicts | flagCopy, handler: (*request).receiveCopyResults},
		{name: "RECEIVE COPY RESULTS(OPERATING PARAMETERS)", usage: cdb(0x84, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0), hasSA: true, flags: flagConflicts | flagCopy, handler: (*request).receiveCopyResults},
		{name: "READ(16)", usage: cdb(0x88, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0), flags: flagConflicts | flagMedium, handler: (*request).read},
		{name: "COMPARE AND WRITE", usage: cdb(0x89, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xff, 0x3f, 0), flags: flagConflicts | flagMedium | flagWrite | flagCompare, handler: (*request).compareAndWrite},
		{name: "WRITE(16)", usage: cdb(0x8a, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0), flags: flagConflicts | flagMedium | flagWrite, handler: (*request).write},
		{name: "ORWRITE(16)", usage: cdb(0x8b, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0), flags: flagConflicts | flagMedium | flagWrite, handler: (*request).orWrite},
		{name: "WRITE AND VERIFY(16)", usage: cdb(0x8e, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0), flags: flagConflicts | flagMedium | flagWrite, handler: (*request).writeAndVerify},
		{name: "VERIFY(16)", usage: cdb(0x8f, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0), flags: flagConflicts | flagMedium, handler: (*request).verify},
		{name: "PRE-FETCH(16)", usage: cdb(0x90, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0), flags: flagConflicts | flagMedium, handler: (*request).preFetch},
		{name: "SYNCHRONIZE CACHE(16)", usage: cdb(0x91, 0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0), flags: flagConflicts | flagMedium | flagPRWrite, handler: (*request).synchronizeCache},
		{name: "WRITE SAME(16)", usage: cdb(0x93, 0xf9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0), flags: flagConflicts | flagMedium | flagWrite, handler: (*request).writeSame},
		{name: "WRITE ATOMIC(16)", usage: cdb(0x9c, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0xff, 0xff, 0x3f, 0), flags: flagConflicts | flagMedium | flagWrite | flagAtomic, handler: (*request).writeAtomic},
		{name: "READ CAPACITY(16)", usage: cdb(0x9e, 0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0), hasSA: true, flags: flagConflicts | flagMedium | flagPRAllowed, handler: (*request).readCapacity16},
		{name: "GET LBA STATUS", usage: cdb(0x9e, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0), hasSA: true, flags: flagConflicts | flagMedium | flagThin, handler: (*request).getLBAStatus},
		{name: "REPORT LUNS", usage: cdb(0xa0, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0), flags: flagNoUA | flagAnyAccess, handler: nil},
		{name: "REPORT TARGET PORT GROUPS", usage: cdb(0xa3, 0xea, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0), hasSA: true, flags: flagALUA | flagAnyAccess, handler: (*request).reportTargetPortGroups},
		{name: "REPORT SUPPORTED OPERATION CODES", usage: cdb(0xa3, 0x0c, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0), hasSA: true, flags: flagInStandby | flagInUnavailable, handler: (*request).reportOpcodes},
		{name: "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS", usage: cdb(0xa3, 0x0d, 0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0), hasSA: true, flags: flagInStandby | flagInUnavailable, handler: (*request).reportTMFs},
		{name: "SET TARGET PORT GROUPS", usage: cdb(0xa4, 0x0a, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0), hasSA: true, flags: flagExplicitALUA | flagInStandby | flagInUnavailable, handler: (*request).setTargetPortGroups},
		{name: "READ(12)", usage: cdb(0xa8, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0), flags: flagConflicts | flagMedium, handler: (*request).read},
		{name: "WRITE(12)", usage: cdb(0xaa, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0), flags: flagConflicts | flagMedium | flagWrite, handler: (*request).write},
		{name: "READ DEFECT DATA(12)", usage: cdb(0xb7, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0), flags: flagConflicts | flagMedium, handler: (*request).readDefectData},
		{name: "WRITE AND VERIFY(12)", usage: cdb(0xae, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0), flags: flagConflicts | flagMedium | flagWrite, handler: (*request).writeAndVerify},
		{name: "VERIFY(12)", usage: cdb(0xaf, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0), flags: flagConflicts | flagMedium, handler: (*request).verify},
	}
}

// lookupOpcode returns the table entry for cdb, or nil with the sense that
// says why there is none.
func lookupOpcode(cdb []byte) (*opcode, *Sense) {
	entries := opcodeIndex[cdb[0]]
	if len(entries) == 0 {
		return nil, errInvalidOpcode
	}
	if !entries[0].hasSA {
		return entries[0], nil
	}
	if len(cdb) < 2 {
		return nil, invalidField(1, 4)
	}
	for _, o := range entries {
		if o.serviceAction() == uint16(cdb[1]&0x1f) {
			return o, nil
		}
	}
	return nil, invalidField(1, 4)
}

// supported reports whether the unit offers the command.
func (lu *LogicalUnit) supported(o *opcode) bool {
	return lu.offersReservation(o) &&
		(o.flags&flagThin == 0 || lu.cfg.ThinProvisioning) &&
		(o.flags&flagRemovable == 0 || lu.cfg.Removable) &&
		(o.flags&flagCopy == 0 || lu.cfg.ThirdPartyCopy) &&
		(o.flags&flagCrypto == 0 || lu.cfg.CryptoErase) &&
		(o.flags&flagALUA == 0 || lu.aluaOn.Load()) &&
		(o.flags&flagExplicitALUA == 0 || lu.explicitALUA.Load()) &&
		(o.flags&flagCompare == 0 || lu.compareBlocks > 0) &&
		(o.flags&flagAtomic == 0 || lu.maxAtomicBlocks() > 0)
}

// offersReservation reports whether the unit offers o as far as
// reservations go: none of the reservation commands under
// NoReservations.
func (lu *LogicalUnit) offersReservation(o *opcode) bool {
	if o.flags&(flagSPC2Reservation|flagPersistentReservation) != 0 {
		return !lu.cfg.NoReservations
	}
	return true
}

// unsupported is the sense for a command the unit does not offer: INVALID
// FIELD IN CDB (the service action) when it offers another service action
// of the same operation code, INVALID COMMAND OPERATION CODE otherwise
// (SPC-4 §4.5.2).
func (lu *LogicalUnit) unsupported(o *opcode) *Sense {
	if o.hasSA {
		for _, sibling := range opcodeIndex[o.usage[0]] {
			if lu.supported(sibling) {
				return invalidField(1, 4)
			}
		}
	}
	return errInvalidOpcode
}

// be16, be32 and be64 read big-endian CDB fields.
func be16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
func be32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }
func be64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

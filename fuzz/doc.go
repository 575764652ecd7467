// Package fuzz holds native `go test -fuzz` targets for every decoder of
// bytes an initiator or an operator controls:
//
//   - FuzzReadPDU: the PDU reader, with and without digests, and every
//     message decoder on what it frames;
//   - FuzzMessageRoundTrip: gofuzz-built messages of every opcode through
//     the writer and reader (decode∘encode is the identity);
//   - FuzzSession: gofuzz-built PDU sequences and garbage on a logged-in
//     connection to an in-process server, which must not panic and must
//     still accept a healthy session afterwards;
//   - FuzzNegotiate: login and text key=value parsing and negotiation;
//   - FuzzExecute: raw CDBs and data through the SCSI target;
//   - FuzzCDB: every command of the unit's own table (read back with REPORT
//     SUPPORTED OPERATION CODES, so commands added later are covered),
//     with gofuzz-filled fields, optionally masked to the bits the command
//     evaluates;
//   - FuzzParameterList: the parameter-list commands (MODE SELECT, PERSISTENT
//     RESERVE OUT, EXTENDED COPY, UNMAP, WRITE SAME, COMPARE AND WRITE,
//     ...) with structured CDBs and fuzzed data-out;
//   - FuzzISNSRead and FuzzISNSRoundTrip: the iSNSP message reader and
//     decoder of iscsi/isns on what a server could answer, and
//     gofuzz-built messages through the encoder and decoder;
//   - FuzzConfigFile and FuzzConfigModel: mgmt's strict config.json
//     decoding and validation;
//   - FuzzTrueNASRPC, FuzzTargetdRPC and FuzzRESTAPIs: the request bodies
//     (and, for REST, methods and paths) of the management front-ends in
//     examples/api, whose answers must stay well-formed JSON-RPC or REST
//     and never report an internal error.
//
// Each target checks properties, not only the absence of a crash: round
// trips, typed errors (*pdu.ProtocolError, negotiate.ErrSyntax,
// *mgmt.Error), well-formed SCSI results (CHECK CONDITION always with valid
// fixed or descriptor sense, data-in within the buffer).
//
// The seed corpora in testdata/fuzz run as ordinary tests with
// `go test ./fuzz`. Files named capture-* were recorded from iscsi-ls,
// iscsi-inq and iscsi-test-cu by TestCaptureSeeds (run it with
// ISCSIKIT_CAPTURE_SEEDS=1 to record them again). To fuzz, name one
// target, for example:
//
//	go test ./fuzz -run '^$' -fuzz '^FuzzReadPDU$' -fuzztime 60s
//
// .ci/run runs every target for FUZZTIME (10s by default).
package fuzz

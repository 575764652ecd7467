// Package fuzz holds native `go test -fuzz` targets for every decoder of
// bytes an initiator controls: the PDU reader and message decoders
// (FuzzReadPDU, FuzzMessageRoundTrip), login and text negotiation
// (FuzzNegotiate) and the SCSI command set (FuzzExecute).
//
// The seed corpora run as ordinary tests with `go test ./fuzz`; to fuzz,
// name one target, for example:
//
//	go test ./fuzz -run '^$' -fuzz FuzzReadPDU -fuzztime 60s
//
// Structured targets use github.com/google/gofuzz to turn the fuzzer's
// bytes into well-typed messages, so mutations explore field values rather
// than framing.
package fuzz

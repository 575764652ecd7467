// Package rbd is a backend.Device over a Ceph RBD image, through librbd and
// github.com/ceph/go-ceph's RADOS connection.
//
// Everything but this comment is behind the build tag "ceph", because the
// package links against librbd and librados (Debian: librbd-dev,
// librados-dev): build with -tags ceph. Without the tag the package is
// empty, so the rest of the module builds and tests as pure Go.
//
// Reads, writes, discards, WRITE SAME, COMPARE AND WRITE and flushes go to
// librbd as asynchronous requests (rbd_aio_*), one per call, so the SCSI
// layer's concurrent commands are concurrent requests to the cluster.
// While a device has at most two requests in flight, the caller's thread
// waits in C for librbd's completion; beyond that the completion calls
// into Go and wakes the waiting goroutine. Each
// request has a deadline (Options.Timeout): when the cluster does not answer
// in time the call returns an error wrapping backend.ErrNotReady, which
// the SCSI layer reports as NOT READY, and the request's buffers stay with
// librbd until it finishes or gives up on its own.
//
// The directory testcluster holds scripts that start and stop a throw-away
// one-node Ceph cluster on 127.0.0.1 for the package's tests.
package rbd

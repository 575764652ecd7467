//go:build ceph

package rbd

/*
#include <stdint.h>
#include <sys/types.h>
*/
import "C"

import "runtime/cgo"

// iscsikitRBDComplete is called by librbd's completion thread (through
// iscsikit_rbd_cb) when an asynchronous request ends.
//
//export iscsikitRBDComplete
func iscsikitRBDComplete(arg C.uintptr_t, ret C.ssize_t) {
	cgo.Handle(arg).Value().(*op).complete(int64(ret))
}

// iscsikitRBDDiff is called by rbd_diff_iterate2 for every extent of the
// image that holds data.
//
//export iscsikitRBDDiff
func iscsikitRBDDiff(arg C.uintptr_t, off, length C.uint64_t, exists C.int) C.int {
	return C.int(cgo.Handle(arg).Value().(*diffScan).extent(int64(off), int64(length), exists != 0))
}

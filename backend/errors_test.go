package backend

import (
	"errors"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFileErrorsMapToTheContract(t *testing.T) {
	for _, errno := range []error{syscall.ENOSPC, syscall.EDQUOT} {
		err := ioErr("write", errno)
		require.ErrorIs(t, err, ErrNoSpace)
		require.ErrorIs(t, err, errno, "the cause stays visible")
	}
	require.False(t, errors.Is(ioErr("write", syscall.EIO), ErrNoSpace))
	me := &MediumError{Off: 4096, Err: syscall.EIO}
	require.ErrorIs(t, me, syscall.EIO)
	require.Equal(t, "backend: medium error at byte 4096: input/output error", me.Error())
}

//go:build ceph

package rbd

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ceph/go-ceph/rados"
	"github.com/stretchr/testify/require"
)

// twoStores opens a new image twice and returns both devices' stores: two
// gateways, each with its own cluster connection, on the image's one
// reservation object.
func twoStores(t *testing.T) (Options, *Device, *Device, *ReservationStore, *ReservationStore) {
	t.Helper()
	o := testOptions(t, 8<<20)
	d1, d2 := openTest(t, o), openTest(t, o)
	s1, err := d1.ReservationStore()
	require.NoError(t, err)
	s2, err := d2.ReservationStore()
	require.NoError(t, err)
	return o, d1, d2, s1, s2
}

func TestReservationStoreSwapAndNotify(t *testing.T) {
	_, _, _, s1, s2 := twoStores(t)
	require.Equal(t, s1.Object(), s2.Object())
	require.True(t, strings.HasPrefix(s1.Object(), reservationObjectPrefix))
	ctx := context.Background()

	data, ver, err := s1.Load(ctx)
	require.NoError(t, err)
	require.Nil(t, data)
	require.Zero(t, ver)

	// Gateway 2 watches; a swap on gateway 1 returns only after gateway
	// 2's callback ran (the notify waits for its ack).
	var calls atomic.Int64
	stop, err := s2.Watch(func() { calls.Add(1) })
	require.NoError(t, err)
	defer stop()
	data, ver, err = s1.Load(ctx) // the watch made the object, empty
	require.NoError(t, err)
	require.Nil(t, data)
	before := calls.Load()
	v1, ok, err := s1.CompareAndSwap(ctx, ver, []byte("one"))
	require.NoError(t, err)
	require.True(t, ok)
	require.Greater(t, v1, ver)
	require.Greater(t, calls.Load(), before, "the swap returned before the watcher had run")

	// A swap from a stale version stores nothing.
	_, ok, err = s2.CompareAndSwap(ctx, ver, []byte("stale"))
	require.NoError(t, err)
	require.False(t, ok)
	_, ok, err = s2.CompareAndSwap(ctx, 0, []byte("stale"))
	require.NoError(t, err)
	require.False(t, ok, "an exclusive create of an existing object")
	data, v, err := s2.Load(ctx)
	require.NoError(t, err)
	require.Equal(t, "one", string(data))
	require.Equal(t, v1, v)
	v2, ok, err := s2.CompareAndSwap(ctx, v1, []byte("two"))
	require.NoError(t, err)
	require.True(t, ok)
	require.Greater(t, v2, v1)
}

func TestReservationStoreConcurrentSwaps(t *testing.T) {
	o := testOptions(t, 8<<20)
	d1, d2 := openTest(t, o), openTest(t, o)
	ctx := context.Background()
	var wg sync.WaitGroup
	const each = 8
	errs := make(chan error, 2*each)
	for gi, d := range []*Device{d1, d2} {
		s, err := d.ReservationStore()
		require.NoError(t, err)
		for i := range each {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tok := fmt.Sprintf("<%d.%d>", gi, i)
				for range 200 {
					data, ver, err := s.Load(ctx)
					if err != nil {
						errs <- err
						return
					}
					if _, ok, err := s.CompareAndSwap(ctx, ver, append(data, tok...)); err != nil || ok {
						errs <- err
						return
					}
				}
				errs <- fmt.Errorf("%s never landed", tok)
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	s, err := d1.ReservationStore()
	require.NoError(t, err)
	data, _, err := s.Load(ctx)
	require.NoError(t, err)
	for gi := range 2 {
		for i := range each {
			require.Contains(t, string(data), fmt.Sprintf("<%d.%d>", gi, i))
		}
	}
}

// Removing the watched object ends the cluster's watch on it: the store
// watches again, calls the callback for a full reload, and later swaps
// reach it again.
func TestReservationStoreLostWatch(t *testing.T) {
	o, d1, d2, s1, s2 := twoStores(t)
	ctx := context.Background()
	var calls atomic.Int64
	stop, err := s2.Watch(func() { calls.Add(1) })
	require.NoError(t, err)
	defer stop()
	_, ver, err := s1.Load(ctx)
	require.NoError(t, err)
	vState, ok, err := s1.CompareAndSwap(ctx, ver, []byte("state"))
	require.NoError(t, err)
	require.True(t, ok)

	// Remove the object behind both stores' backs, from a third client.
	conn, ioctx, err := connect(ctx, o)
	require.NoError(t, err)
	defer conn.Shutdown()
	defer ioctx.Destroy()
	require.NoError(t, ioctx.Delete(s1.Object()))
	before := calls.Load()
	require.Eventually(t, func() bool { return s2.LostWatches() >= 1 && calls.Load() > before },
		60*time.Second, 100*time.Millisecond, "the lost watch was not re-established")

	// The re-established watch hears the next swap before it returns.
	// The object made again has a version past the removed one's (the
	// units rely on versions growing).
	_, ver, err = s1.Load(ctx)
	require.NoError(t, err)
	require.Greater(t, ver, vState)
	before = calls.Load()
	_, ok, err = s1.CompareAndSwap(ctx, ver, []byte("again"))
	require.NoError(t, err)
	require.True(t, ok)
	require.Greater(t, calls.Load(), before)

	// Removing the image removes its reservation object.
	oid := s1.Object()
	d1.Close()
	d2.Close()
	require.Eventually(t, func() bool { return Remove(ctx, o) == nil }, 60*time.Second, time.Second)
	_, err = ioctx.Stat(oid)
	require.ErrorIs(t, err, rados.ErrNotFound)
	require.NoError(t, Create(ctx, o, 8<<20)) // for the cleanup's Remove
}

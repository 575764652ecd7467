// Package ratelog is a slog.Handler that rate-limits repeated records per
// source, so that a client repeating a failure (a login flood, a stream of
// bad PDUs) cannot fill the log. A record's source is the host part of
// the attribute named by Options.SourceKey, added with Logger.With; its
// message and source together are the key that is limited. Past Burst
// records of one key in a Window, further ones are counted instead of
// written, and when the window ends one record says how many were left
// out: "<message> (N more in the last minute)".
package ratelog

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Options tune a Handler. Zero fields take the defaults named.
type Options struct {
	// Burst is how many records of one key are written per Window.
	// Default 10.
	Burst int
	// Window is the period Burst applies to. Default one minute.
	Window time.Duration
	// SourceKey is the attribute that names a record's source. Default
	// "remote".
	SourceKey string
	// MaxKeys bounds the keys tracked at once; beyond it, records of new
	// keys share one key per message (source "other"). Default 4096.
	MaxKeys int
}

// key is what the handler limits: one message from one source.
type key struct {
	source string
	msg    string
}

// entry counts the records of one key in the current window.
type entry struct {
	start      time.Time
	written    int
	suppressed int
	level      slog.Level
	h          slog.Handler // the handler (with attributes) of the last suppressed record
	timer      *time.Timer
}

// limiter is the state handlers derived from one New share.
type limiter struct {
	opt  Options
	mu   sync.Mutex
	keys map[key]*entry
}

// Handler is a rate-limiting slog.Handler.
type Handler struct {
	next   slog.Handler
	lim    *limiter
	source string
}

// New returns a Handler that passes records on to next, limited as opt
// says.
func New(next slog.Handler, opt Options) *Handler {
	if opt.Burst <= 0 {
		opt.Burst = 10
	}
	if opt.Window <= 0 {
		opt.Window = time.Minute
	}
	if opt.SourceKey == "" {
		opt.SourceKey = "remote"
	}
	if opt.MaxKeys <= 0 {
		opt.MaxKeys = 4096
	}
	return &Handler{next: next, lim: &limiter{opt: opt, keys: make(map[key]*entry)}}
}

// Enabled reports whether the next handler takes records of level l.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// WithAttrs returns a handler whose records carry attrs; an attribute
// named SourceKey sets their source.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.next = h.next.WithAttrs(attrs)
	for _, a := range attrs {
		if a.Key == h.lim.opt.SourceKey {
			c.source = hostOf(a.Value.String())
		}
	}
	return &c
}

// WithGroup returns a handler whose later attributes are in group name.
func (h *Handler) WithGroup(name string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(name)
	return &c
}

// hostOf returns the host of a host:port address, or a unchanged.
func hostOf(a string) string {
	if host, _, err := net.SplitHostPort(a); err == nil {
		return host
	}
	return a
}

// Handle writes r unless its key has used its burst in this window.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if h.lim.admit(h, r) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

// admit reports whether r may be written, counting it otherwise.
func (l *limiter) admit(h *Handler, r slog.Record) bool {
	now := time.Now()
	k := key{source: h.source, msg: r.Message}
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.keys[k]
	if e == nil {
		if len(l.keys) >= l.opt.MaxKeys {
			l.sweepLocked(now)
		}
		if len(l.keys) >= l.opt.MaxKeys {
			k.source = "other"
			e = l.keys[k]
		}
	}
	if e == nil {
		e = &entry{start: now}
		l.keys[k] = e
	}
	if e.timer == nil && now.Sub(e.start) >= l.opt.Window {
		e.start, e.written = now, 0
	}
	if e.written < l.opt.Burst {
		e.written++
		return true
	}
	e.suppressed++
	e.level, e.h = r.Level, h.next
	if e.timer == nil {
		e.timer = time.AfterFunc(e.start.Add(l.opt.Window).Sub(now), func() { l.summarise(k) })
	}
	return false
}

// sweepLocked forgets the keys whose window has ended with nothing left
// to summarise. Called with mu held.
func (l *limiter) sweepLocked(now time.Time) {
	for k, e := range l.keys {
		if e.timer == nil && now.Sub(e.start) >= l.opt.Window {
			delete(l.keys, k)
		}
	}
}

// summarise ends the window of key k: one record says how many of its
// records were left out, and the key starts afresh.
func (l *limiter) summarise(k key) {
	l.mu.Lock()
	e := l.keys[k]
	if e == nil {
		l.mu.Unlock()
		return
	}
	delete(l.keys, k)
	n, level, h := e.suppressed, e.level, e.h
	l.mu.Unlock()
	if n == 0 || !h.Enabled(context.Background(), level) {
		return
	}
	r := slog.NewRecord(time.Now(), level, fmt.Sprintf("%s (%d more in the last %s)", k.msg, n, period(l.opt.Window)), 0)
	r.AddAttrs(slog.Int("suppressed", n))
	h.Handle(context.Background(), r)
}

// period names a window for a summary: "minute" for one minute.
func period(w time.Duration) string {
	if w == time.Minute {
		return "minute"
	}
	return w.String()
}

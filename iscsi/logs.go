package iscsi

import (
	"log/slog"

	"github.com/iscsikit/iscsikit/internal/ratelog"
)

// limitRepeats wraps the server's logger so that one source (the
// "remote" attribute of a connection's records) logs the same message at
// most repeats times a minute; the rest are counted and summarised once
// the minute ends ("N more in the last minute"), so a client repeating a
// failure cannot fill the log. A negative repeats leaves log unlimited.
func limitRepeats(log *slog.Logger, repeats int) *slog.Logger {
	if repeats < 0 {
		return log
	}
	return slog.New(ratelog.New(log.Handler(), ratelog.Options{Burst: repeats}))
}

// targetAlias returns the alias of the session's target, or "".
func (sess *session) targetAlias() string {
	if sess.target == nil {
		return ""
	}
	return sess.target.Alias
}

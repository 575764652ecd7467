package truenas

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/iscsikit/iscsikit/examples/api/jsonrpc"
)

// keepJobs is how many finished jobs core.get_jobs still lists.
const keepJobs = 100

// Job states, as the middleware names them.
const (
	jobRunning = "RUNNING"
	jobSuccess = "SUCCESS"
	jobFailed  = "FAILED"
)

// job is one call the middleware runs as a job. Its fields are
// core.get_jobs's (CoreGetJobsItem).
type job struct {
	ID                  int             `json:"id"`
	MessageIDs          []any           `json:"message_ids"`
	Method              string          `json:"method"`
	Arguments           json.RawMessage `json:"arguments"`
	Transient           bool            `json:"transient"`
	Description         *string         `json:"description"`
	Abortable           bool            `json:"abortable"`
	LogsPath            *string         `json:"logs_path"`
	LogsExcerpt         *string         `json:"logs_excerpt"`
	Progress            jobProgress     `json:"progress"`
	Result              any             `json:"result"`
	ResultEncodingError any             `json:"result_encoding_error"`
	Error               *string         `json:"error"`
	Exception           *string         `json:"exception"`
	ExcInfo             *jobExcInfo     `json:"exc_info"`
	State               string          `json:"state"`
	TimeStarted         ejsonTime       `json:"time_started"`
	TimeFinished        *ejsonTime      `json:"time_finished"`
	Credentials         any             `json:"credentials"`
}

type jobProgress struct {
	Percent     int     `json:"percent"`
	Description *string `json:"description"`
	Extra       any     `json:"extra"`
}

type jobExcInfo struct {
	Repr  string `json:"repr"`
	Type  string `json:"type"`
	Errno int    `json:"errno"`
	Extra any    `json:"extra"`
}

// jobs runs job calls and reports them to core.get_jobs subscribers.
type jobs struct {
	srv    *Server
	mu     sync.Mutex
	nextID int
	list   []*job // oldest first; finished jobs beyond keepJobs are dropped
}

func newJobs(s *Server) *jobs { return &jobs{srv: s, nextID: 1} }

// method wraps fn, a call the middleware runs as a job. The job starts at
// once and is announced to core.get_jobs subscribers (ADDED, then CHANGED
// when it ends). A session that kept legacy_jobs gets the job id back, as
// the middleware answers; one that set legacy_jobs false, and HTTP POST,
// get the job's result or error when it ends.
func (js *jobs) method(name string, fn jsonrpc.Method) jsonrpc.Method {
	return func(ctx context.Context, params json.RawMessage) (any, error) {
		ci := callOf(ctx)
		args := params
		if len(args) == 0 || string(args) == "null" {
			args = json.RawMessage("[]")
		}
		msgIDs := []any{}
		if ci.msgID != nil {
			msgIDs = append(msgIDs, ci.msgID)
		}
		desc := name
		j := &job{MessageIDs: msgIDs, Method: name, Arguments: args, State: jobRunning, Description: &desc,
			TimeStarted: ejsonTime(time.Now()), Progress: jobProgress{Description: &desc}}
		var result any
		var failure error
		done := make(chan struct{})
		js.mu.Lock()
		j.ID = js.nextID
		js.nextID++
		js.list = append(js.list, j)
		snapshot := *j
		js.mu.Unlock()
		js.srv.broadcast("core.get_jobs", "ADDED", snapshot.ID, snapshot)

		js.srv.calls.Add(1)
		go func() {
			defer js.srv.calls.Done()
			defer close(done)
			// A job goes on when its caller disconnects, as in the middleware.
			result, failure = fn(context.WithoutCancel(ctx), params)
			js.finish(j, result, failure)
		}()

		legacy := ci.ss != nil
		if legacy {
			ci.ss.mu.Lock()
			legacy = ci.ss.legacyJobs
			ci.ss.mu.Unlock()
		}
		if legacy {
			return j.ID, nil
		}
		select {
		case <-done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return result, failure
	}
}

// finish records how j ended and announces it.
func (js *jobs) finish(j *job, result any, failure error) {
	now := ejsonTime(time.Now())
	js.mu.Lock()
	j.TimeFinished = &now
	j.Progress.Percent = 100
	if failure == nil {
		j.State, j.Result = jobSuccess, result
	} else {
		e := shapeError(j.Method, failure)
		errno, reason, extra := errorFields(e)
		typ := "CallError"
		if e.Code == jsonrpc.CodeInvalidParams {
			typ = "VALIDATION"
		}
		exception := typ + ": " + reason + "\n"
		j.State, j.Error, j.Exception = jobFailed, &reason, &exception
		j.ExcInfo = &jobExcInfo{Repr: typ + "(" + reason + ")", Type: typ, Errno: errno, Extra: extra}
	}
	snapshot := *j
	// Drop the oldest finished jobs beyond keepJobs.
	finished := 0
	for _, x := range js.list {
		if x.State != jobRunning {
			finished++
		}
	}
	kept := js.list[:0]
	for _, x := range js.list {
		if x.State != jobRunning && finished > keepJobs {
			finished--
			continue
		}
		kept = append(kept, x)
	}
	js.list = kept
	js.mu.Unlock()
	js.srv.broadcast("core.get_jobs", "CHANGED", snapshot.ID, snapshot)
}

// query is core.get_jobs(filters, options).
func (js *jobs) query(_ context.Context, params json.RawMessage) (any, error) {
	js.mu.Lock()
	list := make([]job, len(js.list))
	for i, j := range js.list {
		list[i] = *j
	}
	js.mu.Unlock()
	return query(params, list, "job")
}

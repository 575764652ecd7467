// Command iscsictl calls iscsid's TrueNAS-style management API the way
// midclt does (seed 000):
//
//	iscsictl [--url URL] [--user U --password P] call METHOD [JSON...]
//
// URL is the daemon's API base address (default $ISCSICTL_URL, else
// http://127.0.0.1:8080); the call is POSTed as JSON-RPC 2.0 to
// URL/api/current with HTTP Basic auth. With a ws:// or wss:// URL it goes
// over a WebSocket to URL/api/current instead, logging in inside the
// connection (--user with --password, or with --api-key), as midclt -u
// does. Each argument after METHOD is one positional parameter,
// parsed as JSON; an argument that is not valid JSON is sent as a string,
// so `call iscsi.target.validate_name target0` works as with midclt. The
// result is printed as indented JSON; an error is printed as one line on
// standard error and the exit status is 1 (2 for a usage error).
//
//	iscsictl call iscsi.portal.create '{"comment": "Default", "listen": [{"ip": "0.0.0.0", "port": 3260}]}'
//	iscsictl call iscsi.portal.query '[["id", "=", 1]]' '{"get": true}'
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// usageError is a command line iscsictl cannot act on.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// run is the whole command: it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("iscsictl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	defURL := os.Getenv("ISCSICTL_URL")
	if defURL == "" {
		defURL = "http://127.0.0.1:8080"
	}
	url := fs.String("url", defURL, "iscsid's management API base address")
	user := fs.String("user", os.Getenv("ISCSICTL_USER"), "HTTP Basic user")
	password := fs.String("password", os.Getenv("ISCSICTL_PASSWORD"), "HTTP Basic password")
	apiKey := fs.String("api-key", os.Getenv("ISCSICTL_API_KEY"), "API key (ID-SECRET) to log in with over ws:// instead of --password")
	timeout := fs.Duration("timeout", 60*time.Second, "how long to wait for the answer")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: iscsictl [--url URL] [--user U --password P | --api-key K] call METHOD [JSON...]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	rest := fs.Args()
	if len(rest) < 2 || rest[0] != "call" {
		fs.Usage()
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	c := client{url: strings.TrimSuffix(*url, "/"), user: *user, password: *password, apiKey: *apiKey}
	do := call
	if strings.HasPrefix(c.url, "ws://") || strings.HasPrefix(c.url, "wss://") {
		do = wsCall
	}
	result, err := do(ctx, c, rest[1], rest[2:])
	if err != nil {
		fmt.Fprintln(stderr, "iscsictl:", err)
		var ue *usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	var out bytes.Buffer
	if err := json.Indent(&out, result, "", "  "); err != nil {
		out.Write(result)
	}
	fmt.Fprintln(stdout, out.String())
	return 0
}

// client is where and as whom calls are made.
type client struct {
	url, user, password, apiKey string
}

// rpcError is the error member of a JSON-RPC response.
type rpcError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

// Error prints the message, or the middleware's reason when the message
// is only its generic "Method call error".
func (e *rpcError) Error() string {
	msg := e.Message
	var data struct {
		Errname string `json:"errname"`
		Reason  string `json:"reason"`
	}
	if json.Unmarshal(e.Data, &data) == nil && data.Reason != "" && !strings.Contains(msg, data.Reason) {
		msg = "[" + data.Errname + "] " + data.Reason
	}
	return fmt.Sprintf("%s (code %d)", msg, e.Code)
}

// params turns command-line arguments into positional JSON parameters.
func params(args []string) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(args))
	for _, a := range args {
		if json.Valid([]byte(a)) {
			out = append(out, json.RawMessage(a))
			continue
		}
		b, _ := json.Marshal(a)
		out = append(out, b)
	}
	return out
}

// call POSTs one JSON-RPC request and returns its result.
func call(ctx context.Context, c client, method string, args []string) (json.RawMessage, error) {
	if method == "" || strings.ContainsAny(method, " \t") {
		return nil, &usageError{fmt.Sprintf("%q is not a method name", method)}
	}
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params(args)})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url+"/api/current", bytes.NewReader(body))
	if err != nil {
		return nil, &usageError{fmt.Sprintf("--url %q: %v", c.url, err)}
	}
	req.Header.Set("Content-Type", "application/json")
	if c.user != "" {
		req.SetBasicAuth(c.user, c.password)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, errors.New("401 Unauthorized: give --user and --password (or ISCSICTL_USER and ISCSICTL_PASSWORD)")
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(raw)))
	}
	var answer struct {
		Result json.RawMessage `json:"result"`
		Error  *rpcError       `json:"error"`
	}
	if err := json.Unmarshal(raw, &answer); err != nil {
		return nil, fmt.Errorf("the answer is not JSON-RPC: %w", err)
	}
	if answer.Error != nil {
		return nil, fmt.Errorf("%s: %w", method, answer.Error)
	}
	if answer.Result == nil {
		answer.Result = json.RawMessage("null")
	}
	return answer.Result, nil
}

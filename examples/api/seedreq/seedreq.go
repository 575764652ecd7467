// Package seedreq reads the example requests of the seed documents as
// they are written, so that tests replay them literally: an HTTP request
// block (seed 001's "GET /api/... HTTP/1.1", headers, an indented body)
// or a curl command line (seed 004's "curl -v -X PUT -H ... -d '...' URL").
package seedreq

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Request is one example request.
type Request struct {
	Method string
	// Path is the path (and query) the request names.
	Path   string
	Header http.Header
	Body   string
}

// New returns the request to send to base (scheme://host).
func (r Request) New(base string) (*http.Request, error) {
	req, err := http.NewRequest(r.Method, base+r.Path, strings.NewReader(r.Body))
	if err != nil {
		return nil, err
	}
	for k, v := range r.Header {
		req.Header[k] = v
	}
	return req, nil
}

// Send sends the request to base (scheme://host) with client and returns
// the response, its body read and closed.
func (r Request) Send(client *http.Client, base string) (*http.Response, []byte, error) {
	req, err := r.New(base)
	if err != nil {
		return nil, nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// ParseHTTP reads a request block: a request line, header lines, a blank
// line and the body, exactly as written (indentation, trailing commas and
// all).
func ParseHTTP(block string) (Request, error) {
	lines := strings.Split(strings.TrimLeft(block, "\n"), "\n")
	f := strings.Fields(lines[0])
	if len(f) != 3 || !strings.HasPrefix(f[2], "HTTP/") {
		return Request{}, fmt.Errorf("seedreq: %q is not a request line", lines[0])
	}
	r := Request{Method: f[0], Path: f[1], Header: http.Header{}}
	i := 1
	for ; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
		k, v, ok := strings.Cut(lines[i], ":")
		if !ok {
			return Request{}, fmt.Errorf("seedreq: %q is not a header", lines[i])
		}
		r.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	if i < len(lines) {
		r.Body = strings.TrimSpace(strings.Join(lines[i+1:], "\n"))
	}
	return r, nil
}

// ParseCurl reads a curl command line with -X, -H and -d options and the
// URL last, quoted as a shell would read it; the URL's scheme and host
// are dropped.
func ParseCurl(line string) (Request, error) {
	args, err := shellWords(line)
	if err != nil {
		return Request{}, err
	}
	if len(args) == 0 || args[0] != "curl" {
		return Request{}, errors.New("seedreq: not a curl command")
	}
	r := Request{Method: http.MethodGet, Header: http.Header{}}
	for i := 1; i < len(args); i++ {
		switch a := args[i]; a {
		case "-v":
		case "-X", "-H", "-d":
			if i+1 >= len(args) {
				return Request{}, fmt.Errorf("seedreq: %s without a value", a)
			}
			v := args[i+1]
			i++
			switch a {
			case "-X":
				r.Method = v
			case "-H":
				k, val, _ := strings.Cut(v, ":")
				r.Header.Add(strings.TrimSpace(k), strings.TrimSpace(val))
			case "-d":
				r.Body = v
			}
		default:
			u, err := url.Parse(a)
			if err != nil || u.Host == "" {
				return Request{}, fmt.Errorf("seedreq: %q is neither an option nor a URL", a)
			}
			r.Path = u.RequestURI()
		}
	}
	if r.Path == "" {
		return Request{}, errors.New("seedreq: no URL")
	}
	return r, nil
}

// shellWords splits a line into words as sh does for plain words and
// single- and double-quoted strings (no escapes or expansions, which the
// seeds do not use).
func shellWords(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\'' || c == '"':
			j := strings.IndexByte(line[i+1:], c)
			if j < 0 {
				return nil, fmt.Errorf("seedreq: unterminated %c quote", c)
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
